"""The event path with real events: moto's S3 -> EventBridge notification for an upload, matched
by the rule pattern the Ingestion construct synthesizes, turned into job arguments by the state
machine's own parameter paths, and (with the twin's moto extension) the synthesized ingest state
machine executed end to end."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churnops import database
from churnops.contract import TELCO
from tests.integration.conftest import DB_NAME

# A Glue job runs here: ./dev test runs this module again on the two-node Spark cluster.
pytestmark = pytest.mark.glue_job

REPO = Path(__file__).resolve().parents[2]


def _module(relative: str, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JOB = _module("glue_jobs/ingest_customers.py", "ingest_customers_events_test")


# ---- the synthesized construct ------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthesized(tmp_path_factory, need_service) -> dict[str, Any]:
    """The Ingestion construct in the same small stack tests/infra builds, synthesized once."""
    need_service(shutil.which("node") is not None, "node (for the CDK libraries)")
    from tests.stand_ins import synth_keeping_nag_failure

    infra = _module("tests/infra/test_ingestion_construct.py", "ingestion_construct_stack")
    outdir = tmp_path_factory.mktemp("ingest-events-cdk")
    stack, _ingestion = infra.build_stack(str(outdir))
    synth_keeping_nag_failure(stack)  # cdk-nag findings elsewhere do not change the template
    template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
    resources = template["Resources"]

    def only(kind: str) -> tuple[str, dict[str, Any]]:
        found = [(k, v) for k, v in resources.items() if v["Type"] == kind]
        if kind == "AWS::StepFunctions::StateMachine":
            found = [(k, v) for k, v in found if k.startswith("IngestionStateMachine")]
        (item,) = found
        return item

    return {
        "rule": only("AWS::Events::Rule")[1]["Properties"],
        "machine": only("AWS::StepFunctions::StateMachine"),
        "job": only("AWS::Glue::Job"),
        "topic": only("AWS::SNS::Topic")[0],
        "raw_bucket": next(
            k
            for k in resources
            if k.startswith("StorageRaw") and resources[k]["Type"] == "AWS::S3::Bucket"
        ),
    }


def rule_pattern(synthesized: dict[str, Any], bucket: str) -> dict[str, Any]:
    """The construct's pattern with the raw bucket's Ref replaced by this test's bucket."""
    pattern = json.loads(json.dumps(synthesized["rule"]["EventPattern"]))
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": synthesized["raw_bucket"]}]
    pattern["detail"]["bucket"]["name"] = [bucket]
    return pattern


