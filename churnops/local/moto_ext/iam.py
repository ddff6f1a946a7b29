"""IAM: every request to the twin is authorized the way AWS authorizes it, as the role that sends it.

What moto 5.2.5 does once its IAM checks are on (`request_count >= INITIAL_NO_AUTH_ACTION_COUNT`),
and why the twin cannot use it as it is:
- every service but S3 (and IAM, STS, SQS) is checked against resource "*", so a grant scoped to
  an ARN, which is what CDK's `grant_*` writes, is refused;
- a statement with a Condition is evaluated against no request context at all, and an Allow whose
  condition fails answers DENIED, an explicit deny: `cloudwatch:PutMetricData` limited to one
  namespace, or `s3:ListBucket` limited to an `s3:prefix`, are refused even with the grant;
- the action is named by the request's signing name (`monitoring:PutMetricData`) and operation
  (`lambda:Invoke`, `s3:HeadBucket`), not by IAM's action (`cloudwatch:PutMetricData`,
  `lambda:InvokeFunction`, `s3:ListBucket`); `CopyObject` checks only the destination and
  `DeleteObjects` only the bucket;
- AccessDenied names neither the resource nor why, and every JSON service gets an XML error;
- a role that trusts a service principal (`lambda.amazonaws.com`) cannot be assumed through STS
  (the trust check crashes), so no Lambda, Glue job or state machine could run as its own role.

This module replaces the one check every request goes through
(`ActionAuthenticatorMixin._authenticate_and_authorize_action`) with AWS's evaluation of the
caller's identity policies (inline and attached, AWS managed ones included), evaluated by
`churnops/local/iam_policy.py` (no moto in it): an explicit Deny wins; otherwise the request is
allowed only when an Allow statement matches its action, EVERY resource it touches and all of
the statement's conditions, evaluated against the request's own condition context. Which
resources and context keys a request carries is written down below for every (service, action)
the deployed code and the state machines call, from the AWS Service Authorization Reference; an
action without a mapping is checked against "*" (as moto does) and logged once, so a grant scoped
to an ARN fails loudly and points at the gap.

`aws:SecureTransport` is "true": the twin's loopback HTTP stands for the HTTPS every AWS SDK uses
against AWS's endpoints, so a policy that denies plain HTTP (CDK's `enforce_ssl`) must not fire.

Services do not assume a role through STS over HTTP: `assume_role_as_service` checks the role's
trust policy for the service principal (with the service's `aws:SourceArn`/`aws:SourceAccount`)
and registers the session in moto's STS backend directly. The Step Functions interpreter's own
AWS calls (Lambda invoke, Glue StartJobRun, SNS publish, SDK integrations) are made with the
credentials of the state machine's role once enforcement is on.

Resource-based policies (bucket, topic, secret policies), permission boundaries, session policies
and policy variables (`${aws:username}`) are not evaluated.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from churnops.local.iam_policy import Decision, evaluate, evaluate_trust

LOG = logging.getLogger("churnops.twin.moto_ext")

ACCOUNT = "123456789012"  # moto's default account, the twin's only one
PARTITION = "aws"
DEFAULT_REGION = "us-east-1"
OPERATOR_USER = "churnops-twin-operator"

__all__ = [
    "OPERATOR_USER",
    "ServiceTrustError",
    "assume_role_as_service",
    "enforce_iam",
    "enforcing",
    "iam_enforced",
    "load_aws_managed_policy",
    "operator_credentials",
    "patches",
    "stop_enforcing",
]


class ServiceTrustError(Exception):
    """A service may not assume a role: its trust policy does not allow the service principal."""


# ---- what each request is: its IAM action(s), resource(s) and condition context ---------------


@dataclass(frozen=True)
class Check:
    """One authorization a request needs: all of a request's checks must allow it."""

    action: str  # "service:Action", IAM's name
    resource: str
    context: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass
class RequestView:
    """What a resolver reads from a request: parsed parameters, region and account."""

    params: Mapping[str, Any]
    region: str
    account: str
    querystring: Mapping[str, Any]
    headers: Any
    body: Any

    def param(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)


Resolver = Callable[[RequestView, str], list[Check]]

