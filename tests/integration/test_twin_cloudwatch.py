"""CloudWatch in the twin (churnops/local/moto_ext/cloudwatch.py): what a function logs in the
embedded metric format becomes metric data, the template's alarms are provisioned, and alarms are
evaluated as CloudWatch evaluates them, with SNS notifications and EventBridge events.

AWS facts these tests hold the twin to:
- EMF: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
  (a directive's Namespace, each DimensionSet a metric of its own, values from root members, at
  most 100 values, dimension values strings of at most 1024 characters, Unit defaulting to None).
- Alarm evaluation, M out of N and missing data, the two documented tables verbatim:
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html
- A new alarm starts INSUFFICIENT_DATA; an updated one keeps its state:
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html
- The state change event on the default bus, with the alarm's ARN in `resources`:
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-and-eventbridge.html
The twin's one deviation: periods slide back from the evaluation instant (tests pass `now`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/churnops-twin-execution"
OK, ALARM, INSUFFICIENT = "OK", "ALARM", "INSUFFICIENT_DATA"

HANDLERS = '''
import boto3
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit


def publish(event, context):
    """Try PutMetricData as the function's role, then log the metrics in EMF as Powertools does."""
    direct = "allowed"
    try:
        boto3.client("cloudwatch").put_metric_data(
            Namespace=event["namespace"], MetricData=[{"MetricName": "Direct", "Value": 1.0}]
        )
    except Exception as err:
        direct = getattr(err, "response", {}).get("Error", {}).get("Code") or type(err).__name__
    metrics = Metrics(namespace=event["namespace"], service="churnops-serving")
    metrics.add_dimension(name="ModelVersion", value="v7")
    metrics.add_dimension(name="Role", value="candidate")
    metrics.add_dimensions(service="churnops-serving", Role="candidate")
    metrics.add_metric(name="VersionErrors", unit=MetricUnit.Count, value=event["errors"])
    metrics.add_metric(name="VersionLatency", unit=MetricUnit.Milliseconds, value=12.5)
    metrics.flush_metrics()
    return {"direct": direct}
