"""Step 6: a challenger that passed the gate reaches customers stage by stage, as the rollout
state machine runs it (stacks/retrain.py):

    Rollout -> full? ---------------------------------------------> BatchScore -> Promoted
            -> shadow: Bake (Wait) -> RolloutCheck -> full ------> BatchScore -> Promoted
                          ^                |-> aborted -> AlertRollback -> RolledBack
                          |________________|-> shadow / canary (bake not over, alarms OK)

`rollout_step` starts it. With no champion yet there is nothing to compare the challenger with,
so it is promoted directly (and the state machine batch-scores at once). Otherwise the
challenger becomes the rollout's candidate at stage `shadow`, against the champion ETag the
evaluate step saw: a champion that moved since is a `ConcurrentUpdateError`, as a direct
promotion's would be.

`rollout_check_step` runs every `check_interval_seconds`. It reads the candidate's alarms first:
any in ALARM aborts the rollout, naming the alarm and its reason in the registry history, and
publishes `RolloutRolledBack`. With every alarm quiet, a stage whose bake is over advances
(`canary`, then `full`: the champion pointer moves and `ChampionPromoted` goes out).

The alarms watch the role "candidate", not a version, so an alarm can still be in ALARM from the
previous rollout's candidate when this one starts: CloudWatch keeps an alarm's state until an
evaluation changes it, and `StateUpdatedTimestamp` says when it last did (DescribeAlarms,
MetricAlarm). An alarm that entered ALARM before this rollout started is therefore not this
candidate's verdict yet: the check neither rolls back nor advances on it, and waits for it to
leave ALARM. Once the rollout is older than `STALE_PERIODS` alarm periods, every datapoint the
alarm evaluates is this candidate's, and an alarm still in ALARM rolls it back. A person
may advance or abort meanwhile (`churnops registry rollout ...`); the check then reports where
the rollout is and the state machine follows (full: batch scoring; aborted: the alert).

Every registry write carries a decision id derived from the rollout and the stage it left, so a
step Step Functions retries after a lost answer returns what its first attempt wrote.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from churnops import aws
from churnops.errors import ChurnOpsError
from churnops.retrain.flow import RetrainEnv, decision_details, result_of
from churnops.retrain.promote import (
    ACTOR,
    processing_date,
    promote,
    publish_promotion,
    publish_registry_event,
    retrain_decision_id,
)
from churnops.wiring import (
    ACTIVE_STAGES,
    EVENT_ROLLED_BACK,
    STAGE_ABORTED,
    STAGE_CANARY,
    STAGE_FULL,
    STAGE_SHADOW,
    RolloutSettings,
)

if TYPE_CHECKING:
    from churnops.registry import Registry

ALARM = "ALARM"
# An alarm evaluates N periods and may look back two more for missing data (CloudWatch, "Evaluating
# an alarm": 3 periods read 5 datapoints); the candidate's alarms evaluate one period.
STALE_PERIODS = 3


# ---- start --------------------------------------------------------------------------------------
def rollout_step(env: RetrainEnv, state: Mapping[str, Any]) -> dict[str, Any]:
    """Promote the first champion directly, or start the challenger's rollout at `shadow`."""
    verdict = result_of(state, "evaluate")
    if not verdict.get("promote"):
        raise ChurnOpsError("the gate did not pass this challenger; refusing to roll it out")
    details = decision_details(state, verdict)
    version = verdict["challenger_version"]
    reason = f"retrain gate passed: {verdict['summary']}"
    registry = env.registry
    if verdict.get("champion_version") is None:
        pointer = promote(
            registry,
            version,
            expected_etag=verdict["champion_etag"],
            reason=f"{reason} (first champion: no rollout without one to compare with)",
            details=details,
            actor=ACTOR,
            event_bus=env.event_bus,
        )
        return _promoted(pointer, rollout_id=None)
    decision_id = retrain_decision_id(str(details["run_id"]), version)
    record = registry.start_rollout(
        version,
        actor=ACTOR,
        reason=reason,
        canary_share=env.rollout.canary_share,
        champion_etag=verdict["champion_etag"],
        decision_id=decision_id,
    )
    # Why it may go out at all: the gate's figures, once per decision like the promotion's.
    registry.record_decision(
        version,
        "gate_passed",
        actor=ACTOR,
        reason=reason,
        details={**details, "rollout_id": record["rollout_id"]},
        decision_id=decision_id,
    )
    return _waiting(record, env.rollout)