# A request's signing name is not always its IAM service prefix.
_IAM_PREFIX = {"monitoring": "cloudwatch"}
# A request's operation is not always its IAM action.
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html
# (Invoke -> lambda:InvokeFunction); list_amazons3.html (HeadBucket -> s3:ListBucket,
# HeadObject -> s3:GetObject, moto names it GetObject already).
_IAM_ACTION = {
    ("lambda", "Invoke"): "InvokeFunction",
    ("s3", "HeadBucket"): "ListBucket",
    ("s3", "GetPublicAccessBlock"): "GetBucketPublicAccessBlock",
    ("s3", "PutPublicAccessBlock"): "PutBucketPublicAccessBlock",
    ("s3", "DeletePublicAccessBlock"): "PutBucketPublicAccessBlock",
}
# Actions the Service Authorization Reference lists with no resource type: "*" is their resource.
_NO_RESOURCE = {
    "cloudwatch:PutMetricData",
    "cloudwatch:GetMetricData",
    "cloudwatch:GetMetricStatistics",
    "cloudwatch:ListMetrics",
    "cloudwatch:DescribeAlarmsForMetric",
    "secretsmanager:ListSecrets",
    "secretsmanager:GetRandomPassword",
    "lambda:ListFunctions",
    "states:ListStateMachines",
    "states:ListActivities",
    "states:SendTaskSuccess",
    "states:SendTaskFailure",
    "states:SendTaskHeartbeat",
    "sns:ListTopics",
    "sns:ListSubscriptions",
    "events:ListRules",
    "events:ListEventBuses",
    "glue:GetJobs",
    "glue:ListJobs",
    "s3:ListAllMyBuckets",
    "scheduler:ListSchedules",
    "sts:GetCallerIdentity",
}
_warned: set[str] = set()


def _secret_arn(view: RequestView, secret_id: str) -> str:
    """Secrets Manager authorizes on the secret's full ARN (with its random suffix), whichever
    identifier (name, partial or full ARN) the request names it by."""
    from moto.secretsmanager.models import secretsmanager_backends

    secret = secretsmanager_backends[view.account][view.region].secrets.get(secret_id)
    if secret is not None:
        return str(secret.arn)
    if secret_id.startswith("arn:"):
        return secret_id
    return f"arn:{PARTITION}:secretsmanager:{view.region}:{view.account}:secret:{secret_id}"


def _secretsmanager(view: RequestView, action: str) -> list[Check]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssecretsmanager.html
    # Secret: arn:${Partition}:secretsmanager:${Region}:${Account}:secret:${SecretId}
    secret_id = view.param("SecretId") or view.param("Name")
    if not secret_id:
        return []
    arn = _secret_arn(view, str(secret_id))
    if action == "secretsmanager:CreateSecret":
        arn = f"{arn}-??????"  # the suffix the new secret will get
    return [Check(action, arn, {"secretsmanager:SecretId": [arn]})]


def _name_or_arn(value: str, prefix: str) -> str:
    return value if value.startswith("arn:") else f"{prefix}{value}"


def _lambda(view: RequestView, action: str) -> list[Check]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awslambda.html
    # function: arn:${Partition}:lambda:${Region}:${Account}:function:${FunctionName}
    # (a qualified call authorizes on the qualified ARN: "function:name:qualifier")
    name = view.param("FunctionName")
    if not name:
        return []
    name = urllib.parse.unquote(str(name))
    prefix = f"arn:{PARTITION}:lambda:{view.region}:{view.account}:function:"
    if name.startswith("arn:"):
        arn = name
    elif ":" in name:  # "account:function:name" partial ARN, or "name:qualifier"
        parts = name.split(":")
        arn = (
            f"arn:{PARTITION}:lambda:{view.region}:{':'.join(parts)}"
            if parts[1:2] == ["function"]
            else f"{prefix}{name}"
        )
    else:
        arn = f"{prefix}{name}"
    qualifier = view.param("Qualifier")
    if qualifier and arn.count(":") == 6:
        arn = f"{arn}:{qualifier}"
    return [Check(action, arn)]


def _glue(view: RequestView, action: str) -> list[Check]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsglue.html
    # job: arn:${Partition}:glue:${Region}:${Account}:job/${JobName}
    # GetConnection needs catalog and connection/${ConnectionName}
    base = f"arn:{PARTITION}:glue:{view.region}:{view.account}"
    if action in ("glue:GetConnection", "glue:UpdateConnection", "glue:DeleteConnection"):
        name = view.param("Name") or view.param("ConnectionName")
        return [Check(action, f"{base}:catalog"), Check(action, f"{base}:connection/{name}")]
    name = view.param("JobName") or (view.param("Name") if "Job" in action else None)
    if not name:
        return []
    return [Check(action, f"{base}:job/{name}")]


