"""The retrain flow: a Standard state machine that promotes a challenger only when it is really
better, then batch-scores every customer with the new champion.

    Snapshot -> Drift -> Train -> Evaluate -> PromotionGate (Choice on the evaluate output)
        promote: Promote (conditional pointer move, ChampionPromoted event) -> BatchScore (Glue .sync)
        reject:  Reject (recorded with the gate's reasons)

Every task retries transient errors and catches everything else into an SNS alert followed by a
Fail state; no task before Promote touches the champion pointer, and Promote moves it only by a
conditional write, so a failure anywhere leaves the champion as it was.

The task functions are container-image Lambdas built from `containers/training/Dockerfile` (build
context: the repo root), one image with a per-function CMD naming its handler in
`lambdas/retrain/handlers.py`. Batch scoring (stacks/batch_scoring.py) contributes the BatchScore
step and its Glue job; the schedule (stacks/retrain_schedule.py) starts the flow.

Grants are made here, where each function's needs are visible, with exact actions on exact
prefixes (stacks.storage): the registry under `models/`, the curated bucket's `snapshots/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from churnops.wiring import (
    METRICS_NAMESPACE,
    REGISTRY_PREFIX,
    SNAPSHOTS_PREFIX,
    GateSettings,
    RetrainEnvironment,
    registry_uri,
)
from stacks.batch_scoring import batch_scoring
from stacks.database import log_lifecycle
from stacks.flows import (
    GLUE_START_ERRORS,
    check_glue_job,
    failure_alert,
    logged_state_machine,
    nag_text,
)
from stacks.images import LAMBDA_ARCHITECTURE, TRAINING_IMAGE
from stacks.retrain_schedule import check_schedule_expression, retrain_schedule
from stacks.storage import grant_object_get, grant_object_read, grant_object_write

if TYPE_CHECKING:
    from stacks.platform import Platform

HANDLER_MODULE = "lambdas.retrain.handlers"
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
        check_schedule_expression(self.schedule_expression)
        if not 128 <= self.function_memory_mb <= 10_240:
            raise ValueError("function_memory_mb must be between 128 and 10240")
        if not 1 <= self.function_timeout_seconds <= 900:
            raise ValueError("function_timeout_seconds must be between 1 and 900")
        check_glue_job(self)
        if self.training_folds < 2:
            raise ValueError("training_folds must be at least 2")
        if self.removal_policy not in ("destroy", "retain"):
            raise ValueError("removal_policy must be 'destroy' or 'retain'")


_Task = TypeVar("_Task", bound=sfn.TaskStateBase)

STEPS = ("snapshot", "drift", "train", "evaluate", "promote", "reject")
# The actions AWS's AWSLambdaVPCAccessExecutionRole grants on "*" for a VPC function's network
# interfaces (CreateNetworkInterface and DescribeNetworkInterfaces have no resource type).
_VPC_FUNCTION_ENI_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


class Retrain(Construct):
    """Exposes `state_machine`, `batch_score_job`, `schedule`, `functions` (interfaces 7), plus
    `roles` (per step) and `job_role` (the batch scoring job's)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        settings: RetrainSettings,
        platform: Platform,
    ) -> None:
        super().__init__(scope, id)
        self.settings = settings
        removal, retention = log_lifecycle(settings)
        self._task_functions(settings, platform, retention, removal)
        self._grant_steps(platform)

        scoring = batch_scoring(
            self,
            name=f"{settings.name_prefix}-batch-score",
            contract_name=settings.contract_name,
            platform=platform,
            size=settings,
            removal=removal,
        )
        self.batch_score_job, self.job_role = scoring.job, scoring.role

        self.state_machine = self._state_machine(
            settings, platform.alert_topic, scoring.task, retention=retention, removal=removal
        )
        self.schedule = retrain_schedule(
            self,
            state_machine=self.state_machine,
            expression=settings.schedule_expression,
            time_zone=settings.schedule_timezone,
            enabled=settings.schedule_enabled,
        )
        self._acknowledge_state_machine_findings()

    def _state_machine(
        self,
        settings: RetrainSettings,
        alert_topic: sns.ITopic,
        batch_score: tasks.GlueStartJobRun,
        *,
        retention: logs.RetentionDays,
        removal: RemovalPolicy,
    ) -> sfn.StateMachine:
        """The flow: every task retries its transient errors and catches the rest into the
        alert (module docstring)."""
        failed = failure_alert(
            self,
            topic=alert_topic,
            flow="retrain",
            subject="ChurnOps retrain failed",
            details={"champion": "unchanged unless the Promote step succeeded"},
            failed_state="RetrainFailed",
        )

        def guarded(task: _Task, errors: list[str], interval: Duration) -> _Task:
            """Retry `errors` (transient ones only), catch everything else into the alert."""
            task.add_retry(
                errors=errors,
                max_attempts=settings.retry_attempts,
                interval=interval,
                backoff_rate=2,
            )
            task.add_catch(failed, errors=["States.ALL"], result_path="$.error")
            return task

        def step(name: str, comment: str) -> tasks.LambdaInvoke:
            invoke = tasks.LambdaInvoke(
                self,
                name.capitalize(),
                comment=comment,
                lambda_function=self.functions[name],
                result_path=f"$.{name}",
                retry_on_service_exceptions=True,
            )
            return guarded(invoke, TRANSIENT_ERRORS, Duration.seconds(10))

        guarded(batch_score, GLUE_START_ERRORS, Duration.seconds(60))
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
        return logged_state_machine(
            self,
            name=f"{settings.name_prefix}-retrain",
            definition=definition,
            timeout=Duration.hours(4),
            retention=retention,
            removal=removal,
            alert_topic=alert_topic,
        )

    def _task_functions(
        self,
        settings: RetrainSettings,
        platform: Platform,
        retention: logs.RetentionDays,
        removal: RemovalPolicy,
    ) -> None:
        """One container-image function per step, each with its own role and log group."""
        database = platform.database
        step_env = RetrainEnvironment(
            registry_uri=registry_uri(platform.registry_bucket.bucket_name),
            curated_bucket=platform.curated_bucket.bucket_name,
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
                    env, db_secret_arn=database.secret.secret_arn, db_name=database.database_name
                )
            self.functions[step] = lambda_.DockerImageFunction(
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
            self.roles[step] = role

    def _grant_steps(self, platform: Platform) -> None:
        """What each step's function may do, and nothing more. S3 grants acknowledge their own
        prefix wildcards (stacks.storage); the two grants on "*" acknowledge theirs here."""
        curated_bucket, registry_bucket = platform.curated_bucket, platform.registry_bucket
        database = platform.database
        roles = self.roles
        database.secret.grant_read(roles["snapshot"])
        grant_object_write(curated_bucket, roles["snapshot"], SNAPSHOTS_PREFIX)
        _grant_unscoped(
            roles["snapshot"],
            _VPC_FUNCTION_ENI_ACTIONS,
            "A VPC function's network interfaces: CreateNetworkInterface and "
            "DescribeNetworkInterfaces have no resource-level permissions; these are the actions "
            "AWS's AWSLambdaVPCAccessExecutionRole grants on * for the same purpose.",
        )
        for step in ("drift", "train", "evaluate"):
            # The snapshot's keys come in the state: opened, never looked for.
            grant_object_get(curated_bucket, roles[step], SNAPSHOTS_PREFIX)
        for step in ("drift", "train", "evaluate", "promote", "reject"):
            grant_object_read(registry_bucket, roles[step], REGISTRY_PREFIX)
        for step in ("drift", "evaluate"):
            # The drift report and the evaluation, next to the snapshot.
            grant_object_write(curated_bucket, roles[step], SNAPSHOTS_PREFIX)
        for step in ("drift", "train", "promote", "reject"):
            # PutObject covers the conditional writes (If-None-Match / If-Match) the registry
            # uses; nothing here can delete or overwrite unconditionally.
            grant_object_write(registry_bucket, roles[step], REGISTRY_PREFIX)
        _grant_unscoped(
            roles["drift"],
            ["cloudwatch:PutMetricData"],
            "cloudwatch:PutMetricData has no resource type; a condition pins the ChurnOps "
            "namespace.",
            conditions={"StringEquals": {"cloudwatch:namespace": METRICS_NAMESPACE}},
        )
        stack = Stack.of(self)
        default_bus = (
            f"arn:{stack.partition}:events:{stack.region}:{stack.account}:event-bus/default"
        )
        roles["promote"].add_to_principal_policy(
            iam.PolicyStatement(actions=["events:PutEvents"], resources=[default_bus])
        )

    def _acknowledge_state_machine_findings(self) -> None:
        stack = Stack.of(self)
        invoke_reason = (
            "CDK's Lambda invoke grant also covers the function's versions and aliases "
            "(<function arn>:*), which Step Functions may call."
        )
        Validations.of(self.state_machine.role).acknowledge(
            *(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-IAM5[Resource::"
                    f"{nag_text(stack.resolve(fn.function_arn))}:*]",
                    reason=invoke_reason,
                )
                for fn in self.functions.values()
            ),
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray tracing and CloudWatch Logs delivery actions have no resource type.",
            ),
        )


def _grant_unscoped(
    role: iam.IRole,
    actions: list[str],
    reason: str,
    conditions: dict[str, Any] | None = None,
) -> None:
    """A grant on "*" for actions without a resource type, acknowledged on this role alone with
    why (tests/infra/test_acknowledgements.py: no role acknowledges a grant it lacks)."""
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=actions, resources=["*"], conditions=conditions)
    )
    Validations.of(role).acknowledge(
        Acknowledgment(id="AwsSolutions::AwsSolutions-IAM5[Resource::*]", reason=reason)
    )
