"""What the ingest and retrain flows build alike: a Glue job in the database's VPC with its own
encrypted logs, the logged Standard state machine that runs it, and its failure alert.

Both are functions that add their resources to the calling construct under the ids given, not
constructs of their own: the logical IDs stay those of the deployed stacks, so an update does not
replace the named log groups, Glue jobs and security configurations (a replacement would collide
with the retained old one's name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.assets import glue_dependencies_asset, glue_requirements, glue_script_asset

if TYPE_CHECKING:
    from stacks.database import Database

# Glue places a job's workers in the VPC through network interfaces it creates with the job's
# role; these EC2 actions have no resource-level permissions.
GLUE_VPC_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcAttribute",
    "ec2:CreateTags",
    "ec2:DeleteTags",
]

# A .sync start of a Glue job refused for these is worth retrying: the job is at its concurrency
# limit, or the Glue API throttles.
GLUE_START_ERRORS = ["Glue.ConcurrentRunsExceededException", "Glue.ThrottlingException"]


@dataclass(frozen=True)
class VpcGlueJob:
    """The resources `vpc_glue_job` made; `glue_logs` is the ARN pattern of Glue's log groups
    (the role writes there, cdk-nag findings name it)."""

    job: glue.CfnJob
    role: iam.Role
    key: kms.Key
    glue_logs: str


def vpc_glue_job(
    scope: Construct,
    *,
    asset_id: str,
    resource_id: str,
    job_id: str,
    script: str,
    name: str,
    purpose: str,
    description: str,
    package: s3_assets.Asset,
    database: Database,
    arguments: dict[str, str],
    worker_type: str,
    workers: int,
    timeout_minutes: int,
    max_concurrent_runs: int,
    removal: RemovalPolicy,
) -> VpcGlueJob:
    """A Glue 5.0 job running `glue_jobs/<script>` in the database's VPC, through its Glue
    connection, with the database secret readable.

    Adds to `scope`: `<asset_id>Script` and `<asset_id>Dependencies` (the script and the zip of
    wheels from `containers/glue/<script stem>.txt`: the subnets have no route to PyPI),
    `<resource_id>Role`, `<resource_id>Key` and `<resource_id>Security` (Glue encrypts its logs
    and bookmarks with the key, S3 with SSE-S3) and the job `<job_id>`. `arguments` are the
    job's own default arguments, next to the common ones. The role may read exactly the script,
    package and wheels objects; the caller grants the job's data.
    """
    stack = Stack.of(scope)
    script_asset = glue_script_asset(scope, f"{asset_id}Script", script)
    dependencies = glue_dependencies_asset(
        scope, f"{asset_id}Dependencies", glue_requirements(script)
    )
    role = iam.Role(
        scope,
        f"{resource_id}Role",
        assumed_by=iam.ServicePrincipal("glue.amazonaws.com"),
        description=f"ChurnOps {purpose} Glue job",
    )
    for asset in (script_asset, package, dependencies):  # the exact objects, no s3:List*
        _allow(role, ["s3:GetObject"], [asset.bucket.arn_for_objects(asset.s3_object_key)])
    database.secret.grant_read(role)
    _allow(
        role,
        ["glue:GetConnection"],
        [
            f"arn:{stack.partition}:glue:{stack.region}:{stack.account}:catalog",
            f"arn:{stack.partition}:glue:{stack.region}:{stack.account}:connection/"
            f"{database.glue_connection.ref}",
        ],
    )
    role.add_to_principal_policy(iam.PolicyStatement(actions=GLUE_VPC_ACTIONS, resources=["*"]))

    glue_logs = f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:/aws-glue/*"
    key = kms.Key(
        scope,
        f"{resource_id}Key",
        description=f"Encrypts the ChurnOps {purpose} job's logs and bookmarks",
        enable_key_rotation=True,
        removal_policy=removal,
    )
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowCloudWatchLogsForGlue",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
            resources=["*"],  # in a key policy "*" means this key
            conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": glue_logs}},
        )
    )
    _allow(role, ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"], [key.key_arn])
    _allow(
        role,
        [
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "logs:AssociateKmsKey",
        ],
        [glue_logs],
    )
    security = glue.CfnSecurityConfiguration(
        scope,
        f"{resource_id}Security",
        name=name,
        encryption_configuration=glue.CfnSecurityConfiguration.EncryptionConfigurationProperty(
            cloud_watch_encryption=glue.CfnSecurityConfiguration.CloudWatchEncryptionProperty(
                cloud_watch_encryption_mode="SSE-KMS", kms_key_arn=key.key_arn
            ),
            job_bookmarks_encryption=glue.CfnSecurityConfiguration.JobBookmarksEncryptionProperty(
                job_bookmarks_encryption_mode="CSE-KMS", kms_key_arn=key.key_arn
            ),
            s3_encryptions=[
                glue.CfnSecurityConfiguration.S3EncryptionProperty(s3_encryption_mode="SSE-S3")
            ],
        ),
    )
    job = glue.CfnJob(
        scope,
        job_id,
        name=name,
        description=description,
        role=role.role_arn,
        glue_version="5.0",  # Spark 3.5.4, Python 3.11; a job without a version gets 5.1
        command=glue.CfnJob.JobCommandProperty(
            name="glueetl", python_version="3", script_location=script_asset.s3_object_url
        ),
        default_arguments={
            "--job-language": "python",
            "--extra-py-files": package.s3_object_url,
            "--enable-continuous-cloudwatch-log": "true",
            "--enable-metrics": "true",
            "--db_secret_arn": database.secret.secret_arn,
            **arguments,
            **dependencies.job_arguments,  # the zip of wheels, installed with pip --no-index
        },
        connections=glue.CfnJob.ConnectionsListProperty(connections=[database.glue_connection.ref]),
        worker_type=worker_type,
        number_of_workers=workers,
        timeout=timeout_minutes,
        max_retries=0,  # the state machine decides about retries
        execution_property=glue.CfnJob.ExecutionPropertyProperty(
            max_concurrent_runs=max_concurrent_runs
        ),
        security_configuration=security.ref,
    )
    return VpcGlueJob(job=job, role=role, key=key, glue_logs=glue_logs)


def logged_state_machine(
    scope: Construct,
    *,
    name: str,
    definition: sfn.IChainable,
    timeout: Duration,
    retention: logs.RetentionDays,
    removal: RemovalPolicy,
    alert_topic: sns.ITopic,
) -> sfn.StateMachine:
    """The Standard state machine `name` (Glue .sync needs Standard), traced with X-Ray and
    logging every event (without execution data) to `/aws/vendedlogs/states/<name>`.

    Adds `StateMachineLogs` and `StateMachine` to `scope`. The definition's SnsPublish task grants
    sns:Publish itself; an encrypted alert topic also needs its key (exact actions: grant_publish
    would add kms:GenerateDataKey*).
    """
    log_group = logs.LogGroup(
        scope,
        "StateMachineLogs",
        log_group_name=f"/aws/vendedlogs/states/{name}",
        retention=retention,
        removal_policy=removal,
    )
    state_machine = sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_name=name,
        state_machine_type=sfn.StateMachineType.STANDARD,
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        timeout=timeout,
        tracing_enabled=True,
        logs=sfn.LogOptions(
            destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False
        ),
    )
    topic_key = getattr(alert_topic, "master_key", None)
    if topic_key is not None:
        _allow(state_machine.role, ["kms:Decrypt", "kms:GenerateDataKey"], [topic_key.key_arn])
    return state_machine


def failure_alert(
    scope: Construct,
    *,
    topic: sns.ITopic,
    flow: str,
    subject: str,
    details: dict[str, str],
    failed_state: str,
) -> tasks.SnsPublish:
    """`AlertFailure`: publishes the execution and the error a Catch put in `$.error` (with
    `details` for whoever reads the alert) to the topic, then ends in the Fail state
    `failed_state`. Catch into the returned task."""
    alert = tasks.SnsPublish(
        scope,
        "AlertFailure",
        topic=topic,
        subject=subject,
        message=sfn.TaskInput.from_object(
            {
                "flow": flow,
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                "error": sfn.JsonPath.string_at("$.error.Error"),
                "cause": sfn.JsonPath.string_at("$.error.Cause"),
                **details,
            }
        ),
        result_path=sfn.JsonPath.DISCARD,
    )
    alert.next(sfn.Fail(scope, failed_state, error=failed_state, cause="see the SNS alert"))
    return alert


def _allow(role: iam.IRole, actions: list[str], resources: list[str]) -> None:
    role.add_to_principal_policy(iam.PolicyStatement(actions=actions, resources=resources))
