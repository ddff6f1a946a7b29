"""The retrain flow: a scheduled Standard state machine that promotes a challenger only when it is
really better, then batch-scores every customer with the new champion.

    Snapshot -> Drift -> Train -> Evaluate -> PromotionGate (Choice on the evaluate output)
        promote: Promote (conditional pointer move, ChampionPromoted event) -> BatchScore (Glue .sync)
        reject:  Reject (recorded with the gate's reasons)

Every task retries transient errors and catches everything else into an SNS alert followed by a
Fail state; no task before Promote touches the champion pointer, and Promote moves it only by a
conditional write, so a failure anywhere leaves the champion as it was.

The task functions are container-image Lambdas built from `containers/training/Dockerfile` (build
context: the repo root), one image with a per-function CMD naming its handler in
`lambdas/retrain/handlers.py`. EventBridge Scheduler starts the flow on the cron from settings;
`aws stepfunctions start-execution` (or `churnops local retrain`) starts it by hand.

Grants are made here, where each function's needs are visible, with exact actions on exact
prefixes: the registry under `models/`, the curated bucket's `snapshots/` and `predictions/`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, TimeZone, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from churnops.wiring import (
    METRICS_NAMESPACE,
    PREDICTIONS_PREFIX,
    REGISTRY_PREFIX,
    SNAPSHOTS_PREFIX,
    BatchScoreArgs,
    GateSettings,
    RetrainEnvironment,
    registry_uri,
)
from stacks.database import log_retention
from stacks.flows import GLUE_START_ERRORS, failure_alert, logged_state_machine, vpc_glue_job
from stacks.images import LAMBDA_ARCHITECTURE, TRAINING_IMAGE

if TYPE_CHECKING:
    from stacks.database import Database

HANDLER_MODULE = "lambdas.retrain.handlers"
BATCH_SCORE_SCRIPT = "batch_score.py"
# Errors worth a second attempt: the database or an AWS endpoint out of reach, never a domain
# error. A Lambda step's error name is its exception's class name, so these are classes the
# steps really raise: churnops.database.connect turns pymysql's connection failures into
# DatabaseUnavailableError (pymysql's own classes never escape it), and botocore's endpoint
# errors propagate as themselves (AWS throttling is retried inside boto3, and would surface as
# ClientError). Lambda's own transient failures (Lambda.ServiceException, ...) are retried by
# `retry_on_service_exceptions`; a function timeout or out-of-memory end arrives as
# Lambda.Unknown (Step Functions best practices) and is not retried: it would only recur.
TRANSIENT_ERRORS = [
    "DatabaseUnavailableError",
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
]
_SCHEDULE = re.compile(r"^(cron|rate|at)\(.+\)$")


@dataclass(frozen=True)
class RetrainSettings:
    name_prefix: str = "churnops"
    # EventBridge Scheduler expression, e.g. "cron(0 3 ? * SUN *)" (weekly, Sunday 03:00).
    schedule_expression: str = "cron(0 3 ? * SUN *)"
    schedule_timezone: str = "UTC"
    schedule_enabled: bool = True
    contract_name: str = "telco"
    gate: GateSettings = field(default_factory=GateSettings)
    # Training: the model families to try (empty: all of churnops.model.FAMILIES) and CV folds.
    training_families: tuple[str, ...] = ()
    training_folds: int = 5
    # Task functions: every step fits 3 GB and 15 minutes up to 10M customers (README, "Retrain
    # at scale"); train and evaluate read bounded, hash-chosen samples of the snapshot.
    function_memory_mb: int = 3008
    function_timeout_seconds: int = 900
    retry_attempts: int = 2
    # Batch scoring job.
    glue_worker_type: str = "G.1X"
    glue_workers: int = 2
    glue_timeout_minutes: int = 60
    log_retention_days: int = 30
    removal_policy: str = "destroy"  # of the job's KMS key and the log groups

    def __post_init__(self) -> None:
        if not _SCHEDULE.match(self.schedule_expression):
            raise ValueError(
                f"schedule_expression '{self.schedule_expression}' is not cron(...), "
                "rate(...) or at(...)"
            )
        if not 128 <= self.function_memory_mb <= 10_240:
            raise ValueError("function_memory_mb must be between 128 and 10240")
        if not 1 <= self.function_timeout_seconds <= 900:
            raise ValueError("function_timeout_seconds must be between 1 and 900")
        if self.glue_workers < 2:
            raise ValueError("glue_workers must be at least 2 (one driver, one executor)")
        if self.training_folds < 2:
            raise ValueError("training_folds must be at least 2")
        if self.removal_policy not in ("destroy", "retain"):
            raise ValueError("removal_policy must be 'destroy' or 'retain'")


STEPS = ("snapshot", "drift", "train", "evaluate", "promote", "reject")


class Retrain(Construct):
    """Exposes `state_machine`, `batch_score_job`, `schedule`, `functions` (interfaces 7)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        settings: RetrainSettings,
        curated_bucket: s3.IBucket,
        registry_bucket: s3.IBucket,
        database: Database,
        alert_topic: sns.ITopic,
        package: s3_assets.Asset,
    ) -> None:
        super().__init__(scope, id)
        self.settings = settings
        stack = Stack.of(self)
        removal = (
            RemovalPolicy.DESTROY if settings.removal_policy == "destroy" else RemovalPolicy.RETAIN
        )
        retention = log_retention(settings.log_retention_days)
        registry = registry_uri(registry_bucket.bucket_name)

        # ---- task functions -----------------------------------------------------------------
        step_env = RetrainEnvironment(
            registry_uri=registry,
            curated_bucket=curated_bucket.bucket_name,
            contract_name=settings.contract_name,
            gate=settings.gate,
            train_families=settings.training_families,
            train_folds=settings.training_folds,
        )
        self.functions: dict[str, lambda_.DockerImageFunction] = {}
        self.roles: dict[str, iam.Role] = {}
        for step in STEPS:
            in_vpc = step == "snapshot"  # only the snapshot reads the database
            log_group = logs.LogGroup(
                self, f"{step.capitalize()}Logs", retention=retention, removal_policy=removal
            )
            role = iam.Role(
                self,
                f"{step.capitalize()}Role",
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"ChurnOps retrain {step} function",
            )
            # Our own log group and an inline grant on it, instead of AWSLambdaBasicExecutionRole
            # (which lets a function write to every log group in the account).
            log_group.grant_write(role)
            env = step_env
            if in_vpc:
                # The instance secret CDK generates has no dbname: the function is told it.
                env = replace(
                    env,
                    db_secret_arn=database.secret.secret_arn,
                    db_name=database.database_name,
                )
            fn = lambda_.DockerImageFunction(
                self,
                f"{step.capitalize()}Function",
                description=f"ChurnOps retrain step: {step}",
                code=TRAINING_IMAGE.code(cmd=[f"{HANDLER_MODULE}.{step}"]),
                memory_size=settings.function_memory_mb,
                timeout=Duration.seconds(settings.function_timeout_seconds),
                environment=env.to_env(),
                role=role,
                log_group=log_group,
                architecture=LAMBDA_ARCHITECTURE,
                vpc=database.vpc if in_vpc else None,
                vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
                if in_vpc
                else None,
                security_groups=[database.lambda_security_group] if in_vpc else None,
            )
            self.functions[step] = fn
            self.roles[step] = role

        snapshot_objects = curated_bucket.arn_for_objects(f"{SNAPSHOTS_PREFIX}*")
        registry_objects = registry_bucket.arn_for_objects(f"{REGISTRY_PREFIX}*")
        # Every wildcard a role is granted is acknowledged on that role alone, with its reason,
        # as it is granted (tests/infra/test_acknowledgements.py: no role acknowledges a grant it
        # lacks).
        self._wildcards = _Wildcards()
        grant = self._wildcards.grant

        def read_snapshots(step: str) -> None:
            grant(self.roles[step], ["s3:GetObject"], [snapshot_objects], _RUN_TIME_KEYS)

        def write_snapshots(step: str) -> None:
            grant(self.roles[step], ["s3:PutObject"], [snapshot_objects], _RUN_TIME_KEYS)

        def read_registry(step: str) -> None:
            grant(self.roles[step], ["s3:GetObject"], [registry_objects], _RUN_TIME_KEYS)
            _list_prefix(self.roles[step], registry_bucket, REGISTRY_PREFIX)

        def write_registry(step: str) -> None:
            # PutObject covers the conditional writes (If-None-Match / If-Match) the registry
            # uses; nothing here can delete or overwrite unconditionally.
            grant(self.roles[step], ["s3:PutObject"], [registry_objects], _RUN_TIME_KEYS)

        database.secret.grant_read(self.roles["snapshot"])
        write_snapshots("snapshot")
        grant(
            self.roles["snapshot"],
            list(_VPC_FUNCTION_ENI_ACTIONS),
            ["*"],
            "A VPC function's network interfaces: CreateNetworkInterface and "
            "DescribeNetworkInterfaces have no resource-level permissions; these are the actions "
            "AWS's AWSLambdaVPCAccessExecutionRole grants on * for the same purpose.",
        )
        for step in ("drift", "train", "evaluate"):
            read_snapshots(step)
            read_registry(step)
        for step in ("drift", "evaluate"):
            write_snapshots(step)  # the drift report and the evaluation, next to the snapshot
        for step in ("drift", "train", "promote", "reject"):
            write_registry(step)
        for step in ("promote", "reject"):
            read_registry(step)
        grant(
            self.roles["drift"],
            ["cloudwatch:PutMetricData"],
            ["*"],
            "cloudwatch:PutMetricData has no resource type; a condition pins the ChurnOps "
            "namespace.",
            conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
        )
        default_bus = (
            f"arn:{stack.partition}:events:{stack.region}:{stack.account}:event-bus/default"
        )
        self.roles["promote"].add_to_principal_policy(
            iam.PolicyStatement(actions=["events:PutEvents"], resources=[default_bus])
        )

        # ---- batch scoring Glue job ---------------------------------------------------------
        # What to score comes with each run, from the promote and snapshot steps' results.
        batch_args = BatchScoreArgs(
            registry_uri=registry,
            input_uri=sfn.JsonPath.string_at("$.snapshot.Payload.uri"),
            curated_bucket=curated_bucket.bucket_name,
            model_version=sfn.JsonPath.string_at("$.promote.Payload.version"),
            processing_date=sfn.JsonPath.string_at("$.promote.Payload.processing_date"),
            db_secret_arn=database.secret.secret_arn,
            # The instance secret CDK generates has no dbname: the job is told the name.
            db_name=database.database_name,
            contract_name=settings.contract_name,
        )
        # onnxruntime, PyMySQL, ...: what Glue 5.0 lacks, as a zip of wheels built at synth from
        # containers/glue/batch_score.txt (the job's subnets have no route to PyPI).
        batch_score_job = vpc_glue_job(
            self,
            asset_id="BatchScore",
            resource_id="BatchScore",
            job_id="BatchScoreJob",
            script=BATCH_SCORE_SCRIPT,
            name=f"{settings.name_prefix}-batch-score",
            purpose="batch scoring",
            description="Scores every customer of a snapshot with the champion (mapInPandas)",
            package=package,
            database=database,
            arguments=batch_args.default_arguments(),
            worker_type=settings.glue_worker_type,
            workers=settings.glue_workers,
            timeout_minutes=settings.glue_timeout_minutes,
            max_concurrent_runs=2,
            removal=removal,
        )
        self.batch_score_job = batch_score_job.job
        self.job_role = job_role = batch_score_job.role
        grant(job_role, ["s3:GetObject"], [snapshot_objects, registry_objects], _RUN_TIME_KEYS)
        _list_prefix(job_role, registry_bucket, REGISTRY_PREFIX)
        # The job's plan lists the snapshot's Parquet parts (churnops.batch_scoring).
        _list_prefix(job_role, curated_bucket, SNAPSHOTS_PREFIX)
        predictions = curated_bucket.arn_for_objects(f"{PREDICTIONS_PREFIX}*")
        # Delete: a re-run for the same day replaces that day's partition files.
        grant(job_role, ["s3:PutObject", "s3:DeleteObject"], [predictions], _RUN_TIME_KEYS)
        _list_prefix(job_role, curated_bucket, PREDICTIONS_PREFIX)

        # ---- state machine ------------------------------------------------------------------
        failed = failure_alert(
            self,
            topic=alert_topic,
            flow="retrain",
            subject="ChurnOps retrain failed",
            details={"champion": "unchanged unless the Promote step succeeded"},
            failed_state="RetrainFailed",
        )

        def step(name: str, comment: str) -> tasks.LambdaInvoke:
            task = tasks.LambdaInvoke(
                self,
                name.capitalize(),
                comment=comment,
                lambda_function=self.functions[name],
                result_path=f"$.{name}",
                retry_on_service_exceptions=True,
            )
            task.add_retry(
                errors=TRANSIENT_ERRORS,
                max_attempts=settings.retry_attempts,
                interval=Duration.seconds(10),
                backoff_rate=2,
            )
            task.add_catch(failed, errors=["States.ALL"], result_path="$.error")
            return task

        batch_score = tasks.GlueStartJobRun(
            self,
            "BatchScore",
            comment="Score every customer of the snapshot with the new champion",
            glue_job_name=self.batch_score_job.ref,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            arguments=sfn.TaskInput.from_object(batch_args.run_arguments()),
            result_path="$.batch_score",
        )
        batch_score.add_retry(
            errors=GLUE_START_ERRORS,
            max_attempts=settings.retry_attempts,
            interval=Duration.seconds(60),
            backoff_rate=2,
        )
        batch_score.add_catch(failed, errors=["States.ALL"], result_path="$.error")

        promote = step("promote", "Move the champion pointer (conditional write), publish event")
        reject = step("reject", "Record the challenger as rejected, with the gate's reasons")
        gate = (
            sfn.Choice(self, "PromotionGate", comment="The evaluate step's gate decision")
            .when(
                sfn.Condition.boolean_equals("$.evaluate.Payload.promote", True),
                promote.next(batch_score).next(sfn.Succeed(self, "Promoted")),
            )
            .otherwise(reject.next(sfn.Succeed(self, "ChallengerRejected")))
        )
        definition = (
            step("snapshot", "Training data from the database to S3 Parquet")
            .next(step("drift", "Drift of the snapshot against the champion's reference"))
            .next(step("train", "Train and register the challenger"))
            .next(step("evaluate", "Challenger and champion on the same holdout; gate"))
            .next(gate)
        )
        self.state_machine = logged_state_machine(
            self,
            name=f"{settings.name_prefix}-retrain",
            definition=definition,
            timeout=Duration.hours(4),
            retention=retention,
            removal=removal,
            alert_topic=alert_topic,
        )

        # ---- schedule -----------------------------------------------------------------------
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description="Scheduled ChurnOps retrain",
            schedule=scheduler.ScheduleExpression.expression(
                settings.schedule_expression, time_zone=TimeZone.of(settings.schedule_timezone)
            ),
            target=scheduler_targets.StepFunctionsStartExecution(
                self.state_machine,
                input=scheduler.ScheduleTargetInput.from_object({"trigger": "schedule"}),
                retry_attempts=2,
            ),
            enabled=settings.schedule_enabled,
        )
        self._wildcards.acknowledge()
        self._acknowledge_state_machine_findings()

    def _acknowledge_state_machine_findings(self) -> None:
        stack = Stack.of(self)
        invoke_reason = (
            "CDK's Lambda invoke grant also covers the function's versions and aliases "
            "(<function arn>:*), which Step Functions may call."
        )
        sm_acks = [
            (
                "AwsSolutions-IAM5[Resource::"
                + _nag_resource(stack.resolve(fn.function_arn))
                + ":*]",
                invoke_reason,
            )
            for fn in self.functions.values()
        ]
        sm_acks.append(
            (
                "AwsSolutions-IAM5[Resource::*]",
                "X-Ray tracing and CloudWatch Logs delivery actions have no resource type.",
            )
        )
        _acknowledge(self.state_machine.role, sm_acks)