def _states(view: RequestView, action: str) -> list[Check]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsstepfunctions.html
    # stateMachine: arn:${Partition}:states:${Region}:${Account}:stateMachine:${StateMachineName}
    # execution: arn:${Partition}:states:${Region}:${Account}:execution:${StateMachineName}:${Id}
    arn = view.param("stateMachineArn") or view.param("executionArn")
    if not arn and action == "states:CreateStateMachine" and view.param("name"):
        arn = (
            f"arn:{PARTITION}:states:{view.region}:{view.account}:stateMachine:{view.param('name')}"
        )
    return [Check(action, str(arn))] if arn else []


def _sns(view: RequestView, action: str) -> list[Check]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsns.html
    # topic: arn:${Partition}:sns:${Region}:${Account}:${TopicName}
    arn = view.param("TopicArn") or view.param("TargetArn")
    if not arn and action == "sns:CreateTopic" and view.param("Name"):
        arn = f"arn:{PARTITION}:sns:{view.region}:{view.account}:{view.param('Name')}"
    return [Check(action, str(arn))] if arn else []


def _events(view: RequestView, action: str) -> list[Check]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridge.html
    # event-bus: arn:${Partition}:events:${Region}:${Account}:event-bus/${EventBusName}
    # rule: arn:${Partition}:events:${Region}:${Account}:rule/[${EventBusName}/]${RuleName}
    # PutEvents is authorized per entry, on its bus, with events:source and events:detail-type.
    prefix = f"arn:{PARTITION}:events:{view.region}:{view.account}:"
    if action == "events:PutEvents":
        return [
            Check(
                action,
                _name_or_arn(str(entry.get("EventBusName") or "default"), f"{prefix}event-bus/"),
                {
                    "events:source": [str(entry.get("Source", ""))],
                    "events:detail-type": [str(entry.get("DetailType", ""))],
                },
            )
            for entry in view.param("Entries") or []
        ]
    rule = view.param("Rule") or view.param("Name")
    if rule and ("Rule" in action or action in ("events:PutTargets", "events:RemoveTargets")):
        bus = view.param("EventBusName")
        bus_part = f"{bus}/" if bus and bus != "default" and not str(bus).startswith("arn:") else ""
        return [Check(action, _name_or_arn(str(rule), f"{prefix}rule/{bus_part}"))]
    if action.startswith("events:") and "EventBus" in action and view.param("Name"):
        return [Check(action, _name_or_arn(str(view.param("Name")), f"{prefix}event-bus/"))]
    return []


def _cloudwatch(view: RequestView, action: str) -> list[Check]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html
    # PutMetricData: no resource type; condition key cloudwatch:namespace.
    if action == "cloudwatch:PutMetricData":
        return [Check(action, "*", {"cloudwatch:namespace": [str(view.param("Namespace", ""))]})]
    # DescribeAlarms: resource type alarm, arn:${Partition}:cloudwatch:${Region}:${Account}:
    # alarm:${AlarmName}. Named alarms are authorized one by one; a listing without names is "*".
    if action == "cloudwatch:DescribeAlarms":
        names = view.param("AlarmNames") or []
        if isinstance(names, Mapping):  # the query protocol's AlarmNames.member.N
            names = list(names.get("member", names.values()))
        prefix = f"arn:{PARTITION}:cloudwatch:{view.region}:{view.account}:alarm:"
        return [Check(action, prefix + str(name)) for name in names]
    return []


def _scheduler(view: RequestView, action: str) -> list[Check]:
    # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridgescheduler.html
    # schedule: arn:${Partition}:scheduler:${Region}:${Account}:schedule/${GroupName}/${ScheduleName}
    name = view.param("Name")
    if not name or "Schedule" not in action or "Group" in action:
        return []
    group = view.param("GroupName") or "default"
    return [
        Check(
            action,
            f"arn:{PARTITION}:scheduler:{view.region}:{view.account}:schedule/{group}/{name}",
        )
    ]


_RESOLVERS: dict[str, Resolver] = {
    "secretsmanager": _secretsmanager,
    "lambda": _lambda,
    "glue": _glue,
    "states": _states,
    "sns": _sns,
    "events": _events,
    "cloudwatch": _cloudwatch,
    "scheduler": _scheduler,
}


