"""The twin's moto extension layer: Lambda tasks run our handlers with real error names, Glue `.sync`
runs a real script on local Spark, EventBridge delivers S3 events to a state machine, and a guard
that fails loudly when moto's internals move."""

from __future__ import annotations

import json
import shutil
import textwrap
import time
import uuid
from pathlib import Path

import pytest

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/churnops-twin-execution"

HANDLERS = '''
import json
import os
from pathlib import Path

from churnops.errors import NoChampionError


class FlakyDependencyError(Exception):
    """Fails the first calls, then succeeds: exercises Step Functions Retry."""


def score(event, context):
    return {
        "doubled": event["tenure"] * 2,
        "function": context.function_name,
        "threshold": os.environ["CHURN_THRESHOLD"],
        "remaining_ms_positive": context.get_remaining_time_in_millis() > 0,
    }


def no_champion(event, context):
    raise NoChampionError("the registry has no champion yet")


def record(event, context):
    target = Path(os.environ["RECORD_TO"])
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(event))
    partial.rename(target)  # the test polls for the file: it appears whole
    return {"recorded": True}


def flaky(event, context):
    counter = Path(os.environ["FLAKY_COUNTER"])
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls < 3:
        raise FlakyDependencyError(f"call {calls} failed")
    return {"calls": calls}
'''

