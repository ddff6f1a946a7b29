"""The rollout state machine's steps (churnops/retrain/rollout.py), run through their Lambda
handlers as Step Functions runs them: the first champion is promoted directly, a later challenger
starts a rollout at shadow; the check waits out a bake, advances with every alarm OK, promotes at
full, rolls back on an alarm in ALARM (named in the history) and follows a person's decision; a
retry of any step writes nothing twice. The registry is a directory and an S3 prefix (moto); the
alarms are moto's CloudWatch alarms; the events go to an SQS queue through an EventBridge rule."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from churnops.errors import ChurnOpsError
from churnops.registry import STATUS_ELIGIBLE, ConcurrentUpdateError, Registry
from lambdas.retrain import handlers

ALARMS = ("rt-candidate-errors", "rt-candidate-latency")


@pytest.fixture
def registry(store_uri: str, aws_env, monkeypatch) -> Registry:  # type: ignore[no-untyped-def]
    from churnops.aws import client

    monkeypatch.setenv("REGISTRY_URI", store_uri)
    monkeypatch.setenv("CURATED_BUCKET", "curated-unused-by-rollout")
    monkeypatch.setenv("EVENT_BUS_NAME", "default")
    monkeypatch.setenv("ROLLOUT_SHADOW_BAKE_SECONDS", "0")
    monkeypatch.setenv("ROLLOUT_CANARY_BAKE_SECONDS", "0")
    monkeypatch.setenv("ROLLOUT_CHECK_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("ROLLOUT_CANARY_SHARE", "0.25")
    monkeypatch.setenv("ROLLOUT_ALARM_NAMES", ",".join(ALARMS))
    cloudwatch = client("cloudwatch")
    for name in (*ALARMS, "rt-someone-elses"):
        cloudwatch.put_metric_alarm(
            AlarmName=name,
            Namespace="ChurnOps",
            MetricName="VersionErrors",
            Dimensions=[{"Name": "Role", "Value": "candidate"}],
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )
        cloudwatch.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="quiet")
    return Registry.open(store_uri)


def _alarm(name: str, state: str, reason: str) -> None:
    from churnops.aws import client

    client("cloudwatch").set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)


@pytest.fixture
def promotions_queue(aws_env) -> str:  # type: ignore[no-untyped-def]
    """An SQS queue receiving every ChampionPromoted and RolloutRolledBack event of the default
    bus."""
    from churnops.aws import client

    sqs, events = client("sqs"), client("events")
    name = f"promotions-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name=name,
        EventPattern=json.dumps(
            {
                "source": ["churnops.registry"],
                "detail-type": ["ChampionPromoted", "RolloutRolledBack"],
            }
        ),
    )
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
    return str(url)


def _drain(queue_url: str) -> list[dict[str, Any]]:
    from churnops.aws import client

    sqs, out = client("sqs"), []
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return out


def _register(registry: Registry) -> str:
    files = {"model.onnx": b"onnx", "model.joblib": b"joblib"}
    return registry.register(files, {"contract": "telco", "status": STATUS_ELIGIBLE})


def _event(run_id: str, challenger: str, champion: str | None, etag: str | None) -> dict[str, Any]:
    """The rollout execution's input (the retrain's step results, as its StartRollout hands
    them over), shaped as the LambdaInvoke results leave them."""
    return {
        "trigger": "schedule",
        "snapshot": {"Payload": {"run_id": run_id, "sha256": "0" * 64}, "StatusCode": 200},
        "evaluate": {
            "Payload": {
                "promote": True,
                "challenger_version": challenger,
                "champion_version": champion,
                "champion_etag": etag,
                "evaluation_uri": f"s3://curated/snapshots/{run_id}/evaluation.json",
                "primary_metric": "roc_auc",
                "challenger_metric": 0.86,
                "champion_metric": 0.80,
                "difference": {"point": 0.06, "ci": [0.02, 0.1]},
                "summary": "challenger better",
            },
            "StatusCode": 200,
        },
    }


def _actions(registry: Registry, version: str) -> list[str]:
    return [h["action"] for h in registry.history() if h["version"] == version]


def _check(event: dict[str, Any], started: dict[str, Any]) -> dict[str, Any]:
    """The check as the state machine runs it: the last rollout result under $.rollout."""
    return handlers.rollout_check({**event, "rollout": {"Payload": started}}, None)


def test_the_first_champion_is_promoted_directly_and_a_retry_is_not_a_conflict(
    registry: Registry, promotions_queue: str
) -> None:
    # GIVEN no champion: nothing to compare a candidate with
    challenger = _register(registry)
    event = _event("run-first", challenger, None, None)
    # WHEN the rollout step runs, and Step Functions runs it again with the same input
    first = handlers.rollout(event, None)
    retried = handlers.rollout(event, None)
    # THEN the challenger is champion at once (stage full: the state machine batch-scores)
    assert first == retried
    assert first["stage"] == "full" and first["version"] == challenger
    assert first["rollout_id"] is None and first["previous_version"] is None
    assert len(first["processing_date"]) == 10
    assert registry.champion()["version"] == challenger
    assert registry.rollout() is None
    assert _actions(registry, challenger) == ["promote", "gate_passed"]
    assert {e["detail"]["decision_id"] for e in _drain(promotions_queue)} == {
        f"retrain-run-first-{challenger}"
    }


def test_a_later_challenger_starts_a_rollout_once_however_often_the_step_runs(
    registry: Registry,
) -> None:
    champion, challenger = _register(registry), _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    event = _event("run-1", challenger, champion, registry.champion_etag())
    first = handlers.rollout(event, None)
    retried = handlers.rollout(event, None)
    assert first == retried
    assert first["stage"] == "shadow" and first["version"] == challenger
    assert first["champion_version"] == champion
    assert 1 <= first["wait_seconds"] <= 5
    record = registry.active_rollout()
    assert record["rollout_id"] == first["rollout_id"] and record["canary_share"] == 0.25
    # The champion has not moved: the candidate only scores beside it.
    assert registry.champion()["version"] == champion
    assert _actions(registry, challenger) == ["rollout_start", "gate_passed"]
    # A second run's challenger cannot start a rollout while this one is active.
    other = _register(registry)
    with pytest.raises(ChurnOpsError, match="is active"):
        handlers.rollout(_event("run-2", other, champion, registry.champion_etag()), None)


def test_a_champion_that_moved_since_the_evaluation_refuses_the_rollout(
    registry: Registry,
) -> None:
    champion, challenger = _register(registry), _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    etag = registry.champion_etag()
    registry.promote(_register(registry), actor="someone", reason="manual")
    with pytest.raises(ConcurrentUpdateError):
        handlers.rollout(_event("run-1", challenger, champion, etag), None)
    assert registry.rollout() is None


def test_with_every_alarm_ok_the_check_goes_shadow_canary_full_and_promotes_once(
    registry: Registry, promotions_queue: str
) -> None:
    champion, challenger = _register(registry), _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    event = _event("run-1", challenger, champion, registry.champion_etag())
    started = handlers.rollout(event, None)
    # WHEN the check runs after each (zero-length) bake
    canary = _check(event, started)
    assert canary["stage"] == "canary" and canary["alarm"] is None
    assert registry.champion()["version"] == champion  # canary: still the champion's pointer
    full = _check(event, canary)
    # THEN full moves the champion pointer, against the tag the evaluation saw
    assert full["stage"] == "full" and full["version"] == challenger
    assert full["previous_version"] == champion and len(full["processing_date"]) == 10
    assert registry.champion()["version"] == challenger
    assert registry.rollout()["stage"] == "full"
    # ... a retry of the last check (its answer lost) returns the same and moves nothing
    assert _check(event, canary) == full
    assert registry.champion()["sequence"] == 2
    steps = [
        (h["action"], h["details"].get("stage"))
        for h in registry.history()
        if h["version"] == challenger and h["action"].startswith("rollout_")
    ]
    assert steps == [
        ("rollout_start", "shadow"),
        ("rollout_advance", "canary"),
        ("rollout_advance", "full"),
    ]
    promoted = [e for e in _drain(promotions_queue) if e["detail-type"] == "ChampionPromoted"]
    assert {e["detail"]["version"] for e in promoted} == {challenger}


def test_a_bake_not_over_waits_and_moves_nothing(registry: Registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ROLLOUT_SHADOW_BAKE_SECONDS", "3600")
    champion, challenger = _register(registry), _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    event = _event("run-1", challenger, champion, registry.champion_etag())
    started = handlers.rollout(event, None)
    before = registry.rollout()
    waited = _check(event, started)
    assert waited["stage"] == "shadow" and waited["wait_seconds"] == 5  # the check interval
    assert registry.rollout() == before


def test_an_alarm_in_alarm_rolls_back_and_the_history_names_it(
    registry: Registry, promotions_queue: str
) -> None:
    champion, challenger = _register(registry), _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    before = registry.champion_etag()
    event = _event("run-1", challenger, champion, before)
    started = handlers.rollout(event, None)
    # GIVEN an alarm the rollout does not read, and one it reads, in ALARM since after the
    # rollout started (recorded to the second: an alarm of that same second counts as older)
    time.sleep(1.1)
    _alarm("rt-someone-elses", "ALARM", "not ours")
    _alarm(ALARMS[1], "ALARM", "Threshold Crossed: 1 datapoint [1800.0] > 1000.0")
    # WHEN the check runs
    ended = _check(event, started)
    # THEN the rollout is aborted, naming the alarm; the champion never moved
    assert ended["stage"] == "aborted" and ended["alarm"] == ALARMS[1]
    assert "Threshold Crossed" in ended["reason"]
    assert registry.champion_etag() == before
    record = registry.rollout()
    assert record["stage"] == "aborted" and record["alarm"] == ALARMS[1]
    (aborted,) = [h for h in registry.history() if h["action"] == "rollout_abort"]
    assert aborted["details"]["alarm"] == ALARMS[1] and aborted["details"]["stage"] == "aborted"
    assert aborted["details"]["previous_stage"] == "shadow"
    # ... a retried check reports the same end and records nothing twice
    assert _check(event, started)["stage"] == "aborted"
    assert len([h for h in registry.history() if h["action"] == "rollout_abort"]) == 1
    # ... and subscribers hear of it
    (event_out,) = [e for e in _drain(promotions_queue) if e["detail-type"] == "RolloutRolledBack"]
    assert event_out["detail"]["alarm"] == ALARMS[1]
    assert event_out["detail"]["version"] == challenger


def test_the_check_follows_a_persons_abort_and_advance(registry: Registry) -> None:
    champion = _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    # An abort by hand between two checks: the check reports it, nothing else moves.
    first = _register(registry)
    event = _event("run-1", first, champion, registry.champion_etag())
    started = handlers.rollout(event, None)
    registry.abort_rollout(actor="oncall", reason="looks wrong")
    ended = _check(event, started)
    assert ended["stage"] == "aborted" and ended["alarm"] is None
    assert ended["reason"] == "looks wrong"
    # A promotion by hand (advanced to full): the check reports full, for batch scoring.
    second = _register(registry)
    event = _event("run-2", second, champion, registry.champion_etag())
    started = handlers.rollout(event, None)
    registry.advance_rollout(actor="oncall", reason="ship it")
    registry.advance_rollout(actor="oncall", reason="ship it")
    ended = _check(event, started)
    assert ended["stage"] == "full" and ended["version"] == second
    assert registry.champion()["version"] == second


def test_an_alarm_left_in_alarm_by_an_earlier_rollout_holds_the_stage_but_is_no_verdict(
    registry: Registry, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from churnops.retrain import rollout

    champion, challenger = _register(registry), _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    # GIVEN the error alarm still in ALARM from the previous candidate (the alarms watch the
    # role, not a version) when this rollout starts
    _alarm(ALARMS[0], "ALARM", "the previous candidate's errors")
    event = _event("run-1", challenger, champion, registry.champion_etag())
    started = handlers.rollout(event, None)
    # WHEN the check runs with the (zero-length) bake over
    held = _check(event, started)
    # THEN it neither rolls back on that alarm nor advances past it
    assert held["stage"] == "shadow" and held["alarm"] is None
    assert registry.rollout()["stage"] == "shadow"
    # ... and once the rollout is older than the alarm's evaluation range, every datapoint it
    # evaluates is this candidate's: still in ALARM, it is the verdict
    monkeypatch.setattr(rollout, "STALE_PERIODS", 0)
    ended = _check(event, held)
    assert ended["stage"] == "aborted" and ended["alarm"] == ALARMS[0]


def test_a_stage_held_by_an_earlier_alarm_goes_on_once_it_is_ok(registry: Registry) -> None:
    champion, challenger = _register(registry), _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    _alarm(ALARMS[0], "ALARM", "the previous candidate's errors")
    event = _event("run-1", challenger, champion, registry.champion_etag())
    held = _check(event, handlers.rollout(event, None))
    assert held["stage"] == "shadow"
    _alarm(ALARMS[0], "OK", "quiet again")
    assert _check(event, held)["stage"] == "canary"