def _s3_checks(response: Any, action: str, resource: str) -> list[Check]:
    """S3 keeps moto's per-bucket/per-object resource; adds the checks and context moto lacks.
    https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html"""
    query = response.querystring or {}

    def first(name: str) -> str | None:
        value = query.get(name)
        return str(value[0] if isinstance(value, list) else value) if value is not None else None

    bucket_arn = resource.split("/", 1)[0]
    if action == "s3:ListBucket" and response._get_action() == "ListBucket":
        # ListObjects(V2): s3:prefix, s3:delimiter, s3:max-keys when the request carries them
        context = {
            key: [value]
            for key, value in (
                ("s3:prefix", first("prefix")),
                ("s3:delimiter", first("delimiter")),
                ("s3:max-keys", first("max-keys")),
            )
            if value is not None
        }
        return [Check(action, resource, context)]
    if action == "s3:DeleteObject" and "/" not in resource.split(":::", 1)[-1]:
        # DeleteObjects (POST ?delete): s3:DeleteObject on every key it names
        from xml.etree import ElementTree

        body = response.body or b""
        root = ElementTree.fromstring(body)  # noqa: S314 - moto has already parsed this body
        keys = [
            element.text or "" for element in root.iter() if element.tag.rsplit("}", 1)[-1] == "Key"
        ]
        return [Check(action, f"{bucket_arn}/{key}") for key in keys]
    source = response.headers.get("x-amz-copy-source")
    if action == "s3:PutObject" and source:
        # CopyObject / UploadPartCopy: s3:GetObject (GetObjectVersion) on the source too
        if isinstance(source, bytes):
            source = source.decode()
        parsed = urllib.parse.urlparse(source)
        source_path = urllib.parse.unquote(parsed.path).lstrip("/")
        read = "s3:GetObjectVersion" if "versionId=" in parsed.query else "s3:GetObject"
        partition = resource.split(":", 2)[1]
        return [Check(action, resource), Check(read, f"arn:{partition}:s3:::{source_path}")]
    return [Check(action, resource)]


def _request_params(response: Any, operation: str) -> dict[str, Any]:
    """The request's parameters by their API names, however the protocol carries them."""
    if getattr(response, "automated_parameter_parsing", False) and isinstance(
        getattr(response, "params", None), dict
    ):
        return {**response.params, **(response.uri_match or {})}
    try:
        from moto.core.parse import PROTOCOL_PARSERS
        from moto.core.request import determine_request_protocol
        from moto.core.routing import get_service_router
        from moto.core.utils import get_service_model

        request = response.normalized_request
        model = get_service_model(response.boto3_service_name)
        operation_model = model.operation_model(operation)
        protocol = determine_request_protocol(model, request.content_type)
        uri_params: dict[str, Any] = {}
        if protocol.startswith("rest"):
            _, uri_params = get_service_router(response.boto3_service_name).match(request)
        parser = PROTOCOL_PARSERS[protocol](
            operation_model, map_type=response.PROTOCOL_PARSER_MAP_TYPE
        )
        parsed = parser.parse(
            {
                "method": request.method,
                "values": request.values,
                "headers": request.headers,
                "body": request.data,
                "url_path": request.path,
                "url_params": uri_params,
            }
        )
        return {**dict(parsed), **uri_params}
    except Exception as err:  # an unparsable request is checked against "*"
        LOG.warning("IAM: cannot read the parameters of %s: %s", operation, err)
        return {}


def request_checks(response: Any, service: str, operation: str, resource: str) -> list[Check]:
    """Every authorization the request needs."""
    action = f"{service}:{_IAM_ACTION.get((service, operation), operation)}"
    if service == "s3":
        return _s3_checks(response, action, resource)
    if resource != "*":  # moto's own resource (IAM, STS, SQS name theirs)
        return [Check(action, resource)]
    resolver = _RESOLVERS.get(service)
    if resolver is not None:
        view = RequestView(
            params=_request_params(response, operation),
            region=response.region,
            account=response.current_account,
            querystring=response.querystring,
            headers=response.headers,
            body=response.body,
        )
        checks = resolver(view, action)
        if checks:
            return checks
    if action not in _NO_RESOURCE and action not in _warned:
        _warned.add(action)
        LOG.warning(
            'IAM: the twin maps no resource for %s; it is checked against "*", so a grant '
            "scoped to an ARN is refused",
            action,
        )
    return [Check(action, "*")]


# ---- who calls: the caller's policies and the global context keys -------------------------------


@dataclass
class Caller:
    arn: str  # as AWS names the caller in an error: the assumed-role session or the user
    documents: list[dict[str, Any]]
    context: dict[str, list[str]]