# ---- check --------------------------------------------------------------------------------------
def rollout_check_step(env: RetrainEnv, state: Mapping[str, Any]) -> dict[str, Any]:
    """Roll back on any candidate alarm, advance a stage whose bake is over, or wait again."""
    checked = result_of(state, "rollout")  # the previous step's answer
    rollout_id = checked.get("rollout_id")
    if not rollout_id:
        raise ChurnOpsError("the state names no rollout to check")
    registry = env.registry
    record = registry.rollout()
    if record is None or record["rollout_id"] != rollout_id:
        # Another rollout replaced this one (it ended first: only an ended rollout is replaced).
        return _ended(rollout_id, stage=STAGE_ABORTED, reason="replaced by a later rollout")
    if record["stage"] not in ACTIVE_STAGES:
        return _outcome(registry, record)
    firing = firing_alarms(env.rollout_alarm_names)
    # The start is recorded to the second: an alarm that changed within that second counts as
    # from before (the cautious side: it holds the stage instead of judging the candidate).
    started = _moment(record["started_at"])
    after_start = started + dt.timedelta(seconds=1)
    settled = _age_seconds(started) >= STALE_PERIODS * env.rollout.alarm_period_seconds
    for alarm in firing:
        if settled or (alarm["since"] is not None and alarm["since"] >= after_start):
            return _roll_back(env, registry, record, alarm)
    if firing or _baked_seconds(record) < _bake_seconds(record["stage"], env.rollout):
        # An ALARM left from before this rollout: neither its verdict nor a clean bill.
        return _waiting(record, env.rollout)
    advanced = registry.advance_rollout(
        actor=ACTOR,
        reason=f"{record['stage']} baked {_bake_seconds(record['stage'], env.rollout)} s "
        f"with every candidate alarm OK ({', '.join(env.rollout_alarm_names) or 'none'})",
        from_stage=record["stage"],
        rollout_id=rollout_id,
    )
    if advanced["stage"] == STAGE_FULL:
        return _outcome(registry, advanced, announce_on=env.event_bus)
    return _waiting(advanced, env.rollout)


def firing_alarms(names: Sequence[str]) -> list[dict[str, Any]]:
    """The alarms of `names` in state ALARM: name, reason, and since when (None if unknown)."""
    if not names:
        return []
    firing = []
    pages = aws.client("cloudwatch").get_paginator("describe_alarms")
    for page in pages.paginate(AlarmNames=list(names), AlarmTypes=["MetricAlarm"]):
        for alarm in page.get("MetricAlarms", []):
            if alarm.get("StateValue") == ALARM:
                since = alarm.get("StateUpdatedTimestamp")
                firing.append(
                    {
                        "name": alarm["AlarmName"],
                        "reason": alarm.get("StateReason", ""),
                        "since": since if isinstance(since, dt.datetime) else None,
                    }
                )
    return firing


def _roll_back(
    env: RetrainEnv, registry: Registry, record: dict[str, Any], alarm: dict[str, Any]
) -> dict[str, Any]:
    aborted = registry.abort_rollout(
        actor=ACTOR,
        reason=f"alarm {alarm['name']} in ALARM at stage {record['stage']}: {alarm['reason']}",
        alarm=alarm["name"],
        rollout_id=record["rollout_id"],
    )
    _publish_rollback(registry.uri, aborted, event_bus=env.event_bus)
    return _ended(record["rollout_id"], stage=STAGE_ABORTED, record=aborted)


