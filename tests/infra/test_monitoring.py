"""Monitoring construct: every alarm with its metric and SNS action, the drift alarm starting a
retrain, promotions forwarded to the alert topic, Glue failures alerted, and the dashboard."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from churnops.wiring import EVENT_PROMOTED, EVENT_SOURCE
from tests.infra.template_helpers import logical_id


@pytest.fixture(scope="module")
def template(core: Any) -> Template:
    return core.template


@pytest.fixture(scope="module")
def settings(core: Any) -> Any:
    return core.monitoring.settings


@pytest.fixture(scope="module")
def alarms(template: Template, settings: Any) -> dict[str, dict[str, Any]]:
    found = template.find_resources("AWS::CloudWatch::Alarm")
    prefix = settings.name_prefix + "-"
    return {
        a["Properties"]["AlarmName"].removeprefix(prefix): a["Properties"] for a in found.values()
    }


def test_the_expected_alarms_exist(alarms: dict[str, dict[str, Any]]) -> None:
    assert set(alarms) == {
        "api-5xx",
        "api-p99-latency",
        "serving-errors",
        "serving-throttles",
        "ingest-failed",
        "ingest-timed-out",
        "retrain-failed",
        "retrain-timed-out",
        "glue-job-failures",
        "live-drift",
        "snapshot-drift",
    }


def test_every_alarm_notifies_the_alert_topic(alarms: dict[str, dict[str, Any]], core: Any) -> None:
    topic = {"Ref": logical_id(core.alerts.topic)}
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [topic], name
        assert alarm["TreatMissingData"] == "notBreaching", name


def test_api_alarms_watch_5xx_and_p99_latency(
    alarms: dict[str, dict[str, Any]], settings: Any, core: Any
) -> None:
    five = alarms["api-5xx"]
    assert (five["Namespace"], five["MetricName"], five["Statistic"]) == (
        "AWS/ApiGateway",
        "5XXError",
        "Sum",
    )
    assert five["Threshold"] == settings.api_5xx_threshold
    p99 = alarms["api-p99-latency"]
    assert (p99["MetricName"], p99["ExtendedStatistic"]) == ("Latency", "p99")
    assert p99["Threshold"] == settings.api_p99_latency_ms
    for alarm in (five, p99):
        assert [d["Name"] for d in alarm["Dimensions"]] == ["ApiName"]


def test_function_alarms_watch_errors_and_throttles(
    alarms: dict[str, dict[str, Any]], core: Any
) -> None:
    function = {"Ref": logical_id(core.serving.function)}
    for name, metric in (("serving-errors", "Errors"), ("serving-throttles", "Throttles")):
        alarm = alarms[name]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Lambda", metric)
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": function}]


def test_state_machine_alarms_watch_failed_and_timed_out_executions(
    alarms: dict[str, dict[str, Any]], core: Any
) -> None:
    for name, machine in core.stand_in_machines.items():
        arn = {"Ref": logical_id(machine)}
        for suffix, metric in (("failed", "ExecutionsFailed"), ("timed-out", "ExecutionsTimedOut")):
            alarm = alarms[f"{name}-{suffix}"]
            assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/States", metric)
            assert alarm["Dimensions"] == [{"Name": "StateMachineArn", "Value": arn}]


def test_glue_failure_alarm_counts_failed_sync_job_runs(
    alarms: dict[str, dict[str, Any]],
) -> None:
    alarm = alarms["glue-job-failures"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/States", "ServiceIntegrationsFailed")
    (dimension,) = alarm["Dimensions"]
    assert dimension["Name"] == "ServiceIntegrationResourceArn"
    assert "states:::glue:startJobRun.sync" in json.dumps(dimension["Value"])


def test_glue_job_failures_are_also_sent_to_the_topic_by_name(
    template: Template, core: Any
) -> None:
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.glue"],
                "detail-type": ["Glue Job State Change"],
                "detail": {
                    "jobName": sorted(core.glue_job_names.values()),
                    "state": ["FAILED", "TIMEOUT", "ERROR"],
                },
            },
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Ref": logical_id(core.alerts.topic)},
                        "InputTransformer": Match.any_value(),
                    }
                )
            ],
        },
    )


def test_live_drift_alarm_watches_the_serving_windows_median(
    alarms: dict[str, dict[str, Any]], settings: Any
) -> None:
    drift = alarms["live-drift"]
    assert (drift["Namespace"], drift["MetricName"], drift["ExtendedStatistic"]) == (
        "ChurnOps",
        "LiveMaxFeaturePSI",
        "p50",
    )
    assert drift["Threshold"] == settings.drift_psi_threshold
    assert drift["ComparisonOperator"] == "GreaterThanThreshold"
    assert drift["Period"] == settings.drift_period_hours * 3600


def test_live_drift_alarm_watches_the_metric_as_the_serving_function_publishes_it(
    alarms: dict[str, dict[str, Any]], template: Template, core: Any, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    from churnops.wiring import LIVE_DRIFT_METRIC

    # GIVEN the serving function's environment as deployed
    function = template.to_json()["Resources"][logical_id(core.serving.function)]
    environment = function["Properties"]["Environment"]["Variables"]
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE"):
        monkeypatch.setenv(name, environment[name])
    # WHEN Powertools publishes a live drift datapoint there, as the handler does
    capsys.readouterr()
    metrics = Metrics()
    metrics.add_metric(name=LIVE_DRIFT_METRIC, unit=MetricUnit.NoUnit, value=0.3)
    metrics.flush_metrics()
    [emf] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    [directive] = emf["_aws"]["CloudWatchMetrics"]
    published = {name: emf[name] for names in directive["Dimensions"] for name in names}
    # THEN the alarm watches exactly that namespace, name and dimensions
    drift = alarms["live-drift"]
    assert drift["Namespace"] == directive["Namespace"]
    assert drift["MetricName"] in {m["Name"] for m in directive["Metrics"]}
    assert {d["Name"]: d["Value"] for d in drift["Dimensions"]} == published


def test_snapshot_drift_alarm_watches_the_retrains_own_report(
    alarms: dict[str, dict[str, Any]], settings: Any
) -> None:
    drift = alarms["snapshot-drift"]
    assert (drift["Namespace"], drift["MetricName"], drift["Statistic"]) == (
        "ChurnOps",
        "SnapshotMaxFeaturePSI",
        "Maximum",
    )
    assert "Dimensions" not in drift
    assert drift["Threshold"] == settings.drift_psi_threshold


def test_drift_alarm_starts_the_retrain_state_machine(template: Template, core: Any) -> None:
    retrain = {"Ref": logical_id(core.stand_in_machines["retrain"])}
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "State": "ENABLED",
            "EventPattern": {
                "source": ["aws.cloudwatch"],
                "detail-type": ["CloudWatch Alarm State Change"],
                "resources": [{"Fn::GetAtt": [logical_id(core.monitoring.drift_alarm), "Arn"]}],
                "detail": {"state": {"value": ["ALARM"]}},
            },
            "Targets": [
                Match.object_like(
                    {
                        "Arn": retrain,
                        "RoleArn": Match.any_value(),
                        "InputTransformer": Match.object_like(
                            {"InputTemplate": Match.string_like_regexp("drift-alarm")}
                        ),
                    }
                )
            ],
        },
    )
    # The rule's role may start that state machine and nothing else.
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": [
                    {"Action": "states:StartExecution", "Effect": "Allow", "Resource": retrain}
                ]
            }
        },
    )


def test_promotions_are_forwarded_to_the_alert_topic(template: Template, core: Any) -> None:
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {"source": [EVENT_SOURCE], "detail-type": [EVENT_PROMOTED]},
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Ref": logical_id(core.alerts.topic)},
                        "InputTransformer": Match.object_like(
                            {
                                "InputPathsMap": Match.object_like(
                                    {"detail-version": "$.detail.version"}
                                )
                            }
                        ),
                    }
                )
            ],
        },
    )


def test_encrypted_topic_lets_cloudwatch_and_eventbridge_publish(
    template: Template, core: Any
) -> None:
    key = logical_id(core.alerts.key)
    template.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}}
    )
    policy = template.to_json()["Resources"][key]["Properties"]["KeyPolicy"]["Statement"]
    principals = {s["Principal"]["Service"] for s in policy if "Service" in s.get("Principal", {})}
    assert {"cloudwatch.amazonaws.com", "events.amazonaws.com"} <= principals


def test_topic_policy_lets_this_accounts_alarms_and_rules_publish(
    template: Template, core: Any
) -> None:
    # Any topic policy replaces SNS's default one, which is what alarms relied on.
    topic = {"Ref": logical_id(core.alerts.topic)}
    policies = [
        p["Properties"]
        for p in template.find_resources("AWS::SNS::TopicPolicy").values()
        if topic in p["Properties"]["Topics"]
    ]
    (policy,) = policies
    allowed = {
        s["Principal"]["Service"]: s
        for s in policy["PolicyDocument"]["Statement"]
        if s["Effect"] == "Allow" and "Service" in s.get("Principal", {})
    }
    assert set(allowed) == {"cloudwatch.amazonaws.com", "events.amazonaws.com"}
    assert allowed["cloudwatch.amazonaws.com"]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }
    denies = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert denies and denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_one_dashboard_shows_the_pipeline(template: Template, core: Any) -> None:
    dashboards = template.find_resources("AWS::CloudWatch::Dashboard")
    assert len(dashboards) == 1
    body = json.dumps(next(iter(dashboards.values()))["Properties"]["DashboardBody"])
    needles = ("LiveMaxFeaturePSI", "SnapshotMaxFeaturePSI", "ServiceIntegrationsFailed")
    for needle in (*needles, "5XXError", "ExecutionsFailed"):
        assert needle in body, needle
    # The alarm status widget lists every alarm.
    for name, alarm in core.monitoring.alarms.items():
        assert logical_id(alarm) in body, name