def _document(policy: Any) -> dict[str, Any]:
    if hasattr(policy, "versions"):  # a managed policy: its default version
        text = next(v.document for v in policy.versions if v.is_default)
    elif isinstance(policy, dict):
        text = policy.get("policy_document", policy)
    else:
        text = policy
    if isinstance(text, str):
        if text.lstrip().startswith("%"):
            text = urllib.parse.unquote(text)
        return dict(json.loads(text))
    return dict(text)


def _caller(access_key: Any, region: str) -> Caller:
    from moto.iam.access_control import AssumedRoleAccessKey

    backend = access_key.backend
    context: dict[str, list[str]] = {
        "aws:PrincipalAccount": [access_key.account_id],
        "aws:SecureTransport": ["true"],  # see the module docstring
        "aws:RequestedRegion": [region],
        "aws:CurrentTime": [dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")],
        "aws:EpochTime": [str(int(dt.datetime.now(dt.UTC).timestamp()))],
    }
    if isinstance(access_key, AssumedRoleAccessKey):
        role = backend.get_role(access_key._owner_role_name)
        context["aws:PrincipalArn"] = [role.arn]
        context["aws:PrincipalType"] = ["AssumedRole"]
        context["aws:userid"] = [f"{role.id}:{access_key._session_name}"]
    else:
        context["aws:PrincipalArn"] = [access_key.arn]
        context["aws:PrincipalType"] = ["User"]
        context["aws:username"] = [access_key._owner_user_name]
    documents = [_document(policy) for policy in access_key.collect_policies()]
    return Caller(access_key.arn, documents, context)


# ---- AccessDenied as each service says it ------------------------------------------------------
# Wording: "User: <arn> is not authorized to perform: <action> on resource: <arn> because no
# identity-based policy allows the <action> action" / "... with an explicit deny in an
# identity-based policy".
# https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html
_ERROR_CODES = {
    "sns": "AuthorizationError",
    "cloudwatch": "AccessDenied",
    "sts": "AccessDenied",
    "iam": "AccessDenied",
    "s3": "AccessDenied",
}


def denial_message(caller_arn: str, check: Check, decision: Decision) -> str:
    action = check.action
    if action.startswith("sns:"):  # SNS spells its prefix in capitals in its errors
        action = "SNS:" + action[4:]
    on = ""
    if check.resource != "*":
        resource = f'"{check.resource}"' if action.startswith("s3:") else check.resource
        on = f" on resource: {resource}"
    why = (
        "with an explicit deny in an identity-based policy"
        if decision is Decision.EXPLICIT_DENY
        else f"because no identity-based policy allows the {action} action"
    )
    return f"User: {caller_arn} is not authorized to perform: {action}{on} {why}"


def _werkzeug_denial(status: int, body: Any) -> Exception:
    from werkzeug.exceptions import HTTPException

    class _Denied(HTTPException):
        pass

    denied = _Denied(description=body)
    denied.code = status
    return denied


@functools.cache
def _service_error() -> type[Exception]:
    """A moto ServiceException defined outside moto's packages: moto then looks its code up in
    the service's own model only (a moto.core exception makes it look for a service "core")."""
    from moto.core.exceptions import ServiceException

    class TwinAccessDenied(ServiceException):
        pass

    return TwinAccessDenied


def _raise_denied(response: Any, service: str, message: str, bucket: str | None) -> None:
    code = _ERROR_CODES.get(service, "AccessDeniedException")
    if service == "s3":
        from moto.s3.exceptions import BucketAccessDeniedError, S3AccessDeniedError

        # A bucket-level denial stays a BucketAccessDeniedError: moto's DeleteObjects answers it
        # with a per-key AccessDenied for every key, as S3 reports per-key denials.
        s3_error = BucketAccessDeniedError(bucket) if bucket else S3AccessDeniedError()
        s3_error.message = message
        raise s3_error
    _raise_service_error(response, code, message)


def _raise_service_error(response: Any, code: str, message: str) -> None:
    """A 403 serialized by the service's own protocol (JSON, query XML, CBOR), so its SDK reads
    the code; moto's own errors at this point are XML for every service."""
    import warnings

    from moto.core.responses import ActionResult

    with warnings.catch_warnings():  # moto warns that its model has no shape for the code
        warnings.simplefilter("ignore", UserWarning)
        _, headers, body = response.serialized(ActionResult(_service_error()(code, message)))
    response.response_headers.update({k: v for k, v in headers.items() if k != "status"})
    raise _werkzeug_denial(403, body)


# What JSON-protocol services call the errors moto raises as the query protocol's.
_JSON_SIGNING_ERRORS = {
    "InvalidClientTokenId": "UnrecognizedClientException",
    "SignatureDoesNotMatch": "InvalidSignatureException",
}


def _raise_signing_error(response: Any, error: Any) -> None:
    from moto.core.utils import get_service_model

    code = str(getattr(error, "error_type", "AccessDenied"))
    message = str(getattr(error, "message", code))
    if get_service_model(response.boto3_service_name).protocol != "query":
        code = _JSON_SIGNING_ERRORS.get(code, code)
    _raise_service_error(response, code, message)


# ---- the replacement for moto's check --------------------------------------------------------


def _authorize(response: Any, iam_request: Any, resource: str) -> None:
    signing_name = iam_request._service
    service = _IAM_PREFIX.get(signing_name, signing_name)
    operation = response._get_action()
    operation = operation[0] if isinstance(operation, list) else str(operation)
    if service == "sts" and operation == "GetCallerIdentity":
        return  # always allowed, even with an explicit Deny
    checks = request_checks(response, service, operation, resource)
    caller = _caller(iam_request._access_key, iam_request._region)
    for check in checks:
        decision = evaluate(
            caller.documents, check.action, check.resource, {**caller.context, **check.context}
        )
        if decision is Decision.ALLOW and check.action == "sts:AssumeRole":
            decision = _trust_allows_caller(iam_request, check.resource, caller)
        if decision is not Decision.ALLOW:
            message = denial_message(caller.arn, check, decision)
            LOG.info("IAM: %s", message)
            bucket = response.data.get("BucketName") if service == "s3" else None
            _raise_denied(response, service, message, bucket)


def _trust_allows_caller(iam_request: Any, role_arn: str, caller: Caller) -> Decision:
    """sts:AssumeRole over HTTP: the role must also trust the caller (AWS principals only; moto's
    own check crashes on a service principal)."""
    from moto.iam.exceptions import NotFoundException

    try:
        role = iam_request.backend.get_role_by_arn(role_arn)
    except NotFoundException:
        return Decision.ALLOW  # AssumeRole itself reports the missing role
    trust = _document(role.assume_role_policy_document)
    names = {caller.arn, *caller.context.get("aws:PrincipalArn", [])}
    account = iam_request.account_id
    names |= {account, f"arn:{PARTITION}:iam::{account}:root"}
    return evaluate_trust(trust, caller.context, aws_principals=frozenset(names))


def _patched_authorize(original: Any) -> Any:
    def _authenticate_and_authorize_action(
        self: Any, iam_request_cls: type, resource: str = "*"
    ) -> None:
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        if ActionAuthenticatorMixin.request_count < settings.INITIAL_NO_AUTH_ACTION_COUNT:
            original(self, iam_request_cls, resource)  # not enforcing: moto only counts
            return
        if self.headers.get("X-Amz-Target") in ActionAuthenticatorMixin.PUBLIC_OPERATIONS:
            return
        parsed_url = urllib.parse.urlparse(self.uri)
        path = self.raw_path + (f"?{parsed_url.query}" if parsed_url.query else "")
        from moto.iam.access_control import S3IAMRequest
        from werkzeug.exceptions import HTTPException

        s3 = issubclass(iam_request_cls, S3IAMRequest)
        # moto's request object finds the caller's key (InvalidClientTokenId otherwise) and
        # checks the signature; the decision is ours. moto signs a request without a raw body as
        # its querystring form-encoded (right for a form POST, as SNS sends) which it fills with
        # the headers when there is none, so every other bodiless non-S3 request (a Lambda GET,
        # an Invoke without payload) would fail its signature.
        try:
            iam_request = iam_request_cls(
                account_id=self.current_account,
                method=self.method,
                path=path,
                data=self.data if s3 or self.raw_body or self.form_data else {},
                body=self.raw_body,
                headers=self.headers,
                action=self._get_action(),
            )
            iam_request.check_signature()
        except HTTPException as error:
            if s3:
                raise
            _raise_signing_error(self, error)
        _authorize(self, iam_request, resource)

    _authenticate_and_authorize_action.__wrapped__ = original  # type: ignore[attr-defined]
    _authenticate_and_authorize_action._churnops_iam = True  # type: ignore[attr-defined]
    return _authenticate_and_authorize_action


# ---- enforcement on and off ------------------------------------------------------------------

_lock = threading.RLock()
_saved_threshold: list[float] = []


def _installed() -> bool:
    from moto.core.authorization import ActionAuthenticatorMixin

    return bool(
        getattr(ActionAuthenticatorMixin._authenticate_and_authorize_action, "_churnops_iam", False)
    )


def enforcing() -> bool:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    return bool(ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT)


def enforce_iam() -> None:
    """Authorize every request to this process's moto server from now on (idempotent). Needs
    `churnops.local.moto_ext.install()` first: moto's own checks would refuse the stack's grants."""
    from moto import settings

    if not _installed():
        raise RuntimeError("install churnops.local.moto_ext before enforcing IAM")
    with _lock:
        if not _saved_threshold:
            _saved_threshold.append(settings.INITIAL_NO_AUTH_ACTION_COUNT)
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0


def stop_enforcing() -> None:
    """Back to no checks (idempotent)."""
    from moto import settings

    with _lock:
        if _saved_threshold:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = _saved_threshold.pop()


@contextmanager
def iam_enforced() -> Iterator[None]:
    enforce_iam()
    try:
        yield
    finally:
        stop_enforcing()


# ---- credentials: the operator, and services running as a role ---------------------------------

_sessions: dict[tuple[str, str, str, str | None], tuple[Any, dict[str, str]]] = {}


def _iam_backend(account: str = ACCOUNT) -> Any:
    from moto.iam.models import iam_backends

    return iam_backends[account][PARTITION]


def operator_credentials(access_key_id: str, secret_access_key: str) -> dict[str, str]:
    """The twin's operator (the CLI user, the provisioner, API Gateway's calls): an IAM user allowed
    everything, whose one access key is the given pair, so the twin's published loopback
    credentials keep working once IAM is enforced. Made directly in moto's backend, so it works
    with enforcement on; idempotent. An IAM user's key takes no session token (moto, like AWS,
    refuses one with it)."""
    from moto.iam.exceptions import NoSuchEntity

    backend = _iam_backend()
    with _lock:
        try:
            user = backend.get_user(OPERATOR_USER)
        except NoSuchEntity:
            backend.create_user(region_name=DEFAULT_REGION, user_name=OPERATOR_USER)
            backend.put_user_policy(
                OPERATOR_USER,
                "twin-operator-allow-all",
                json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                    }
                ),
            )
            user = backend.get_user(OPERATOR_USER)
        if not any(key.access_key_id == access_key_id for key in user.access_keys):
            key = backend.create_access_key(OPERATOR_USER)
            # moto generates the pair; the twin's is fixed. moto's key registry is keyed by the
            # key id, so the key moves to its new id there.
            backend.access_keys.pop(key.access_key_id, None)
            key.access_key_id = access_key_id
            key.secret_access_key = secret_access_key
            backend.access_keys[access_key_id] = key
        return {"AWS_ACCESS_KEY_ID": access_key_id, "AWS_SECRET_ACCESS_KEY": secret_access_key}


