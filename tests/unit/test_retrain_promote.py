"""The retrain flow's promote step, run through its Lambda handler as Step Functions runs it: a
retry of the same decision succeeds with one promotion recorded; a different decision that saw the
same champion is still a conflict. The registry is a directory and an S3 prefix (moto); the
ChampionPromoted events go to an SQS queue through an EventBridge rule (moto)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from churnops.registry import STATUS_ELIGIBLE, ConcurrentUpdateError, Registry
from lambdas.retrain import handlers


@pytest.fixture
def registry(store_uri: str, aws_env, monkeypatch) -> Registry:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REGISTRY_URI", store_uri)
    monkeypatch.setenv("CURATED_BUCKET", "curated-unused-by-promote")
    monkeypatch.setenv("EVENT_BUS_NAME", "default")
    return Registry.open(store_uri)


@pytest.fixture
def promotions_queue(aws_env) -> str:  # type: ignore[no-untyped-def]
    """An SQS queue receiving every ChampionPromoted event of the default bus."""
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
            {"source": ["churnops.registry"], "detail-type": ["ChampionPromoted"]}
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
    """The execution's state at the Promote task, shaped as the LambdaInvoke results leave it."""
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


def test_the_promote_step_retried_with_the_same_input_promotes_once(
    registry: Registry, promotions_queue: str
) -> None:
    # GIVEN a champion, and the state a retrain execution reaches Promote with
    champion, challenger = _register(registry), _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    event = _event("20300101T030000Z-run1", challenger, champion, registry.champion_etag())
    # WHEN the step runs, and runs again with the same input (Step Functions retrying a task
    # whose first attempt moved the pointer and then timed out)
    first = handlers.promote(event, None)
    retried = handlers.promote(event, None)
    # THEN the retry succeeds with the same result, so the flow goes on to batch scoring
    assert retried["version"] == first["version"] == challenger
    assert retried["sequence"] == first["sequence"] == 2
    assert retried["previous_version"] == champion
    # ... the history holds one promotion and one gate decision, and no conflict
    assert _actions(registry, challenger) == ["promote", "gate_passed"]
    assert registry.champion()["version"] == challenger
    # ... and both events name the one decision, so a subscriber can tell the repeat
    events = _drain(promotions_queue)
    assert [e["detail"]["version"] for e in events] == [challenger, challenger]
    assert len({e["detail"]["decision_id"] for e in events}) == 1


def test_a_different_decision_racing_on_the_same_champion_is_still_a_conflict(
    registry: Registry, promotions_queue: str
) -> None:
    # GIVEN two retrain runs that both evaluated against the same champion
    champion = _register(registry)
    registry.promote(champion, actor="test", reason="champion")
    etag = registry.champion_etag()
    winner, loser = _register(registry), _register(registry)
    handlers.promote(_event("run-a", winner, champion, etag), None)
    # WHEN the other run's promote step comes second
    with pytest.raises(ConcurrentUpdateError):
        handlers.promote(_event("run-b", loser, champion, etag), None)
    # THEN the first run's challenger stays champion and the loser's conflict is recorded once
    assert registry.champion()["version"] == winner
    assert _actions(registry, loser) == ["promotion_conflict"]
    # ... even when Step Functions would run that step again
    with pytest.raises(ConcurrentUpdateError):
        handlers.promote(_event("run-b", loser, champion, etag), None)
    assert _actions(registry, loser) == ["promotion_conflict"]
    assert [e["detail"]["version"] for e in _drain(promotions_queue)] == [winner]


def test_the_first_champion_promote_step_retried_is_not_a_conflict(
    registry: Registry, promotions_queue: str
) -> None:
    # The first retrain expects no champion (tag None); after its own write there is one.
    challenger = _register(registry)
    event = _event("run-first", challenger, None, None)
    assert handlers.promote(event, None)["version"] == challenger
    assert handlers.promote(event, None)["version"] == challenger
    assert _actions(registry, challenger) == ["promote", "gate_passed"]
