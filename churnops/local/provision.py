"""Provision the twin from the template the CDK app synthesizes: no second list of resources.

moto's CloudFormation cannot deploy our template (secrets, Glue jobs, the S3-notification custom
resource and API stages fail, and state machines created through it do not execute), so this
module reads the synthesized template and makes the equivalent API calls itself:

| template resource                        | twin                                                  |
| ---------------------------------------- | ----------------------------------------------------- |
| AWS::S3::Bucket (+ notifications)        | bucket, versioning, EventBridge notifications         |
| AWS::IAM::Role (+ AWS::IAM::Policy,      | role with its trust policy, inline and managed        |
|   AWS::IAM::ManagedPolicy)               | policies (AWS managed ones loaded into moto)          |
| AWS::SNS::Topic                          | topic                                                 |
| AWS::SecretsManager::Secret              | secret; the database's points at the private MariaDB  |
| AWS::Glue::Job                           | job; its script asset mapped to its `glue_jobs/` file |
| AWS::Lambda::Function (container images) | function with ImageConfig.Command and Environment     |
| AWS::StepFunctions::StateMachine         | state machine with the resolved definition            |
| AWS::Events::Rule, AWS::Scheduler::Schedule | rule / schedule with pattern, targets, input       |
| AWS::CloudWatch::Alarm                   | alarm with its metric (or metric math), threshold,    |
|                                          | periods, missing-data treatment and actions; the twin |
|                                          | evaluates it (`moto_ext.cloudwatch.evaluate_alarms`)  |

Values are resolved by `churnops/local/template.py`; what is what (the ingest flow, the API's
function, ...) is found by `churnops/local/roles.py`. Everything else in the template (VPC, RDS,
API Gateway, the dashboard, CDK's deploy-time helper functions) has no twin counterpart or is
served by another stand-in, and is skipped on purpose.

Every function, Glue job, state machine, rule target and schedule is created with the role the
template gives it (`iam_roles` holds their ARNs by logical ID); the twin's one execution role
(`ensure_execution_role`) stands in only where the template names none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnops import aws, storage
from churnops.errors import ChurnOpsError
from churnops.local.roles import Roles, database_attachments, database_name, discover
from churnops.local.template import ACCOUNT, TWIN_ROLE, TWIN_ROLE_ARN, DatabaseEndpoint, Template

__all__ = ["DatabaseEndpoint", "Provisioner", "TwinLayout", "ensure_execution_role"]

LOG = logging.getLogger("churnops.twin.provision")
_AWS_MANAGED_POLICY = "arn:aws:iam::aws:policy/"


_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {
                "Service": [
                    "lambda.amazonaws.com",
                    "states.amazonaws.com",
                    "glue.amazonaws.com",
                    "events.amazonaws.com",
                    "scheduler.amazonaws.com",
                ]
            },
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass
class TwinLayout(Roles):
    """The roles, and every resource created, by logical ID."""

    buckets: dict[str, str] = field(default_factory=dict)
    state_machines: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)
    glue_jobs: dict[str, str] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    schedules: dict[str, str] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    iam_roles: dict[str, str] = field(default_factory=dict)  # role logical ID -> role ARN
    alarms: dict[str, str] = field(default_factory=dict)  # alarm logical ID -> alarm name

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ensure_execution_role() -> str:
    """The one role every twin resource runs as (moto checks a function's role can be assumed,
    as AWS does); created once, returned as an ARN."""
    iam = aws.client("iam")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=TWIN_ROLE, AssumeRolePolicyDocument=json.dumps(_TRUST))
    return TWIN_ROLE_ARN


class Provisioner:
    """Creates the template's resources in moto (reached through `churnops.aws.client`)."""

    def __init__(
        self,
        template: dict[str, Any],
        *,
        cdk_out: Path,
        repo_root: Path,
        database: DatabaseEndpoint | None,
        region: str = "us-east-1",
        stack_name: str = "ChurnOps",
    ) -> None:
        self.template = Template(
            template, cdk_out=cdk_out, database=database, region=region, stack_name=stack_name
        )
        self.repo_root = Path(repo_root)
        self.database = database
        self.region = region
        self.layout = TwinLayout()

    def provision(self) -> TwinLayout:
        """Create everything, in dependency order: names first, ARNs are derived from them."""
        self._role()
        self._secrets()
        self._iam_roles()  # after the secrets: policies name their ARNs
        self._buckets()
        self._topics()
        self._glue_jobs()
        self._functions()
        self._state_machines()
        self._rules()
        self._schedules()
        self._alarms()
        self.layout = dataclasses.replace(self.layout, **vars(discover(self.template)))
        return self.layout

    def _role(self) -> None:
        ensure_execution_role()

    def _iam_roles(self) -> None:
        """Every template role with its trust policy, inline `Policies` and `ManagedPolicyArns`;
        then every AWS::IAM::ManagedPolicy and AWS::IAM::Policy on the roles it names."""
        iam = aws.client("iam")
        for logical_id, resource in self.template.of_type("AWS::IAM::Role"):
            props = resource.get("Properties", {})
            name = self.template.name_of(logical_id)
            trust = json.dumps(self.template.resolve(props["AssumeRolePolicyDocument"]))
            try:
                iam.create_role(
                    RoleName=name,
                    Path=str(self.template.resolve(props.get("Path", "/"))),
                    AssumeRolePolicyDocument=trust,
                    Description=str(self.template.resolve(props.get("Description", ""))),
                )
            except iam.exceptions.EntityAlreadyExistsException:
                iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
            for policy in props.get("Policies") or []:
                self._put_role_policy(name, policy)
            for policy_arn in self.template.resolve(props.get("ManagedPolicyArns") or []):
                self._attach(name, str(policy_arn))
            self.layout.iam_roles[logical_id] = str(self.template.get_att(logical_id, "Arn"))
        for logical_id, resource in self.template.of_type("AWS::IAM::ManagedPolicy"):
            props = resource.get("Properties", {})
            arn = str(self.template.get_att(logical_id, "PolicyArn"))
            with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
                iam.create_policy(
                    PolicyName=self.template.name_of(logical_id),
                    Path=str(self.template.resolve(props.get("Path", "/"))),
                    PolicyDocument=json.dumps(self.template.resolve(props["PolicyDocument"])),
                )
            for role in self.template.resolve(props.get("Roles") or []):
                self._attach(str(role), arn)
        for _, resource in self.template.of_type("AWS::IAM::Policy"):
            props = resource.get("Properties", {})
            for role in self.template.resolve(props.get("Roles") or []):
                self._put_role_policy(str(role), props)

    def _put_role_policy(self, role_name: str, policy: dict[str, Any]) -> None:
        aws.client("iam").put_role_policy(
            RoleName=role_name,
            PolicyName=str(self.template.resolve(policy["PolicyName"])),
            PolicyDocument=json.dumps(self.template.resolve(policy["PolicyDocument"])),
        )

    def _attach(self, role_name: str, policy_arn: str) -> None:
        if policy_arn.startswith(_AWS_MANAGED_POLICY):
            from churnops.local.moto_ext.iam import load_aws_managed_policy

            if not load_aws_managed_policy(policy_arn):
                LOG.warning(
                    "moto has no copy of %s: role %s goes without it", policy_arn, role_name
                )
                return
        aws.client("iam").attach_role_policy(RoleName=role_name, PolicyArn=policy_arn)

    def _role_arn(self, props: dict[str, Any], key: str) -> str:
        """The template's role for a resource (resolved to its ARN), else the twin's own."""
        role = props.get(key)
        return str(self.template.resolve(role)) if role else TWIN_ROLE_ARN

    def _secrets(self) -> None:
        client = aws.client("secretsmanager")
        attachments = database_attachments(self.template)
        for logical_id, resource in self.template.of_type("AWS::SecretsManager::Secret"):
            props = resource.get("Properties", {})
            name = self.template.name_of(logical_id)
            value = self._secret_value(props, attachments.get(logical_id))
            try:
                arn = client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
            except client.exceptions.ResourceExistsException:
                arn = client.put_secret_value(SecretId=name, SecretString=json.dumps(value))["ARN"]
            self.template.secret_arns[logical_id] = arn
            self.layout.secrets[logical_id] = arn

    def _secret_value(self, props: dict[str, Any], instance_id: str | None) -> dict[str, Any]:
        generate = props.get("GenerateSecretString") or {}
        value: dict[str, Any] = {}
        if generate.get("SecretStringTemplate"):
            value = json.loads(generate["SecretStringTemplate"])
        elif props.get("SecretString"):
            with contextlib.suppress(ValueError, TypeError):
                value = json.loads(self.template.resolve(props["SecretString"]))
        if instance_id and self.database is not None:
            dbname = database_name(self.template, instance_id)
            username = str(value.get("username", "churnops"))
            password = self.database.grant(username, dbname)
            # What RDS's secret attachment writes for an instance: no `dbname` (the code is
            # told the database's name, as in AWS), the instance identifier instead.
            return {
                "username": username,
                "password": password,
                "host": self.database.host,
                "port": self.database.port,
                "engine": self.database.engine,
                "dbInstanceIdentifier": instance_id.lower(),
            }
        if generate.get("GenerateStringKey"):
            value[generate["GenerateStringKey"]] = secrets.token_urlsafe(24)
        return value

    def _buckets(self) -> None:
        s3 = aws.client("s3")
        notified = self._buckets_with_eventbridge()
        for logical_id, resource in self.template.of_type("AWS::S3::Bucket"):
            props = resource.get("Properties", {})
            name = self.template.name_of(logical_id)
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=name)
            if (props.get("VersioningConfiguration") or {}).get("Status") == "Enabled":
                s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            inline = (props.get("NotificationConfiguration") or {}).get("EventBridgeConfiguration")
            if logical_id in notified or inline is not None:
                s3.put_bucket_notification_configuration(
                    Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}}
                )
            self.layout.buckets[logical_id] = name

    def _buckets_with_eventbridge(self) -> set[str]:
        """CDK turns `event_bridge_enabled` into a Custom::S3BucketNotifications resource."""
        found: set[str] = set()
        for _, resource in self.template.of_type("Custom::S3BucketNotifications"):
            props = resource.get("Properties", {})
            if "EventBridgeConfiguration" in (props.get("NotificationConfiguration") or {}):
                found.update(self.template.references(props.get("BucketName"), "AWS::S3::Bucket"))
        return found

    def _topics(self) -> None:
        sns = aws.client("sns")
        for logical_id, _ in self.template.of_type("AWS::SNS::Topic"):
            self.layout.topics[logical_id] = sns.create_topic(
                Name=self.template.name_of(logical_id)
            )["TopicArn"]

    def _glue_jobs(self) -> None:
        glue, s3 = aws.client("glue"), aws.client("s3")
        for logical_id, resource in self.template.of_type("AWS::Glue::Job"):
            props = self.template.resolve(resource.get("Properties", {}))
            name = self.template.name_of(logical_id)
            command = dict(props.get("Command") or {})
            script = self._script_for(command.get("ScriptLocation", ""))
            bucket, _ = aws.split_s3_uri(command["ScriptLocation"])
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
            key = f"glue_jobs/{script.name}"
            storage.put_bytes(bucket, key, script.read_bytes())
            command["ScriptLocation"] = storage.s3_uri(bucket, key)
            arguments = {k: str(v) for k, v in (props.get("DefaultArguments") or {}).items()}
            kwargs: dict[str, Any] = {
                "Name": name,
                "Role": self._role_arn(props, "Role"),
                "Command": command,
                "DefaultArguments": arguments,
                "GlueVersion": props.get("GlueVersion", "5.0"),
                "ExecutionProperty": props.get("ExecutionProperty") or {"MaxConcurrentRuns": 1},
            }
            for optional in ("WorkerType", "NumberOfWorkers", "Timeout", "MaxRetries"):
                if props.get(optional) is not None:
                    kwargs[optional] = props[optional]
            with contextlib.suppress(glue.exceptions.AlreadyExistsException):
                glue.create_job(**kwargs)
            self.layout.glue_jobs[logical_id] = name

    def _script_for(self, location: str) -> Path:
        """The glue_jobs/ file behind a script asset, named by the asset manifest. The task runner
        runs `glue_jobs/<file name>` (moto_ext maps a job's script by its file name), so the
        staged copy of a staged assembly (cdk.out/asset.<hash>.py) stands for the glue_jobs/ file
        with the same bytes: the asset's hash is a hash of those bytes."""
        scripts = (self.repo_root / "glue_jobs").resolve()
        source = self.template.file_asset(location)
        if source is not None and source.resolve().parent == scripts:
            return source
        if source is not None:
            staged = source.read_bytes()
            for script in sorted(scripts.glob("*.py")):
                if script.read_bytes() == staged:
                    return script
        raise ChurnOpsError(
            f"Glue script {location}: the asset manifest names no file in glue_jobs/ "
            "(synthesized template stale?)"
        )

    def _functions(self) -> None:
        client = aws.client("lambda")
        for logical_id, resource in self.template.of_type("AWS::Lambda::Function"):
            props = resource.get("Properties", {})
            if props.get("PackageType") != "Image":
                # Our functions are container images (interfaces 5); zip and inline functions are
                # CDK's deploy-time helpers (custom resources, auto-delete): nothing to run here.
                continue
            handler = self.template.handler_of_function(props)
            if not handler:
                raise ChurnOpsError(
                    f"function {logical_id}: no ImageConfig.Command and no CMD in its Dockerfile"
                )
            name = self.template.name_of(logical_id)
            environment = {
                key: str(value)
                for key, value in self.template.resolve(
                    (props.get("Environment") or {}).get("Variables", {})
                ).items()
            }
            with contextlib.suppress(client.exceptions.ResourceConflictException):
                client.create_function(
                    FunctionName=name,
                    Role=self._role_arn(props, "Role"),
                    PackageType="Image",
                    Code={
                        "ImageUri": f"{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/churnops:{logical_id.lower()}"
                    },
                    ImageConfig={"Command": [handler]},
                    Environment={"Variables": environment},
                    Timeout=int(props.get("Timeout", 3)),
                    MemorySize=int(props.get("MemorySize", 128)),
                )
            self.layout.functions[logical_id] = name

    def _state_machines(self) -> None:
        sfn = aws.client("stepfunctions")
        for logical_id, resource in self.template.of_type("AWS::StepFunctions::StateMachine"):
            props = resource.get("Properties", {})
            definition = props.get("DefinitionString")
            if definition is None:
                definition = json.dumps(props.get("Definition", {}))
            text = str(self.template.resolve(definition))
            for key, value in self.template.resolve(
                props.get("DefinitionSubstitutions") or {}
            ).items():
                text = text.replace("${" + key + "}", str(value))
            name = self.template.name_of(logical_id)
            try:
                arn = sfn.create_state_machine(
                    name=name,
                    definition=text,
                    roleArn=self._role_arn(props, "RoleArn"),
                    type=props.get("StateMachineType", "STANDARD"),
                )["stateMachineArn"]
            except sfn.exceptions.StateMachineAlreadyExists:
                arn = self.template.get_att(logical_id, "Arn")
            self.layout.state_machines[logical_id] = arn

    def _target(self, target: dict[str, Any]) -> dict[str, Any]:
        resolved = self.template.resolve(target)
        keep = ("Id", "Arn", "RoleArn", "Input", "InputPath", "InputTransformer", "SqsParameters")
        out = {key: resolved[key] for key in keep if resolved.get(key) is not None}
        return out

    def _rules(self) -> None:
        events = aws.client("events")
        for logical_id, resource in self.template.of_type("AWS::Events::Rule"):
            props = resource.get("Properties", {})
            name = self.template.name_of(logical_id)
            kwargs: dict[str, Any] = {"Name": name, "State": props.get("State", "ENABLED")}
            if props.get("EventPattern") is not None:
                kwargs["EventPattern"] = json.dumps(self.template.resolve(props["EventPattern"]))
            if props.get("ScheduleExpression"):
                kwargs["ScheduleExpression"] = self.template.resolve(props["ScheduleExpression"])
            bus = props.get("EventBusName")
            if bus:
                kwargs["EventBusName"] = self.template.resolve(bus)
            events.put_rule(**kwargs)
            targets = [self._target(t) for t in props.get("Targets") or []]
            if targets:
                events.put_targets(
                    Rule=name,
                    Targets=targets,
                    **({"EventBusName": kwargs["EventBusName"]} if bus else {}),
                )
            self.layout.rules[logical_id] = name

    def _schedules(self) -> None:
        scheduler = aws.client("scheduler")
        for logical_id, resource in self.template.of_type("AWS::Scheduler::Schedule"):
            props = self.template.resolve(resource.get("Properties", {}))
            name = self.template.name_of(logical_id)
            target = {
                k: v
                for k, v in props["Target"].items()
                if k in ("Arn", "RoleArn", "Input", "RetryPolicy")
            }
            target["RoleArn"] = self._role_arn(target, "RoleArn")
            kwargs: dict[str, Any] = {
                "Name": name,
                "ScheduleExpression": props["ScheduleExpression"],
                "FlexibleTimeWindow": props.get("FlexibleTimeWindow") or {"Mode": "OFF"},
                "Target": target,
                "State": props.get("State", "ENABLED"),
            }
            if props.get("ScheduleExpressionTimezone"):
                kwargs["ScheduleExpressionTimezone"] = props["ScheduleExpressionTimezone"]
            if props.get("GroupName"):
                kwargs["GroupName"] = props["GroupName"]
            with contextlib.suppress(scheduler.exceptions.ConflictException):
                scheduler.create_schedule(**kwargs)
            self.layout.schedules[logical_id] = name

    def _alarms(self) -> None:
        """Every AWS::CloudWatch::Alarm through PutMetricAlarm: CloudFormation's properties are the
        API's parameters under the same names
        (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-cloudwatch-alarm.html).
        Actions keep the ARNs the template gives (the topics above). A new alarm starts
        INSUFFICIENT_DATA, as on AWS, until the twin evaluates it."""
        cloudwatch = aws.client("cloudwatch")
        for logical_id, resource in self.template.of_type("AWS::CloudWatch::Alarm"):
            props = self.template.resolve(resource.get("Properties", {}))
            name = self.template.name_of(logical_id)
            kwargs: dict[str, Any] = {"AlarmName": name}
            for key, cast in _ALARM_PROPERTIES.items():
                if props.get(key) is not None:
                    kwargs[key] = cast(props[key])
            cloudwatch.put_metric_alarm(**kwargs)
            self.layout.alarms[logical_id] = name


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _strings(value: Any) -> list[str]:
    return [str(item) for item in value]


