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

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from churnops.wiring import (
    CURATED_PREFIX,
    FAILED_PREFIX,
    QUARANTINE_PREFIX,
    STAGING_METHODS,
    IngestArgs,
)
from stacks.database import log_lifecycle
from stacks.flows import (
    GLUE_START_ERRORS,
    check_glue_job,
    failure_alert,
    logged_state_machine,
    vpc_glue_job,
)
from stacks.storage import grant_object_delete, grant_object_read, grant_object_write

if TYPE_CHECKING:
    from stacks.platform import Platform

INGEST_SCRIPT = "ingest_customers.py"
# Where the state machine finds the file in the EventBridge "Object Created" event (the ingest
# job's per-run arguments, IngestArgs.RUN_ARGS).
EVENT_FIELDS = {"source_bucket": "$.detail.bucket.name", "source_key": "$.detail.object.key"}


@dataclass(frozen=True)
class IngestionSettings:
    name_prefix: str
    contract_name: str
    removal_policy: str  # of the job's KMS key and the log groups: "destroy" or "retain"
    log_retention_days: int
    incoming_prefix: str  # uploads under this prefix are ingested ("incoming/")
    file_suffix: str  # ... when their key ends with this (".csv")
    glue_worker_type: str  # e.g. "G.1X"; a file's splits run on every executor (ingestion.py)
    glue_workers: int
    glue_timeout_minutes: int
    max_concurrent_runs: int  # uploads arriving together queue behind this many runs
    start_retry_attempts: int  # retries when Glue refuses a run (concurrency, throttling)
    staging_method: str  # how tasks send rows to staging: "auto", "load_data" or "insert"
    split_mb: int  # MiB of the file per Spark task; 0: a multiple of the executor cores

    def __post_init__(self) -> None:
        if not self.incoming_prefix.endswith("/") or self.incoming_prefix == "/":
            raise ValueError("incoming_prefix must be a folder such as 'incoming/'")
        if self.incoming_prefix.startswith(FAILED_PREFIX):
            raise ValueError(f"incoming_prefix must not be under {FAILED_PREFIX}")
        if not self.file_suffix.startswith("."):
            raise ValueError("file_suffix must be an extension such as '.csv'")
        check_glue_job(self)
        if self.split_mb < 0:
            raise ValueError("split_mb must be 0 (sized by the executor cores) or more")
        if self.max_concurrent_runs < 1:
            raise ValueError("max_concurrent_runs must be at least 1")
        if self.staging_method not in STAGING_METHODS:
            raise ValueError(f"staging_method must be one of {', '.join(STAGING_METHODS)}")
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
        platform: Platform,
    ) -> None:
        super().__init__(scope, id)
        self.settings = settings
        raw_bucket, curated_bucket = platform.raw_bucket, platform.curated_bucket
        database, alert_topic = platform.database, platform.alert_topic
        removal, retention = log_lifecycle(settings)
        incoming = settings.incoming_prefix
        # The job's arguments: the file's bucket and key come with each run, from the event.
        job_args = IngestArgs(
            source_bucket=sfn.JsonPath.string_at(EVENT_FIELDS["source_bucket"]),
            source_key=sfn.JsonPath.string_at(EVENT_FIELDS["source_key"]),
            curated_bucket=curated_bucket.bucket_name,
            db_secret_arn=database.secret.secret_arn,
            # The instance secret CDK generates has no dbname: the job is told the name.
            db_name=database.database_name,
            contract_name=settings.contract_name,
            staging_method=settings.staging_method,
            split_bytes=settings.split_mb << 20,
            # No run outlives the job's timeout: a `running` audit row older than that belongs
            # to a run that was killed, and the next run closes it.
            stale_run_minutes=settings.glue_timeout_minutes,
            incoming_prefix=incoming,
        )

        # ---- the Glue job: reads incoming/, writes failed/, curated/ and quarantine/ -----------
        # PyMySQL and anything else Glue 5.0 lacks come as a zip of wheels (no PyPI from the VPC).
        glue_job = vpc_glue_job(
            self,
            asset_id="Ingest",
            resource_id="Job",
            job_id="Job",
            script=INGEST_SCRIPT,
            name=f"{settings.name_prefix}-ingest",
            purpose="ingest",
            description="Validates one uploaded customer CSV, quarantines bad rows, writes "
            "curated Parquet and upserts the rest into the database",
            platform=platform,
            arguments=job_args.default_arguments(),
            size=settings,
            max_concurrent_runs=settings.max_concurrent_runs,
            removal=removal,
        )
        self.job, self.job_role, self.job_key = glue_job.job, glue_job.role, glue_job.key
        grant_object_read(raw_bucket, self.job_role, incoming)  # read the upload (and HEAD it)
        grant_object_delete(raw_bucket, self.job_role, incoming)  # move: delete after copy
        grant_object_write(raw_bucket, self.job_role, FAILED_PREFIX)  # the copy + .error.json
        grant_object_write(curated_bucket, self.job_role, CURATED_PREFIX, QUARANTINE_PREFIX)

        # ---- the state machine --------------------------------------------------------------
        file_uri = sfn.JsonPath.format(
            "s3://{}/{}",
            sfn.JsonPath.string_at(EVENT_FIELDS["source_bucket"]),
            sfn.JsonPath.string_at(EVENT_FIELDS["source_key"]),
        )
        alert = failure_alert(
            self,
            topic=alert_topic,
            flow="ingest",
            subject="ChurnOps ingestion failed",
            details={
                "file": file_uri,
                "next_step": f"a file-level problem: see {FAILED_PREFIX}<name>.error.json; "
                f"otherwise the file is still in {incoming} (tagged) - start the state "
                "machine again with the same input to retry",
            },
            failed_state="IngestFailed",
        )

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
            arguments=sfn.TaskInput.from_object(job_args.run_arguments()),
            result_selector={
                "run_id.$": "$.Id",
                "state.$": "$.JobRunState",
                "execution_seconds.$": "$.ExecutionTime",
            },
            result_path="$.job",
            task_timeout=sfn.Timeout.duration(Duration.minutes(settings.glue_timeout_minutes + 10)),
        )
        run_job.add_retry(
            errors=GLUE_START_ERRORS,
            max_attempts=settings.start_retry_attempts,
            interval=Duration.seconds(30),
            backoff_rate=2,
            # A burst of uploads can outlast a doubling schedule; capped, jittered waits keep
            # every file queued (no file may fail just because others arrived with it).
            max_delay=Duration.minutes(5),
            jitter_strategy=sfn.JitterType.FULL,
        )
        run_job.add_catch(mark, errors=["States.ALL"], result_path="$.error")
        definition = run_job.next(sfn.Succeed(self, "Ingested"))

        self.state_machine = logged_state_machine(
            self,
            name=f"{settings.name_prefix}-ingest",
            definition=definition,
            timeout=Duration.minutes(
                settings.glue_timeout_minutes * (settings.start_retry_attempts + 1) + 30
            ),
            retention=retention,
            removal=removal,
            alert_topic=alert_topic,
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
        self._acknowledge_nag_findings(raw_bucket)

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

    def _acknowledge_nag_findings(self, raw_bucket: s3.IBucket) -> None:
        """The findings of grants made here; the job role's VPC, logs and metrics grants are
        acknowledged where they are made (stacks.flows.vpc_glue_job), its S3 prefixes by the
        stacks.storage grant helpers."""
        stack = Stack.of(self)
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
