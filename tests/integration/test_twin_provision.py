"""The twin provisions from a template CDK really synthesized: a small stack with the same kinds
of resources as ChurnOps (EventBridge-enabled bucket, rule -> state machine with a Glue `.sync`
task, a container-image Lambda whose CMD is the handler, a Scheduler schedule, a generated secret),
then an upload and a fired schedule run through it."""

from __future__ import annotations

import json
import shutil
import textwrap
import time

import pytest

TINY_JOB = """
import json

from churnops import aws


def main(argv=None, spark=None):
    args = dict(zip(argv[::2], argv[1::2]))
    rows = spark.createDataFrame([(1,), (2,)], ["n"]).count()
    aws.client("s3").put_object(
        Bucket=args["--curated_bucket"],
        Key="curated/" + args["--key"].rsplit("/", 1)[-1] + ".json",
        Body=json.dumps({"rows": rows, "source": args["--key"]}).encode(),
    )
    return {"rows": rows}


if __name__ == "__main__":
    main()
"""

HANDLER = """
import os


def decide(event, context):
    return {"registry": os.environ["REGISTRY_URI"], "trigger": event.get("trigger")}
"""


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    """(cdk.out dir, sandbox repo root, template) for a small stack built with real constructs."""
    root = tmp_path_factory.mktemp("provision_repo")
    (root / "glue_jobs").mkdir()
    (root / "glue_jobs" / "tiny_ingest.py").write_text(textwrap.dedent(TINY_JOB))
    (root / "twin_provision_handlers.py").write_text(textwrap.dedent(HANDLER))
    (root / "containers" / "retrain").mkdir(parents=True)
    (root / "containers" / "retrain" / "Dockerfile").write_text(
        'FROM public.ecr.aws/lambda/python:3.11\nCMD ["twin_provision_handlers.decide"]\n'
    )
    import aws_cdk as cdk
    from aws_cdk import aws_events as events
    from aws_cdk import aws_events_targets as targets
    from aws_cdk import aws_glue as glue
    from aws_cdk import aws_iam as iam
    from aws_cdk import aws_lambda as lambda_
    from aws_cdk import aws_s3_assets as s3_assets
    from aws_cdk import aws_scheduler as scheduler
    from aws_cdk import aws_secretsmanager as secretsmanager
    from aws_cdk import aws_stepfunctions as sfn
    from aws_cdk import aws_stepfunctions_tasks as tasks

    from tests.stand_ins import stand_in_storage

    out = tmp_path_factory.mktemp("cdk_out")  # outside the image build context
    app = cdk.App(outdir=str(out))
    stack = cdk.Stack(
        app, "ChurnOps", env=cdk.Environment(account="123456789012", region="us-east-1")
    )
    storage = stand_in_storage(stack)
    secret = secretsmanager.Secret(
        stack,
        "ApiSigningSecret",
        generate_secret_string=secretsmanager.SecretStringGenerator(
            secret_string_template=json.dumps({"username": "svc"}), generate_string_key="password"
        ),
    )
    role = iam.Role(stack, "JobRole", assumed_by=iam.ServicePrincipal("glue.amazonaws.com"))
    script = s3_assets.Asset(stack, "Script", path=str(root / "glue_jobs" / "tiny_ingest.py"))
    job = glue.CfnJob(
        stack,
        "IngestJob",
        role=role.role_arn,
        glue_version="5.0",
        command=glue.CfnJob.JobCommandProperty(
            name="glueetl", python_version="3", script_location=script.s3_object_url
        ),
        default_arguments={
            "--curated_bucket": storage.curated_bucket.bucket_name,
            "--secret": secret.secret_arn,
        },
        execution_property=glue.CfnJob.ExecutionPropertyProperty(max_concurrent_runs=10),
    )
    ingest = sfn.StateMachine(
        stack,
        "IngestFlow",
        definition_body=sfn.DefinitionBody.from_chainable(
            tasks.GlueStartJobRun(
                stack,
                "RunIngestJob",
                glue_job_name=job.ref,
                integration_pattern=sfn.IntegrationPattern.RUN_JOB,
                arguments=sfn.TaskInput.from_object(
                    {"--key": sfn.JsonPath.string_at("$.detail.object.key")}
                ),
            )
        ),
    )
    rule = events.Rule(
        stack,
        "OnUpload",
        event_pattern=events.EventPattern(
            source=["aws.s3"],
            detail_type=["Object Created"],
            detail={
                "bucket": {"name": [storage.raw_bucket.bucket_name]},
                "object": {"key": [{"prefix": "incoming/"}]},
            },
        ),
    )
    rule.add_target(targets.SfnStateMachine(ingest))
    decide = lambda_.DockerImageFunction(
        stack,
        "Decide",
        code=lambda_.DockerImageCode.from_image_asset(
            directory=str(root), file="containers/retrain/Dockerfile"
        ),
        environment={"REGISTRY_URI": storage.registry_uri},
    )
    retrain = sfn.StateMachine(
        stack,
        "RetrainFlow",
        definition_body=sfn.DefinitionBody.from_chainable(
            tasks.LambdaInvoke(
                stack, "DecideTask", lambda_function=decide, payload_response_only=True
            )
        ),
    )
    schedule_role = iam.Role(
        stack, "ScheduleRole", assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com")
    )
    retrain.grant_start_execution(schedule_role)
    scheduler.CfnSchedule(
        stack,
        "Nightly",
        schedule_expression="cron(0 3 * * ? *)",
        flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
        target=scheduler.CfnSchedule.TargetProperty(
            arn=retrain.state_machine_arn,
            role_arn=schedule_role.role_arn,
            input=json.dumps({"trigger": "schedule"}),
        ),
    )
    app.synth()
    template = json.loads((out / "ChurnOps.template.json").read_text())
    return out, root, template