TINY_JOB = """
import json
from pathlib import Path


def main(argv=None, spark=None):
    args = dict(zip(argv[::2], argv[1::2]))
    if args.get("--fail") == "yes":
        raise RuntimeError("bad input file")
    total = spark.createDataFrame([(n,) for n in range(1, 11)], ["tenure"]).groupBy().sum().collect()[0][0]
    Path(args["--out"]).write_text(json.dumps({"total": total, "job": args["--JOB_NAME"], "greeting": args["--greeting"]}))
    return {"total": total}


if __name__ == "__main__":
    main()
"""


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A repo-like root holding a handler package and a glue_jobs dir with a tiny job."""
    root = tmp_path_factory.mktemp("twin_repo")
    package = root / "twin_test_handlers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    (root / "glue_jobs").mkdir()
    (root / "glue_jobs" / "tiny_job.py").write_text(textwrap.dedent(TINY_JOB))
    return root


@pytest.fixture(scope="module")
def execution_role(aws_env):
    """moto checks that Lambda can assume a function's role, as AWS does: the twin's own role."""
    from churnops.local.provision import ensure_execution_role

    assert ensure_execution_role() == ROLE
    return ROLE


@pytest.fixture(scope="module")
def runner(moto_ext, sandbox, execution_role):
    """Swap the session runner for one rooted at the sandbox; put the session one back after."""
    from churnops.local import moto_ext as extension

    swapped = extension.install(extension.TaskRunner(repo_root=sandbox))
    yield swapped
    extension.install(moto_ext)


def _create_function(name: str, handler: str, env: dict[str, str] | None = None) -> str:
    from churnops.aws import client

    response = client("lambda").create_function(
        FunctionName=name,
        Role=ROLE,
        PackageType="Image",
        Code={"ImageUri": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/churnops-training:latest"},
        ImageConfig={"Command": [handler]},
        Environment={"Variables": env or {}},
        Timeout=60,
    )
    return response["FunctionArn"]


def _state_machine(definition: dict) -> str:
    from churnops.aws import client

    return client("stepfunctions").create_state_machine(
        name=_unique("sm"), definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]


def _run(state_machine_arn: str, payload: dict) -> dict:
    from churnops.aws import client

    sfn = client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=state_machine_arn, input=json.dumps(payload))[
        "executionArn"
    ]
    return _wait_execution(arn)


def _wait_execution(execution_arn: str, limit: float = 120.0) -> dict:
    from churnops.aws import client

    sfn = client("stepfunctions")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.2)
    raise AssertionError(f"execution {execution_arn} still RUNNING after {limit}s")


def _lambda_task(function_arn: str, **extra) -> dict:
    # The shape CDK's LambdaInvoke synthesizes (payload_response_only off, OutputPath on Payload).
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function_arn, "Payload.$": "$"},
        "OutputPath": "$.Payload",
        **extra,
    }


def test_lambda_task_runs_our_handler_with_its_environment(runner):
    # GIVEN an image function whose CMD names our handler and whose environment sets a threshold
    name = _unique("score")
    arn = _create_function(name, "twin_test_handlers.handlers.score", {"CHURN_THRESHOLD": "0.35"})
    sm = _state_machine({"StartAt": "Score", "States": {"Score": _lambda_task(arn, End=True)}})
    # WHEN the state machine runs it
    result = _run(sm, {"tenure": 21})
    # THEN the handler's own answer comes back, computed with the function's environment
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {
        "doubled": 42,
        "function": name,
        "threshold": "0.35",
        "remaining_ms_positive": True,
    }
    import os

    assert "CHURN_THRESHOLD" not in os.environ  # the function's environment does not leak


def test_catch_sees_the_exception_class_name(runner):
    arn = _create_function(_unique("nochamp"), "twin_test_handlers.handlers.no_champion")
    sm = _state_machine(
        {
            "StartAt": "Evaluate",
            "States": {
                "Evaluate": _lambda_task(
                    arn,
                    End=True,
                    Catch=[
                        {
                            "ErrorEquals": ["NoChampionError"],
                            "ResultPath": "$.error",
                            "Next": "FirstModel",
                        },
                        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Broken"},
                    ],
                ),
                "FirstModel": {
                    "Type": "Pass",
                    "Result": "first-model",
                    "ResultPath": "$.branch",
                    "End": True,
                },
                "Broken": {"Type": "Fail", "Error": "Unexpected"},
            },
        }
    )
    result = _run(sm, {"tenure": 1})
    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["branch"] == "first-model"
    assert output["error"]["Error"] == "NoChampionError"
    assert "no champion yet" in json.loads(output["error"]["Cause"])["errorMessage"]


def test_uncaught_handler_error_fails_the_execution_with_its_name(runner):
    arn = _create_function(_unique("nochamp"), "twin_test_handlers.handlers.no_champion")
    sm = _state_machine(
        {"StartAt": "Evaluate", "States": {"Evaluate": _lambda_task(arn, End=True)}}
    )
    result = _run(sm, {})
    assert result["status"] == "FAILED"
    assert result["error"] == "NoChampionError"


def test_retry_retries_a_named_error_until_it_succeeds(runner, tmp_path):
    counter = tmp_path / "calls"
    arn = _create_function(
        _unique("flaky"), "twin_test_handlers.handlers.flaky", {"FLAKY_COUNTER": str(counter)}
    )
    retry = [
        {
            "ErrorEquals": ["FlakyDependencyError"],
            "IntervalSeconds": 1,
            "MaxAttempts": 3,
            "BackoffRate": 1.0,
        }
    ]
    sm = _state_machine(
        {"StartAt": "Call", "States": {"Call": _lambda_task(arn, End=True, Retry=retry)}}
    )
    result = _run(sm, {})
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"calls": 3}
    assert counter.read_text() == "3"


def test_missing_function_is_resource_not_found(runner):
    from botocore.exceptions import ClientError

    from churnops.aws import client

    missing = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{_unique('missing')}"
    with pytest.raises(ClientError) as raised:
        client("lambda").invoke(FunctionName=missing, Payload=b"{}")
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"

    sm = _state_machine(
        {
            "StartAt": "Call",
            "States": {
                "Call": _lambda_task(
                    missing, End=True, Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]
                ),
                "Caught": {"Type": "Pass", "End": True},
            },
        }
    )
    result = _run(sm, {})
    assert result["status"] == "SUCCEEDED"
    assert json.loads(result["output"])["Error"] == "Lambda.ResourceNotFoundException"


def test_direct_invoke_reports_function_error(runner):
    from churnops.aws import client

    name = _unique("nochamp")
    _create_function(name, "twin_test_handlers.handlers.no_champion")
    response = client("lambda").invoke(FunctionName=name, Payload=b"{}")
    assert response["FunctionError"] == "Unhandled"
    assert json.loads(response["Payload"].read())["errorType"] == "NoChampionError"


def test_a_state_machine_starts_another_as_step_functions_does(runner):
    """`states:startExecution` with the definition's names (StateMachineArn, Name, Input as an
    object): the child runs with that input, and the task's result is named as Step Functions
    names it (ExecutionArn), where the retrain flow's hand-over to its rollout reads it."""
    from churnops.aws import client

    child = _state_machine({"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}})
    parent = _state_machine(
        {
            "StartAt": "Start",
            "States": {
                "Start": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::states:startExecution",
                    "Parameters": {
                        "StateMachineArn": child,
                        "Name.$": "States.Format('{}-{}', $.run, $.version)",
                        "Input": {"evaluate": {"Payload.$": "$.verdict"}},
                    },
                    "ResultPath": "$.started",
                    "End": True,
                }
            },
        }
    )
    done = _run(parent, {"run": "r1", "version": "v1", "verdict": {"promote": True}})
    assert done["status"] == "SUCCEEDED", done
    started = json.loads(done["output"])["started"]
    assert started["ExecutionArn"].endswith(":r1-v1")
    assert isinstance(started["StartDate"], int)
    child_run = _wait_execution(started["ExecutionArn"])
    assert json.loads(child_run["input"]) == {"evaluate": {"Payload": {"promote": True}}}
    assert (
        client("stepfunctions").describe_execution(executionArn=started["ExecutionArn"])["name"]
        == "r1-v1"
    )


@pytest.fixture(scope="module")
def glue_runner(moto_ext, sandbox, need_service, spark, execution_role):
    need_service(shutil.which("java") is not None, "Java (for local Spark)")
    from churnops.local import moto_ext as extension

    swapped = extension.install(
        extension.TaskRunner(repo_root=sandbox, spark_factory=lambda: spark)
    )
    yield swapped
    extension.install(moto_ext)


def _glue_state_machine(job_name: str) -> str:
    return _state_machine(
        {
            "StartAt": "Ingest",
            "States": {
                "Ingest": {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::glue:startJobRun.sync",
                    "Parameters": {"JobName": job_name, "Arguments": {"--fail.$": "$.fail"}},
                    "Catch": [
                        {
                            "ErrorEquals": ["States.TaskFailed"],
                            "ResultPath": "$.error",
                            "Next": "Alert",
                        }
                    ],
                    "End": True,
                },
                "Alert": {
                    "Type": "Pass",
                    "Result": "alerted",
                    "ResultPath": "$.alert",
                    "End": True,
                },
            },
        }
    )


def _create_glue_job(out: Path) -> str:
    from churnops.aws import client

    name = _unique("tiny")
    client("glue").create_job(
        Name=name,
        Role=ROLE,
        GlueVersion="5.0",
        Command={"Name": "glueetl", "ScriptLocation": "s3://cdk-assets/glue_jobs/tiny_job.py"},
        DefaultArguments={"--greeting": "hello", "--out": str(out)},
        ExecutionProperty={"MaxConcurrentRuns": 5},
    )
    return name


def test_glue_sync_task_runs_the_script_on_spark(glue_runner, tmp_path):
    from churnops.aws import client

    # GIVEN a Glue job whose script location maps to glue_jobs/tiny_job.py
    out = tmp_path / "out.json"
    job = _create_glue_job(out)
    # WHEN a state machine runs it with .sync
    result = _run(_glue_state_machine(job), {"fail": "no"})
    # THEN the script ran with DefaultArguments merged with the run's Arguments, and .sync waited
    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["JobRunState"] == "SUCCEEDED"
    assert output["JobName"] == job
    assert json.loads(out.read_text()) == {"total": 55, "job": job, "greeting": "hello"}
    run = client("glue").get_job_run(JobName=job, RunId=output["Id"])["JobRun"]
    assert run["JobRunState"] == "SUCCEEDED"
    assert run["Arguments"]["--fail"] == "no"


def test_failing_glue_run_fails_the_task_and_records_the_error(glue_runner, tmp_path):
    from churnops.aws import client

    job = _create_glue_job(tmp_path / "never.json")
    # a monitoring-style rule on Glue's own state-change events, delivering to a queue
    sqs = client("sqs")
    queue_url = sqs.create_queue(QueueName=_unique("glue-events"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    rule = _unique("glue-failed")
    client("events").put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.glue"],
                "detail-type": ["Glue Job State Change"],
                "detail": {"jobName": [job], "state": ["FAILED"]},
            }
        ),
    )
    client("events").put_targets(Rule=rule, Targets=[{"Id": "q", "Arn": queue_arn}])

    result = _run(_glue_state_machine(job), {"fail": "yes"})
    assert result["status"] == "SUCCEEDED", result  # caught
    output = json.loads(result["output"])
    assert output["alert"] == "alerted"
    assert output["error"]["Error"] == "States.TaskFailed"
    run = json.loads(output["error"]["Cause"])
    assert run["JobRunState"] == "FAILED"
    assert run["ErrorMessage"] == "RuntimeError: bad input file"
    runs = client("glue").get_job_runs(JobName=job)["JobRuns"]
    assert [r["JobRunState"] for r in runs] == ["FAILED"]
    assert not (tmp_path / "never.json").exists()
    (message,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    detail = json.loads(message["Body"])["detail"]
    assert (detail["jobRunId"], detail["state"]) == (run["Id"], "FAILED")
    assert detail["message"] == "RuntimeError: bad input file"


def test_glue_start_job_run_keeps_moto_checks(glue_runner):
    from botocore.exceptions import ClientError

    from churnops.aws import client

    with pytest.raises(ClientError) as raised:
        client("glue").start_job_run(JobName=_unique("no-such-job"))
    assert raised.value.response["Error"]["Code"] == "EntityNotFoundException"


def test_s3_upload_reaches_state_machine_through_eventbridge(runner):
    from churnops.aws import client

    s3, events, sqs = client("s3"), client("events"), client("sqs")
    bucket = _unique("raw")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    # a state machine that echoes what it received, the way the ingest flow reads bucket and key
    sm = _state_machine(
        {
            "StartAt": "Echo",
            "States": {
                "Echo": {
                    "Type": "Pass",
                    "Parameters": {
                        "bucket.$": "$.detail.bucket.name",
                        "key.$": "$.detail.object.key",
                    },
                    "End": True,
                }
            },
        }
    )
    queue_url = sqs.create_queue(QueueName=_unique("audit"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    rule = _unique("ingest")
    events.put_rule(
        Name=rule,
        EventPattern=json.dumps(
            {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {
                    "bucket": {"name": [bucket]},
                    "object": {"key": [{"prefix": "incoming/"}]},
                },
            }
        ),
    )
    missing_sm = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:{_unique('gone')}"
    events.put_targets(
        Rule=rule,
        Targets=[
            {"Id": "broken", "Arn": missing_sm, "RoleArn": ROLE},  # must not stop the others
            {"Id": "ingest", "Arn": sm, "RoleArn": ROLE},
            {"Id": "audit", "Arn": queue_arn},
        ],
    )
    sfn = client("stepfunctions")
    # WHEN a file lands outside incoming/ nothing starts; inside it, the ingest flow starts once
    s3.put_object(Bucket=bucket, Key="elsewhere/customers.csv", Body=b"a,b\n")
    s3.put_object(Bucket=bucket, Key="incoming/customers.csv", Body=b"a,b\n")
    executions = sfn.list_executions(stateMachineArn=sm)["executions"]
    assert len(executions) == 1
    result = _wait_execution(executions[0]["executionArn"])
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"bucket": bucket, "key": "incoming/customers.csv"}
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["detail"]["object"]["key"] for m in messages] == [
        "incoming/customers.csv"
    ]


def test_target_input_forms_and_put_events_delivery(runner):
    from churnops.aws import client

    events, sfn = client("events"), client("stepfunctions")
    sm = _state_machine({"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}})
    rule = _unique("drift")
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["churnops.monitoring"]}))
    events.put_targets(
        Rule=rule,
        Targets=[
            {"Id": "const", "Arn": sm, "Input": json.dumps({"trigger": "drift-alarm"})},
            {"Id": "path", "Arn": sm, "InputPath": "$.detail"},
            {
                "Id": "shape",
                "Arn": sm,
                "InputTransformer": {
                    "InputPathsMap": {"feature": "$.detail.feature"},
                    "InputTemplate": '{"retrain_because": "<feature>"}',
                },
            },
        ],
    )
    events.put_events(
        Entries=[
            {
                "Source": "churnops.monitoring",
                "DetailType": "Drift",
                "Detail": json.dumps({"feature": "tenure"}),
            }
        ]
    )
    outputs = [
        json.loads(_wait_execution(e["executionArn"])["output"])
        for e in sfn.list_executions(stateMachineArn=sm)["executions"]
    ]
    expected = [{"trigger": "drift-alarm"}, {"feature": "tenure"}, {"retrain_because": "tenure"}]
    assert sorted(map(json.dumps, outputs)) == sorted(map(json.dumps, expected))