def render_definition(synthesized: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
    """The synthesized definition with its references filled in (partition, job, topic)."""
    _logical_id, machine = synthesized["machine"]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = ""
    for part in parts:
        if isinstance(part, str):
            text += part
        elif part == {"Ref": "AWS::Partition"}:
            text += "aws"
        else:
            text += refs[part["Ref"]]
    return json.loads(text)


def json_path(document: Any, path: str) -> Any:
    """A `$.a.b.c` path, the only form the ingest definition uses for the event."""
    assert path.startswith("$.")
    for step in path[2:].split("."):
        document = document[step]
    return document


# ---- moto: buckets with EventBridge notifications, rule -> SQS -----------------------------------
@pytest.fixture
def raw_bucket(aws_env) -> str:
    from churnops.aws import client

    name = f"raw-{uuid.uuid4().hex[:10]}"
    s3 = client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_notification_configuration(
        Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    return name


@pytest.fixture
def curated_bucket(aws_env) -> str:
    from churnops.aws import client

    name = f"curated-{uuid.uuid4().hex[:10]}"
    client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def fresh_db(db_secret):
    conn = database.connect(db_secret)
    with conn.cursor() as cur:
        for table in (TELCO.table, database.AUDIT_TABLE):
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
    conn.commit()
    yield conn
    conn.close()


def sqs_rule(pattern: dict[str, Any]) -> str:
    """A rule with `pattern` delivering to a new SQS queue; returns the queue URL."""
    from churnops.aws import client

    sqs, events = client("sqs"), client("events")
    name = f"ingest-{uuid.uuid4().hex[:8]}"
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return queue_url


def received(queue_url: str, wait: float = 5.0) -> list[dict[str, Any]]:
    from churnops.aws import client

    sqs = client("sqs")
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in batch.get("Messages", []):
            events.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        if events:
            break
    return events


def small_file(rows: int, seed: int) -> bytes:
    from churnops.synthetic import generate

    frame = generate(rows, seed)
    frame["TotalCharges"] = frame["TotalCharges"].fillna(0.0)
    return frame.to_csv(index=False).encode()


# ---- tests ---------------------------------------------------------------------------------------
def test_the_rule_matches_only_csv_uploads_under_incoming(synthesized, raw_bucket):
    # GIVEN the construct's rule pattern on a bucket that sends events to EventBridge
    queue = sqs_rule(rule_pattern(synthesized, raw_bucket))
    from churnops.aws import client

    s3 = client("s3")
    # WHEN files that must not start an ingestion are uploaded
    s3.put_object(Bucket=raw_bucket, Key="incoming/notes.txt", Body=b"hello")
    s3.put_object(Bucket=raw_bucket, Key="failed/old.csv", Body=b"a,b\n1,2\n")
    s3.put_object(Bucket=raw_bucket, Key="elsewhere/customers.csv", Body=b"a,b\n1,2\n")
    # THEN no event arrives
    assert received(queue, wait=2.0) == []
    # WHEN a CSV lands in incoming/ (in a sub-folder, with a space in its name)
    s3.put_object(Bucket=raw_bucket, Key="incoming/2026/nov batch.csv", Body=b"a,b\n1,2\n")
    # THEN exactly that upload arrives, as S3's "Object Created" event
    (event,) = received(queue)
    assert event["source"] == "aws.s3" and event["detail-type"] == "Object Created"
    assert event["detail"]["bucket"]["name"] == raw_bucket
    assert event["detail"]["object"]["key"] in (
        "incoming/2026/nov batch.csv",
        "incoming/2026/nov+batch.csv",
    )


def test_a_real_upload_event_drives_the_job_through_the_state_machine_paths(
    synthesized, raw_bucket, curated_bucket, db_secret, fresh_db
):
    # GIVEN the rule, and an upload that produces a real event
    queue = sqs_rule(rule_pattern(synthesized, raw_bucket))
    from churnops.aws import client

    data = small_file(120, seed=5)
    client("s3").put_object(Bucket=raw_bucket, Key="incoming/first batch.csv", Body=data)
    (event,) = received(queue)

    # WHEN the state machine's Glue task turns the event into run arguments (its own paths) and
    # the job runs with them on top of the job's DefaultArguments
    definition = render_definition(
        synthesized,
        {
            synthesized["job"][0]: "ingest-job",
            synthesized["topic"]: "arn:aws:sns:us-east-1:123456789012:t",
        },
    )
    task = definition["States"][definition["StartAt"]]
    run_arguments = {
        name.removesuffix(".$"): json_path(event, path)
        for name, path in task["Parameters"]["Arguments"].items()
    }
    argv = ["--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1", "--JOB_NAME", "ingest-job"]
    for name, value in {
        "--curated_bucket": curated_bucket,
        "--db_secret_arn": db_secret,
        "--contract_name": "telco",
        **run_arguments,
    }.items():
        argv += [name, value]
    result = JOB.main(argv)

    # THEN the uploaded file is ingested
    assert result["status"] == "succeeded"
    assert result["rows_loaded"] == len(pd.read_csv(io.BytesIO(data)))
    (run,) = database.runs(fresh_db)
    assert run["object_key"] == "incoming/first batch.csv"  # decoded if the event encoded it


def deploy_ingest_flow(
    synthesized: dict[str, Any], raw_bucket: str, curated_bucket: str, db_secret: str
) -> tuple[str, str]:
    """The synthesized ingest job, alert topic (observed through a queue), state machine and
    upload rule, created in the twin's moto; returns (state machine ARN, alert queue URL)."""
    from churnops.aws import client

    sfn, glue, sns, sqs, events, iam = (
        client(s) for s in ("stepfunctions", "glue", "sns", "sqs", "events", "iam")
    )
    role = iam.create_role(
        RoleName=f"ingest-{uuid.uuid4().hex[:6]}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]

    # GIVEN the job as synthesized (DefaultArguments pointing at this test's buckets and secret)
    job_logical_id, job = synthesized["job"]
    props = job["Properties"]
    defaults = {k: v for k, v in props["DefaultArguments"].items() if isinstance(v, str)}
    # (the test's database has its own name, passed as the stack passes the configured one)
    defaults.update(
        {"--curated_bucket": curated_bucket, "--db_secret_arn": db_secret, "--db_name": DB_NAME}
    )
    job_name = f"ingest-{uuid.uuid4().hex[:6]}"
    glue.create_job(
        Name=job_name,
        Role=role,
        GlueVersion=props["GlueVersion"],
        Command={"Name": "glueetl", "ScriptLocation": "s3://assets/ingest_customers.py"},
        DefaultArguments=defaults,
        MaxRetries=0,
    )
    # AND the alert topic, observed through a queue
    topic = sns.create_topic(Name=f"alerts-{uuid.uuid4().hex[:6]}")["TopicArn"]
    alerts = sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    alerts_arn = sqs.get_queue_attributes(QueueUrl=alerts, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=alerts_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    # AND the synthesized state machine, started by the construct's rule
    definition = render_definition(
        synthesized, {job_logical_id: job_name, synthesized["topic"]: topic}
    )
    machine = sfn.create_state_machine(
        name=f"ingest-{uuid.uuid4().hex[:6]}", definition=json.dumps(definition), roleArn=role
    )["stateMachineArn"]
    rule = f"ingest-{uuid.uuid4().hex[:6]}"
    events.put_rule(Name=rule, EventPattern=json.dumps(rule_pattern(synthesized, raw_bucket)))
    events.put_targets(Rule=rule, Targets=[{"Id": "ingest", "Arn": machine, "RoleArn": role}])

    return machine, alerts


def test_the_synthesized_state_machine_ingests_an_upload_and_alerts_on_a_broken_one(
    synthesized, moto_ext, raw_bucket, curated_bucket, db_secret, fresh_db
):
    """Through the twin's moto extension: EventBridge starts the synthesized state machine, which
    runs the real Glue script (.sync); a broken file ends in failed/, an SNS alert, a FAILED run."""
    from churnops.aws import client

    machine, alerts = deploy_ingest_flow(synthesized, raw_bucket, curated_bucket, db_secret)
    sqs = client("sqs")

    # WHEN a good file and then a broken file are uploaded
    s3 = client("s3")
    good = small_file(80, seed=9)
    s3.put_object(Bucket=raw_bucket, Key="incoming/good.csv", Body=good)
    first = wait_for_executions(machine, 1)[0]
    s3.put_object(Bucket=raw_bucket, Key="incoming/broken.csv", Body=b"customerID,oops\nA,1\n")
    second = next(
        e for e in wait_for_executions(machine, 2) if e["executionArn"] != first["executionArn"]
    )

    # THEN the good file is loaded and its execution succeeded
    assert first["status"] == "SUCCEEDED", first
    assert len(database.read_table(fresh_db, TELCO.table)) == 80
    # AND the broken one failed, moved to failed/ with its error, and raised an alert
    assert second["status"] == "FAILED"
    assert s3.head_object(Bucket=raw_bucket, Key="failed/broken.csv.error.json")
    messages = sqs.receive_message(QueueUrl=alerts, WaitTimeSeconds=2).get("Messages", [])
    (message,) = [json.loads(m["Body"]) for m in messages]
    assert message["flow"] == "ingest"
    assert message["file"] == f"s3://{raw_bucket}/incoming/broken.csv"
    assert "missing column" in message["cause"]


def task_failures(execution_arn: str) -> list[dict[str, Any]]:
    from churnops.aws import client

    events = client("stepfunctions").get_execution_history(executionArn=execution_arn)["events"]
    return [e["taskFailedEventDetails"] for e in events if e["type"] == "TaskFailed"]


def test_a_throttled_glue_start_is_retried_and_a_hopeless_one_is_caught(
    synthesized, moto_ext, raw_bucket, curated_bucket, db_secret, fresh_db
):
    """Glue throttles StartJobRun in a burst of uploads; Step Functions reports it as
    `Glue.AWSGlueException` (the twin too). The synthesized Retry must queue the file, not fail
    it; an error no retry helps goes to the Catch (tag, alert, FAILED)."""
    from churnops.aws import client

    machine, alerts = deploy_ingest_flow(synthesized, raw_bucket, curated_bucket, db_secret)
    s3, sqs = client("s3"), client("sqs")

    # GIVEN Glue throttles the next start
    moto_ext.fail_glue_starts("ThrottlingException")
    # WHEN a file is uploaded
    s3.put_object(Bucket=raw_bucket, Key="incoming/burst.csv", Body=small_file(40, seed=3))
    (first,) = wait_for_executions(machine, 1, limit=240)
    # THEN the start failed under the name AWS reports, was retried, and the file loaded
    assert first["status"] == "SUCCEEDED", first
    (throttled,) = task_failures(first["executionArn"])
    assert throttled["error"] == "Glue.AWSGlueException"
    assert "Error Code: ThrottlingException" in throttled["cause"]
    assert len(database.read_table(fresh_db, TELCO.table)) == 40

    # GIVEN a start that fails for good (the job is gone)
    moto_ext.fail_glue_starts("EntityNotFoundException")
    # WHEN another file is uploaded
    s3.put_object(Bucket=raw_bucket, Key="incoming/lost.csv", Body=small_file(10, seed=4))
    second = next(
        e
        for e in wait_for_executions(machine, 2, limit=240)
        if e["executionArn"] != first["executionArn"]
    )
    # THEN it is not retried but caught: the file is tagged failed, an alert goes out
    assert second["status"] == "FAILED"
    assert [f["error"] for f in task_failures(second["executionArn"])] == [
        "Glue.EntityNotFoundException"
    ]
    tags = s3.get_object_tagging(Bucket=raw_bucket, Key="incoming/lost.csv")["TagSet"]
    assert {"Key": "churnops-ingest", "Value": "failed"} in tags
    messages = sqs.receive_message(QueueUrl=alerts, WaitTimeSeconds=2).get("Messages", [])
    (message,) = [json.loads(m["Body"]) for m in messages]
    assert message["file"] == f"s3://{raw_bucket}/incoming/lost.csv"


def wait_for_executions(machine: str, count: int, limit: float = 180.0) -> list[dict[str, Any]]:
    from churnops.aws import client

    sfn = client("stepfunctions")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        listed = sfn.list_executions(stateMachineArn=machine)["executions"]
        done = [e for e in listed if e["status"] != "RUNNING"]
        if len(listed) >= count and len(done) == len(listed):
            return sorted(
                (sfn.describe_execution(executionArn=e["executionArn"]) for e in listed),
                key=lambda e: e["startDate"],
            )
        time.sleep(0.3)
    raise AssertionError(f"{count} execution(s) of {machine} not finished after {limit}s")
