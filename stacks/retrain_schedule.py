"""The retrain schedule: EventBridge Scheduler starts the retrain state machine on a cron.

`aws stepfunctions start-execution` (or `churnops local retrain`) starts the same flow by hand,
and the live drift alarm can start it too (stacks/monitoring.py).
"""

from __future__ import annotations

import re

from aws_cdk import TimeZone
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

_EXPRESSION = re.compile(r"^(cron|rate|at)\(.+\)$")


def check_schedule_expression(expression: str) -> None:
    """Refuse what EventBridge Scheduler would refuse at deploy time, at synth instead."""
    if not _EXPRESSION.match(expression):
        raise ValueError(
            f"schedule_expression '{expression}' is not cron(...), rate(...) or at(...)"
        )


def retrain_schedule(
    scope: Construct,
    *,
    state_machine: sfn.IStateMachine,
    expression: str,
    time_zone: str,
    enabled: bool,
) -> scheduler.Schedule:
    """Adds `Schedule` to `scope` (the retrain construct: its logical ID stays the deployed
    one). Scheduler's target role may start this state machine and nothing else."""
    return scheduler.Schedule(
        scope,
        "Schedule",
        description="Scheduled ChurnOps retrain",
        schedule=scheduler.ScheduleExpression.expression(
            expression, time_zone=TimeZone.of(time_zone)
        ),
        target=scheduler_targets.StepFunctionsStartExecution(
            state_machine,
            input=scheduler.ScheduleTargetInput.from_object({"trigger": "schedule"}),
            retry_attempts=2,
        ),
        enabled=enabled,
    )
