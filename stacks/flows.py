"""What the ingest and retrain flows build alike: a Glue job in the database's VPC with its own
encrypted logs, the logged Standard state machine that runs it, and its failure alert.

Both are functions that add their resources to the calling construct under the ids given, not
constructs of their own: the logical IDs stay those of the deployed stacks, so an update does not
replace the named log groups, Glue jobs and security configurations (a replacement would collide
with the retained old one's name).

Physical names, and why each can stay fixed or must not:
- Glue job and state machine names are fixed (`<prefix>-ingest`, ...): people, alarms and the
  twin find them by name, and CloudFormation replaces either only when its name changes
  (AWS::Glue::Job, AWS::StepFunctions::StateMachine reference: every other property updates in
  place); both are deleted with the stack, so a later deploy can reuse the name.
- A Glue security configuration cannot change in place: Glue has no UpdateSecurityConfiguration
  API and the resource's CloudFormation registry schema has create, read, delete and list
  handlers only (the reference page's "No interruption" for EncryptionConfiguration has no
  handler behind it). Its name is required and create-only, so the name carries the job name, the id
  of the KMS key it points at and a digest of its modes: whatever would replace it renames it.
- The state machine's log group keeps the `/aws/vendedlogs/` prefix (Step Functions: "prefix
  your log group names with /aws/vendedlogs/" to stay under the CloudWatch Logs resource-policy
  size limit, docs.aws.amazon.com/step-functions/latest/dg/bp-cwl.html) and ends with this stack's
  own id: in prod it is retained on `cdk destroy`, and a fixed name would make the next deploy of
  the stack fail on the group left behind.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.assets import glue_dependencies_asset, glue_requirements, glue_script_asset
from stacks.database import stack_id_suffix
from stacks.storage import grant_asset_read

if TYPE_CHECKING:
    from stacks.platform import Platform

# Glue places a job's workers in the VPC through network interfaces it creates with the job's
# role. The grants follow AWS's managed AWSGlueServiceRole policy (v5, docs.aws.amazon.com/
# aws-managed-policy/latest/reference/AWSGlueServiceRole.html): CreateNetworkInterface and these
# reads on "*" as there, CreateTags/DeleteTags only for Glue's own tag key on the three resource
# types it names (GLUE_TAGGED_RESOURCES), and DeleteNetworkInterface narrower than there (see
# vpc_glue_job).
GLUE_VPC_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcAttribute",
]
GLUE_TAG_KEY = "aws-glue-service-resource"
GLUE_TAGGED_RESOURCES = ("network-interface", "security-group", "instance")
# Glue publishes job metrics (`--enable-metrics`) to the CloudWatch namespace "Glue" with the job's
# role (docs.aws.amazon.com/glue/latest/dg/monitoring-awsglue-with-cloudwatch-metrics.html:
# `aws cloudwatch list-metrics --namespace Glue`; the role needs cloudwatch:PutMetricData,
# repost.aws/knowledge-center/glue-job-metrics-cloudwatch). The jobs publish no metrics of their
# own (the ChurnOps namespace is written by functions, never by a Glue job), so "Glue" is all.
GLUE_METRICS_NAMESPACE = "Glue"

# A .sync start of a Glue job refused for these is worth retrying: the job is at its concurrency
# limit, or the Glue API throttles. Named as Step Functions reports them: a modeled Glue error
# as `Glue.<exception>`, but throttling as `Glue.AWSGlueException` (cause "Rate exceeded ...
# Error Code: ThrottlingException"), since the integration's SDK has no class for it. The twin
# reports them the same way (churnops/local/moto_ext.py), and tests/infra/test_error_names.py
# checks every name a Retry or Catch relies on can be reported at all.
GLUE_START_ERRORS = ["Glue.ConcurrentRunsExceededException", "Glue.AWSGlueException"]
GLUE_WORKER_TYPES = ("G.1X", "G.2X", "G.4X", "G.8X", "G.025X")


class GlueJobSize(Protocol):
    """The Glue fields of a flow's settings (IngestionSettings, RetrainSettings)."""

    @property
    def glue_worker_type(self) -> str: ...
    @property
    def glue_workers(self) -> int: ...
    @property
    def glue_timeout_minutes(self) -> int: ...