@pytest.fixture(scope="module")
def layout(moto_ext, synthesized, need_service, spark):
    need_service(shutil.which("java") is not None, "Java (for local Spark)")
    from churnops.local import moto_ext as extension
    from churnops.local.provision import Provisioner

    out, root, template = synthesized
    extension.install(extension.TaskRunner(repo_root=root, spark_factory=lambda: spark))
    try:
        yield Provisioner(template, cdk_out=out, repo_root=root, database=None).provision()
    finally:
        extension.install(moto_ext)


def _wait(execution_arn: str) -> dict:
    from churnops.aws import client

    for _ in range(600):
        described = client("stepfunctions").describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.2)
    raise AssertionError(f"{execution_arn} still running")


def test_layout_is_discovered_from_the_template(layout):
    assert layout.raw_bucket and layout.raw_bucket in layout.buckets.values()
    assert layout.watched_prefix == "incoming/"
    by_construct = {k.rstrip("0123456789ABCDEF"): v for k, v in layout.state_machines.items()}
    assert layout.ingest_state_machine == by_construct["IngestFlow"]
    assert layout.retrain_state_machine == by_construct["RetrainFlow"]
    registry_bucket = next(v for k, v in layout.buckets.items() if k.startswith("StorageRegistry"))
    assert layout.registry_uri == f"s3://{registry_bucket}/models"
    assert layout.retrain_schedule


def test_resources_exist_with_resolved_properties(layout):
    from churnops.aws import client

    s3 = client("s3")
    # (EventBridge notifications on the raw bucket: moto does not report them back; the upload
    # test below shows they are on)
    registry_bucket = layout.registry_uri[5:].split("/")[0]
    assert s3.get_bucket_versioning(Bucket=registry_bucket)["Status"] == "Enabled"
    (function,) = layout.functions.values()
    config = client("lambda").get_function(FunctionName=function)["Configuration"]
    assert config["ImageConfigResponse"]["ImageConfig"]["Command"] == [
        "twin_provision_handlers.decide"
    ]  # the Dockerfile's CMD, found through the image asset
    assert config["Environment"]["Variables"] == {"REGISTRY_URI": layout.registry_uri}
    (job_name,) = layout.glue_jobs.values()
    job = client("glue").get_job(JobName=job_name)["Job"]
    assert job["Command"]["ScriptLocation"].endswith("/glue_jobs/tiny_ingest.py")
    (secret_arn,) = layout.secrets.values()
    assert job["DefaultArguments"]["--secret"] == secret_arn
    value = json.loads(
        client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    )
    assert value["username"] == "svc" and len(value["password"]) > 20


def test_upload_runs_the_ingest_flow_and_its_glue_script(layout):
    from churnops.aws import client

    s3 = client("s3")
    s3.put_object(Bucket=layout.raw_bucket, Key="incoming/batch-1.csv", Body=b"customerID\n1\n")
    (execution,) = client("stepfunctions").list_executions(
        stateMachineArn=layout.ingest_state_machine
    )["executions"]
    result = _wait(execution["executionArn"])
    assert result["status"] == "SUCCEEDED", result
    curated = layout.curated_bucket or next(
        v for k, v in layout.buckets.items() if k.startswith("StorageCurated")
    )
    body = s3.get_object(Bucket=curated, Key="curated/batch-1.csv.json")["Body"].read()
    assert json.loads(body) == {"rows": 2, "source": "incoming/batch-1.csv"}


def test_fired_schedule_runs_the_retrain_flow_with_its_input(layout):
    from churnops.local.moto_ext import fire_schedule

    (execution,) = fire_schedule(layout.retrain_schedule)
    result = _wait(execution)
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == {"registry": layout.registry_uri, "trigger": "schedule"}


def test_provisioning_twice_is_harmless(layout, synthesized):
    from churnops.local.provision import Provisioner

    out, root, template = synthesized
    again = Provisioner(template, cdk_out=out, repo_root=root, database=None).provision()
    assert again.raw_bucket == layout.raw_bucket
    assert again.state_machines == layout.state_machines
