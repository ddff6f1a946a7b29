"""Monitoring: alarms to the alert topic, event rules around alerts, and one dashboard.

Alarms: API 5xx and p99 latency; errors and throttles of every function; Glue job failures (every
Glue run starts from a state machine's `.sync` task, so Step Functions' per-integration
`ServiceIntegrationsFailed` metric counts them; an EventBridge rule on Glue's own job state
changes also sends each failed run to the topic with its job name); failed and timed-out
executions of each state machine; and two drift alarms above the PSI threshold:
- `live-drift` on `ChurnOps/LiveMaxFeaturePSI`: the customers the serving function scored, window
  by window, against the serving champion's reference (churnops/serving/monitoring.py `LiveDriftWindow`).
- `snapshot-drift` on `ChurnOps/SnapshotMaxFeaturePSI`: the retrain flow's own drift step, the
  customer table at the start of a retrain against the champion's reference.

Rules: the live drift alarm going into ALARM starts the retrain state machine; a
`ChampionPromoted` event from the registry is forwarded to the alert topic.

Only the live alarm may start a retrain, and nothing a retrain publishes feeds it. Were the
retrain's own drift metric to start retrains, every retrain that found drift would start a
second one that finds the same drift, and the runs would race on the champion pointer. The
snapshot alarm therefore only alerts. Live drift ends the way drift should end: a
promoted champion brings a reference trained on the new customers, serving measures against it,
and the alarm returns to OK; a rejected challenger leaves the alarm in ALARM, which starts
nothing more (a rule fires on the transition, not on every evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from churnops.wiring import (
    EVENT_PROMOTED,
    EVENT_SOURCE,
    LIVE_DRIFT_METRIC,
    METRICS_NAMESPACE,
    SERVING_SERVICE_NAME,
    SNAPSHOT_DRIFT_METRIC,
)

GLUE_SYNC_INTEGRATION = "arn:{partition}:states:::glue:startJobRun.sync"


@dataclass(frozen=True)
class MonitoringSettings:
    name_prefix: str
    period_minutes: int  # evaluation period of the operational alarms
    api_5xx_threshold: int  # 5xx answers per period that page someone
    api_p99_latency_ms: int
    lambda_error_threshold: int
    lambda_throttle_threshold: int
    state_machine_failure_threshold: int
    glue_failure_threshold: int
    drift_psi_threshold: float  # 0.2 is the usual "significant shift" line for PSI
    # Live drift is judged on a period's median window and the retrain publishes once per run:
    # a long period in both cases.
    drift_period_hours: int
    drift_starts_retrain: bool  # whether the live drift alarm starts the retrain state machine


class Monitoring(Construct):
    """Exposes `alarms` (name -> Alarm), `drift_alarm` (live drift, the one that starts a
    retrain), `snapshot_drift_alarm`, `drift_rule`, `promotion_rule`, `glue_failure_rule`,
    `dashboard`."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        settings: MonitoringSettings,
        alert_topic: sns.ITopic,
        api: apigw.RestApi,
        functions: Mapping[str, lambda_.IFunction],
        state_machines: Mapping[str, sfn.IStateMachine],
        glue_job_names: Mapping[str, str],
        retrain_state_machine: sfn.IStateMachine,
    ) -> None:
        super().__init__(scope, id)
        self.settings = settings
        period = Duration.minutes(settings.period_minutes)
        alert = cw_actions.SnsAction(alert_topic)
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        def alarm(
            name: str,
            metric: cloudwatch.IMetric,
            threshold: float,
            description: str,
            *,
            evaluation_periods: int = 1,
        ) -> cloudwatch.Alarm:
            created = cloudwatch.Alarm(
                self,
                f"{name}Alarm",
                alarm_name=f"{settings.name_prefix}-{name}",
                alarm_description=description,
                metric=metric,
                threshold=threshold,
                evaluation_periods=evaluation_periods,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                # No traffic or no run is not a failure.
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            created.add_alarm_action(alert)
            created.add_ok_action(alert)
            self.alarms[name] = created
            return created

        api_5xx = api.metric_server_error(period=period, statistic="Sum")
        api_p99 = api.metric_latency(period=period, statistic="p99")
        alarm("api-5xx", api_5xx, settings.api_5xx_threshold, "The scoring API answered 5xx")
        alarm(
            "api-p99-latency",
            api_p99,
            settings.api_p99_latency_ms,
            f"The scoring API's p99 latency reached {settings.api_p99_latency_ms} ms",
            evaluation_periods=3,
        )

        for name, function in functions.items():
            alarm(
                f"{name}-errors",
                function.metric_errors(period=period, statistic="Sum"),
                settings.lambda_error_threshold,
                f"Function {name} raised errors",
            )
            alarm(
                f"{name}-throttles",
                function.metric_throttles(period=period, statistic="Sum"),
                settings.lambda_throttle_threshold,
                f"Function {name} was throttled",
            )

        for name, machine in state_machines.items():
            alarm(
                f"{name}-failed",
                machine.metric_failed(period=period, statistic="Sum"),
                settings.state_machine_failure_threshold,
                f"State machine {name} had failed executions",
            )
            alarm(
                f"{name}-timed-out",
                machine.metric_timed_out(period=period, statistic="Sum"),
                settings.state_machine_failure_threshold,
                f"State machine {name} had timed-out executions",
            )

        glue_failures = cloudwatch.Metric(
            namespace="AWS/States",
            metric_name="ServiceIntegrationsFailed",
            dimensions_map={
                "ServiceIntegrationResourceArn": GLUE_SYNC_INTEGRATION.format(
                    partition=Stack.of(self).partition
                )
            },
            period=period,
            statistic="Sum",
        )
        alarm(
            "glue-job-failures",
            glue_failures,
            settings.glue_failure_threshold,
            "A Glue job run (ingest or batch scoring) failed",
        )
        self.glue_failure_rule = events.Rule(
            self,
            "GlueJobFailed",
            description="A ChurnOps Glue job run failed, timed out or stopped on error",
            event_pattern=events.EventPattern(
                source=["aws.glue"],
                detail_type=["Glue Job State Change"],
                detail={
                    "jobName": sorted(glue_job_names.values()),
                    "state": ["FAILED", "TIMEOUT", "ERROR"],
                },
            ),
            targets=[
                targets.SnsTopic(
                    alert_topic,
                    message=events.RuleTargetInput.from_text(
                        f"ChurnOps Glue job {events.EventField.from_path('$.detail.jobName')} "
                        f"run {events.EventField.from_path('$.detail.jobRunId')} ended "
                        f"{events.EventField.from_path('$.detail.state')}: "
                        f"{events.EventField.from_path('$.detail.message')}"
                    ),
                )
            ],
        )

        drift_period = Duration.hours(settings.drift_period_hours)
        # The median window of the period, not its maximum: one batch request for a hand-picked
        # segment (say, only month-to-month customers) fills a window that differs from the
        # reference without the customer base having moved.
        live_drift = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=LIVE_DRIFT_METRIC,
            # Powertools adds the dimension `service` (the function's POWERTOOLS_SERVICE_NAME)
            # to every datapoint; an alarm sees a metric only under its exact dimensions.
            dimensions_map={"service": SERVING_SERVICE_NAME},
            period=drift_period,
            statistic="p50",
        )
        snapshot_drift = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE,
            metric_name=SNAPSHOT_DRIFT_METRIC,
            period=drift_period,
            statistic="Maximum",
        )

        def drift_alarm(
            name: str, construct_id: str, metric: cloudwatch.IMetric, description: str
        ) -> cloudwatch.Alarm:
            created = cloudwatch.Alarm(
                self,
                construct_id,
                alarm_name=f"{settings.name_prefix}-{name}",
                alarm_description=description,
                metric=metric,
                threshold=settings.drift_psi_threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            created.add_alarm_action(alert)
            self.alarms[name] = created
            return created

        self.drift_alarm = drift_alarm(
            "live-drift",
            "DriftAlarm",
            live_drift,
            f"The customers scored by the API drifted from the serving champion's training data "
            f"(median window's largest feature PSI above {settings.drift_psi_threshold}); "
            "starts a retrain",
        )
        # Alert only, never a retrain: this metric comes from inside a retrain (module docstring).
        self.snapshot_drift_alarm = drift_alarm(
            "snapshot-drift",
            "SnapshotDriftAlarm",
            snapshot_drift,
            f"A retrain found its snapshot of the customer table drifted from the champion's "
            f"reference (largest feature PSI above {settings.drift_psi_threshold}); that "
            "retrain is the response, so this alarm starts nothing",
        )

        # The live drift alarm's own transition into ALARM starts a retrain: one run per
        # transition, not one per evaluation, because the alarm changes state once until drift
        # subsides. Its metric is published by the serving function only, so no retrain can
        # start another through this rule.
        self.drift_rule = events.Rule(
            self,
            "DriftStartsRetrain",
            description="Live drift alarm went into ALARM: start the retrain state machine",
            enabled=settings.drift_starts_retrain,
            event_pattern=events.EventPattern(
                source=["aws.cloudwatch"],
                detail_type=["CloudWatch Alarm State Change"],
                resources=[self.drift_alarm.alarm_arn],
                detail={"state": {"value": ["ALARM"]}},
            ),
            targets=[
                targets.SfnStateMachine(
                    retrain_state_machine,
                    input=events.RuleTargetInput.from_object(
                        {
                            "trigger": "drift-alarm",
                            "alarm": events.EventField.from_path("$.detail.alarmName"),
                            "time": events.EventField.time,
                        }
                    ),
                )
            ],
        )

        self.promotion_rule = events.Rule(
            self,
            "ChampionPromoted",
            description="Tell the alert topic when the registry moves the champion",
            event_pattern=events.EventPattern(source=[EVENT_SOURCE], detail_type=[EVENT_PROMOTED]),
            targets=[
                targets.SnsTopic(
                    alert_topic,
                    message=events.RuleTargetInput.from_text(
                        f"ChurnOps champion is now {events.EventField.from_path('$.detail.version')} "
                        f"(was {events.EventField.from_path('$.detail.previous_version')}); "
                        f"reason: {events.EventField.from_path('$.detail.reason')}"
                    ),
                )
            ],
        )

        self.dashboard = self._dashboard(
            api,
            api_5xx,
            api_p99,
            functions,
            state_machines,
            glue_failures,
            [live_drift, snapshot_drift],
        )

    def _dashboard(
        self,
        api: apigw.RestApi,
        api_5xx: cloudwatch.IMetric,
        api_p99: cloudwatch.IMetric,
        functions: Mapping[str, lambda_.IFunction],
        state_machines: Mapping[str, sfn.IStateMachine],
        glue_failures: cloudwatch.IMetric,
        drift: list[cloudwatch.IMetric],
    ) -> cloudwatch.Dashboard:
        period = Duration.minutes(self.settings.period_minutes)
        dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=f"{self.settings.name_prefix}-pipeline"
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=list(self.alarms.values()), width=24, height=4
            )
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="State machine executions",
                left=[
                    m
                    for machine in state_machines.values()
                    for m in (
                        machine.metric_succeeded(period=period, statistic="Sum"),
                        machine.metric_failed(period=period, statistic="Sum"),
                    )
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Glue job runs failed (via Step Functions)", left=[glue_failures], width=12
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="API requests and errors",
                left=[
                    api.metric_count(period=period, statistic="Sum"),
                    api.metric_client_error(period=period, statistic="Sum"),
                    api_5xx,
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="API latency",
                left=[api_p99, api.metric_latency(period=period, statistic="p50")],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Function errors",
                left=[f.metric_errors(period=period, statistic="Sum") for f in functions.values()],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Function duration p99",
                left=[
                    f.metric_duration(period=period, statistic="p99") for f in functions.values()
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Drift: largest feature PSI (live traffic starts a retrain)",
                left=drift,
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=self.settings.drift_psi_threshold, label="alarm threshold"
                    )
                ],
                width=24,
            )
        )
        return dashboard
