"""The ingest flow: an upload to the raw bucket's incoming/ starts a Standard state machine that
runs the ingest Glue job (.sync) and alerts when it fails.

    EventBridge rule (aws.s3 "Object Created", raw bucket, key incoming/*.csv)
      -> state machine: RunIngestJob (glue:startJobRun.sync, bucket and key from the event)
           failure -> MarkFileFailed (tag the object, when it is still in incoming/)
                   -> AlertFailure (SNS) -> IngestFailed

The job handles file-level problems itself (file moved to failed/ with an error file, audit row)
and then fails, so the Catch alerts for those too; when the job could not even run (timeout,
crash, database down) the object stays in incoming/ for a retry and is tagged with the failure
so it is visible in the console. Grants are exact: the job reads incoming/, writes failed/,
curated/ and quarantine/, reads the database secret, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from churnops.database import METHODS, STRATEGIES
from churnops.ingestion import CURATED_PREFIX, FAILED_PREFIX, QUARANTINE_PREFIX
from glue_jobs.ingest_customers import RUN_ARGS
from stacks.assets import glue_dependencies_asset, glue_requirements, glue_script_asset
from stacks.database import log_retention
from stacks.storage import grant_object_delete, grant_object_read, grant_object_write

if TYPE_CHECKING:
    from stacks.database import Database

INGEST_SCRIPT = "ingest_customers.py"
GLUE_WORKER_TYPES = ("G.1X", "G.2X", "G.4X", "G.8X", "G.025X")
# Where the state machine finds the file in the EventBridge "Object Created" event.
EVENT_FIELDS = {"source_bucket": "$.detail.bucket.name", "source_key": "$.detail.object.key"}


@dataclass(frozen=True)
class IngestionSettings:
    name_prefix: str
    contract_name: str
    removal_policy: str  # of the job's KMS key and the log groups: "destroy" or "retain"
    log_retention_days: int
    incoming_prefix: str  # uploads under this prefix are ingested ("incoming/")
    file_suffix: str  # ... when their key ends with this (".csv")
    glue_worker_type: str  # e.g. "G.1X"; one file is processed on the driver (see ingestion.py)
    glue_workers: int
    glue_timeout_minutes: int
    max_concurrent_runs: int  # uploads arriving together queue behind this many runs
    start_retry_attempts: int  # retries when Glue refuses a run (concurrency, throttling)
    load_strategy: str  # "staged" (temporary table + merge) or "direct" (churnops.database)
    staging_method: str  # how rows are sent: "auto", "load_data" or "insert"

    def __post_init__(self) -> None:
        if not self.incoming_prefix.endswith("/") or self.incoming_prefix == "/":
            raise ValueError("incoming_prefix must be a folder such as 'incoming/'")
        if self.incoming_prefix.startswith(FAILED_PREFIX):
            raise ValueError(f"incoming_prefix must not be under {FAILED_PREFIX}")
        if not self.file_suffix.startswith("."):
            raise ValueError("file_suffix must be an extension such as '.csv'")
        if self.glue_worker_type not in GLUE_WORKER_TYPES:
            raise ValueError(f"glue_worker_type must be one of {', '.join(GLUE_WORKER_TYPES)}")
        if self.glue_workers < 2:
            raise ValueError("glue_workers must be at least 2 (one driver, one executor)")
        if not 1 <= self.glue_timeout_minutes <= 2880:
            raise ValueError("glue_timeout_minutes must be between 1 and 2880")
        if self.max_concurrent_runs < 1:
            raise ValueError("max_concurrent_runs must be at least 1")
        if self.load_strategy not in STRATEGIES:
            raise ValueError(f"load_strategy must be one of {', '.join(STRATEGIES)}")
        if self.staging_method not in METHODS:
            raise ValueError(f"staging_method must be one of {', '.join(METHODS)}")
        if self.removal_policy not in ("destroy", "retain", "snapshot"):
            raise ValueError("removal_policy must be 'destroy', 'snapshot' or 'retain'")


class Ingestion(Construct):
    """Exposes `state_machine`, `job` (glue CfnJob), `rule` (interfaces 7), plus `job_role` and
    `dead_letter_queue` (events the rule could not deliver)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        settings: IngestionSettings,
        raw_bucket: s3.IBucket,
        curated_bucket: s3.IBucket,
        database: Database,
        alert_topic: sns.ITopic,
        package: s3_assets.Asset,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.settings = settings
        removal = (
            RemovalPolicy.DESTROY if settings.removal_policy == "destroy" else RemovalPolicy.RETAIN
        )
        retention = log_retention(settings.log_retention_days)
        incoming = settings.incoming_prefix

        # ---- the job's role: exactly what ingest_object touches -----------------------------
        script = glue_script_asset(self, "IngestScript", INGEST_SCRIPT)
        # PyMySQL and anything else Glue 5.0 lacks, as a zip of wheels (no PyPI from the VPC).
        dependencies = glue_dependencies_asset(
            self, "IngestDependencies", glue_requirements(INGEST_SCRIPT)
        )
        self.job_role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("glue.amazonaws.com"),
            description="ChurnOps ingest Glue job",
        )
        for asset in (script, package, dependencies):  # the exact objects, no s3:List*
            self.job_role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[asset.bucket.arn_for_objects(asset.s3_object_key)],
                )
            )
        grant_object_read(raw_bucket, self.job_role, incoming)  # read the upload (and HEAD it)
        grant_object_delete(raw_bucket, self.job_role, incoming)  # move: delete after copy
        grant_object_write(raw_bucket, self.job_role, FAILED_PREFIX)  # the copy + .error.json
        grant_object_write(curated_bucket, self.job_role, CURATED_PREFIX, QUARANTINE_PREFIX)
        database.secret.grant_read(self.job_role)
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["glue:GetConnection"],
                resources=[
                    f"arn:{stack.partition}:glue:{stack.region}:{stack.account}:catalog",
                    f"arn:{stack.partition}:glue:{stack.region}:{stack.account}:connection/"
                    f"{database.glue_connection.ref}",
                ],
            )
        )
        # Glue places the job's workers in the VPC through network interfaces it creates with
        # this role; these EC2 actions have no resource-level permissions.
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
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
                ],
                resources=["*"],
            )
        )

        # ---- encryption of the job's logs and bookmarks -------------------------------------
        glue_logs = (
            f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:/aws-glue/*"
        )
        self.job_key = kms.Key(
            self,
            "JobKey",
            description="Encrypts the ChurnOps ingest job's logs and bookmarks",
            enable_key_rotation=True,
            removal_policy=removal,
        )
        self.job_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsForGlue",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=["*"],  # in a key policy "*" means this key
                conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": glue_logs}},
            )
        )
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
                resources=[self.job_key.key_arn],
            )
        )
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:AssociateKmsKey",
                ],
                resources=[glue_logs],
            )
        )
        security = glue.CfnSecurityConfiguration(
            self,
            "JobSecurity",
            name=f"{settings.name_prefix}-ingest",
            encryption_configuration=glue.CfnSecurityConfiguration.EncryptionConfigurationProperty(
                cloud_watch_encryption=glue.CfnSecurityConfiguration.CloudWatchEncryptionProperty(
                    cloud_watch_encryption_mode="SSE-KMS", kms_key_arn=self.job_key.key_arn
                ),
                job_bookmarks_encryption=glue.CfnSecurityConfiguration.JobBookmarksEncryptionProperty(
                    job_bookmarks_encryption_mode="CSE-KMS", kms_key_arn=self.job_key.key_arn
                ),
                s3_encryptions=[
                    glue.CfnSecurityConfiguration.S3EncryptionProperty(s3_encryption_mode="SSE-S3")
                ],
            ),
        )

        # ---- the Glue job -------------------------------------------------------------------
        default_arguments = {
            "--job-language": "python",
            "--extra-py-files": package.s3_object_url,
            "--enable-continuous-cloudwatch-log": "true",
            "--enable-metrics": "true",
            "--curated_bucket": curated_bucket.bucket_name,
            "--db_secret_arn": database.secret.secret_arn,
            "--contract_name": settings.contract_name,
            "--load_strategy": settings.load_strategy,
            "--staging_method": settings.staging_method,
            **dependencies.job_arguments,  # the zip of wheels, installed with pip --no-index
        }
        self.job = glue.CfnJob(
            self,
            "Job",
            name=f"{settings.name_prefix}-ingest",
            description="Validates one uploaded customer CSV, quarantines bad rows, writes curated "
            "Parquet and upserts the rest into the database",
            role=self.job_role.role_arn,
            glue_version="5.0",  # Spark 3.5.4, Python 3.11; a job without a version gets 5.1
            command=glue.CfnJob.JobCommandProperty(
                name="glueetl", python_version="3", script_location=script.s3_object_url
            ),
            default_arguments=default_arguments,
            connections=glue.CfnJob.ConnectionsListProperty(
                connections=[database.glue_connection.ref]
            ),
            worker_type=settings.glue_worker_type,
            number_of_workers=settings.glue_workers,
            timeout=settings.glue_timeout_minutes,
            max_retries=0,  # the state machine decides about retries
            execution_property=glue.CfnJob.ExecutionPropertyProperty(
                max_concurrent_runs=settings.max_concurrent_runs
            ),
            security_configuration=security.ref,
        )

        # ---- the state machine --------------------------------------------------------------
        file_uri = sfn.JsonPath.format(
            "s3://{}/{}",
            sfn.JsonPath.string_at(EVENT_FIELDS["source_bucket"]),
            sfn.JsonPath.string_at(EVENT_FIELDS["source_key"]),
        )
        alert = tasks.SnsPublish(
            self,
            "AlertFailure",
            topic=alert_topic,
            subject="ChurnOps ingestion failed",
            message=sfn.TaskInput.from_object(
                {
                    "flow": "ingest",
                    "file": file_uri,
                    "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                    "error": sfn.JsonPath.string_at("$.error.Error"),
                    "cause": sfn.JsonPath.string_at("$.error.Cause"),
                    "next_step": f"a file-level problem: see {FAILED_PREFIX}<name>.error.json; "
                    f"otherwise the file is still in {incoming} (tagged) - start the state "
                    "machine again with the same input to retry",
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        alert.next(sfn.Fail(self, "IngestFailed", error="IngestFailed", cause="see the SNS alert"))
        # Tag the object when it is still in incoming/ (the job did not get to move it); when it
        # was moved to failed/ the tagging finds no object, which is fine: go on to the alert.
        mark = tasks.CallAwsService(
            self,
            "MarkFileFailed",
            service="s3",
            action="putObjectTagging",
            parameters={
                "Bucket": sfn.JsonPath.string_at(EVENT_FIELDS["source_bucket"]),
                "Key": sfn.JsonPath.string_at(EVENT_FIELDS["source_key"]),
                "Tagging": {
                    "TagSet": [
                        {"Key": "churnops-ingest", "Value": "failed"},
                        {
                            "Key": "churnops-execution",
                            "Value": sfn.JsonPath.string_at("$$.Execution.Name"),
                        },
                    ]
                },
            },
            iam_resources=[raw_bucket.arn_for_objects(f"{incoming}*")],
            iam_action="s3:PutObjectTagging",
            result_path=sfn.JsonPath.DISCARD,
        )
        mark.add_catch(alert, errors=["States.ALL"], result_path="$.tagging_error")
        mark.next(alert)

        run_job = tasks.GlueStartJobRun(
            self,
            "RunIngestJob",
            comment="Validate, quarantine, curate and load the uploaded file",
            glue_job_name=self.job.ref,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,  # .sync: wait for the run
            arguments=sfn.TaskInput.from_object(
                {f"--{name}": sfn.JsonPath.string_at(EVENT_FIELDS[name]) for name in RUN_ARGS}
            ),
            result_selector={
                "run_id.$": "$.Id",
                "state.$": "$.JobRunState",
                "execution_seconds.$": "$.ExecutionTime",
            },
            result_path="$.job",
            task_timeout=sfn.Timeout.duration(Duration.minutes(settings.glue_timeout_minutes + 10)),
        )
        run_job.add_retry(
            errors=["Glue.ConcurrentRunsExceededException", "Glue.ThrottlingException"],
            max_attempts=settings.start_retry_attempts,
            interval=Duration.seconds(30),
            backoff_rate=2,
        )
        run_job.add_catch(mark, errors=["States.ALL"], result_path="$.error")
        definition = run_job.next(sfn.Succeed(self, "Ingested"))

        state_machine_logs = logs.LogGroup(
            self,
            "StateMachineLogs",
            log_group_name=f"/aws/vendedlogs/states/{settings.name_prefix}-ingest",
            retention=retention,
            removal_policy=removal,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{settings.name_prefix}-ingest",
            state_machine_type=sfn.StateMachineType.STANDARD,  # Glue .sync needs Standard
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=Duration.minutes(
                settings.glue_timeout_minutes * (settings.start_retry_attempts + 1) + 30
            ),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=state_machine_logs, level=sfn.LogLevel.ALL, include_execution_data=False
            ),
        )
        topic_key = getattr(alert_topic, "master_key", None)
        if topic_key is not None:  # an encrypted topic: publishing needs its key too
            self.state_machine.role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[topic_key.key_arn]
                )
            )

        # ---- the rule -----------------------------------------------------------------------
        self.dead_letter_queue = sqs.Queue(
            self,
            "UndeliveredUploads",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
            removal_policy=removal,
        )
        self.rule = events.Rule(
            self,
            "UploadRule",
            description=f"Uploads of {incoming}*{settings.file_suffix} to the raw bucket start "
            "the ingest state machine",
            event_pattern=self.event_pattern(raw_bucket.bucket_name, settings),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    dead_letter_queue=self.dead_letter_queue,
                    retry_attempts=8,
                    max_event_age=Duration.hours(24),
                )
            ],
        )
        self._acknowledge_nag_findings(raw_bucket, glue_logs)

    @staticmethod
    def event_pattern(bucket_name: str, settings: IngestionSettings) -> events.EventPattern:
        """S3's EventBridge "Object Created" events for keys `<incoming_prefix>*<file_suffix>`."""
        return events.EventPattern(
            source=["aws.s3"],
            detail_type=["Object Created"],
            detail={
                "bucket": {"name": [bucket_name]},
                "object": {
                    "key": events.Match.wildcard(
                        f"{settings.incoming_prefix}*{settings.file_suffix}"
                    )
                },
            },
        )

    def _acknowledge_nag_findings(self, raw_bucket: s3.IBucket, glue_logs: str) -> None:
        stack = Stack.of(self)
        Validations.of(self.job_role).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="Glue in a VPC: CreateNetworkInterface and ec2:Describe* have no "
                "resource-level permissions.",
            ),
            Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{_nag_text(stack.resolve(glue_logs))}]",
                reason="Glue names its log groups and streams under /aws-glue/ at run time.",
            ),
        )
        raw_resource = raw_bucket.node.default_child
        raw_arn = (
            f"<{stack.resolve(raw_resource.logical_id)}.Arn>"
            if raw_resource is not None
            else "<raw bucket>"
        )
        Validations.of(self.state_machine.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray tracing and CloudWatch Logs delivery actions have no resource type.",
            ),
            Acknowledgment(
                id=f"AwsSolutions::AwsSolutions-IAM5[Resource::{raw_arn}/{self.settings.incoming_prefix}*]",
                reason="Tagging a failed upload: its key is known only at run time, under the "
                "incoming/ prefix.",
            ),
        )
        Validations.of(self.dead_letter_queue).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SQS3",
                reason="This queue is itself the dead-letter queue of the upload rule's target.",
            )
        )


def _nag_text(value: object) -> str:
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
            return separator.join(_nag_text(p) for p in parts)
    raise ValueError(f"cannot render {value!r} as a cdk-nag resource")
