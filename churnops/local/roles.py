"""What is what in the template, found from its structure: which bucket's uploads start which
state machine, which state machine a schedule starts, which function serves the API, which secret
holds the database's credentials. Never from a logical ID, a construct's name or a handler's
module path: a renamed construct or a moved handler must not change what the twin finds.

Two values exist in the template only as the environment the stack gives its functions, so they
are read from there, by the variable names the code itself reads (`churnops.wiring`'s
environments): the registry's URI (its prefix in its bucket) and the curated bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from churnops.errors import ChurnOpsError
from churnops.local.template import ACCOUNT, Template
from churnops.wiring import RetrainEnvironment, ServingEnvironment

_STATE_MACHINE = "AWS::StepFunctions::StateMachine"
# An object key no upload has: where it shows up in a target's input is where the key goes.
_PROBE_KEY = "twin-probe/where-does-the-key-go.csv"


@dataclass
class Roles:
    """The resources the twin's commands need, by role."""

    raw_bucket: str | None = None
    watched_prefix: str | None = None
    ingest_state_machine: str | None = None
    ingest_rule: str | None = None
    # where the ingest rule's target puts the object key in the flow's input (keys, indexes)
    ingest_key_path: list[str | int] | None = None
    retrain_state_machine: str | None = None
    retrain_schedule: str | None = None
    # The state machine the retrain flow hands a challenger that passed to (its rollout).
    rollout_state_machine: str | None = None
    serving_function: str | None = None
    serving_handler: str | None = None
    serving_environment: dict[str, str] = field(default_factory=dict)
    registry_uri: str | None = None
    curated_bucket: str | None = None
    # The candidate's alarms the rollout reads (the retrain functions' ROLLOUT_ALARM_NAMES).
    rollout_alarm_names: list[str] = field(default_factory=list)
    db_secret_arn: str | None = None
    database_name: str | None = None


def discover(template: Template) -> Roles:
    """The roles, once the template's secrets exist (a secret's ARN is moto's)."""
    roles = Roles()
    _ingest(template, roles)
    _retrain(template, roles)
    _serving(template, roles)
    for secret_id, instance_id in database_attachments(template).items():
        roles.db_secret_arn = template.secret_arn(secret_id)
        roles.database_name = database_name(template, instance_id)
    environment = dict(roles.serving_environment)
    for variables in _function_environments(template):
        for key, value in variables.items():
            environment.setdefault(key, value)
    roles.registry_uri = environment.get(ServingEnvironment.env_names()["registry_uri"])
    roles.curated_bucket = environment.get(RetrainEnvironment.env_names()["curated_bucket"])
    alarms = environment.get(RetrainEnvironment.env_names()["rollout_alarm_names"]) or ""
    roles.rollout_alarm_names = [name for name in alarms.split(",") if name]
    return roles


def database_attachments(template: Template) -> dict[str, str]:
    """Secret -> the RDS instance (or cluster) its SecretTargetAttachment points it at."""
    attached = {}
    for _, resource in template.of_type("AWS::SecretsManager::SecretTargetAttachment"):
        props = resource.get("Properties", {})
        secrets = template.references(props.get("SecretId"), "AWS::SecretsManager::Secret")
        targets = [
            lid
            for lid in template.references(props.get("TargetId"))
            if template.resources[lid]["Type"] in ("AWS::RDS::DBInstance", "AWS::RDS::DBCluster")
        ]
        if secrets and targets:
            attached[secrets[0]] = targets[0]
    return attached


def database_name(template: Template, instance_id: str) -> str:
    props = template.resources[instance_id].get("Properties", {})
    return str(template.resolve(props.get("DBName", "churnops")))


def _machine_targets(template: Template, targets: list[dict[str, Any]]) -> list[tuple[Any, str]]:
    """(target, state machine logical ID) for the targets that start one of the template's state
    machines."""
    found = []
    for target in targets:
        machines = template.references(target.get("Arn"), _STATE_MACHINE)
        if machines:
            found.append((target, machines[0]))
    return found