_SESSION_NAME = re.compile(r"[^\w+=,.@-]")


def assume_role_as_service(
    role_arn: str,
    service: str,
    session_name: str,
    *,
    source_arn: str | None = None,
    source_account: str | None = None,
) -> dict[str, str]:
    """What `service` (lambda.amazonaws.com, glue.amazonaws.com, states.amazonaws.com, ...) does
    before it runs as `role_arn`: check that the role's trust policy lets the service principal
    `sts:AssumeRole` (with `aws:SourceArn` = `source_arn` and `aws:SourceAccount`, which Step
    Functions and EventBridge Scheduler send), then open a session in moto's STS backend.
    Returns AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN; the same role, service,
    session name and source get the same session back while moto keeps it."""
    from moto.iam.exceptions import NotFoundException
    from moto.sts.models import sts_backends

    account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ACCOUNT
    try:
        role = _iam_backend(account).get_role_by_arn(role_arn)
    except NotFoundException:
        raise ServiceTrustError(f"{service} cannot assume {role_arn}: no such role") from None
    context: dict[str, list[str]] = {
        "aws:SourceAccount": [source_account or (source_arn or role_arn).split(":")[4] or account]
    }
    if source_arn:
        context["aws:SourceArn"] = [source_arn]
    decision = evaluate_trust(_document(role.assume_role_policy_document), context, service=service)
    if decision is not Decision.ALLOW:
        raise ServiceTrustError(
            f"role {role_arn} does not let {service} assume it: its trust policy has "
            f"{'an explicit deny' if decision is Decision.EXPLICIT_DENY else 'no statement allowing'}"
            f" sts:AssumeRole for the service principal {service}"
            + (f" with aws:SourceArn {source_arn}" if source_arn else "")
        )
    session = _SESSION_NAME.sub("-", session_name)[:64].ljust(2, "-")
    key = (role_arn, service, session, source_arn)
    backend = sts_backends[account][PARTITION]
    with _lock:
        cached = _sessions.get(key)
        if cached is not None and any(r is cached[0] for r in backend.assumed_roles):
            return dict(cached[1])
        assumed = backend.assume_role(
            region_name=DEFAULT_REGION,
            role_session_name=session,
            role_arn=role_arn,
            policy="",
            duration=3600,
            external_id="",
        )
        credentials = {
            "AWS_ACCESS_KEY_ID": assumed.access_key_id,
            "AWS_SECRET_ACCESS_KEY": assumed.secret_access_key,
            "AWS_SESSION_TOKEN": assumed.session_token,
        }
        _sessions[key] = (assumed, credentials)
        return dict(credentials)