def _outcome(
    registry: Registry, record: dict[str, Any], *, announce_on: str | None = None
) -> dict[str, Any]:
    """A rollout that has ended: full (the champion pointer names the candidate) or aborted."""
    if record["stage"] != STAGE_FULL:
        return _ended(record["rollout_id"], stage=record["stage"], record=record)
    pointer = registry.require_champion()
    if pointer["version"] != record["version"]:
        # Promoted, then replaced or rolled back by someone: nothing of this rollout to score.
        return _ended(
            record["rollout_id"],
            stage=STAGE_ABORTED,
            reason=f"its candidate {record['version']} is no longer champion",
        )
    if announce_on is not None:  # this check promoted it: ChampionPromoted goes out once
        publish_promotion(
            registry.uri, pointer, {"rollout_id": record["rollout_id"]}, event_bus=announce_on
        )
    return _promoted(pointer, rollout_id=record["rollout_id"])


def _publish_rollback(registry_uri: str, record: dict[str, Any], *, event_bus: str) -> None:
    # The rollback stands whatever happens to the event; the state machine alerts anyway.
    publish_registry_event(
        EVENT_ROLLED_BACK,
        {
            "registry": registry_uri,
            "rollout_id": record["rollout_id"],
            "version": record["version"],
            "champion_version": record["champion_version"],
            "stage": record["previous_stage"],
            "alarm": record.get("alarm"),
            "reason": record["reason"],
        },
        event_bus=event_bus,
    )


# ---- what the state machine reads: $.rollout.Payload ----------------------------------------------
def _waiting(record: dict[str, Any], settings: RolloutSettings) -> dict[str, Any]:
    """An active rollout: the Bake state waits `wait_seconds`, then checks again."""
    remaining = _bake_seconds(record["stage"], settings) - _baked_seconds(record)
    return {
        "rollout_id": record["rollout_id"],
        "stage": record["stage"],
        "version": record["version"],
        "champion_version": record["champion_version"],
        # The next check: at the interval, or at the bake's end when that comes first (at least
        # a second: a Wait of 0 would spin).
        "wait_seconds": max(1, min(settings.check_interval_seconds, math.ceil(remaining))),
        "alarm": None,
    }


def _ended(
    rollout_id: str,
    *,
    stage: str,
    record: dict[str, Any] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    return {
        "rollout_id": rollout_id,
        "stage": stage,
        "version": record["version"] if record else None,
        "champion_version": record["champion_version"] if record else None,
        "alarm": record.get("alarm") if record else None,
        "reason": reason or (record["reason"] if record else None),
    }


def _promoted(pointer: dict[str, Any], *, rollout_id: str | None) -> dict[str, Any]:
    return {
        "rollout_id": rollout_id,
        "stage": STAGE_FULL,
        "version": pointer["version"],
        "previous_version": pointer["previous_version"],
        "sequence": pointer["sequence"],
        # The date of the promotion itself, not of this call: a retry after midnight UTC must
        # batch-score into the same partition as the first attempt would have.
        "processing_date": processing_date(
            dt.datetime.fromisoformat(str(pointer["updated_at"]).replace("Z", "+00:00"))
        ),
        "alarm": None,
    }


def _bake_seconds(stage: str, settings: RolloutSettings) -> int:
    if stage == STAGE_SHADOW:
        return settings.shadow_bake_seconds
    if stage == STAGE_CANARY:
        return settings.canary_bake_seconds
    raise ChurnOpsError(f"stage {stage} has no bake")


def _baked_seconds(record: dict[str, Any]) -> float:
    """Seconds since the rollout entered its stage (the pointer's last write did that)."""
    return _age_seconds(_moment(record["updated_at"]))


def _moment(text: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _age_seconds(moment: dt.datetime) -> float:
    return (dt.datetime.now(dt.UTC) - moment).total_seconds()