def _ingest(template: Template, roles: Roles) -> None:
    """The rule that starts a state machine when an object is created in one of our buckets."""
    for logical_id, resource in template.of_type("AWS::Events::Rule"):
        props = resource.get("Properties", {})
        pattern = template.resolve(props.get("EventPattern") or {})
        if "aws.s3" not in (pattern.get("source") or []):
            continue
        detail = pattern.get("detail") or {}
        buckets = (detail.get("bucket") or {}).get("name") or []
        targets = _machine_targets(template, props.get("Targets") or [])
        if not (buckets and targets):
            continue
        target, machine = targets[0]
        roles.raw_bucket = buckets[0]
        roles.ingest_state_machine = template.get_att(machine, "Arn")
        roles.ingest_rule = template.name_of(logical_id)
        roles.ingest_key_path = _key_path(template.resolve(target), buckets[0])
        for condition in (detail.get("object") or {}).get("key") or []:
            if isinstance(condition, dict) and "prefix" in condition:
                roles.watched_prefix = condition["prefix"]
            elif isinstance(condition, dict) and "wildcard" in condition:
                roles.watched_prefix = condition["wildcard"].split("*", 1)[0]


def _retrain(template: Template, roles: Roles) -> None:
    """The state machine a schedule starts (an EventBridge Scheduler schedule, else a scheduled
    EventBridge rule), and the one its definition starts (the rollout)."""
    machine = None
    for logical_id, resource in template.of_type("AWS::Scheduler::Schedule"):
        target = resource["Properties"]["Target"]
        for _, found in _machine_targets(template, [target]):
            machine = found
            roles.retrain_schedule = template.name_of(logical_id)
    if machine is None:
        for logical_id, resource in template.of_type("AWS::Events::Rule"):
            props = resource.get("Properties", {})
            targets = _machine_targets(template, props.get("Targets") or [])
            if props.get("ScheduleExpression") and targets:
                machine = targets[0][1]
                roles.retrain_schedule = template.name_of(logical_id)
    if machine is None:
        return
    roles.retrain_state_machine = template.get_att(machine, "Arn")
    definition = template.resources[machine].get("Properties", {}).get("DefinitionString")
    started = [m for m in template.references(definition, _STATE_MACHINE) if m != machine]
    if started:
        roles.rollout_state_machine = template.get_att(started[0], "Arn")


def _serving(template: Template, roles: Roles) -> None:
    """The function the REST API's proxy integrations invoke."""
    functions: list[str] = []
    for _, method in template.of_type("AWS::ApiGateway::Method"):
        integration = method.get("Properties", {}).get("Integration") or {}
        if integration.get("Type") == "AWS_PROXY":
            functions += template.references(integration.get("Uri"), "AWS::Lambda::Function")
    functions = list(dict.fromkeys(functions))
    if len(functions) > 1:
        # the API stand-in serves one handler for every route
        raise ChurnOpsError(f"the API integrates {len(functions)} functions; the twin serves one")
    if not functions:
        return
    props = template.resources[functions[0]].get("Properties", {})
    roles.serving_function = template.name_of(functions[0])
    roles.serving_handler = template.handler_of_function(props)
    roles.serving_environment = _environment(template, props)


def _environment(template: Template, props: dict[str, Any]) -> dict[str, str]:
    variables = template.resolve((props.get("Environment") or {}).get("Variables") or {})
    return {key: str(value) for key, value in variables.items()}


def _function_environments(template: Template) -> list[dict[str, str]]:
    return [
        _environment(template, resource.get("Properties", {}))
        for _, resource in template.of_type("AWS::Lambda::Function")
    ]


def _key_path(target: dict[str, Any], bucket: str) -> list[str | int] | None:
    """Where EventBridge puts an upload's object key in what `target` hands its state machine:
    the target's Input, InputPath or InputTransformer applied to an S3 "Object Created" event."""
    from churnops.local.moto_ext.events import target_input

    probe = {
        "version": "0",
        "id": "twin-probe",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": ACCOUNT,
        "time": "1970-01-01T00:00:00Z",
        "ingestion-time": "1970-01-01T00:00:00Z",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"bucket": {"name": bucket}, "object": {"key": _PROBE_KEY, "size": 0}},
    }
    try:
        delivered = target_input(target, probe)
    except (ValueError, KeyError, TypeError):  # a transformer this probe cannot fill
        return None
    return _path_to(delivered, _PROBE_KEY)


def _path_to(data: Any, value: Any) -> list[str | int] | None:
    if data == value:
        return []
    items: list[tuple[str | int, Any]] = []
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    for step, child in items:
        rest = _path_to(child, value)
        if rest is not None:
            return [step, *rest]
    return None
