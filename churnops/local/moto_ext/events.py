"""EventBridge (rules, and Scheduler schedules): deliver matched events and fire schedules.

moto 5.2.5 raises on Lambda, Step Functions and SNS rule targets, and S3's notification code
swallows that error, skipping the rule's later targets; the twin's flows start from exactly those
targets (an upload starts the ingest state machine). Those targets are delivered here, honouring
Input / InputPath / InputTransformer, and each target's failure is isolated; other targets stay
moto's business. moto never fires a scheduled rule or an EventBridge Scheduler schedule either;
`fire_schedule` does it on demand.

A state machine target is started as EventBridge (or Scheduler) starts it: as the target's role,
assumed as the service with the rule's (or schedule group's) ARN as `aws:SourceArn`, through the
Step Functions API, so once the twin authorizes calls a role without `states:StartExecution` on
that state machine fails the delivery as it would on AWS.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any, cast

from churnops.local.moto_ext.awslambda import invoke_function
from churnops.local.moto_ext.runner import active_runner

LOG = logging.getLogger("churnops.twin.moto_ext")


def _event_time_iso(event: dict[str, Any]) -> dict[str, Any]:
    """moto keeps `time` as epoch seconds; AWS delivers an ISO-8601 string."""
    event = dict(event)
    if isinstance(event.get("time"), int | float):
        event["time"] = dt.datetime.fromtimestamp(float(event["time"]), dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return event


def target_input(target: dict[str, Any], event: dict[str, Any]) -> Any:
    """What EventBridge hands a target: Input, InputPath, InputTransformer, or the whole event."""
    if target.get("Input") is not None:
        return json.loads(target["Input"])
    if target.get("InputPath"):
        from jsonpath_ng.ext.parser import parse

        matches = parse(target["InputPath"]).find(event)
        return matches[0].value if matches else None
    transformer = target.get("InputTransformer")
    if transformer:
        from moto.events.utils import EventMessageType, EventTemplateParser

        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=cast(EventMessageType, event),
        )
    return event


def start_execution(
    target: dict[str, Any],
    payload: Any,
    account: str,
    region: str,
    *,
    service: str = "events.amazonaws.com",
    source_arn: str | None = None,
) -> str:
    """Start a state machine target with `payload`; returns the execution's ARN. As the target's
    role when the runner assumes roles (the twin authorizes calls), else straight in moto."""
    runner = active_runner()
    role = target.get("RoleArn")
    if role and runner is not None and runner.assume_role is not None:
        import boto3

        credentials = runner.assume_role(
            role, service, service.split(".")[0], source_arn=source_arn
        )
        sfn = boto3.session.Session().client(
            "stepfunctions",
            endpoint_url=runner.moto_endpoint(),
            region_name=region,
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=credentials["AWS_SESSION_TOKEN"],
        )
        started = sfn.start_execution(stateMachineArn=target["Arn"], input=json.dumps(payload))
        return str(started["executionArn"])
    from moto.stepfunctions.responses import get_backend as sfn_backend

    execution = sfn_backend(account, region).start_execution(
        target["Arn"], name=str(uuid.uuid4()), execution_input=json.dumps(payload)
    )
    return str(execution.execution_arn)


def deliver_to_target(
    target: dict[str, Any],
    payload: Any,
    account: str,
    region: str,
    *,
    service: str = "events.amazonaws.com",
    source_arn: str | None = None,
) -> str:
    """Deliver one event to a Step Functions, Lambda or SNS target (others are moto's business);
    returns what was started: the execution's ARN for a state machine, else the target's ARN."""
    from moto.utilities.arns import parse_arn

    arn = parse_arn(target["Arn"])
    if arn.service == "states":
        execution = start_execution(
            target,
            payload,
            arn.account or account,
            arn.region or region,
            service=service,
            source_arn=source_arn,
        )
        LOG.info("delivered event to %s as %s", target["Arn"], execution)
        return execution
    elif arn.service == "lambda":
        from moto.awslambda.utils import get_backend as lambda_backend

        fn = lambda_backend(arn.account or account, arn.region or region).get_function(
            target["Arn"]
        )
        # EventBridge invokes Lambda asynchronously: do not hold up the event's producer.
        threading.Thread(
            target=invoke_function, args=(fn, payload), name="twin-lambda-event", daemon=True
        ).start()
    elif arn.service == "sns":
        from moto.sns.models import sns_backends

        topic = sns_backends[arn.account or account][arn.region or region].get_topic(target["Arn"])
        topic.publish(payload if isinstance(payload, str) else json.dumps(payload))
    else:
        raise ValueError(f"not a Step Functions, Lambda or SNS target: {target['Arn']}")
    return str(target["Arn"])


def _is_ours(target: dict[str, Any]) -> bool:
    return target["Arn"].split(":")[2:3] in (["states"], ["lambda"], ["sns"])


def _patched_send_to_targets(original: Any) -> Any:
    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if self.state != "ENABLED" or not self.event_pattern.matches_event(original_event):
            return
        event = _event_time_iso(original_event)
        for target in list(self.targets):
            try:
                if _is_ours(target):
                    deliver_to_target(
                        target,
                        target_input(target, event),
                        self.account_id,
                        self.region_name,
                        source_arn=self.arn,
                    )
                else:
                    # moto's own delivery for one target at a time, so a failing target no longer
                    # skips the ones after it.
                    single = _SingleTargetRule(self, target)
                    original(single, original_event, transform_input)
            except Exception:
                LOG.exception("rule %s: delivery to %s failed", self.name, target.get("Arn"))

    send_to_targets.__wrapped__ = original  # type: ignore[attr-defined]
    return send_to_targets


class _SingleTargetRule:
    """A view of a moto Rule that has exactly one target (moto's delivery code reads attributes)."""

    def __init__(self, rule: Any, target: dict[str, Any]) -> None:
        self._rule = rule
        self.targets = [target]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rule, name)


# -- schedules: moto never fires them ----------------------------------------------------------
def fire_schedule(
    name: str,
    *,
    group: str | None = None,
    account: str = "123456789012",
    region: str | None = None,
) -> list[str]:
    """Fire a scheduled EventBridge rule or an EventBridge Scheduler schedule now.

    Returns what was started (execution ARNs for state machines, function ARNs for Lambda).
    Raises LookupError when neither a scheduled rule nor a schedule has that name.
    """
    region = (
        region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    from moto.events.models import events_backends

    for bus in events_backends[account][region].event_buses.values():
        rule = bus.rules.get(name)
        if rule is not None and rule.scheduled_expression:
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": account,
                "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": region,
                "resources": [rule.arn],
                "detail": {},
            }
            return [
                deliver_to_target(t, target_input(t, event), account, region, source_arn=rule.arn)
                for t in rule.targets
            ]

    from moto.scheduler.exceptions import ScheduleNotFound
    from moto.scheduler.models import scheduler_backends

    try:
        schedule = scheduler_backends[account][region].get_schedule(group, name)
    except ScheduleNotFound as err:
        raise LookupError(f"no scheduled rule or schedule named {name!r}") from err
    target = dict(schedule.target)
    payload = json.loads(target["Input"]) if target.get("Input") else {}
    group_arn = f"arn:aws:scheduler:{region}:{account}:schedule-group/{group or 'default'}"
    return [
        deliver_to_target(
            target,
            payload,
            account,
            region,
            service="scheduler.amazonaws.com",
            source_arn=group_arn,
        )
    ]


def patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, replacement builder) for every EventBridge attribute replaced here."""
    from moto.events.models import Rule

    return [(Rule, "send_to_targets", _patched_send_to_targets)]