def test_fire_schedule_starts_the_target(runner):
    from churnops.aws import client
    from churnops.local.moto_ext import fire_schedule

    sm = _state_machine({"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}})
    schedule = _unique("retrain")
    client("scheduler").create_schedule(
        Name=schedule,
        ScheduleExpression="cron(0 3 ? * MON *)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": sm, "RoleArn": ROLE, "Input": json.dumps({"trigger": "schedule"})},
    )
    started = fire_schedule(schedule)
    assert len(started) == 1
    result = _wait_execution(started[0])
    assert json.loads(result["output"]) == {"trigger": "schedule"}

    rule = _unique("nightly")
    client("events").put_rule(Name=rule, ScheduleExpression="rate(1 day)")
    client("events").put_targets(Rule=rule, Targets=[{"Id": "sm", "Arn": sm}])
    (execution,) = fire_schedule(rule)
    assert json.loads(_wait_execution(execution)["output"])["detail-type"] == "Scheduled Event"

    with pytest.raises(LookupError):
        fire_schedule(_unique("nothing"))


def test_guard_moto_internals_the_hooks_rely_on(moto_ext):
    """Fails loudly when a moto upgrade moves what moto_ext patches. Re-check every hook before
    changing the pin."""
    import moto
    from moto.core.config import default_user_config
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback,
        state_task_service_glue,
    )

    from churnops.local import moto_ext as extension
    from churnops.local.moto_ext.stepfunctions import _Boto3AtTwinEndpoint

    assert moto.__version__ == extension.MOTO_VERSION == "5.2.5"
    assert default_user_config["stepfunctions"]["execute_state_machine"] is True
    for owner, name in extension.patch_targets():
        patched = getattr(owner, name)
        assert getattr(patched, "__wrapped__", None) is not None or isinstance(
            patched, _Boto3AtTwinEndpoint
        ), f"{owner}.{name} is not patched"
    # what the ranged-GET view reads: the object's buffer, its lock and its size
    from moto.s3.models import FakeKey

    key = FakeKey("guard", b"0123456789", account_id=ACCOUNT, region_name="us-east-1")
    assert key._value_buffer and key.lock and key.size == 10
    # what the replacements call into
    glue_task = state_task_service_glue.StateTaskServiceGlue
    assert callable(glue_task._sync_to_start_job_run)
    assert state_task_service_callback.StateTaskServiceCallback._eval_integration_pattern
    from moto.glue.models import FakeJobRun

    run = FakeJobRun(job_name="guard")
    assert run._transitions and run._status == "STARTING"