def load_aws_managed_policy(policy_arn: str, account: str = ACCOUNT) -> bool:
    """Make an AWS managed policy (`arn:aws:iam::aws:policy/...`) attachable in moto. moto loads
    them only when configured to before its IAM backend exists, and then all ~1,400 of them;
    this loads the one a role names. False when moto's copy has no such policy."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data
    from moto.iam.models import AWSManagedPolicy

    backend = _iam_backend(account)
    if policy_arn in backend.managed_policies:
        return True
    name = policy_arn.rsplit("/", 1)[-1]
    data = _managed_policy_data(aws_managed_policies_data).get(name)
    if data is None:
        return False
    policy = AWSManagedPolicy.from_data(name, account, DEFAULT_REGION, data)
    if policy.arn != policy_arn:
        return False
    backend.managed_policies[policy.arn] = policy
    return True


@functools.lru_cache(maxsize=1)
def _managed_policy_data(text: str) -> dict[str, Any]:
    return dict(json.loads(text))


# ---- the Step Functions interpreter runs as its state machine's role ---------------------------

_INTERPRETER_MODULES = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils",
    *(
        f"moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_{name}"
        for name in (
            "glue",
            "sns",
            "aws_sdk",
            "events",
            "sfn",
            "sqs",
            "dynamodb",
            "ecs",
            "batch",
            "unsupported",
        )
    ),
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_eval_s3",
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval.resource_eval_s3",
)


def _state_machine_with_role(role_arn: str, region: str) -> Any:
    """aws:SourceArn for Step Functions assuming `role_arn`: a state machine that runs as it."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    account = role_arn.split(":")[4]
    for machine in stepfunctions_parser_backends[account][region].state_machines:
        if machine.roleArn == role_arn:
            return machine
    return None