# AWS::CloudWatch::Alarm property -> how PutMetricAlarm takes it (a template may hold numbers as
# strings; the API's types are strict).
_ALARM_PROPERTIES: dict[str, Any] = {
    "AlarmDescription": str,
    "ActionsEnabled": _flag,
    "AlarmActions": _strings,
    "OKActions": _strings,
    "InsufficientDataActions": _strings,
    "MetricName": str,
    "Namespace": str,
    "Statistic": str,
    "ExtendedStatistic": str,
    "Dimensions": lambda dims: [{"Name": str(d["Name"]), "Value": str(d["Value"])} for d in dims],
    "Period": int,
    "Unit": str,
    "EvaluationPeriods": int,
    "DatapointsToAlarm": int,
    "Threshold": float,
    "ComparisonOperator": str,
    "TreatMissingData": str,
    "EvaluateLowSampleCountPercentile": str,
    "Metrics": lambda queries: [_metric_query(query) for query in queries],
    "ThresholdMetricId": str,
    "Tags": lambda tags: [{"Key": str(t["Key"]), "Value": str(t["Value"])} for t in tags],
}


def _metric_query(query: dict[str, Any]) -> dict[str, Any]:
    """A metric math alarm's MetricDataQuery, typed as PutMetricAlarm takes it."""
    typed = dict(query)
    if "Period" in typed:
        typed["Period"] = int(typed["Period"])
    if "ReturnData" in typed:
        typed["ReturnData"] = _flag(typed["ReturnData"])
    stat = typed.get("MetricStat")
    if stat is not None:
        typed["MetricStat"] = {**stat, "Period": int(stat["Period"])}
    return typed