def test_install_and_uninstall_are_idempotent(moto_ext):
    from moto.awslambda.models import LambdaFunction

    from churnops.local import moto_ext as extension

    # the runner installed now (a module fixture may have swapped the session's out) is put back
    previous = extension.current_runner()
    patched = LambdaFunction.invoke
    assert extension.install(moto_ext) is moto_ext
    assert LambdaFunction.invoke is patched  # a second install does not stack patches
    extension.uninstall()
    extension.uninstall()
    try:
        assert not hasattr(LambdaFunction.invoke, "__wrapped__")
        assert not extension.installed()
    finally:
        assert extension.install(previous) is previous
    assert hasattr(LambdaFunction.invoke, "__wrapped__")


def test_unnamed_executions_get_unique_names(runner):
    # AWS names an execution started without a name with a UUID; moto named them all "None"
    sm = _state_machine({"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}})
    first, second = _run(sm, {"n": 1}), _run(sm, {"n": 2})
    assert first["status"] == second["status"] == "SUCCEEDED"
    assert first["executionArn"] != second["executionArn"]


def test_rule_delivers_to_a_lambda_target(runner, tmp_path):
    from churnops.aws import client

    out = tmp_path / "event.json"
    arn = _create_function(
        _unique("record"), "twin_test_handlers.handlers.record", {"RECORD_TO": str(out)}
    )
    rule = _unique("promoted")
    client("events").put_rule(Name=rule, EventPattern=json.dumps({"source": ["churnops.registry"]}))
    client("events").put_targets(
        Rule=rule, Targets=[{"Id": "fn", "Arn": arn, "InputPath": "$.detail"}]
    )
    client("events").put_events(
        Entries=[
            {
                "Source": "churnops.registry",
                "DetailType": "ChampionPromoted",
                "Detail": json.dumps({"version": "v2", "previous_version": "v1"}),
            }
        ]
    )
    deadline = time.monotonic() + 30  # EventBridge invokes Lambda asynchronously
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(out.read_text()) == {"version": "v2", "previous_version": "v1"}


def test_a_ranged_get_reads_only_its_range(moto_ext):
    """S3 answers a byte range without reading the object (the ingest job reads files in
    byte-range splits); moto 5.2.5 copies the whole object for every range, the twin does not."""
    import tracemalloc

    from botocore.exceptions import ClientError

    from churnops.aws import client

    s3 = client("s3")
    bucket = f"ranges-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    body = bytes(range(256)) * (1 << 18)  # 64 MiB
    s3.put_object(Bucket=bucket, Key="big.bin", Body=body)

    def get(**kwargs) -> bytes:
        return s3.get_object(Bucket=bucket, Key="big.bin", **kwargs)["Body"].read()

    for ranged, expected in [
        ("bytes=0-9", body[:10]),
        ("bytes=1000-1999", body[1000:2000]),
        ("bytes=-5", body[-5:]),
        (f"bytes={len(body) - 3}-{len(body) + 100}", body[-3:]),  # past the end: up to it
    ]:
        assert get(Range=ranged) == expected, ranged
    with pytest.raises(ClientError) as refused:
        get(Range=f"bytes={len(body) + 10}-")
    assert refused.value.response["Error"]["Code"] == "InvalidRange"
    assert get(Range="bytes=x-y") == body  # unparsable: the whole object, as S3 answers
    assert get() == body

    import gc

    gc.collect()  # the whole-object reads above are not this range's allocations
    tracemalloc.start()
    try:
        assert get(Range="bytes=5-14") == body[5:15]
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # copying the object would allocate more than its size (67 MB for these 64 MiB); the range
    # itself needs kilobytes, the rest is request handling in the server's threads (6-10 MB seen)
    assert peak < len(body) // 4, f"a 10-byte range allocated {peak / 1e6:.0f} MB"
