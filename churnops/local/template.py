"""The synthesized CloudFormation template, evaluated as the twin deploys it.

Intrinsic functions (Ref, Fn::GetAtt, Fn::Join, Fn::Sub, Fn::Select, Fn::Split, Fn::If and the
conditions) are resolved against the twin's own names, which are derived from logical IDs (stable
across restarts) unless the template names a resource explicitly; an IAM role resolves to its own
name and ARN, as each runs as its own role in the twin. The cloud assembly's asset manifest says what each asset reference in
the template is built from: the Glue script file behind a script's S3 URL, the Dockerfile behind
a container image's tag.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churnops.errors import ChurnOpsError

ACCOUNT = "123456789012"  # moto's default account
TWIN_ROLE = "churnops-twin-execution"
TWIN_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{TWIN_ROLE}"
_NAME_LIMITS = {
    "AWS::S3::Bucket": 63,
    "AWS::Lambda::Function": 64,
    "AWS::StepFunctions::StateMachine": 80,
    "AWS::Events::Rule": 64,
    "AWS::Scheduler::Schedule": 64,
    "AWS::Glue::Job": 255,
    "AWS::SNS::Topic": 256,
    "AWS::SecretsManager::Secret": 512,
    "AWS::IAM::Role": 64,
    "AWS::IAM::ManagedPolicy": 128,
    "AWS::Logs::LogGroup": 512,
    "AWS::CloudWatch::Alarm": 255,
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
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::CloudWatch::Alarm": "AlarmName",
}


@dataclass
class DatabaseEndpoint:
    """The private MariaDB standing in for the RDS instance; `grant(user, dbname)` creates the
    database and a login for it and returns the password."""

    host: str
    port: int
    engine: str
    grant: Callable[[str, str], str]


class Template:
    """One stack's template and cloud assembly. `secret_arns` is filled as secrets are created
    (moto adds a random suffix to a secret's ARN, so a reference resolves only afterwards)."""

    def __init__(
        self,
        template: dict[str, Any],
        *,
        cdk_out: Path,
        database: DatabaseEndpoint | None = None,
        region: str = "us-east-1",
        stack_name: str = "ChurnOps",
    ) -> None:
        self.template = template
        self.resources: dict[str, dict[str, Any]] = template.get("Resources", {})
        self.parameters: dict[str, dict[str, Any]] = template.get("Parameters", {})
        self.cdk_out = Path(cdk_out)
        self.database = database
        self.region = region
        self.stack_name = stack_name
        self.secret_arns: dict[str, str] = {}
        self._names: dict[str, str] = {}
        manifest = self.cdk_out / f"{stack_name}.assets.json"
        self._assets: dict[str, Any] = (
            json.loads(manifest.read_text()) if manifest.is_file() else {}
        )

    def of_type(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(lid, res) for lid, res in self.resources.items() if res.get("Type") == kind]

    def references(self, value: Any, kind: str | None = None) -> list[str]:
        """The logical IDs `value` refers to (Ref, Fn::GetAtt, Fn::Sub), in order; only
        resources of type `kind` when given."""
        found = [lid for lid in _referenced(value) if lid in self.resources]
        if kind is not None:
            found = [lid for lid in found if self.resources[lid]["Type"] == kind]
        return list(dict.fromkeys(found))

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
            return self.secret_arn(logical_id)
        if kind == "AWS::SecretsManager::SecretTargetAttachment":
            return self.resolve(self.resources[logical_id]["Properties"]["SecretId"])
        if kind == "AWS::IAM::ManagedPolicy":
            return self.get_att(logical_id, "PolicyArn")
        if kind == "AWS::KMS::Key":
            return self.get_att(logical_id, "KeyId")
        if kind in _NAME_PROPERTY:
            return self.name_of(logical_id)
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
        if kind in ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy"):
            name = self.name_of(logical_id)
            if attribute not in ("Arn", "PolicyArn"):
                return name
            path = str(
                self.resolve(self.resources[logical_id].get("Properties", {}).get("Path", "/"))
            )
            kind_in_arn = "role" if kind == "AWS::IAM::Role" else "policy"
            return f"arn:aws:iam::{account}:{kind_in_arn}{path}{name}"
        if kind == "AWS::KMS::Key":  # policies grant on keys; the twin has none, only their ARNs
            key_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.stack_name}/{logical_id}"))
            return f"arn:aws:kms:{region}:{account}:key/{key_id}" if attribute == "Arn" else key_id
        if kind == "AWS::Logs::LogGroup":
            return f"arn:aws:logs:{region}:{account}:log-group:{self.name_of(logical_id)}:*"
        if kind == "AWS::CloudWatch::Alarm":  # rules match an alarm's state changes by its ARN
            return f"arn:aws:cloudwatch:{region}:{account}:alarm:{self.name_of(logical_id)}"
        if kind == "AWS::SecretsManager::Secret":
            return self.secret_arn(logical_id)
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

        return _SUB_VARIABLE.sub(replace, text)

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

    def secret_arn(self, logical_id: str) -> str:
        if logical_id not in self.secret_arns:
            raise ChurnOpsError(f"secret {logical_id} referenced before it was created")
        return self.secret_arns[logical_id]

    # -- the asset manifest ----------------------------------------------------------------------
    def file_asset(self, location: str) -> Path | None:
        """The file a file asset's S3 URL (`s3://<assets bucket>/<hash>.<ext>`) is built from:
        the source an assembly synthesized with --no-staging names, or a staged copy in cdk.out
        (`asset.<hash>.<ext>`)."""
        object_name = location.rsplit("/", 1)[-1]
        asset_hash = object_name.rsplit(".", 1)[0]
        source = ((self._assets.get("files", {}).get(asset_hash) or {}).get("source") or {}).get(
            "path"
        )
        if not source:
            return None
        path = self.cdk_out / source  # absolute paths stay absolute
        return path if path.is_file() else None

    def image_command(self, image_uri: str) -> str | None:
        """The first word of the CMD of the Dockerfile a container image asset's tag is built
        from."""
        tag = image_uri.rsplit(":", 1)[-1]
        source = (self._assets.get("dockerImages", {}).get(tag) or {}).get("source") or {}
        dockerfile = (
            self.cdk_out / source.get("directory", ".") / source.get("dockerFile", "Dockerfile")
        )
        return _cmd_from_dockerfile(dockerfile.read_text()) if dockerfile.is_file() else None

    def handler_of_function(self, props: dict[str, Any]) -> str | None:
        """What a function runs: its ImageConfig.Command, its image's CMD, or its Handler."""
        command = (props.get("ImageConfig") or {}).get("Command")
        if command:
            return str(self.resolve(command)[0])
        if props.get("PackageType") == "Image":
            return self.image_command(self.resolve((props.get("Code") or {}).get("ImageUri", "")))
        handler = props.get("Handler")
        return str(handler) if handler else None


_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _referenced(value: Any) -> Iterator[str]:
    if isinstance(value, list):
        for item in value:
            yield from _referenced(item)
    elif isinstance(value, dict):
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and isinstance(arg, str):
                yield arg
                return
            if key == "Fn::GetAtt":
                yield (arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0])
                return
            if key == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                for expression in _SUB_VARIABLE.findall(text):
                    if not expression.startswith("!"):
                        yield expression.split(".", 1)[0]
                if isinstance(arg, list):
                    yield from _referenced(arg[1])
                return
        for item in value.values():
            yield from _referenced(item)


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
