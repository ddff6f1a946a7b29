"""The retrain flow: a Standard state machine that lets a challenger out only when it is really
better, and a second one that rolls it out stage by stage, then batch-scores every customer with
the new champion.

    retrain: Snapshot -> Drift -> Train -> Evaluate -> PromotionGate (Choice on the evaluate output)
        pass:   StartRollout (the rollout state machine, named after the run and the challenger)
        reject: Reject (recorded with the gate's reasons)

    rollout: Rollout (first champion: promoted at once; else the candidate at stage shadow)
        -> Bake (Wait) -> RolloutCheck (alarms, bake) -> loop until full or aborted
        full:    BatchScore (Glue .sync) -> Promoted
        aborted: AlertRollback (SNS: which alarm) -> RolledBack

The rollout's stages, share, bakes and the thresholds of the candidate's four alarms (scoring
errors, p99 latency, decision disagreement with the champion, score PSI) come from cdk.json
`rollout` (churnops.wiring.RolloutSettings); churnops/retrain/rollout.py says what each check
does. Every task retries transient errors and catches everything else into an SNS alert
followed by a Fail state; no task before Rollout touches a pointer, and every pointer write is
conditional, so a failure anywhere leaves the champion as it was.

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
from aws_cdk import aws_cloudwatch as cloudwatch
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
    ROLE_CANDIDATE,
    ROLE_DIMENSION,
    SERVING_SERVICE_NAME,
    SHADOW_DISAGREEMENT_METRIC,
    SHADOW_SCORE_PSI_METRIC,
    SNAPSHOTS_PREFIX,
    VERSION_ERRORS_METRIC,
    VERSION_LATENCY_METRIC,
    GateSettings,
    RetrainEnvironment,
    RolloutSettings,
    registry_uri,
    rollout_alarm_names,
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
    # An MLflow tracking server the functions log runs and set model aliases on (empty: none).
    mlflow_tracking_uri: str = ""
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

STEPS = ("snapshot", "drift", "train", "evaluate", "reject", "rollout", "rollout_check")


def _construct_name(step: str) -> str:
    """ "rollout_check" -> "RolloutCheck": the step's part of its construct ids."""
    return "".join(part.capitalize() for part in step.split("_"))


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
    `roles` (per step), `job_role` (the batch scoring job's), `rollout_state_machine` and
    `candidate_alarms` (signal -> the rollout's alarm on the candidate)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        settings: RetrainSettings,
        platform: Platform,
        rollout: RolloutSettings | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.settings = settings
        self.rollout = rollout = rollout or RolloutSettings()
        removal, retention = log_lifecycle(settings)
        self.candidate_alarms = self._candidate_alarms(settings.name_prefix, rollout)
        self._task_functions(settings, platform, rollout, retention, removal)
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

        self.rollout_state_machine = self._rollout_state_machine(
            settings, rollout, platform.alert_topic, scoring.task, retention, removal
        )
        self.state_machine = self._state_machine(
            settings, platform.alert_topic, retention=retention, removal=removal
        )
        self.schedule = retrain_schedule(
            self,
            state_machine=self.state_machine,
            expression=settings.schedule_expression,
            time_zone=settings.schedule_timezone,
            enabled=settings.schedule_enabled,
        )
        self._acknowledge_state_machine_findings()

    def _guards(
        self, scope: Construct, settings: RetrainSettings, failed: sfn.IChainable
    ) -> tuple[Any, Any]:
        """(guarded, step) for a state machine whose failures go to `failed`: `guarded` retries a
        task's transient errors and catches everything else into the alert; `step(name)` is the
        guarded Lambda task of a retrain function, its result under `$.<name>`."""

        def guarded(task: _Task, errors: list[str], interval: Duration) -> _Task:
            task.add_retry(
                errors=errors,
                max_attempts=settings.retry_attempts,
                interval=interval,
                backoff_rate=2,
            )
            task.add_catch(failed, errors=["States.ALL"], result_path="$.error")
            return task

        def step(name: str, comment: str, result: str | None = None) -> tasks.LambdaInvoke:
            invoke = tasks.LambdaInvoke(
                scope,
                _construct_name(name),
                comment=comment,
                lambda_function=self.functions[name],
                result_path=f"$.{result or name}",
                retry_on_service_exceptions=True,
            )
            return guarded(invoke, TRANSIENT_ERRORS, Duration.seconds(10))

        return guarded, step

    def _state_machine(
        self,
        settings: RetrainSettings,
        alert_topic: sns.ITopic,
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
            details={"champion": "unchanged: only the rollout state machine moves it"},
            failed_state="RetrainFailed",
        )
        _, step = self._guards(self, settings, failed)
        # Fire and forget: a rollout bakes for hours, longer than a retrain may run. The name ties
        # the rollout to its run and challenger, and a second start of the same name and input
        # is the same execution (StartExecution is idempotent for Standard workflows).
        start_rollout = (
            tasks.StepFunctionsStartExecution(
                self,
                "StartRollout",
                comment="Hand the challenger to the rollout state machine",
                state_machine=self.rollout_state_machine,
                name=sfn.JsonPath.format(
                    "{}-{}",
                    sfn.JsonPath.string_at("$.snapshot.Payload.run_id"),
                    sfn.JsonPath.string_at("$.train.Payload.version"),
                ),
                input=sfn.TaskInput.from_object(
                    {
                        step_name: {"Payload": sfn.JsonPath.object_at(f"$.{step_name}.Payload")}
                        for step_name in ("snapshot", "train", "evaluate")
                    }
                ),
                integration_pattern=sfn.IntegrationPattern.REQUEST_RESPONSE,
                result_path="$.rollout_execution",
            )
        ).add_catch(failed, errors=["States.ALL"], result_path="$.error")
        reject = step("reject", "Record the challenger as rejected, with the gate's reasons")
        gate = (
            sfn.Choice(self, "PromotionGate", comment="The evaluate step's gate decision")
            .when(
                sfn.Condition.boolean_equals("$.evaluate.Payload.promote", True),
                start_rollout.next(sfn.Succeed(self, "HandedToRollout")),
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

    def _rollout_state_machine(
        self,
        settings: RetrainSettings,
        rollout: RolloutSettings,
        alert_topic: sns.ITopic,
        batch_score: tasks.GlueStartJobRun,
        retention: logs.RetentionDays,
        removal: RemovalPolicy,
    ) -> sfn.StateMachine:
        """Rollout -> (Bake -> RolloutCheck)* -> BatchScore or AlertRollback (module docstring).
        Its own scope: its states, logs and alert beside the retrain's, under other ids."""
        scope = Construct(self, "Rollout")
        failed = failure_alert(
            scope,
            topic=alert_topic,
            flow="rollout",
            subject="ChurnOps rollout failed",
            details={
                "champion": "unchanged unless the rollout reached full",
                "rollout": "see `churnops registry rollout status`",
            },
            failed_state="RolloutFailed",
        )
        guarded, step = self._guards(scope, settings, failed)
        guarded(batch_score, GLUE_START_ERRORS, Duration.seconds(60))
        promoted = batch_score.next(sfn.Succeed(scope, "Promoted"))
        rolled_back = tasks.SnsPublish(
            scope,
            "AlertRollback",
            topic=alert_topic,
            subject="ChurnOps rollout rolled back",
            message=sfn.TaskInput.from_object(
                {
                    "flow": "rollout",
                    "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                    "rollout_id": sfn.JsonPath.string_at("$.rollout.Payload.rollout_id"),
                    "candidate": sfn.JsonPath.string_at("$.rollout.Payload.version"),
                    "champion": sfn.JsonPath.string_at("$.rollout.Payload.champion_version"),
                    "alarm": sfn.JsonPath.string_at("$.rollout.Payload.alarm"),
                    "reason": sfn.JsonPath.string_at("$.rollout.Payload.reason"),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        ).next(sfn.Succeed(scope, "RolledBack"))
        bake = sfn.Wait(
            scope,
            "Bake",
            comment="Until the next check: the interval, or the stage's bake end",
            time=sfn.WaitTime.seconds_path("$.rollout.Payload.wait_seconds"),
        )
        check = step(
            "rollout_check",
            "Roll back on any candidate alarm; advance a stage whose bake is over",
            result="rollout",
        )

        def stage_choice(id: str) -> sfn.Choice:
            return (
                sfn.Choice(scope, id, comment="Where the rollout is")
                .when(sfn.Condition.string_equals("$.rollout.Payload.stage", "full"), promoted)
                .when(
                    sfn.Condition.string_equals("$.rollout.Payload.stage", "aborted"), rolled_back
                )
                .otherwise(bake)
            )

        bake.next(check).next(stage_choice("AfterCheck"))
        definition = step(
            "rollout",
            "First champion: promote; else the challenger becomes the candidate at shadow",
        ).next(stage_choice("AfterStart"))
        bakes = rollout.shadow_bake_seconds + rollout.canary_bake_seconds
        return logged_state_machine(
            scope,
            name=f"{settings.name_prefix}-rollout",
            definition=definition,
            # The bakes, plus the checks' slack and the batch scoring at the end.
            timeout=Duration.seconds(bakes + 4 * 3600),
            retention=retention,
            removal=removal,
            alert_topic=alert_topic,
        )

    def _candidate_alarms(
        self, name_prefix: str, rollout: RolloutSettings
    ) -> dict[str, cloudwatch.Alarm]:
        """The four alarms on "the candidate" (dimension Role=candidate, whichever version it
        is; the serving function publishes every per-version datapoint under (service, Role) as
        well, churnops.wiring): no candidate, no data, which is not breaching."""
        period = Duration.seconds(rollout.alarm_period_seconds)

        def metric(name: str, statistic: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=METRICS_NAMESPACE,
                metric_name=name,
                dimensions_map={"service": SERVING_SERVICE_NAME, ROLE_DIMENSION: ROLE_CANDIDATE},
                statistic=statistic,
                period=period,
            )

        signals = {
            "errors": (
                metric(VERSION_ERRORS_METRIC, "Sum"),
                rollout.max_candidate_errors,
                cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                "Scoring failures of the rollout's candidate",
            ),
            "latency": (
                metric(VERSION_LATENCY_METRIC, "p99"),
                rollout.max_candidate_p99_ms,
                cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                "p99 latency (ms) of requests the candidate answered",
            ),
            "disagreement": (
                metric(SHADOW_DISAGREEMENT_METRIC, "Maximum"),
                rollout.max_disagreement,
                cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                "Share of customers whose churn decision differs between candidate and champion",
            ),
            "score-psi": (
                metric(SHADOW_SCORE_PSI_METRIC, "Maximum"),
                rollout.max_score_psi,
                cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                "PSI of the candidate's scores against the champion's, same customers",
            ),
        }
        alarms = {}
        for (signal, (watched, threshold, operator, what)), name in zip(
            signals.items(), rollout_alarm_names(name_prefix), strict=True
        ):
            alarms[signal] = cloudwatch.Alarm(
                self,
                f"Candidate{_construct_name(signal.replace('-', '_'))}Alarm",
                alarm_name=name,
                alarm_description=f"{what}; in ALARM, the rollout state machine rolls back",
                metric=watched,
                threshold=threshold,
                comparison_operator=operator,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        return alarms

    def _task_functions(
        self,
        settings: RetrainSettings,
        platform: Platform,
        rollout: RolloutSettings,
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
            rollout=rollout,
            mlflow_tracking_uri=settings.mlflow_tracking_uri,
            # Plain names (not the alarms' Refs): the alarms are created under exactly these.
            rollout_alarm_names=rollout_alarm_names(settings.name_prefix),
        )
        self.functions: dict[str, lambda_.DockerImageFunction] = {}
        self.roles: dict[str, iam.Role] = {}
        for step in STEPS:
            in_vpc = step == "snapshot"  # only the snapshot reads the database
            name = _construct_name(step)
            log_group = logs.LogGroup(
                self, f"{name}Logs", retention=retention, removal_policy=removal
            )
            role = iam.Role(
                self,
                f"{name}Role",
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
                f"{name}Function",
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
        for step in ("drift", "train", "evaluate", "reject", "rollout", "rollout_check"):
            grant_object_read(registry_bucket, roles[step], REGISTRY_PREFIX)
        for step in ("drift", "evaluate"):
            # The drift report and the evaluation, next to the snapshot.
            grant_object_write(curated_bucket, roles[step], SNAPSHOTS_PREFIX)
        for step in ("drift", "train", "reject", "rollout", "rollout_check"):
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
        for step in ("rollout", "rollout_check"):
            # ChampionPromoted, RolloutRolledBack.
            roles[step].add_to_principal_policy(
                iam.PolicyStatement(actions=["events:PutEvents"], resources=[default_bus])
            )
        # The check reads exactly the candidate's alarms (DescribeAlarms has the resource type
        # alarm; only composite alarms need "*", Service Authorization Reference for CloudWatch).
        roles["rollout_check"].add_to_principal_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"],
                resources=[alarm.alarm_arn for alarm in self.candidate_alarms.values()],
            )
        )

    def _acknowledge_state_machine_findings(self) -> None:
        """Each state machine's role acknowledges the invoke grants of exactly its functions."""
        stack = Stack.of(self)
        invoke_reason = (
            "CDK's Lambda invoke grant also covers the function's versions and aliases "
            "(<function arn>:*), which Step Functions may call."
        )
        rollout_steps = ("rollout", "rollout_check")
        for machine, steps in (
            (self.state_machine, [s for s in STEPS if s not in rollout_steps]),
            (self.rollout_state_machine, rollout_steps),
        ):
            Validations.of(machine.role).acknowledge(
                *(
                    Acknowledgment(
                        id="AwsSolutions::AwsSolutions-IAM5[Resource::"
                        f"{nag_text(stack.resolve(self.functions[step].function_arn))}:*]",
                        reason=invoke_reason,
                    )
                    for step in steps
                ),
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                    reason="X-Ray tracing and CloudWatch Logs delivery actions have no resource "
                    "type.",
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
