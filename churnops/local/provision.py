"""Provision the twin from the template the CDK app synthesizes: no second list of resources.

moto's CloudFormation cannot deploy our template (secrets, Glue jobs, the S3-notification custom
resource and API stages fail, and state machines created through it do not execute), so this
module reads the synthesized template and makes the equivalent API calls itself:

| template resource                        | twin                                                  |
| ---------------------------------------- | ----------------------------------------------------- |
| AWS::S3::Bucket (+ notifications)        | bucket, versioning, EventBridge notifications         |
| AWS::SNS::Topic                          | topic                                                 |
| AWS::SecretsManager::Secret              | secret; the database's points at the private MariaDB  |
| AWS::Glue::Job                           | job; its script mapped to `glue_jobs/<name>.py`       |
| AWS::Lambda::Function (container images) | function with ImageConfig.Command and Environment     |
| AWS::StepFunctions::StateMachine         | state machine with the resolved definition            |
| AWS::Events::Rule, AWS::Scheduler::Schedule | rule / schedule with pattern, targets, input       |

Intrinsic functions (Ref, Fn::GetAtt, Fn::Join, Fn::Sub, Fn::Select, Fn::Split, Fn::If) are
resolved against the twin's own names, which are derived from logical IDs (stable across
restarts) unless the template names a resource explicitly. Everything else in the template (VPC,
IAM, RDS, API Gateway, alarms, CDK's deploy-time helper functions) has no twin counterpart or is
served by another stand-in, and is skipped on purpose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnops import aws
from churnops.errors import ChurnOpsError

LOG = logging.getLogger("churnops.twin.provision")

ACCOUNT = "123456789012"  # moto's default account
TWIN_ROLE = "churnops-twin-execution"
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
_NAME_LIMITS = {
    "AWS::S3::Bucket": 63,
    "AWS::Lambda::Function": 64,
    "AWS::StepFunctions::StateMachine": 80,
    "AWS::Events::Rule": 64,
    "AWS::Scheduler::Schedule": 64,
    "AWS::Glue::Job": 255,
    "AWS::SNS::Topic": 256,
    "AWS::SecretsManager::Secret": 512,
}
_NAME_PROPERTY = {
    "AWS::S3::Bucket": "BucketName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::Events::Rule": "Name",
    "AWS::Scheduler::Schedule": "Name",
    "AWS::Glue::Job": "Name",
    "AWS::SNS::Topic": "TopicName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::RDS::DBInstance": "DBInstanceIdentifier",
    "AWS::Glue::Connection": "ConnectionInput.Name",
}


@dataclass
class DatabaseEndpoint:
    """The private MariaDB standing in for the RDS instance; `grant(user, dbname)` creates the
    database and a login for it and returns the password."""

    host: str
    port: int
    engine: str
    grant: Callable[[str, str], str]


@dataclass
class TwinLayout:
    """What the twin found in the template, by role (discovered from structure, not by name)."""

    raw_bucket: str | None = None
    watched_prefix: str | None = None
    ingest_state_machine: str | None = None
    ingest_rule: str | None = None
    retrain_state_machine: str | None = None
    retrain_schedule: str | None = None
    serving_function: str | None = None
    serving_handler: str | None = None
    serving_environment: dict[str, str] = field(default_factory=dict)
    registry_uri: str | None = None
    curated_bucket: str | None = None
    db_secret_arn: str | None = None
    database_name: str | None = None
    alert_topic_arn: str | None = None
    buckets: dict[str, str] = field(default_factory=dict)
    state_machines: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)
    glue_jobs: dict[str, str] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)
    schedules: dict[str, str] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ensure_execution_role() -> str:
    """The one role every twin resource runs as (moto checks a function's role can be assumed,
    as AWS does); created once, returned as an ARN."""
    iam = aws.client("iam")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=TWIN_ROLE, AssumeRolePolicyDocument=json.dumps(_TRUST))
    return f"arn:aws:iam::{ACCOUNT}:role/{TWIN_ROLE}"


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
        self.template = template
        self.resources: dict[str, dict[str, Any]] = template.get("Resources", {})
        self.parameters: dict[str, dict[str, Any]] = template.get("Parameters", {})
        self.cdk_out = Path(cdk_out)
        self.repo_root = Path(repo_root)
        self.database = database
        self.region = region
        self.stack_name = stack_name
        self.layout = TwinLayout()
        self._names: dict[str, str] = {}
        self._secret_arns: dict[str, str] = {}
        self._role_arn = f"arn:aws:iam::{ACCOUNT}:role/{TWIN_ROLE}"
        self._assets = _load_asset_manifest(self.cdk_out, stack_name)

    # -- names and intrinsic functions ------------------------------------------------------------
    def name_of(self, logical_id: str) -> str:
        if logical_id in self._names:
            return self._names[logical_id]
        resource = self.resources[logical_id]
        kind = resource["Type"]
        explicit = _dig(resource.get("Properties", {}), _NAME_PROPERTY.get(kind, ""))
        if explicit is not None:
            name = str(self.resolve(explicit))
        else:
            name = _derived_name(self.stack_name, logical_id, kind)
        self._names[logical_id] = name
        return name

    def ref(self, logical_id: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT}:stack/{self.stack_name}/twin",
            "AWS::NoValue": None,
        }
        if logical_id in pseudo:
            return pseudo[logical_id]
        if logical_id in self.parameters:
            return self.parameters[logical_id].get("Default", "")
        if logical_id not in self.resources:
            raise ChurnOpsError(f"template refers to unknown resource {logical_id}")
        kind = self.resources[logical_id]["Type"]
        if kind in ("AWS::SNS::Topic", "AWS::StepFunctions::StateMachine"):
            return self.get_att(logical_id, "Arn")
        if kind == "AWS::SecretsManager::Secret":
            return self._secret_arn(logical_id)
        if kind == "AWS::SecretsManager::SecretTargetAttachment":
            return self.resolve(self.resources[logical_id]["Properties"]["SecretId"])
        if kind in _NAME_PROPERTY or kind in ("AWS::IAM::Role",):
            return self.name_of(logical_id) if kind != "AWS::IAM::Role" else TWIN_ROLE
        return f"twin-{logical_id}"  # a resource with no twin counterpart: an inert placeholder

    def get_att(self, logical_id: str, attribute: str) -> Any:
        kind = self.resources[logical_id]["Type"]
        region, account = self.region, ACCOUNT
        if kind == "AWS::S3::Bucket":
            name = self.name_of(logical_id)
            return {
                "Arn": f"arn:aws:s3:::{name}",
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{region}.amazonaws.com",
            }.get(attribute, name)
        if kind == "AWS::SNS::Topic":
            arn = f"arn:aws:sns:{region}:{account}:{self.name_of(logical_id)}"
            return self.name_of(logical_id) if attribute == "TopicName" else arn
        if kind == "AWS::StepFunctions::StateMachine":
            arn = f"arn:aws:states:{region}:{account}:stateMachine:{self.name_of(logical_id)}"
            return self.name_of(logical_id) if attribute == "Name" else arn
        if kind == "AWS::Lambda::Function":
            return f"arn:aws:lambda:{region}:{account}:function:{self.name_of(logical_id)}"
        if kind == "AWS::Events::Rule":
            return f"arn:aws:events:{region}:{account}:rule/{self.name_of(logical_id)}"
        if kind == "AWS::Scheduler::Schedule":
            return (
                f"arn:aws:scheduler:{region}:{account}:schedule/default/{self.name_of(logical_id)}"
            )
        if kind == "AWS::IAM::Role":
            return self._role_arn if attribute == "Arn" else TWIN_ROLE
        if kind == "AWS::SecretsManager::Secret":
            return self._secret_arn(logical_id)
        if kind in ("AWS::RDS::DBInstance", "AWS::RDS::DBCluster") and self.database:
            if attribute.endswith("Address"):
                return self.database.host
            if attribute.endswith("Port"):
                return str(self.database.port)
        return f"twin-{logical_id}-{attribute}"

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Join":
                separator, parts = arg
                return str(separator).join(str(self.resolve(part)) for part in self.resolve(parts))
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                separator, text = arg
                return str(self.resolve(text)).split(separator)
            if key == "Fn::If":
                condition, when_true, when_false = arg
                chosen = when_true if self._condition(condition) else when_false
                return self.resolve(chosen)
            if key in ("Fn::GetAZs",):
                return [f"{self.region}a", f"{self.region}b"]
            if key == "Fn::Base64":
                return self.resolve(arg)
        return {key: self.resolve(item) for key, item in value.items()}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        resolved = {key: self.resolve(item) for key, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):
                return "${" + expression[1:] + "}"
            if expression in resolved:
                return str(resolved[expression])
            if "." in expression and expression.split(".", 1)[0] in self.resources:
                logical_id, attribute = expression.split(".", 1)
                return str(self.get_att(logical_id, attribute))
            return str(self.ref(expression))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def _condition(self, name: str) -> bool:
        condition = self.template.get("Conditions", {}).get(name)
        if condition is None:
            return False
        return bool(self._evaluate_condition(condition))

    def _evaluate_condition(self, expression: Any) -> Any:
        if isinstance(expression, dict) and len(expression) == 1:
            ((key, arg),) = expression.items()
            if key == "Fn::Equals":
                left, right = (self._evaluate_condition(item) for item in arg)
                return left == right
            if key == "Fn::Not":
                return not self._evaluate_condition(arg[0])
            if key == "Fn::And":
                return all(self._evaluate_condition(item) for item in arg)
            if key == "Fn::Or":
                return any(self._evaluate_condition(item) for item in arg)
            if key == "Condition":
                return self._condition(arg)
        return self.resolve(expression)

    def _secret_arn(self, logical_id: str) -> str:
        if logical_id not in self._secret_arns:
            raise ChurnOpsError(f"secret {logical_id} referenced before it was created")
        return self._secret_arns[logical_id]

    def of_type(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(lid, res) for lid, res in self.resources.items() if res.get("Type") == kind]

    # -- provisioning -----------------------------------------------------------------------------
    def provision(self) -> TwinLayout:
        """Create everything, in dependency order: names first, ARNs are derived from them."""
        self._role()
        self._secrets()
        self._buckets()
        self._topics()
        self._glue_jobs()
        self._functions()
        self._state_machines()
        self._rules()
        self._schedules()
        self._discover()
        return self.layout

    def _role(self) -> None:
        ensure_execution_role()

    def _secrets(self) -> None:
        client = aws.client("secretsmanager")
        attachments = {
            self._logical_target(res["Properties"]["SecretId"]): res["Properties"]
            for _, res in self.of_type("AWS::SecretsManager::SecretTargetAttachment")
        }
        for logical_id, resource in self.of_type("AWS::SecretsManager::Secret"):
            props = resource.get("Properties", {})
            name = self.name_of(logical_id)
            value = self._secret_value(logical_id, props, attachments.get(logical_id))
            try:
                arn = client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
            except client.exceptions.ResourceExistsException:
                arn = client.put_secret_value(SecretId=name, SecretString=json.dumps(value))["ARN"]
            self._secret_arns[logical_id] = arn
            self.layout.secrets[logical_id] = arn

    def _logical_target(self, value: Any) -> str | None:
        if isinstance(value, dict) and "Ref" in value:
            return str(value["Ref"])
        return None

    def _secret_value(
        self, logical_id: str, props: dict[str, Any], attachment: dict[str, Any] | None
    ) -> dict[str, Any]:
        generate = props.get("GenerateSecretString") or {}
        value: dict[str, Any] = {}
        if generate.get("SecretStringTemplate"):
            value = json.loads(generate["SecretStringTemplate"])
        elif props.get("SecretString"):
            with contextlib.suppress(ValueError, TypeError):
                value = json.loads(self.resolve(props["SecretString"]))
        instance_id = self._logical_target((attachment or {}).get("TargetId"))
        if instance_id and self.database is not None:
            instance = self.resources[instance_id].get("Properties", {})
            dbname = str(self.resolve(instance.get("DBName", "churnops")))
            username = str(value.get("username", "churnops"))
            password = self.database.grant(username, dbname)
            self.layout.database_name = dbname
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
        for logical_id, resource in self.of_type("AWS::S3::Bucket"):
            props = resource.get("Properties", {})
            name = self.name_of(logical_id)
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
        found = set()
        for _, resource in self.resources.items():
            if resource.get("Type") != "Custom::S3BucketNotifications":
                continue
            props = resource.get("Properties", {})
            config = props.get("NotificationConfiguration") or {}
            target = self._logical_target(props.get("BucketName"))
            if target and "EventBridgeConfiguration" in config:
                found.add(target)
        return found

    def _topics(self) -> None:
        sns = aws.client("sns")
        for logical_id, _ in self.of_type("AWS::SNS::Topic"):
            self.layout.topics[logical_id] = sns.create_topic(Name=self.name_of(logical_id))[
                "TopicArn"
            ]

    def _glue_jobs(self) -> None:
        glue, s3 = aws.client("glue"), aws.client("s3")
        for logical_id, resource in self.of_type("AWS::Glue::Job"):
            props = self.resolve(resource.get("Properties", {}))
            name = self.name_of(logical_id)
            command = dict(props.get("Command") or {})
            script = self._script_for(command.get("ScriptLocation", ""))
            bucket, _ = aws.split_s3_uri(command["ScriptLocation"])
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
            key = f"glue_jobs/{script.name}"
            s3.put_object(Bucket=bucket, Key=key, Body=script.read_bytes())
            command["ScriptLocation"] = f"s3://{bucket}/{key}"
            arguments = {k: str(v) for k, v in (props.get("DefaultArguments") or {}).items()}
            kwargs: dict[str, Any] = {
                "Name": name,
                "Role": self._role_arn,
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
        """The glue_jobs/ file behind a script asset. The template names it by content hash; the
        asset manifest names its source (--no-staging), else the staged copy
        cdk.out/asset.<hash>.py is matched to the glue_jobs/ file with the same bytes."""
        file_name = location.rsplit("/", 1)[-1]
        scripts = sorted((self.repo_root / "glue_jobs").glob("*.py"))
        direct = self.repo_root / "glue_jobs" / file_name
        if direct.is_file():
            return direct
        # an assembly synthesized with --no-staging names each asset's source file
        asset = self._assets.get("files", {}).get(file_name.removesuffix(".py")) or {}
        source = (asset.get("source") or {}).get("path")
        if source:
            path = self.cdk_out / source  # absolute paths stay absolute
            # (a staged assembly names its own copy, asset.<hash>.py: matched by bytes below)
            if path.parent.name == "glue_jobs" and path.suffix == ".py" and path.is_file():
                return path
        staged = self.cdk_out / f"asset.{file_name}"
        if staged.is_file():
            staged_bytes = staged.read_bytes()
            for script in scripts:
                if script.read_bytes() == staged_bytes:
                    return script
        raise ChurnOpsError(
            f"Glue script {location}: no file in glue_jobs/ matches it (synthesized template stale?)"
        )

    def handler_of_function(self, props: dict[str, Any]) -> str | None:
        command = (props.get("ImageConfig") or {}).get("Command")
        if command:
            return str(self.resolve(command)[0])
        if props.get("PackageType") == "Image":
            return self._dockerfile_cmd(self.resolve((props.get("Code") or {}).get("ImageUri", "")))
        handler = props.get("Handler")
        return str(handler) if handler else None

    def _dockerfile_cmd(self, image_uri: str) -> str | None:
        """The image's CMD, from the Dockerfile the image asset is built from."""
        tag = image_uri.rsplit(":", 1)[-1]
        source = (self._assets.get("dockerImages", {}).get(tag) or {}).get("source") or {}
        dockerfile = source.get("dockerFile", "Dockerfile")
        for base in (self.cdk_out / source.get("directory", "."), self.repo_root):
            path = base / dockerfile
            if path.is_file():
                return _cmd_from_dockerfile(path.read_text())
        return None

    def _functions(self) -> None:
        client = aws.client("lambda")
        for logical_id, resource in self.of_type("AWS::Lambda::Function"):
            props = resource.get("Properties", {})
            if props.get("PackageType") != "Image":
                # Our functions are container images (interfaces 5); zip and inline functions are
                # CDK's deploy-time helpers (custom resources, auto-delete): nothing to run here.
                continue
            handler = self.handler_of_function(props)
            if not handler:
                raise ChurnOpsError(
                    f"function {logical_id}: no ImageConfig.Command and no CMD in its Dockerfile"
                )
            name = self.name_of(logical_id)
            environment = {
                key: str(value)
                for key, value in self.resolve(
                    (props.get("Environment") or {}).get("Variables", {})
                ).items()
            }
            with contextlib.suppress(client.exceptions.ResourceConflictException):
                client.create_function(
                    FunctionName=name,
                    Role=self._role_arn,
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
            if handler.startswith("lambdas.serving."):
                self.layout.serving_function = name
                self.layout.serving_handler = handler
                self.layout.serving_environment = environment

    def _state_machines(self) -> None:
        sfn = aws.client("stepfunctions")
        for logical_id, resource in self.of_type("AWS::StepFunctions::StateMachine"):
            props = resource.get("Properties", {})
            definition = props.get("DefinitionString")
            if definition is None:
                definition = json.dumps(props.get("Definition", {}))
            text = str(self.resolve(definition))
            for key, value in self.resolve(props.get("DefinitionSubstitutions") or {}).items():
                text = text.replace("${" + key + "}", str(value))
            name = self.name_of(logical_id)
            try:
                arn = sfn.create_state_machine(
                    name=name,
                    definition=text,
                    roleArn=self._role_arn,
                    type=props.get("StateMachineType", "STANDARD"),
                )["stateMachineArn"]
            except sfn.exceptions.StateMachineAlreadyExists:
                arn = self.get_att(logical_id, "Arn")
            self.layout.state_machines[logical_id] = arn

    def _target(self, target: dict[str, Any]) -> dict[str, Any]:
        resolved = self.resolve(target)
        keep = ("Id", "Arn", "RoleArn", "Input", "InputPath", "InputTransformer", "SqsParameters")
        out = {key: resolved[key] for key in keep if resolved.get(key) is not None}
        if "RoleArn" in out:
            out["RoleArn"] = self._role_arn
        return out

    def _rules(self) -> None:
        events = aws.client("events")
        for logical_id, resource in self.of_type("AWS::Events::Rule"):
            props = resource.get("Properties", {})
            name = self.name_of(logical_id)
            kwargs: dict[str, Any] = {"Name": name, "State": props.get("State", "ENABLED")}
            if props.get("EventPattern") is not None:
                kwargs["EventPattern"] = json.dumps(self.resolve(props["EventPattern"]))
            if props.get("ScheduleExpression"):
                kwargs["ScheduleExpression"] = self.resolve(props["ScheduleExpression"])
            bus = props.get("EventBusName")
            if bus:
                kwargs["EventBusName"] = self.resolve(bus)
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
        for logical_id, resource in self.of_type("AWS::Scheduler::Schedule"):
            props = self.resolve(resource.get("Properties", {}))
            name = self.name_of(logical_id)
            target = {
                k: v
                for k, v in props["Target"].items()
                if k in ("Arn", "RoleArn", "Input", "RetryPolicy")
            }
            target["RoleArn"] = self._role_arn
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

    # -- what is what -----------------------------------------------------------------------------
    def _discover(self) -> None:
        """Find the roles the twin's commands need from the template's structure."""
        layout = self.layout
        arn_to_machine = {arn: lid for lid, arn in layout.state_machines.items()}
        for logical_id, resource in self.of_type("AWS::Events::Rule"):
            props = self.resolve(resource.get("Properties", {}))
            pattern = props.get("EventPattern") or {}
            if "aws.s3" not in (pattern.get("source") or []):
                continue
            detail = pattern.get("detail") or {}
            buckets = (detail.get("bucket") or {}).get("name") or []
            machines = [t["Arn"] for t in props.get("Targets") or [] if t["Arn"] in arn_to_machine]
            if buckets and machines:
                layout.raw_bucket = buckets[0]
                layout.ingest_state_machine = machines[0]
                layout.ingest_rule = layout.rules[logical_id]
                for condition in (detail.get("object") or {}).get("key") or []:
                    if isinstance(condition, dict) and "prefix" in condition:
                        layout.watched_prefix = condition["prefix"]
                    elif isinstance(condition, dict) and "wildcard" in condition:
                        layout.watched_prefix = condition["wildcard"].split("*", 1)[0]
        for logical_id, resource in self.of_type("AWS::Scheduler::Schedule"):
            arn = self.resolve(resource["Properties"]["Target"]["Arn"])
            if arn in arn_to_machine:
                layout.retrain_state_machine = arn
                layout.retrain_schedule = layout.schedules[logical_id]
        if layout.retrain_state_machine is None:
            for logical_id, resource in self.of_type("AWS::Events::Rule"):
                props = self.resolve(resource.get("Properties", {}))
                machines = [
                    t["Arn"] for t in props.get("Targets") or [] if t["Arn"] in arn_to_machine
                ]
                if props.get("ScheduleExpression") and machines:
                    layout.retrain_state_machine = machines[0]
                    layout.retrain_schedule = layout.rules[logical_id]
        environment = dict(layout.serving_environment)
        for function_env in self._function_environments():
            for key, value in function_env.items():
                environment.setdefault(key, value)
        layout.registry_uri = environment.get("REGISTRY_URI")
        layout.curated_bucket = environment.get("CURATED_BUCKET")
        layout.db_secret_arn = environment.get("DB_SECRET_ARN") or layout.db_secret_arn
        layout.alert_topic_arn = environment.get("ALERT_TOPIC_ARN")
        if layout.db_secret_arn is None:
            for _, resource in self.of_type("AWS::SecretsManager::SecretTargetAttachment"):
                layout.db_secret_arn = self.resolve(resource["Properties"]["SecretId"])

    def _function_environments(self) -> list[dict[str, str]]:
        result = []
        for _, resource in self.of_type("AWS::Lambda::Function"):
            variables = (resource.get("Properties", {}).get("Environment") or {}).get("Variables")
            if variables:
                result.append({k: str(v) for k, v in self.resolve(variables).items()})
        for _, resource in self.of_type("AWS::Glue::Job"):
            arguments = resource.get("Properties", {}).get("DefaultArguments") or {}
            result.append({k.lstrip("-"): str(v) for k, v in self.resolve(arguments).items()})
        return result


def _dig(props: dict[str, Any], dotted: str) -> Any:
    value: Any = props
    for part in dotted.split(".") if dotted else []:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if dotted else None


def _derived_name(stack: str, logical_id: str, kind: str) -> str:
    limit = _NAME_LIMITS.get(kind, 64)
    if kind == "AWS::S3::Bucket":
        base = re.sub(r"[^a-z0-9-]", "", f"{stack}-{logical_id}".lower())
        digest = hashlib.sha1(logical_id.encode()).hexdigest()[:6]  # noqa: S324 - a name, not security
        return f"{base[: limit - 7]}-{digest}"
    name = re.sub(r"[^A-Za-z0-9_-]", "", f"{stack}-{logical_id}")
    return name[:limit]


def _cmd_from_dockerfile(text: str) -> str | None:
    command = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.upper().startswith("CMD "):
            body = stripped[4:].strip()
            try:
                parsed = json.loads(body)
                command = parsed[0] if isinstance(parsed, list) and parsed else None
            except ValueError:
                command = body.split()[0] if body else None
    return command


def _load_asset_manifest(cdk_out: Path, stack_name: str) -> dict[str, Any]:
    path = cdk_out / f"{stack_name}.assets.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