'''


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _cloudwatch() -> Any:
    from churnops.aws import client

    return client("cloudwatch")


def _put(
    namespace: str,
    metric: str,
    values: list[float],
    at: dt.datetime,
    dimensions: dict[str, str] | None = None,
) -> None:
    _cloudwatch().put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": metric,
                "Values": values,
                "Timestamp": at,
                "Dimensions": [{"Name": k, "Value": v} for k, v in (dimensions or {}).items()],
            }
        ],
    )


def _alarm(namespace: str, metric: str = "Errors", **settings: Any) -> str:
    name = _unique("alarm-")
    parameters: dict[str, Any] = {
        "AlarmName": name,
        "Namespace": namespace,
        "MetricName": metric,
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 5.0,
        "ComparisonOperator": "GreaterThanThreshold",
        **({} if "ExtendedStatistic" in settings else {"Statistic": "Sum"}),
        **settings,
    }
    _cloudwatch().put_metric_alarm(**parameters)
    return name


def _described(name: str) -> dict[str, Any]:
    (alarm,) = _cloudwatch().describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return alarm  # type: ignore[no-any-return]


def _state(name: str) -> str:
    return str(_described(name)["StateValue"])


def _evaluate(now: dt.datetime) -> dict[str, Any]:
    from churnops.local.moto_ext import evaluate_alarms

    return {change.alarm_name: change for change in evaluate_alarms(now=now)}


def _statistics(namespace: str, metric: str, dimensions: dict[str, str]) -> list[dict[str, Any]]:
    now = _now()
    return _cloudwatch().get_metric_statistics(  # type: ignore[no-any-return]
        Namespace=namespace,
        MetricName=metric,
        Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
        StartTime=now - dt.timedelta(hours=1),
        EndTime=now + dt.timedelta(minutes=5),
        Period=3600,
        Statistics=["Sum", "SampleCount", "Maximum"],
    )["Datapoints"]


def _emf(namespace: str, **root: Any) -> dict[str, Any]:
    """A document shaped as aws-lambda-powertools writes it (two dimension sets, array values)."""
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["ModelVersion", "Role", "service"], ["service", "Role"]],
                    "Metrics": [
                        {"Name": "VersionLatency", "Unit": "Milliseconds"},
                        {"Name": "VersionErrors", "Unit": "Count"},
                    ],
                }
            ],
        },
        "ModelVersion": "v2",
        "Role": "candidate",
        "service": "churnops-serving",
        "rollout_id": "r-1",
        "VersionLatency": [12.5, 30.0],
        "VersionErrors": [0.0, 1.0],
        **root,
    }


# ---- EMF -> metric data ----------------------------------------------------------------------------


def test_an_emf_document_becomes_metrics_under_each_dimension_set(moto_ext) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.cloudwatch import put_embedded_metrics

    namespace = _unique("Emf")
    # WHEN CloudWatch Logs meets one EMF log event
    stored = put_embedded_metrics(_emf(namespace), account=ACCOUNT, region=REGION)
    # THEN every value of both metrics is stored once per dimension set
    assert stored == 8
    for dimensions in (
        {"service": "churnops-serving", "Role": "candidate", "ModelVersion": "v2"},
        {"service": "churnops-serving", "Role": "candidate"},
    ):
        (latency,) = _statistics(namespace, "VersionLatency", dimensions)
        assert (latency["Sum"], latency["SampleCount"], latency["Maximum"]) == (42.5, 2.0, 30.0)
        assert latency["Unit"] == "Milliseconds"
        (errors,) = _statistics(namespace, "VersionErrors", dimensions)
        assert (errors["Sum"], errors["Unit"]) == (1.0, "Count")
    # the members no directive names (rollout_id) are no metric or dimension
    listed = _cloudwatch().list_metrics(Namespace=namespace)["Metrics"]
    assert {m["MetricName"] for m in listed} == {"VersionLatency", "VersionErrors"}
    assert all("rollout_id" not in {d["Name"] for d in m["Dimensions"]} for m in listed)


def test_an_emf_metric_without_a_unit_is_unit_none_and_an_empty_dimension_set_has_none(
    moto_ext,
) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.cloudwatch import metric_data_from_emf

    document = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {"Namespace": "N", "Dimensions": [[]], "Metrics": [{"Name": "Score"}]}
            ],
        },
        "Score": 0.25,
    }
    ((namespace, (datum,)),) = metric_data_from_emf(document)
    assert namespace == "N"
    assert (datum["Dimensions"], datum["Values"]) == ([], [0.25])
    assert (datum["Unit"], datum["StorageResolution"]) == ("None", 60)


def _breaking(change: str) -> dict[str, Any]:
    """A valid document broken in one way the specification forbids."""
    document = _emf("EmfInvalid")
    directive = document["_aws"]["CloudWatchMetrics"][0]
    if change == "no timestamp":
        del document["_aws"]["Timestamp"]
    elif change == "no CloudWatchMetrics":
        del document["_aws"]["CloudWatchMetrics"]
    elif change == "metric target missing":
        del document["VersionErrors"]
    elif change == "metric target a string":
        document["VersionErrors"] = "1"
    elif change == "metric target a boolean":
        document["VersionErrors"] = True
    elif change == "101 values":
        document["VersionErrors"] = [1.0] * 101
    elif change == "dimension target missing":
        del document["Role"]
    elif change == "dimension target a number":
        document["Role"] = 3
    elif change == "dimension value over 1024 characters":
        document["Role"] = "r" * 1025
    elif change == "31 dimension keys":
        for index in range(31):
            document[f"d{index}"] = "x"
        directive["Dimensions"] = [[f"d{index}" for index in range(31)]]
    elif change == "unknown unit":
        directive["Metrics"][0]["Unit"] = "Furlongs"
    elif change == "storage resolution 5":
        directive["Metrics"][0]["StorageResolution"] = 5
    elif change == "no namespace":
        del directive["Namespace"]
    elif change == "nested target":
        del document["VersionErrors"]
        document["Version"] = {"Errors": 1.0}
        directive["Metrics"][1]["Name"] = "Version.Errors"
    else:  # pragma: no cover - the parametrization names every change
        raise AssertionError(change)
    return document


@pytest.mark.parametrize(
    "change",
    [
        "no timestamp",
        "no CloudWatchMetrics",
        "metric target missing",
        "metric target a string",
        "metric target a boolean",
        "101 values",
        "dimension target missing",
        "dimension target a number",
        "dimension value over 1024 characters",
        "31 dimension keys",
        "unknown unit",
        "storage resolution 5",
        "no namespace",
        "nested target",
    ],
)
def test_an_invalid_emf_document_is_ignored_with_a_log_line(
    moto_ext, change: str, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.cloudwatch import put_embedded_metrics

    document = _breaking(change)
    namespace = _unique("EmfInvalid")
    if "Namespace" in document["_aws"].get("CloudWatchMetrics", [{}])[0]:
        document["_aws"]["CloudWatchMetrics"][0]["Namespace"] = namespace
    with caplog.at_level(logging.WARNING, logger="churnops.twin.moto_ext"):
        stored = put_embedded_metrics(document, account=ACCOUNT, region=REGION)
    assert stored == 0
    assert any("embedded metric format document ignored" in r.message for r in caplog.records)
    assert _cloudwatch().list_metrics(Namespace=namespace)["Metrics"] == []


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cloudwatch_root")
    (root / "cloudwatch_handlers.py").write_text(textwrap.dedent(HANDLERS))
    return root


@pytest.fixture(scope="module")
def runner(moto_ext, task_root):  # type: ignore[no-untyped-def]
    from churnops.local import moto_ext as extension

    previous = extension.current_runner()
    swapped = extension.install(extension.TaskRunner(repo_root=task_root))
    yield swapped
    extension.install(previous)


def test_a_sandboxed_function_logging_emf_produces_metrics_without_its_role(runner) -> None:  # type: ignore[no-untyped-def]
    """CloudWatch Logs extracts the metrics on its own account: a function whose role may not
    call PutMetricData (and is refused when it tries) still gets its logged metrics."""
    from moto.awslambda.models import lambda_backends

    from churnops.aws import client
    from churnops.local.moto_ext import iam as moto_iam
    from churnops.local.moto_ext.awslambda import invoke_function

    namespace = _unique("Serving")
    role = client("iam").create_role(
        RoleName=_unique("no-grants-"),
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    name = _unique("emf-")
    client("lambda").create_function(
        FunctionName=name,
        Role=role,
        PackageType="Image",
        Code={"ImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/churnops:test"},
        ImageConfig={"Command": ["cloudwatch_handlers.publish"]},
        Timeout=60,
        MemorySize=512,
    )
    function = lambda_backends[ACCOUNT][REGION].get_function(name)
    # WHEN it runs as its role with the twin authorizing every request
    runner.assume_role = moto_iam.assume_role_as_service
    moto_iam.enforce_iam()
    try:
        payload, error = invoke_function(function, {"namespace": namespace, "errors": 3})
    finally:
        moto_iam.stop_enforcing()
        runner.assume_role = None
    # THEN its own PutMetricData is refused, and what it logged is metrics all the same
    assert error is None, payload
    assert json.loads(payload) == {"direct": "AccessDenied"}
    deadline = time.monotonic() + 30
    errors: list[dict[str, Any]] = []
    while not errors and time.monotonic() < deadline:
        errors = _statistics(
            namespace, "VersionErrors", {"service": "churnops-serving", "Role": "candidate"}
        )
        time.sleep(0.2)
    assert [(e["Sum"], e["Unit"]) for e in errors] == [(3.0, "Count")]
    (latency,) = _statistics(
        namespace,
        "VersionLatency",
        {"service": "churnops-serving", "Role": "candidate", "ModelVersion": "v7"},
    )
    assert latency["Maximum"] == 12.5
    listed = _cloudwatch().list_metrics(Namespace=namespace)["Metrics"]
    assert "Direct" not in {m["MetricName"] for m in listed}


# ---- alarms: creation, evaluation ---------------------------------------------------------------


def test_a_new_alarm_is_insufficient_data_and_an_update_keeps_its_state(moto_ext) -> None:  # type: ignore[no-untyped-def]
    namespace = _unique("Create")
    name = _alarm(namespace)
    assert _state(name) == INSUFFICIENT
    _cloudwatch().set_alarm_state(AlarmName=name, StateValue=ALARM, StateReason="set by a test")
    # WHEN the alarm is updated (same name, another threshold)
    _cloudwatch().put_metric_alarm(
        AlarmName=name,
        Namespace=namespace,
        MetricName="Errors",
        Period=60,
        EvaluationPeriods=1,
        Threshold=9.0,
        ComparisonOperator="GreaterThanThreshold",
        Statistic="Sum",
    )
    described = _described(name)
    assert (described["StateValue"], described["StateReason"]) == (ALARM, "set by a test")
    assert described["Threshold"] == 9.0


def test_sum_above_the_threshold_alarms_with_a_reason_then_returns_to_ok(moto_ext) -> None:  # type: ignore[no-untyped-def]
    namespace = _unique("Sum")
    name = _alarm(namespace, TreatMissingData="notBreaching")
    now = _now()
    # GIVEN 3 + 4 errors in the last minute, above the threshold of 5
    _put(namespace, "Errors", [3.0, 4.0], now - dt.timedelta(seconds=10))
    # WHEN the alarm is evaluated
    change = _evaluate(now)[name]
    # THEN ALARM, with CloudWatch's reason and reason data
    assert (change.previous_state, change.state) == (INSUFFICIENT, ALARM)
    described = _described(name)
    assert described["StateValue"] == ALARM
    assert described["StateReason"].startswith(
        "Threshold Crossed: 1 out of the last 1 datapoints [7.0 ("
    )
    assert "was greater than the threshold (5.0)" in described["StateReason"]
    assert "INSUFFICIENT_DATA -> ALARM transition" in described["StateReason"]
    data = json.loads(described["StateReasonData"])
    assert (data["statistic"], data["period"], data["recentDatapoints"]) == ("Sum", 60, [7.0])
    assert data["evaluatedDatapoints"][0]["sampleCount"] == 2.0
    # AND a second evaluation changes nothing
    assert name not in _evaluate(now + dt.timedelta(seconds=1))
    # WHEN later minutes hold 1 error (the 7 has left the evaluation range)
    later = now + dt.timedelta(minutes=4)
    _put(namespace, "Errors", [1.0], later - dt.timedelta(seconds=5))
    change = _evaluate(later)[name]
    # THEN back to OK
    assert (change.previous_state, change.state) == (ALARM, OK)
    assert "was not greater than the threshold (5.0)" in _described(name)["StateReason"]


@pytest.mark.parametrize(
    ("statistic", "expected"),
    [("SampleCount", 4.0), ("Sum", 16.0), ("Average", 4.0), ("Minimum", 1.0), ("Maximum", 10.0)],
)
def test_each_statistic_is_computed_over_the_period(
    moto_ext, statistic: str, expected: float
) -> None:  # type: ignore[no-untyped-def]
    namespace = _unique("Stat")
    at = {
        "Statistic": statistic,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "Threshold": expected,
    }
    reaches = _alarm(namespace, **at)
    short = _alarm(namespace, **{**at, "Threshold": expected + 0.5})
    now = _now()
    _put(namespace, "Errors", [1.0, 2.0, 3.0, 10.0], now - dt.timedelta(seconds=20))
    _evaluate(now)
    assert (_state(reaches), _state(short)) == (ALARM, OK)


def test_a_p99_alarm_ranks_the_raw_values(moto_ext) -> None:  # type: ignore[no-untyped-def]
    namespace = _unique("P99")
    values = [float(v) for v in range(1, 101)]  # p99 (nearest rank) is 99, the maximum 100
    common = {"ExtendedStatistic": "p99", "ComparisonOperator": "GreaterThanOrEqualToThreshold"}
    reaches = _alarm(namespace, "Latency", **common, Threshold=99.0)
    above = _alarm(namespace, "Latency", **common, Threshold=99.5)
    median = _alarm(
        namespace,
        "Latency",
        ExtendedStatistic="p50",
        ComparisonOperator="LessThanOrEqualToThreshold",
        Threshold=50.0,
    )
    now = _now()
    _put(namespace, "Latency", values, now - dt.timedelta(seconds=30))
    _evaluate(now)
    assert (_state(reaches), _state(above), _state(median)) == (ALARM, OK, ALARM)
    assert _described(reaches)["ExtendedStatistic"] == "p99"
    assert "[99.0 (" in _described(reaches)["StateReason"]


def test_an_alarm_sees_only_its_exact_dimensions(moto_ext) -> None:  # type: ignore[no-untyped-def]
    namespace = _unique("Dims")
    role = {"service": "churnops-serving", "Role": "candidate"}
    name = _alarm(
        namespace,
        "VersionErrors",
        Dimensions=[{"Name": k, "Value": v} for k, v in role.items()],
        Threshold=0.0,
        TreatMissingData="notBreaching",
    )
    now = _now()
    # GIVEN errors only under one more dimension: another metric
    _put(namespace, "VersionErrors", [5.0], now - dt.timedelta(seconds=5), {**role, "X": "y"})
    _evaluate(now)
    assert _state(name) == OK
    # WHEN they are also published under exactly the alarm's dimensions
    _put(namespace, "VersionErrors", [5.0], now - dt.timedelta(seconds=5), role)
    _evaluate(now)
    assert _state(name) == ALARM


# The documented tables (AlarmThatSendsEmail.html, "How alarm state is evaluated when data is
# missing"): Evaluation Periods 3, evaluation range 5, the most recent datapoint on the right;
# 0 not breaching, X breaching, - missing. None: the state is retained.
_TABLES = [
    (3, "0 - X - X", (OK, OK, OK, OK)),
    (3, "0 - - - -", (OK, OK, OK, OK)),
    (3, "- - - - -", (INSUFFICIENT, None, ALARM, OK)),
    (3, "0 X X - X", (ALARM, ALARM, ALARM, ALARM)),
    (3, "- - X - -", (ALARM, None, ALARM, OK)),
    (2, "0 - X - X", (ALARM, ALARM, ALARM, ALARM)),
    (2, "0 0 X 0 X", (ALARM, ALARM, ALARM, ALARM)),
    (2, "0 - X - -", (OK, OK, ALARM, OK)),
    (2, "- - - - 0", (OK, OK, ALARM, OK)),
    (2, "- - - X -", (ALARM, None, ALARM, OK)),
]
_TREATMENTS = ("missing", "ignore", "breaching", "notBreaching")


@pytest.mark.parametrize(
    ("to_alarm", "points", "treatment", "expected", "before"),
    [
        pytest.param(
            m, points, treatment, outcome, before, id=f"{m}of3 {points} {treatment} {before}"
        )
        for m, points, outcomes in _TABLES
        for treatment, outcome in zip(_TREATMENTS, outcomes, strict=True)
        # a retained state is checked from two states it could be mistaken for
        for before in ((INSUFFICIENT, OK) if outcome is None else (INSUFFICIENT,))
    ],
)
def test_m_out_of_n_and_missing_data_as_documented(
    moto_ext, to_alarm: int, points: str, treatment: str, expected: str | None, before: str
) -> None:  # type: ignore[no-untyped-def]
    namespace = _unique("Table")
    name = _alarm(
        namespace,
        Statistic="Maximum",
        Threshold=10.0,
        EvaluationPeriods=3,
        DatapointsToAlarm=to_alarm,
        TreatMissingData=treatment,
    )
    if before != INSUFFICIENT:
        _cloudwatch().set_alarm_state(AlarmName=name, StateValue=before, StateReason="before")
    now = _now()
    slots = points.split()
    for index, point in enumerate(slots):
        age = len(slots) - index  # the newest is 1 period old: (now - 60 s, now]
        if point != "-":
            at = now - dt.timedelta(seconds=60 * age - 30)
            _put(namespace, "Errors", [20.0 if point == "X" else 1.0], at)
    _evaluate(now)
    assert _state(name) == (before if expected is None else expected)


def test_ignore_keeps_an_alarm_in_alarm_while_data_is_missing(moto_ext) -> None:  # type: ignore[no-untyped-def]
    namespace = _unique("Ignore")
    name = _alarm(namespace, TreatMissingData="ignore")
    now = _now()
    _put(namespace, "Errors", [9.0], now - dt.timedelta(seconds=5))
    _evaluate(now)
    assert _state(name) == ALARM
    # long after, no data at all: the state is kept, not INSUFFICIENT_DATA
    assert name not in _evaluate(now + dt.timedelta(hours=1))
    assert _state(name) == ALARM


def test_a_metric_math_alarm_is_left_insufficient_data(moto_ext) -> None:  # type: ignore[no-untyped-def]
    namespace = _unique("Math")
    math_alarm = _unique("math-")
    _cloudwatch().put_metric_alarm(
        AlarmName=math_alarm,
        EvaluationPeriods=1,
        Threshold=0.0,
        ComparisonOperator="GreaterThanThreshold",
        Metrics=[
            {
                "Id": "errors",
                "MetricStat": {
                    "Metric": {"Namespace": namespace, "MetricName": "Errors"},
                    "Period": 60,
                    "Stat": "Sum",
                },
                "ReturnData": False,
            },
            {"Id": "doubled", "Expression": "errors * 2", "ReturnData": True},
        ],
    )
    now = _now()
    _put(namespace, "Errors", [4.0], now - dt.timedelta(seconds=5))
    assert math_alarm not in _evaluate(now)
    assert _state(math_alarm) == INSUFFICIENT


# ---- state changes: SNS actions and the EventBridge event ------------------------------------------


def _queue_on(topic_arn: str) -> str:
    from churnops.aws import client

    sqs = client("sqs")
    url = sqs.create_queue(QueueName=_unique("alarm-notes-"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn)
    return str(url)


def _pass_machine() -> str:
    from churnops.aws import client

    return str(
        client("stepfunctions").create_state_machine(
            name=_unique("on-alarm-"),
            definition=json.dumps(
                {"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}}
            ),
            roleArn=ROLE,
        )["stateMachineArn"]
    )


def _outputs(machine: str, count: int) -> list[dict[str, Any]]:
    from churnops.aws import client

    sfn = client("stepfunctions")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        executions = sfn.list_executions(stateMachineArn=machine)["executions"]
        done = [e for e in executions if e["status"] != "RUNNING"]
        if len(done) >= count:
            return [
                json.loads(sfn.describe_execution(executionArn=e["executionArn"])["output"])
                for e in done
            ]
        time.sleep(0.2)
    raise AssertionError(f"{machine}: fewer than {count} executions finished")


def test_a_state_change_notifies_its_topic_and_reaches_a_rule_on_the_default_bus(moto_ext) -> None:  # type: ignore[no-untyped-def]
    from churnops.aws import client

    namespace = _unique("Events")
    topic = client("sns").create_topic(Name=_unique("alerts-"))["TopicArn"]
    queue = _queue_on(topic)
    name = _alarm(
        namespace,
        AlarmActions=[topic],
        AlarmDescription="too many errors",
        Dimensions=[{"Name": "Role", "Value": "candidate"}],
    )
    alarm_arn = _described(name)["AlarmArn"]
    machine = _pass_machine()
    # GIVEN a rule like the drift alarm's: this alarm's ARN going into ALARM starts a state machine
    rule = _unique("on-alarm-")
    client("events").put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.cloudwatch"],
                "detail-type": ["CloudWatch Alarm State Change"],
                "resources": [alarm_arn],
                "detail": {"state": {"value": ["ALARM"]}},
            }
        ),
    )
    client("events").put_targets(Rule=rule, Targets=[{"Id": "sm", "Arn": machine}])
    now = _now()
    _put(namespace, "Errors", [6.0], now - dt.timedelta(seconds=5), {"Role": "candidate"})
    # WHEN the alarm is evaluated into ALARM
    assert _evaluate(now)[name].state == ALARM
    # THEN the rule's target got the event as CloudWatch shapes it
    (event,) = _outputs(machine, 1)
    assert (event["source"], event["detail-type"]) == (
        "aws.cloudwatch",
        "CloudWatch Alarm State Change",
    )
    assert event["resources"] == [alarm_arn]
    detail = event["detail"]
    assert detail["alarmName"] == name
    assert detail["state"]["value"] == ALARM
    assert detail["state"]["reason"].startswith("Threshold Crossed")
    assert detail["previousState"]["value"] == INSUFFICIENT
    assert detail["configuration"]["description"] == "too many errors"
    metric_stat = detail["configuration"]["metrics"][0]["metricStat"]
    assert metric_stat["metric"] == {
        "name": "Errors",
        "namespace": namespace,
        "dimensions": {"Role": "candidate"},
    }
    assert (metric_stat["period"], metric_stat["stat"]) == (60, "Sum")
    # AND the topic among its ALARM actions was notified
    messages = client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    (note,) = [json.loads(json.loads(m["Body"])["Message"]) for m in messages]
    assert (note["AlarmName"], note["NewStateValue"], note["OldStateValue"]) == (
        name,
        ALARM,
        INSUFFICIENT,
    )
    assert note["Trigger"]["Namespace"] == namespace
    # AND the way back to OK matches no rule state ALARM and notifies no OK action (none set)
    later = now + dt.timedelta(minutes=10)
    assert _evaluate(later)[name].state == INSUFFICIENT
    time.sleep(0.5)
    assert len(client("stepfunctions").list_executions(stateMachineArn=machine)["executions"]) == 1
    assert "Messages" not in client("sqs").receive_message(QueueUrl=queue, WaitTimeSeconds=0)


def test_the_evaluator_thread_evaluates_until_stopped(moto_ext) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext import AlarmEvaluator

    namespace = _unique("Thread")
    name = _alarm(namespace)
    evaluator = AlarmEvaluator(0.1).start()
    try:
        _put(namespace, "Errors", [50.0], _now())
        deadline = time.monotonic() + 20
        while _state(name) != ALARM and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _state(name) == ALARM
    finally:
        evaluator.stop()
    assert not evaluator.running


# ---- provisioning the template's alarms -----------------------------------------------------------


@pytest.fixture(scope="module")
def provisioned(moto_ext, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A small stack synthesized by CDK with the rollout's kind of alarms (static dimensions,
    Sum and p99), a metric math alarm, an alert topic and a rule on one alarm's ARN."""
    import aws_cdk as cdk
    from aws_cdk import Duration
    from aws_cdk import aws_cloudwatch as cloudwatch
    from aws_cdk import aws_cloudwatch_actions as cw_actions
    from aws_cdk import aws_events as events
    from aws_cdk import aws_events_targets as targets
    from aws_cdk import aws_sns as sns
    from aws_cdk import aws_stepfunctions as sfn

    from churnops.local.provision import Provisioner

    namespace = _unique("Rollout")
    suffix = uuid.uuid4().hex[:6]
    out = tmp_path_factory.mktemp("cloudwatch_cdk_out")
    app = cdk.App(outdir=str(out))
    stack = cdk.Stack(app, "TwinCloudWatch", env=cdk.Environment(account=ACCOUNT, region=REGION))
    topic = sns.Topic(stack, "Alerts")
    dimensions = {"service": "churnops-serving", "Role": "candidate"}
    errors = cloudwatch.Alarm(
        stack,
        "CandidateErrors",
        alarm_name=f"candidate-errors-{suffix}",
        metric=cloudwatch.Metric(
            namespace=namespace,
            metric_name="VersionErrors",
            dimensions_map=dimensions,
            statistic="Sum",
            period=Duration.minutes(1),
        ),
        threshold=0,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    errors.add_alarm_action(cw_actions.SnsAction(topic))
    cloudwatch.Alarm(
        stack,
        "CandidateLatency",
        metric=cloudwatch.Metric(
            namespace=namespace,
            metric_name="VersionLatency",
            dimensions_map=dimensions,
            statistic="p99",
            period=Duration.minutes(1),
        ),
        threshold=500,
        evaluation_periods=3,
        datapoints_to_alarm=2,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    cloudwatch.Alarm(
        stack,
        "ErrorRate",
        metric=cloudwatch.MathExpression(
            expression="errors / 2",
            using_metrics={
                "errors": cloudwatch.Metric(
                    namespace=namespace, metric_name="VersionErrors", dimensions_map=dimensions
                )
            },
            period=Duration.minutes(1),
        ),
        threshold=1,
        evaluation_periods=1,
    )
    machine = sfn.StateMachine(
        stack,
        "OnCandidateErrors",
        definition_body=sfn.DefinitionBody.from_chainable(sfn.Pass(stack, "Echo")),
    )
    events.Rule(
        stack,
        "CandidateErrorsRule",
        event_pattern=events.EventPattern(
            source=["aws.cloudwatch"],
            detail_type=["CloudWatch Alarm State Change"],
            resources=[errors.alarm_arn],
            detail={"state": {"value": ["ALARM"]}},
        ),
        targets=[targets.SfnStateMachine(machine)],
    )
    app.synth()
    template = json.loads((out / "TwinCloudWatch.template.json").read_text())
    layout = Provisioner(
        template, cdk_out=out, repo_root=out, database=None, stack_name="TwinCloudWatch"
    ).provision()
    return namespace, template, layout


def _logical(layout: Any, construct: str) -> str:
    return next(lid for lid in layout.alarms if lid.startswith(construct))


def test_provisioning_creates_every_alarm_of_the_template(provisioned) -> None:  # type: ignore[no-untyped-def]
    namespace, template, layout = provisioned
    in_template = {
        lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert set(layout.alarms) == in_template and len(in_template) == 3
    errors = _described(layout.alarms[_logical(layout, "CandidateErrors")])
    assert errors["AlarmName"].startswith("candidate-errors-")
    assert (errors["Namespace"], errors["MetricName"], errors["Statistic"]) == (
        namespace,
        "VersionErrors",
        "Sum",
    )
    assert sorted((d["Name"], d["Value"]) for d in errors["Dimensions"]) == [
        ("Role", "candidate"),
        ("service", "churnops-serving"),
    ]
    assert (errors["Period"], errors["EvaluationPeriods"], errors["Threshold"]) == (60, 1, 0.0)
    assert errors["ComparisonOperator"] == "GreaterThanThreshold"
    assert errors["TreatMissingData"] == "notBreaching"
    topic = layout.topics[next(iter(layout.topics))]
    assert errors["AlarmActions"] == [topic] and topic.startswith("arn:aws:sns:")
    assert errors["StateValue"] == INSUFFICIENT
    latency = _described(layout.alarms[_logical(layout, "CandidateLatency")])
    assert (latency["ExtendedStatistic"], latency.get("Statistic")) == ("p99", None)
    assert (latency["EvaluationPeriods"], latency["DatapointsToAlarm"]) == (3, 2)
    math = _described(layout.alarms[_logical(layout, "ErrorRate")])
    queries = {m["Id"]: m for m in math["Metrics"]}
    assert queries["errors"]["MetricStat"]["Metric"]["MetricName"] == "VersionErrors"
    assert [q["Expression"] for q in queries.values() if "Expression" in q] == ["errors / 2"]


def test_a_provisioned_alarm_fires_on_logged_metrics_and_its_rule_starts_the_machine(
    provisioned,
) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.moto_ext.cloudwatch import put_embedded_metrics

    namespace, _, layout = provisioned
    errors = layout.alarms[_logical(layout, "CandidateErrors")]
    latency = layout.alarms[_logical(layout, "CandidateLatency")]
    math = layout.alarms[_logical(layout, "ErrorRate")]
    # GIVEN the serving function logged one error for its candidate
    put_embedded_metrics(_emf(namespace, VersionErrors=[1.0]), account=ACCOUNT, region=REGION)
    # WHEN the alarms are evaluated
    changes = _evaluate(_now() + dt.timedelta(seconds=1))
    # THEN the errors alarm fires, the healthy latency one is OK, the math one is left alone
    assert changes[errors].state == ALARM
    assert (_state(latency), _state(math)) == (OK, INSUFFICIENT)
    machine = layout.state_machines[next(iter(layout.state_machines))]
    (event,) = _outputs(machine, 1)
    assert event["detail"]["alarmName"] == errors
    assert event["resources"] == [_described(errors)["AlarmArn"]]


@pytest.mark.parametrize(("setting", "expected"), [("ignore", INSUFFICIENT), ("evaluate", ALARM)])
def test_a_percentile_on_too_few_samples_is_ignored_only_when_asked(
    moto_ext, setting: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    """p99 needs 10/(1-0.99) = 1000 samples to be significant; 10 are too few."""
    namespace = _unique("LowSamples")
    name = _alarm(
        namespace,
        "Latency",
        ExtendedStatistic="p99",
        Threshold=1.0,
        EvaluateLowSampleCountPercentile=setting,
    )
    now = _now()
    _put(namespace, "Latency", [5.0] * 10, now - dt.timedelta(seconds=5))
    _evaluate(now)
    assert _state(name) == expected


@pytest.mark.parametrize(("raw", "seconds"), [(None, 5.0), ("", 5.0), ("0", 0.0), ("2.5", 2.5)])
def test_the_daemon_reads_its_alarm_interval(raw: str | None, seconds: float) -> None:
    from churnops.local.daemon import ALARM_SECONDS_ENV, alarm_seconds

    assert alarm_seconds({} if raw is None else {ALARM_SECONDS_ENV: raw}) == seconds


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_the_daemon_refuses_a_bad_alarm_interval(raw: str) -> None:
    from churnops.local.daemon import ALARM_SECONDS_ENV, alarm_seconds

    with pytest.raises(ValueError, match=ALARM_SECONDS_ENV):
        alarm_seconds({ALARM_SECONDS_ENV: raw})
