"""No retrain loop: what a retrain publishes about drift can never start a retrain.

The retrain-starting path is read from the synthesized template (rules targeting the retrain
state machine -> the alarms whose state changes they match -> the metrics those alarms watch);
the retrain's drift step is then executed through its Lambda handler against moto (S3 snapshot,
registry champion with reference statistics, CloudWatch) on customers that really drifted, and
what it published is compared with those metrics."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pandas as pd
import pytest
from aws_cdk.assertions import Template

from churnops.contract import TELCO
from churnops.drift import reference_statistics
from churnops.registry import STATUS_ELIGIBLE, Registry
from churnops.synthetic import generate
from tests.infra.template_helpers import logical_id


def _clean(rows: int, seed: int, shift: str | None = None) -> pd.DataFrame:
    raw = generate(rows, seed=seed, shift=shift)
    return TELCO.validate(raw.astype(object).where(raw.notna(), "").astype(str)).clean


def retrain_starting_metrics(template: Template, retrain_machine_id: str) -> set[tuple[str, str]]:
    """(namespace, metric name) of every alarm whose state change starts the retrain."""
    resources = template.to_json()["Resources"]
    starting: set[tuple[str, str]] = set()
    for rule in template.find_resources("AWS::Events::Rule").values():
        props = rule["Properties"]
        if {"Ref": retrain_machine_id} not in [t["Arn"] for t in props.get("Targets", [])]:
            continue
        pattern = props.get("EventPattern", {})
        assert pattern.get("source") == ["aws.cloudwatch"], pattern  # only alarms start it here
        for resource in pattern["resources"]:
            alarm = resources[resource["Fn::GetAtt"][0]]["Properties"]
            starting.add((alarm["Namespace"], alarm["MetricName"]))
    return starting


@pytest.fixture(scope="module")
def starting(core: Any) -> set[tuple[str, str]]:
    metrics = retrain_starting_metrics(core.template, logical_id(core.stand_in_machines["retrain"]))
    assert metrics, "no alarm starts the retrain state machine"
    return metrics


def test_only_the_live_drift_alarm_starts_a_retrain(starting: set[tuple[str, str]]) -> None:
    assert starting == {("ChurnOps", "LiveMaxFeaturePSI")}


def test_the_retrains_own_drift_alarm_only_alerts(core: Any) -> None:
    snapshot_alarm = logical_id(core.monitoring.snapshot_drift_alarm)
    rules = json.dumps(core.template.find_resources("AWS::Events::Rule"))
    assert snapshot_alarm not in rules


def test_a_drifted_retrain_publishes_nothing_that_starts_a_retrain(
    starting: set[tuple[str, str]], aws_env, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from churnops.aws import client
    from lambdas.retrain import handlers

    # GIVEN a champion trained on normal customers and a snapshot of customers whose prices and
    # payment methods moved, in a fresh namespace so only this run's metrics are listed
    namespace = f"ChurnOpsLoopTest{uuid.uuid4().hex[:8]}"
    curated = f"curated-{uuid.uuid4().hex[:8]}"
    client("s3").create_bucket(Bucket=curated)
    registry = Registry.open(str(tmp_path / "registry"))
    champion = registry.register(
        {"model.onnx": b"onnx"},
        {
            "contract": TELCO.name,
            "status": STATUS_ELIGIBLE,
            "reference_stats": reference_statistics(_clean(4000, seed=5), TELCO),
        },
    )
    registry.promote(champion, actor="test", reason="champion")
    buffer = io.BytesIO()
    _clean(2000, seed=6, shift="price_rise,payment_mix").to_parquet(buffer, index=False)
    snapshot_key = "snapshots/loop-test/customers.parquet"
    client("s3").put_object(Bucket=curated, Key=snapshot_key, Body=buffer.getvalue())
    for name, value in {
        "REGISTRY_URI": registry.uri,
        "CURATED_BUCKET": curated,
        "CONTRACT_NAME": TELCO.name,
        "POWERTOOLS_METRICS_NAMESPACE": namespace,
    }.items():
        monkeypatch.setenv(name, value)
    # WHEN the retrain's drift step runs as the state machine invokes it
    result = handlers.drift(
        {
            "trigger": "drift-alarm",
            "snapshot": {
                "Payload": {"run_id": "loop-test", "uri": f"s3://{curated}/{snapshot_key}"},
                "StatusCode": 200,
            },
        },
        None,
    )
    # THEN it reports the drift and publishes it, under no name an alarm that starts a retrain
    # watches
    assert {"MonthlyCharges", "PaymentMethod"} <= set(result["drifted_features"])
    assert result["max_psi"] > 0.2 and result["metrics_sent"] > 0
    listed = client("cloudwatch").list_metrics(Namespace=namespace)["Metrics"]
    published = {m["MetricName"] for m in listed}
    assert not published & {name for _, name in starting}, published
    assert "SnapshotMaxFeaturePSI" in published  # what the alert-only snapshot alarm watches
