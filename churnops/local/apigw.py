"""A local stand-in for API Gateway REST with a Lambda proxy integration.

It turns real HTTP requests into the v1 proxy events API Gateway sends (multi-value headers and
query strings, `{proxy+}` path parameters, a request context with stage, path, method and
request id, base64 bodies for binary media types) and calls the same handler function the Lambda
runs, then writes its proxy response back (base64 bodies decoded). So curl, a browser or any HTTP
client talks to the real handler code, and the handler has no local-only code paths.

What API Gateway itself does before the function is reached is imitated where a client would
notice: the 10 MB payload limit (413), and a 502 when the function fails or returns something that
is not a proxy response. Given the REST API the synthesized template defines (`RestApi`, read by
`rest_api_from_template`), it also answers as that API does: only the template's resources and
methods reach the function (anything else, any HTTP method included, is API Gateway's 403
"Missing Authentication Token"), a method that requires an API key refuses a request without one
of the usage plan's keys (403 "Forbidden"), the stage's and the usage plan's throttles are token
buckets (429 "Too Many Requests"), the plan's quota counts (429 "Limit Exceeded"), and a body is
validated with the method's model when its request validator validates bodies (400, in the
template's BAD_REQUEST_BODY gateway response when it has one). Used by `churnops serve` (without a
template: every path to the handler) and by the local twin (with the template).

AWS documentation behind each answer:
- gateway response types and default status codes (MISSING_AUTHENTICATION_TOKEN 403,
  INVALID_API_KEY 403, THROTTLED 429, QUOTA_EXCEEDED 429, BAD_REQUEST_BODY 400,
  REQUEST_TOO_LARGE 413): docs.aws.amazon.com/apigateway/latest/developerguide/
  supported-gateway-response-types.html
- a request to a resource or method that does not exist gets 403 "Missing Authentication Token":
  repost.aws/knowledge-center/api-gateway-authentication-token-errors
- throttling is a token bucket (rate = refill per second, burst = bucket size), 429 Too Many
  Requests: docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-request-throttling.html
- request validation: the body is checked against the method's model for the request's content
  type (none found: not validated), a failure is a 400 and the function is not called:
  docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-method-request-validation.html
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from churnops.local.template import Template

log = logging.getLogger(__name__)

ProxyHandler = Callable[[dict[str, Any], Any], Any]

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # REST API payload quota
API_KEY_HEADER = "x-api-key"
_DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body beyond this is not even read


@dataclass(frozen=True)
class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str = "churnops-serving-local"
    memory_limit_in_mb: int = 1769
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:000000000000:function:churnops-serving-local"
    )
    aws_request_id: str = ""
    log_group_name: str = "/aws/lambda/churnops-serving-local"
    log_stream_name: str = "local"
    function_version: str = "$LATEST"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 29_000  # API Gateway's integration timeout


class IntegrationFailure(Exception):
    """The integrated function failed (a function error): API Gateway answers 502."""


class LambdaProxyIntegration:
    """An AWS_PROXY integration: the request event goes to the function through Lambda's Invoke
    API (in the twin, moto's, which runs it in an execution environment of its own) and its
    result is the response; a function error is an integration failure.

    The client is its own, made with the credentials in force when the integration is made (API
    Gateway's, in the daemon: the operator's): a Glue run in the same process swaps the shared
    clients to its role's credentials, and the API must not call as that role meanwhile."""

    def __init__(self, function_name: str) -> None:
        import boto3

        self.function_name = function_name
        self._lambda = boto3.session.Session().client("lambda")

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        response = self._lambda.invoke(
            FunctionName=self.function_name, Payload=json.dumps(event).encode("utf-8")
        )
        payload = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError"):
            raise IntegrationFailure(f"{self.function_name}: {payload}")
        return payload


# ---- the REST API the template defines -----------------------------------------------------------
# API Gateway's own answers (gateway responses): type -> (default status, default message). The
# default body template of every gateway response is {"message":$context.error.messageString}.
GATEWAY_RESPONSES: dict[str, tuple[int, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token"),
    "INVALID_API_KEY": (403, "Forbidden"),
    "THROTTLED": (429, "Too Many Requests"),
    "QUOTA_EXCEEDED": (429, "Limit Exceeded"),
    "BAD_REQUEST_BODY": (400, "Invalid request body"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long"),
    "INTEGRATION_FAILURE": (502, "Internal server error"),
}
_DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'
_KEY_ALPHABET = string.ascii_letters + string.digits
_QUOTA_PERIODS: dict[str, Callable[[time.struct_time], str]] = {
    "DAY": lambda t: time.strftime("%Y-%m-%d", t),
    "WEEK": lambda t: time.strftime("%G-%V", t),
    "MONTH": lambda t: time.strftime("%Y-%m", t),
}


@dataclass(frozen=True)
class Method:
    """One method of one resource: whether it needs an API key, and the JSON schema (draft 4) a
    body of each content type must satisfy (only when its request validator validates bodies)."""

    api_key_required: bool = False
    body_models: Mapping[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Throttle:
    rate: float  # tokens added per second
    burst: int  # the bucket's size


@dataclass(frozen=True)
class Quota:
    limit: int
    period: str  # DAY, WEEK or MONTH (UTC)


@dataclass(frozen=True)
class RestApi:
    """What API Gateway checks before the function runs, as the template defines it."""

    # resource path ("/predict", "/items/{id}", "/{proxy+}") -> HTTP method (or ANY) -> Method
    resources: Mapping[str, Mapping[str, Method]]
    stage: str = "local"
    # (resource path, HTTP method) -> stage throttle; ("/*", "*") is the stage-wide default
    stage_throttles: Mapping[tuple[str, str], Throttle] = field(default_factory=dict)
    # API key value -> its usage plan's throttle and quota (None: the plan sets none)
    keys: Mapping[str, tuple[Throttle | None, Quota | None]] = field(default_factory=dict)
    # gateway response type -> (status, body template) the template customises
    responses: Mapping[str, tuple[int, str]] = field(default_factory=dict)


def rest_api_from_template(
    template: Template, *, key_values: Mapping[str, str] | None = None
) -> tuple[RestApi, dict[str, str]] | None:
    """The template's REST API (the one whose methods integrate a function) and the value of each
    of its API keys by key name. A key's value is the template's `Value`, else `key_values[name]`,
    else generated as API Gateway generates one (40 letters and digits). None without a REST API.
    """
    apis = list(
        dict.fromkeys(
            api
            for _, method in template.of_type("AWS::ApiGateway::Method")
            for api in template.references(
                method.get("Properties", {}).get("RestApiId"), "AWS::ApiGateway::RestApi"
            )
        )
    )
    if not apis:
        return None
    if len(apis) > 1:
        from churnops.errors import ChurnOpsError

        raise ChurnOpsError(f"the template defines {len(apis)} REST APIs; the twin serves one")
    api_id = apis[0]

    def of_api(kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (lid, res.get("Properties", {}))
            for lid, res in template.of_type(kind)
            if api_id in template.references(res.get("Properties", {}).get("RestApiId"))
            or api_id in template.references(res.get("Properties", {}).get("ApiId"))
        ]

    paths: dict[str, str] = {}
    resource_props = dict(of_api("AWS::ApiGateway::Resource"))

    def path_of(resource_id: str) -> str:
        if resource_id not in paths:
            props = resource_props[resource_id]
            parents = template.references(props.get("ParentId"), "AWS::ApiGateway::Resource")
            parent = path_of(parents[0]) if parents else "/"
            paths[resource_id] = parent.rstrip("/") + "/" + str(props["PathPart"])
        return paths[resource_id]

    validators = {
        lid: bool(props.get("ValidateRequestBody"))
        for lid, props in of_api("AWS::ApiGateway::RequestValidator")
    }
    models = {
        lid: (json.loads(props["Schema"]) if isinstance(props["Schema"], str) else props["Schema"])
        for lid, props in of_api("AWS::ApiGateway::Model")
    }
    resources: dict[str, dict[str, Method]] = {}
    for _, props in of_api("AWS::ApiGateway::Method"):
        owners = template.references(props.get("ResourceId"), "AWS::ApiGateway::Resource")
        path = path_of(owners[0]) if owners else "/"
        validator = template.references(props.get("RequestValidatorId"))
        body_models: dict[str, dict[str, Any]] = {}
        if validator and validators.get(validator[0]):
            for content_type, model in (props.get("RequestModels") or {}).items():
                found = template.references(model, "AWS::ApiGateway::Model")
                if found:
                    body_models[content_type.lower()] = models[found[0]]
        resources.setdefault(path, {})[str(props["HttpMethod"]).upper()] = Method(
            api_key_required=bool(props.get("ApiKeyRequired")), body_models=body_models
        )

    stages = of_api("AWS::ApiGateway::Stage")
    stage_ids = [lid for lid, _ in stages]
    stage_name = (
        str(template.resolve(stages[0][1].get("StageName", "local"))) if stages else "local"
    )
    stage_throttles: dict[tuple[str, str], Throttle] = {}
    for _, props in stages[:1]:
        for setting in props.get("MethodSettings") or []:
            throttle = _throttle(
                setting.get("ThrottlingRateLimit"), setting.get("ThrottlingBurstLimit")
            )
            if throttle is not None:
                where = (
                    str(setting.get("ResourcePath", "/*")),
                    str(setting.get("HttpMethod", "*")),
                )
                stage_throttles[where] = throttle

    plans: dict[str, tuple[Throttle | None, Quota | None]] = {}
    for lid, props in template.of_type("AWS::ApiGateway::UsagePlan"):
        plan = props.get("Properties", {})
        stages_of_plan = [
            s for entry in plan.get("ApiStages") or [] for s in template.references(entry)
        ]
        if api_id not in stages_of_plan and not set(stage_ids) & set(stages_of_plan):
            continue
        limits = plan.get("Throttle") or {}
        quota = plan.get("Quota") or {}
        plans[lid] = (
            _throttle(limits.get("RateLimit"), limits.get("BurstLimit")),
            Quota(int(quota["Limit"]), str(quota.get("Period", "DAY")).upper())
            if quota.get("Limit") is not None
            else None,
        )
    given = dict(key_values or {})
    names: dict[str, str] = {}
    keys: dict[str, tuple[Throttle | None, Quota | None]] = {}
    for _, resource in template.of_type("AWS::ApiGateway::UsagePlanKey"):
        props = resource.get("Properties", {})
        plan_ids = [p for p in template.references(props.get("UsagePlanId")) if p in plans]
        key_ids = template.references(props.get("KeyId"), "AWS::ApiGateway::ApiKey")
        if not (plan_ids and key_ids):
            continue
        key_props = template.resources[key_ids[0]].get("Properties", {})
        if key_props.get("Enabled") is False:
            continue  # a disabled key is refused like an unknown one
        name = str(template.resolve(key_props.get("Name", key_ids[0])))
        value = key_props.get("Value")
        if value is not None:
            value = str(template.resolve(value))
        else:
            value = given.get(name) or "".join(secrets.choice(_KEY_ALPHABET) for _ in range(40))
        names[name] = value
        keys[value] = plans[plan_ids[0]]

    responses: dict[str, tuple[int, str]] = {}
    for _, props in of_api("AWS::ApiGateway::GatewayResponse"):
        kind = str(props["ResponseType"])
        default_status = GATEWAY_RESPONSES.get(kind, (400, ""))[0]
        body = (props.get("ResponseTemplates") or {}).get("application/json", _DEFAULT_TEMPLATE)
        responses[kind] = (int(props.get("StatusCode") or default_status), str(body))
    api = RestApi(
        resources=resources,
        stage=stage_name,
        stage_throttles=stage_throttles,
        keys=keys,
        responses=responses,
    )
    return api, names


def _throttle(rate: Any, burst: Any) -> Throttle | None:
    if rate is None and burst is None:
        return None
    return Throttle(rate=float(rate or 0), burst=int(burst or 0))


class TokenBucket:
    """API Gateway's throttle: `burst` tokens at most, `rate` added per second, one per request."""

    def __init__(self, throttle: Throttle, clock: Callable[[], float] = time.monotonic) -> None:
        self.throttle = throttle
        self.clock = clock
        self.tokens = float(throttle.burst)
        self.updated = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock()
            self.tokens = min(
                float(self.throttle.burst),
                self.tokens + (now - self.updated) * self.throttle.rate,
            )
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


def _route_pattern(path: str) -> re.Pattern[str]:
    parts = []
    for part in path.strip("/").split("/") if path != "/" else []:
        if part.endswith("+}"):
            parts.append(f"(?P<{re.sub(r'[^A-Za-z0-9_]', '_', part[1:-2])}>.+)")
        elif part.startswith("{") and part.endswith("}"):
            parts.append(f"(?P<{re.sub(r'[^A-Za-z0-9_]', '_', part[1:-1])}>[^/]+)")
        else:
            parts.append(re.escape(part))
    return re.compile("^/" + "/".join(parts) + "$")


def _is_binary(content_type: str | None, binary_media_types: Iterable[str]) -> bool:
    if not content_type:
        return False
    media = content_type.split(";")[0].strip().lower()
    for pattern in binary_media_types:
        pattern = pattern.lower()
        if pattern == "*/*" or pattern == media:
            return True
        if pattern.endswith("/*") and media.startswith(pattern[:-1]):
            return True
    return False


def build_proxy_event(
    *,
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    stage: str,
    resource: str = "/{proxy+}",
    source_ip: str = "127.0.0.1",
    binary_media_types: Iterable[str] = (),
    api_key: str | None = None,
) -> dict[str, Any]:
    """The REST API (v1) proxy event API Gateway would send for this request."""
    parts = urlsplit(raw_path)
    path = unquote(parts.path) or "/"
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value  # API Gateway keeps the last value in `headers`
        multi.setdefault(name, []).append(value)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query_single: dict[str, str] = {}
    query_multi: dict[str, list[str]] = {}
    for name, value in query:
        query_single[name] = value
        query_multi.setdefault(name, []).append(value)
    content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    # API Gateway base64-encodes bodies of binary media types; text that is not UTF-8 cannot be
    # put in a JSON event as text either, so it is encoded the same way.
    encode = _is_binary(content_type, binary_media_types)
    if not encode:
        try:
            text: str | None = body.decode("utf-8")
        except UnicodeDecodeError:
            encode = True
    if encode:
        text = base64.b64encode(body).decode("ascii")
    if not body:
        text = None
    path_parameters = None
    if "{" in resource:  # `/{proxy+}` (greedy) or `/items/{id}`
        match = _route_pattern(resource).match(path)
        if match:
            path_parameters = match.groupdict()
    now = time.time()
    user_agent = next((v for k, v in headers if k.lower() == "user-agent"), None)
    return {
        "resource": resource if path_parameters or "{" not in resource else path,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": uuid.uuid4().hex[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{stage}{path}",
            "accountId": "000000000000",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": source_ip, "userAgent": user_agent, "apiKey": api_key},
            "domainName": "localhost",
            "apiId": "local",
        },
        "body": text,
        "isBase64Encoded": encode,
    }


class LocalApiGateway:
    """Serves `handler` over HTTP on loopback like an API Gateway REST API stage would.

    `api`: the REST API the template defines (`rest_api_from_template`): its resources, methods,
    keys, throttles, quotas, models and gateway responses apply. Without it every path and method
    reaches the handler through `resource` (`/{proxy+}`, a greedy resource), and `api_key`, when
    set, must be in `x-api-key` (API Gateway answers 403 otherwise).
    """

    def __init__(
        self,
        handler: ProxyHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        stage: str = "local",
        api_key: str | None = None,
        resource: str = "/{proxy+}",
        binary_media_types: Iterable[str] = (),
        max_body_bytes: int = API_GATEWAY_MAX_BODY,
        api: RestApi | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        self.api = api
        self.stage = api.stage if api is not None else stage
        self.api_key = api_key
        self.resource = resource
        self.clock = clock
        self._routes = [
            (_route_pattern(path), path, methods)
            for path, methods in sorted(
                (api.resources if api is not None else {}).items(),
                key=lambda item: ("{" in item[0], -len(item[0])),  # literal paths first
            )
        ]
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}
        self._quota_used: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.binary_media_types = tuple(binary_media_types)
        self.max_body_bytes = max_body_bytes
        self._server = ThreadingHTTPServer((host, port), self._request_handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> LocalApiGateway:
        """Serve in a background thread (tests, the twin)."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (`churnops serve`)."""
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalApiGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- one request ----------------------------------------------------------------------
    def invoke(
        self,
        method: str,
        raw_path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """What API Gateway answers for one request: (status, headers, body)."""
        lowered = {k.lower(): v for k, v in headers}
        presented = lowered.get(API_KEY_HEADER)
        resource = self.resource
        if self.api is None:
            if self.api_key is not None and presented != self.api_key:
                return _gateway_error(403, "Forbidden")
        else:
            refused, resource = self._before_integration(method, raw_path, lowered, body)
            if refused is not None:
                return refused
        event = build_proxy_event(
            method=method,
            raw_path=raw_path,
            headers=headers,
            body=body,
            stage=self.stage,
            resource=resource,
            source_ip=source_ip,
            binary_media_types=self.binary_media_types,
            api_key=presented if self.api_key is not None or self.api is not None else None,
        )
        context = LambdaContext(aws_request_id=event["requestContext"]["requestId"])
        try:
            result = self.handler(event, context)
        except Exception:
            # The Lambda failed: API Gateway reports a 502 and the error stays in the logs.
            log.exception("handler raised")
            return _gateway_error(502, "Internal server error")
        try:
            return _proxy_response(result)
        except (TypeError, ValueError, KeyError) as err:
            log.error("handler returned a malformed proxy response: %s", err)
            return _gateway_error(502, "Internal server error")

    def _before_integration(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[tuple[int, list[tuple[str, str]], bytes] | None, str]:
        """API Gateway's checks before the integration, in its order: the route, the API key,
        the throttles, the quota, the request body. (refusal or None, matched resource path)."""
        assert self.api is not None
        path = unquote(urlsplit(raw_path).path) or "/"
        if len(path) > 1:
            path = path.rstrip("/") or "/"
        found: tuple[str, Method] | None = None
        for pattern, resource, methods in self._routes:
            if pattern.match(path):
                spec = methods.get(method.upper()) or methods.get("ANY")
                if spec is not None:
                    found = (resource, spec)
                    break
        if found is None:
            # No such resource, or no such method on it (TRACE, an unknown verb): API Gateway
            # REST's answer is a 403 "Missing Authentication Token", never a 404/405/501.
            return self._gateway("MISSING_AUTHENTICATION_TOKEN"), self.resource
        resource, spec = found
        presented = headers.get(API_KEY_HEADER)
        if spec.api_key_required and presented not in self.api.keys:
            return self._gateway("INVALID_API_KEY"), resource
        # MethodSettings name a method's resource path with its slashes as ~1 ("/~1predict")
        settings = self.api.stage_throttles
        encoded = "/" + resource.replace("/", "~1") if resource != "/" else "/"
        stage_throttle = settings.get((encoded, method.upper())) or settings.get(("/*", "*"))
        if stage_throttle and not self._bucket(("stage", resource, method), stage_throttle).take():
            return self._gateway("THROTTLED"), resource
        if spec.api_key_required and presented is not None:
            plan_throttle, quota = self.api.keys[presented]
            if plan_throttle and not self._bucket(("key", presented), plan_throttle).take():
                return self._gateway("THROTTLED"), resource
            if quota and not self._count_quota(presented, quota):
                return self._gateway("QUOTA_EXCEEDED"), resource
        media = (headers.get("content-type") or "application/json").split(";")[0].strip().lower()
        schema = spec.body_models.get(media) or spec.body_models.get("$default")
        if schema is not None:
            problems = body_problems(schema, body)
            if problems:
                return self._gateway("BAD_REQUEST_BODY", validation=problems), resource
        return None, resource

    def _bucket(self, key: tuple[str, ...], throttle: Throttle) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(throttle, self.clock)
            return bucket

    def _count_quota(self, key: str, quota: Quota) -> bool:
        period = _QUOTA_PERIODS.get(quota.period, _QUOTA_PERIODS["DAY"])(time.gmtime())
        with self._lock:
            used = self._quota_used.get((key, period), 0)
            if used >= quota.limit:
                return False
            self._quota_used[(key, period)] = used + 1
            return True

    def _gateway(
        self, kind: str, *, validation: str = ""
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """A gateway response: the template's when it customises this type, else the default."""
        status, message = GATEWAY_RESPONSES[kind]
        custom = self.api.responses.get(kind) if self.api is not None else None
        if custom is not None:
            status, template = custom
        else:
            template = _DEFAULT_TEMPLATE
        # $context.error.messageString is the message as a quoted JSON string; the others are
        # the raw text (escaped here so that the body stays JSON when they sit inside quotes).
        values = {
            "$context.error.validationErrorString": json.dumps(validation)[1:-1],
            "$context.error.messageString": json.dumps(message),
            "$context.error.responseType": kind,
            "$context.error.message": json.dumps(message)[1:-1],
        }
        body = template
        for name, value in values.items():
            body = body.replace(name, value)
        return status, [("Content-Type", "application/json")], body.encode()

    def _request_handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "churnops-local-apigw"

            def _serve(self) -> None:
                length_header = self.headers.get("Content-Length")
                try:
                    length = int(length_header) if length_header else 0
                except ValueError:
                    self._write(*_gateway_error(400, "Invalid Content-Length"), close=True)
                    return
                if length < 0:
                    self._write(*_gateway_error(400, "Invalid Content-Length"), close=True)
                    return
                if length > gateway.max_body_bytes:
                    # Read and drop the body (a client still sending would otherwise see a broken
                    # pipe instead of the answer), then answer and close.
                    remaining = min(length, _DRAIN_LIMIT)
                    while remaining > 0:
                        chunk = self.rfile.read(min(remaining, 1 << 20))
                        if not chunk:
                            break
                        remaining -= len(chunk)
                    self._write(*_gateway_error(413, "Request Too Long"), close=True)
                    return
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._read_chunked()
                    if body is None:
                        return
                else:
                    body = self.rfile.read(length) if length else b""
                status, headers, payload = gateway.invoke(
                    self.command,
                    self.path,
                    list(self.headers.items()),
                    body,
                    self.client_address[0],
                )
                self._write(status, headers, payload)

            def _read_chunked(self) -> bytes | None:
                """A chunked body, whole; None when it was refused (answered already)."""
                parts: list[bytes] = []
                size = 0
                while True:
                    line = self.rfile.readline(1024)
                    try:
                        chunk = int(line.split(b";")[0].strip(), 16)
                    except ValueError:
                        self._write(*_gateway_error(400, "Invalid chunked body"), close=True)
                        return None
                    if chunk == 0:
                        while self.rfile.readline(1024).strip():  # trailers
                            pass
                        return b"".join(parts)
                    size += chunk
                    if size > gateway.max_body_bytes:
                        self._write(*_gateway_error(413, "Request Too Long"), close=True)
                        return None
                    parts.append(self.rfile.read(chunk))
                    self.rfile.readline(1024)  # the CRLF after each chunk

            def _write(
                self,
                status: int,
                headers: list[tuple[str, str]],
                payload: bytes,
                close: bool = False,
            ) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

            def __getattr__(self, name: str) -> Any:
                # Any other method (TRACE, CONNECT, a made-up verb) reaches the gateway too, as it
                # reaches API Gateway, instead of http.server's 501.
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s - %s", self.address_string(), format % args)

        return _Handler


def _gateway_error(status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"message": message}).encode()
    return status, [("Content-Type", "application/json")], body


def _proxy_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    if not isinstance(result, dict):
        raise TypeError(f"expected a dict, got {type(result).__name__}")
    status = int(result["statusCode"])
    if not 100 <= status <= 599:
        raise ValueError(f"status {status}")
    headers: list[tuple[str, str]] = [
        (str(k), str(v)) for k, v in (result.get("headers") or {}).items()
    ]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        payload = base64.b64decode(body)
    else:
        payload = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode()
    return status, headers, payload


def body_problems(schema: dict[str, Any], body: bytes) -> str:
    """Why `body` fails the model `schema` (JSON Schema draft 4, as API Gateway models are), as
    one `[...]` string like $context.error.validationErrorString; "" when it passes. The wording
    is the jsonschema library's, not API Gateway's (its validator is another library)."""
    # jsonschema comes with moto[server]; types-jsonschema is not installed
    from jsonschema import Draft4Validator  # type: ignore[import-untyped]

    try:
        document = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "[Invalid JSON in the request body]"
    validator = Draft4Validator(schema)
    try:
        errors = list(validator.iter_errors(document))
    except RecursionError:
        return "[the request body is nested too deeply]"
    messages = []
    for shown in [leaf for error in errors for leaf in _closest_branch(error)][:10]:
        where = "/".join(str(step) for step in shown.absolute_path)
        text = shown.message if len(shown.message) <= 200 else shown.message[:200] + "..."
        messages.append(f"{where}: {text}" if where else text)
    return f"[{', '.join(messages)}]" if messages else ""


def _closest_branch(error: Any) -> list[Any]:
    """For a oneOf/anyOf failure, the errors of the branch that came closest (fewest errors):
    a customer with one bad field is told about that field, not that it is no batch."""
    if not error.context:
        return [error]
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    closest = min(branches.values(), key=len)
    return [leaf for sub in closest for leaf in _closest_branch(sub)]