def check_glue_job(settings: GlueJobSize) -> None:
    """Refuse at synth the job sizes Glue would refuse at deploy (from a settings class's
    `__post_init__`)."""
    if settings.glue_worker_type not in GLUE_WORKER_TYPES:
        raise ValueError(f"glue_worker_type must be one of {', '.join(GLUE_WORKER_TYPES)}")
    if settings.glue_workers < 2:
        raise ValueError("glue_workers must be at least 2 (one driver, one executor)")
    if not 1 <= settings.glue_timeout_minutes <= 2880:
        raise ValueError("glue_timeout_minutes must be between 1 and 2880")


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
    platform: Platform,
    arguments: dict[str, str],
    size: GlueJobSize,
    max_concurrent_runs: int,
    removal: RemovalPolicy,
) -> VpcGlueJob:
    """A Glue 5.0 job running `glue_jobs/<script>` in the database's VPC, through its Glue
    connection, with the database secret readable, sized by `size` (the flow's settings).

    Adds to `scope`: `<asset_id>Script` and `<asset_id>Dependencies` (the script and the zip of
    wheels from `containers/glue/<script stem>.txt`: the subnets have no route to PyPI),
    `<resource_id>Role`, `<resource_id>Key` and `<resource_id>Security` (Glue encrypts its logs
    and bookmarks with the key, S3 with SSE-S3) and the job `<job_id>`. `arguments` are the
    job's own default arguments (a `churnops.wiring` job-arguments dataclass's
    `default_arguments()`, the database's secret and name included), next to Glue's own. The role may read exactly the script,
    package and wheels objects, work in the VPC and publish Glue's job metrics, and acknowledges
    the cdk-nag findings of those grants; the caller grants (and acknowledges) the job's data.
    """
    package, database = platform.package, platform.database
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
    for asset in (script_asset, package, dependencies):
        grant_asset_read(asset, role)
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
    ec2_arn = f"arn:{stack.partition}:ec2:{stack.region}:{stack.account}"
    # As AWSGlueServiceRole: tagging only with Glue's own tag key ("ForAllValues" over the request's
    # keys), on interfaces, security groups and instances (here: of this account and region).
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ec2:CreateTags", "ec2:DeleteTags"],
            resources=[f"{ec2_arn}:{kind}/*" for kind in GLUE_TAGGED_RESOURCES],
            conditions={"ForAllValues:StringEquals": {"aws:TagKeys": [GLUE_TAG_KEY]}},
        )
    )
    # Narrower than AWSGlueServiceRole ("*"): DeleteNetworkInterface acts on a network-interface
    # resource whose ec2:Vpc condition key is the interface's VPC (Service Authorization Reference,
    # "Actions defined by Amazon EC2": DeleteNetworkInterface, resource type network-interface*,
    # condition keys include ec2:Vpc), so the job can remove interfaces in this VPC only.
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["ec2:DeleteNetworkInterface"],
            resources=[f"{ec2_arn}:network-interface/*"],
            conditions={"ArnEquals": {"ec2:Vpc": f"{ec2_arn}:vpc/{database.vpc.vpc_id}"}},
        )
    )
    # Job metrics (`--enable-metrics` below). PutMetricData has no resource type, so the namespace
    # condition is what scopes it (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
    # iam-cw-condition-keys-namespace.html).
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": GLUE_METRICS_NAMESPACE}},
        )
    )

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
    # Any change replaces a security configuration and its name is required: the name changes
    # with whatever would replace it (the modes, the key), so a replacement never collides.
    security = glue.CfnSecurityConfiguration(
        scope,
        f"{resource_id}Security",
        name=f"{name}-{_digest(SECURITY_MODES)}-{key.key_id}",
        encryption_configuration=glue.CfnSecurityConfiguration.EncryptionConfigurationProperty(
            cloud_watch_encryption=glue.CfnSecurityConfiguration.CloudWatchEncryptionProperty(
                cloud_watch_encryption_mode=SECURITY_MODES["cloudwatch"], kms_key_arn=key.key_arn
            ),
            job_bookmarks_encryption=glue.CfnSecurityConfiguration.JobBookmarksEncryptionProperty(
                job_bookmarks_encryption_mode=SECURITY_MODES["bookmarks"], kms_key_arn=key.key_arn
            ),
            s3_encryptions=[
                glue.CfnSecurityConfiguration.S3EncryptionProperty(
                    s3_encryption_mode=SECURITY_MODES["s3"]
                )
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
            # Metrics flow when the role may publish them (above) and the script creates a
            # GlueContext (churnops.gluejob.resolve_args does, on Glue): AWS, "Confirm that the
            # job script initializes a GlueContext", docs.aws.amazon.com/glue/latest/dg/
            # monitor-profile-glue-job-cloudwatch-metrics.html.
            "--enable-metrics": "true",
            **arguments,
            **dependencies.job_arguments,  # the zip of wheels, installed with pip --no-index
        },
        connections=glue.CfnJob.ConnectionsListProperty(connections=[database.glue_connection.ref]),
        worker_type=size.glue_worker_type,
        number_of_workers=size.glue_workers,
        timeout=size.glue_timeout_minutes,
        max_retries=0,  # the state machine decides about retries
        execution_property=glue.CfnJob.ExecutionPropertyProperty(
            max_concurrent_runs=max_concurrent_runs
        ),
        security_configuration=security.ref,
    )
    _acknowledge_glue_role(role, ec2_arn, glue_logs)
    return VpcGlueJob(job=job, role=role, key=key, glue_logs=glue_logs)


# How Glue encrypts what the job writes: CloudWatch logs and bookmarks with the job's key, S3 with
# S3-managed keys (the buckets' own default encryption).
SECURITY_MODES = {"cloudwatch": "SSE-KMS", "bookmarks": "CSE-KMS", "s3": "SSE-S3"}


def _acknowledge_glue_role(role: iam.Role, ec2_arn: str, glue_logs: str) -> None:
    """The cdk-nag findings on exactly the grants `vpc_glue_job` gives the role, each with the
    reason it is as narrow as AWS allows. The caller acknowledges what it grants itself."""
    stack = Stack.of(role)

    def resource(arn: str) -> str:
        return f"AwsSolutions::AwsSolutions-IAM5[Resource::{nag_text(stack.resolve(arn))}]"

    Validations.of(role).acknowledge(
        Acknowledgment(
            id=resource("*"),
            reason="Only three grants use '*': CreateNetworkInterface and the ec2:Describe* reads "
            "Glue needs to place workers in the VPC, as in AWS's managed AWSGlueServiceRole, and "
            "cloudwatch:PutMetricData, which has no resource type and is limited to the 'Glue' "
            "namespace by a cloudwatch:namespace condition.",
        ),
        Acknowledgment(
            id=resource(glue_logs),
            reason="Glue names its log groups and streams under /aws-glue/ at run time.",
        ),
        Acknowledgment(
            id=resource(f"{ec2_arn}:network-interface/*"),
            reason="Glue creates the job's network interfaces at run time, so no id can be named: "
            "DeleteNetworkInterface is limited to interfaces in this VPC (ec2:Vpc condition), "
            f"CreateTags/DeleteTags to the '{GLUE_TAG_KEY}' tag key (aws:TagKeys), as in AWS's "
            "managed AWSGlueServiceRole.",
        ),
        *(
            Acknowledgment(
                id=resource(f"{ec2_arn}:{kind}/*"),
                reason=f"CreateTags/DeleteTags of the '{GLUE_TAG_KEY}' tag key only (aws:TagKeys "
                f"condition) on {kind} resources, exactly as AWS's managed AWSGlueServiceRole "
                "grants them: Glue tags what it creates for a run, ids known only then.",
            )
            for kind in GLUE_TAGGED_RESOURCES
            if kind != "network-interface"
        ),
    )


def nag_text(value: object) -> str:
    """A resolved CloudFormation value the way cdk-nag prints it in a finding id:
    Ref -> <Id>, Fn::GetAtt -> <Id.Attr>, Fn::Join -> the parts concatenated."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "Ref" in value:
            return f"<{value['Ref']}>"
        if "Fn::GetAtt" in value:
            logical, attribute = value["Fn::GetAtt"]
            return f"<{logical}.{attribute}>"
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(nag_text(p) for p in parts)
    raise ValueError(f"cannot render {value!r} as a cdk-nag resource")


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


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
    logging every event (without execution data) to `/aws/vendedlogs/states/<name>-<stack id>`.

    Adds `StateMachineLogs` and `StateMachine` to `scope`. The definition's SnsPublish task grants
    sns:Publish itself; an encrypted alert topic also needs its key (exact actions: grant_publish
    would add kms:GenerateDataKey*).
    """
    log_group = logs.LogGroup(
        scope,
        "StateMachineLogs",
        log_group_name=f"/aws/vendedlogs/states/{name}-{stack_id_suffix(scope)}",
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