def _acknowledge(scope: Construct, findings: list[tuple[str, str]]) -> None:
    Validations.of(scope).acknowledge(
        *(
            Acknowledgment(id=f"AwsSolutions::{finding}", reason=reason)
            for finding, reason in findings
        )
    )


def _nag_resource(value: object) -> str:
    """A resolved CloudFormation value as cdk-nag prints it in finding ids:
    Fn::GetAtt -> <Id.Attr>, Ref -> <Id>, Fn::Join -> the parts concatenated."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "Fn::GetAtt" in value:
            logical, attr = value["Fn::GetAtt"]
            return f"<{logical}.{attr}>"
        if "Ref" in value:
            return f"<{value['Ref']}>"
        if "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return sep.join(_nag_resource(p) for p in parts)
    raise ValueError(f"cannot render {value!r} as a cdk-nag resource")


# Why an object-prefix wildcard is as narrow as it can be.
_RUN_TIME_KEYS = (
    "Objects under one prefix (models/, snapshots/ or predictions/): the keys are version, run "
    "and partition ids created at run time."
)
_VPC_FUNCTION_ENI_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)


class _Wildcards:
    """Grants with a wildcard resource, remembered per role so that each role acknowledges
    exactly the cdk-nag AwsSolutions-IAM5 findings its own grants raise."""

    def __init__(self) -> None:
        self._by_role: dict[str, tuple[iam.IRole, dict[str, str]]] = {}

    def grant(
        self,
        role: iam.IRole,
        actions: list[str],
        resources: list[str],
        reason: str,
        conditions: dict[str, Any] | None = None,
    ) -> None:
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=actions, resources=resources, conditions=conditions)
        )
        stack = Stack.of(role)
        findings = self._by_role.setdefault(role.node.path, (role, {}))[1]
        for resource in resources:
            rendered = _nag_resource(stack.resolve(resource))
            if "*" in rendered:
                findings[f"AwsSolutions-IAM5[Resource::{rendered}]"] = reason

    def acknowledge(self) -> None:
        for role, findings in self._by_role.values():
            _acknowledge(role, sorted(findings.items()))


def _list_prefix(role: iam.IRole, bucket: s3.IBucket, prefix: str) -> None:
    """ListBucket limited to one prefix (a folder such as "models/"; the registry lists versions
    and history)."""
    folder = prefix.rstrip("/")
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{folder}/*", folder]}},
        )
    )