def _patched_boto_client_for(original: Any) -> Any:
    """moto's interpreter signs every call with the fixed key "ak"; with IAM enforced it signs
    with the state machine role's session, as Step Functions does."""

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        role_arn = getattr(state_credentials, "role_arn", None)
        if not role_arn or not enforcing():
            return original(region, service, state_credentials)
        from botocore.config import Config
        from moto.core.models import botocore_stubber
        from moto.settings import moto_server_port
        from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import (
            TimeoutSeconds,
        )

        machine = _state_machine_with_role(role_arn, region)
        credentials = assume_role_as_service(
            role_arn,
            "states.amazonaws.com",
            machine.name if machine is not None else "states",
            source_arn=machine.arn if machine is not None else None,
        )
        kwargs: dict[str, Any] = {}
        if not botocore_stubber.enabled:
            kwargs["endpoint_url"] = f"http://localhost:{moto_server_port()}"
        # the module's `boto3` (the Step Functions extension points it at the twin's endpoint)
        boto_client = importlib.import_module("moto.stepfunctions.parser.asl.utils.boto_client")
        return boto_client.boto3.client(
            service_name=service,
            region_name=region,
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=credentials["AWS_SESSION_TOKEN"],
            config=Config(
                parameter_validation=False,
                retries={"max_attempts": 0, "total_max_attempts": 1},
                connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
            ),
            **kwargs,
        )

    boto_client_for.__wrapped__ = original  # type: ignore[attr-defined]
    return boto_client_for


def patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, replacement builder) for every attribute this module replaces."""
    from moto.core.authorization import ActionAuthenticatorMixin

    found: list[tuple[Any, str, Callable[[Any], Any]]] = [
        (ActionAuthenticatorMixin, "_authenticate_and_authorize_action", _patched_authorize)
    ]
    for name in _INTERPRETER_MODULES:
        found.append((importlib.import_module(name), "boto_client_for", _patched_boto_client_for))
    return found
