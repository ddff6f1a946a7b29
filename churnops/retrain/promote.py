"""Step 6a: promote the challenger: a conditional champion pointer move, then an event.

Promotion passes the champion pointer's ETag *as the evaluate step saw it*. If another flow (or
a person with `churnops registry promote`) moved the pointer since, the challenger was judged
against a champion that is no longer current: the conditional write fails with
`ConcurrentUpdateError`, the pointer stays as the other writer left it, and the state machine's
Catch reports it. Two flows racing therefore never both win and never leave a half-written
pointer (the registry's write is all-or-nothing).

Step Functions retries this step (and a Lambda can time out after the pointer write, before it
returns). A retry of the same decision must not look like a rival writer: the pointer carries the
decision id, one per retrain run and challenger, so the retry gets the pointer its first attempt
wrote, the history keeps one promotion and one gate_passed, and the flow goes on to batch scoring.
Only a different decision that moved the pointer meanwhile is a conflict.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from churnops import aws
from churnops.registry import ConcurrentUpdateError, Registry
from churnops.wiring import DEFAULT_EVENT_BUS, EVENT_PROMOTED, EVENT_SOURCE

log = logging.getLogger(__name__)

ACTOR = "retrain-state-machine"


def retrain_decision_id(run_id: str, version: str) -> str:
    """The id a retrain run's promotion of its challenger carries, the same on every retry:
    both come from the execution's input (the snapshot's run id, the trained version)."""
    return f"retrain-{run_id}-{version}"


def promote(
    registry: Registry,
    version: str,
    *,
    expected_etag: str | None,
    reason: str,
    details: dict[str, Any],
    actor: str = ACTOR,
    event_bus: str = DEFAULT_EVENT_BUS,
    decision_id: str | None = None,
) -> dict[str, Any]:
    """Move the champion pointer to `version` if it still has `expected_etag` (None: only if
    there is still no champion), then publish a ChampionPromoted event.

    `decision_id` defaults to `retrain_decision_id` of `details["run_id"]`; calling again with
    the same one after the pointer moved returns the same pointer and records nothing twice."""
    if decision_id is None and details.get("run_id"):
        decision_id = retrain_decision_id(str(details["run_id"]), version)
    try:
        pointer = registry.promote(
            version,
            actor=actor,
            reason=reason,
            expected_etag=expected_etag,
            decision_id=decision_id,
        )
    except ConcurrentUpdateError as err:
        # History keeps the loser too, so "why was this not promoted?" has an answer.
        registry.record_decision(
            version,
            "promotion_conflict",
            actor=actor,
            reason=str(err),
            details={**details, "expected_etag": expected_etag},
            decision_id=decision_id,
        )
        raise
    registry.record_decision(
        version,
        "gate_passed",
        actor=actor,
        reason=reason,
        details=details,
        decision_id=decision_id,
    )
    # Sent again on a retry: whether the first attempt's event went out is unknown, and a lost
    # notification is worse than a repeated one (EventBridge delivers at least once anyway).
    # The decision id in the detail lets a subscriber drop the repeat.
    publish_promotion(registry.uri, pointer, details, event_bus=event_bus)
    return pointer


def publish_promotion(
    registry_uri: str,
    pointer: dict[str, Any],
    details: dict[str, Any],
    *,
    event_bus: str = DEFAULT_EVENT_BUS,
) -> None:
    """EventBridge event `churnops.registry` / `ChampionPromoted` (alerting, and anything that
    wants to react to a new champion)."""
    detail = {
        "registry": registry_uri,
        "version": pointer["version"],
        "previous_version": pointer.get("previous_version"),
        "sequence": pointer.get("sequence"),
        "actor": pointer.get("actor"),
        "reason": pointer.get("reason"),
        "decision_id": pointer.get("decision_id"),
        **{k: v for k, v in details.items() if k in ("primary_metric", "difference", "run_id")},
    }
    publish_registry_event(EVENT_PROMOTED, detail, event_bus=event_bus)


def publish_registry_event(
    detail_type: str, detail: dict[str, Any], *, event_bus: str = DEFAULT_EVENT_BUS
) -> None:
    """One `churnops.registry` event on `event_bus`. A refused entry is logged, never raised:
    the decision it reports stands (the pointer moved), and a lost notification must not undo
    it."""
    response = aws.client("events").put_events(
        Entries=[
            {
                "Source": EVENT_SOURCE,
                "DetailType": detail_type,
                "Detail": json.dumps(detail, default=str),
                "EventBusName": event_bus,
            }
        ]
    )
    if response.get("FailedEntryCount"):
        log.error("%s event not accepted: %s", detail_type, response.get("Entries"))


def processing_date(moment: dt.datetime | None = None) -> str:
    """The partition batch scoring writes to: the UTC date of the promotion."""
    return (moment or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d")
