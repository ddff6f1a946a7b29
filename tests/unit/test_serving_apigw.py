"""The local API Gateway stand-in: real HTTP in, REST v1 proxy events out, responses back.

The function behind it here echoes the event it received, so each test can look at exactly what
a Lambda would have been given.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from churnops.local.apigw import LocalApiGateway, build_proxy_event


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event["path"] == "/explode":
        raise RuntimeError("the function failed")
    if event["path"] == "/not-a-proxy-response":
        return {"body": "no status"}  # type: ignore[return-value]
    if event["path"] == "/binary":
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/octet-stream"},
            "body": base64.b64encode(b"\x00\x01\xff").decode(),
            "isBase64Encoded": True,
        }
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
        "body": json.dumps({"event": event, "request_id": context.aws_request_id}),
    }


@pytest.fixture(scope="module")
def gateway() -> Iterator[LocalApiGateway]:
    with LocalApiGateway(echo, stage="test", max_body_bytes=1000) as gw:
        yield gw


@pytest.fixture(scope="module")
def keyed_gateway() -> Iterator[LocalApiGateway]:
    with LocalApiGateway(echo, api_key="sekret-key") as gw:
        yield gw


def call(
    gw: LocalApiGateway,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.putrequest(method, path, skip_accept_encoding=True)
    for name, value in headers:
        conn.putheader(name, value)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, response, payload


def test_a_request_becomes_a_rest_proxy_event(gateway):
    status, response, payload = call(
        gateway,
        "POST",
        "/predict/now?x=1&x=2&y=",
        b'{"a": 1}',
        [("Content-Type", "application/json"), ("X-Tag", "one"), ("X-Tag", "two")],
    )
    assert status == 201
    assert response.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    body = json.loads(payload)
    event = body["event"]
    assert event["httpMethod"] == "POST"
    assert event["path"] == "/predict/now"
    assert event["resource"] == "/{proxy+}"
    assert event["pathParameters"] == {"proxy": "predict/now"}
    assert event["headers"]["X-Tag"] == "two"
    assert event["multiValueHeaders"]["X-Tag"] == ["one", "two"]
    assert event["queryStringParameters"] == {"x": "2", "y": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": [""]}
    assert event["body"] == '{"a": 1}'
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert (context["stage"], context["path"], context["httpMethod"]) == (
        "test",
        "/test/predict/now",
        "POST",
    )
    assert context["requestId"] == body["request_id"]


def test_root_path_has_no_proxy_parameter_and_no_body_is_null(gateway):
    _, _, payload = call(gateway, "GET", "/")
    event = json.loads(payload)["event"]
    assert (event["path"], event["resource"], event["pathParameters"], event["body"]) == (
        "/",
        "/",
        None,
        None,
    )


def test_bytes_that_are_not_text_arrive_base64_encoded(gateway):
    _, _, payload = call(gateway, "POST", "/x", b"\xff\x00\xfe", [("Content-Type", "text/plain")])
    event = json.loads(payload)["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\x00\xfe"


def test_binary_media_types_are_base64_encoded_as_configured():
    event = build_proxy_event(
        method="POST",
        raw_path="/upload",
        headers=[("Content-Type", "image/png")],
        body=b"text-looking bytes",
        stage="prod",
        binary_media_types=["image/*"],
    )
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"text-looking bytes"


def test_base64_responses_are_decoded(gateway):
    status, response, payload = call(gateway, "GET", "/binary")
    assert (status, payload) == (200, b"\x00\x01\xff")
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_a_failing_function_is_a_502_like_api_gateway(gateway):
    assert call(gateway, "GET", "/explode")[0] == 502
    status, _, payload = call(gateway, "GET", "/not-a-proxy-response")
    assert (status, json.loads(payload)) == (502, {"message": "Internal server error"})


def test_a_body_over_the_gateway_limit_is_413_without_reaching_the_function(gateway):
    status, _, payload = call(gateway, "POST", "/x", b"x" * 1001, [("Content-Type", "text/plain")])
    assert status == 413
    assert json.loads(payload) == {"message": "Request Too Long"}


def test_the_api_key_is_enforced_when_configured(keyed_gateway):
    assert call(keyed_gateway, "GET", "/health")[0] == 403
    assert call(keyed_gateway, "GET", "/health", headers=[("x-api-key", "wrong")])[0] == 403
    status, _, payload = call(
        keyed_gateway, "GET", "/health", headers=[("X-API-Key", "sekret-key")]
    )
    assert status == 201
    assert json.loads(payload)["event"]["requestContext"]["identity"]["apiKey"] == "sekret-key"


def test_a_chunked_body_arrives_whole(gateway):
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request(
        "POST",
        "/chunked",
        body=iter([b'{"a": ', b"[1, 2", b"]}"]),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    event = json.loads(response.read())["event"]
    conn.close()
    assert event["body"] == '{"a": [1, 2]}'
    assert event["headers"]["Transfer-Encoding"] == "chunked"


def test_a_chunked_body_over_the_limit_is_413(gateway):
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request("POST", "/x", body=iter([b"x" * 600, b"y" * 600]), encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413
    conn.close()


# ---- the REST API a template defines ------------------------------------------------------------
# A small template of the shape CDK synthesizes for stacks/serving.py: two resources, a method
# with a request validator and a model, a key in a usage plan, stage throttling and a customised
# BAD_REQUEST_BODY gateway response.
_API = {"Ref": "Api"}
TEMPLATE: dict[str, Any] = {
    "Resources": {
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "t"}},
        "Items": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {
                "ParentId": {"Fn::GetAtt": ["Api", "RootResourceId"]},
                "PathPart": "items",
                "RestApiId": _API,
            },
        },
        "Item": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {"ParentId": {"Ref": "Items"}, "PathPart": "{id}", "RestApiId": _API},
        },
        "ItemsPost": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {
                "ApiKeyRequired": True,
                "HttpMethod": "POST",
                "Integration": {"Type": "AWS_PROXY"},
                "RequestModels": {"application/json": {"Ref": "ItemModel"}},
                "RequestValidatorId": {"Ref": "BodyValidator"},
                "ResourceId": {"Ref": "Items"},
                "RestApiId": _API,
            },
        },
        "ItemGet": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {
                "ApiKeyRequired": True,
                "HttpMethod": "GET",
                "Integration": {"Type": "AWS_PROXY"},
                "ResourceId": {"Ref": "Item"},
                "RestApiId": _API,
            },
        },
        "BodyValidator": {
            "Type": "AWS::ApiGateway::RequestValidator",
            "Properties": {"RestApiId": _API, "ValidateRequestBody": True},
        },
        "ItemModel": {
            "Type": "AWS::ApiGateway::Model",
            "Properties": {
                "ContentType": "application/json",
                "RestApiId": _API,
                "Schema": {
                    "$schema": "http://json-schema.org/draft-04/schema#",
                    "type": "object",
                    "properties": {"size": {"type": "integer", "minimum": 1}},
                    "required": ["size"],
                    "additionalProperties": False,
                },
            },
        },
        "BadBody": {
            "Type": "AWS::ApiGateway::GatewayResponse",
            "Properties": {
                "ResponseType": "BAD_REQUEST_BODY",
                "RestApiId": _API,
                "StatusCode": "400",
                "ResponseTemplates": {
                    "application/json": '{"error": "invalid_request", '
                    '"message": "$context.error.validationErrorString"}'
                },
            },
        },
        "Stage": {
            "Type": "AWS::ApiGateway::Stage",
            "Properties": {
                "RestApiId": _API,
                "StageName": "v1",
                "MethodSettings": [
                    {
                        "HttpMethod": "*",
                        "ResourcePath": "/*",
                        "ThrottlingBurstLimit": 100,
                        "ThrottlingRateLimit": 50,
                    }
                ],
            },
        },
        "Key": {"Type": "AWS::ApiGateway::ApiKey", "Properties": {"Name": "client"}},
        "Plan": {
            "Type": "AWS::ApiGateway::UsagePlan",
            "Properties": {
                "ApiStages": [{"ApiId": _API, "Stage": {"Ref": "Stage"}}],
                "Throttle": {"BurstLimit": 3, "RateLimit": 1},
                "Quota": {"Limit": 5, "Period": "DAY"},
            },
        },
        "PlanKey": {
            "Type": "AWS::ApiGateway::UsagePlanKey",
            "Properties": {
                "KeyId": {"Ref": "Key"},
                "KeyType": "API_KEY",
                "UsagePlanId": {"Ref": "Plan"},
            },
        },
    }
}


class Clock:
    """Time that moves only when a test moves it (the token buckets refill with it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def defined_api(tmp_path: Any) -> tuple[Any, dict[str, str]]:
    from churnops.local.apigw import rest_api_from_template
    from churnops.local.template import Template

    found = rest_api_from_template(Template(TEMPLATE, cdk_out=tmp_path))
    assert found is not None
    return found


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def templated(tmp_path, clock) -> Iterator[tuple[LocalApiGateway, str, list[dict[str, Any]]]]:
    """The API the template defines in front of a function that records what reaches it."""
    api, keys = defined_api(tmp_path)
    reached: list[dict[str, Any]] = []

    def recording(event: dict[str, Any], context: Any) -> dict[str, Any]:
        reached.append(event)
        return echo(event, context)

    with LocalApiGateway(recording, api=api, clock=clock) as gw:
        yield gw, keys["client"], reached


def test_the_template_defines_routes_keys_throttles_and_the_model(tmp_path):
    api, keys = defined_api(tmp_path)
    assert set(api.resources) == {"/items", "/items/{id}"}
    assert api.resources["/items"]["POST"].body_models["application/json"]["required"] == ["size"]
    assert api.resources["/items/{id}"]["GET"].body_models == {}
    assert api.stage == "v1"
    (value,) = keys.values()
    # API Gateway generates a key of 40 letters and digits when the template gives no value
    assert len(value) == 40 and value.isalnum()
    assert value != defined_api(tmp_path)[1]["client"]  # generated, not a constant
    throttle, quota = api.keys[value]
    assert (throttle.rate, throttle.burst, quota.limit, quota.period) == (1.0, 3, 5, "DAY")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nowhere"),
        ("GET", "/items"),  # a defined resource without this method
        ("DELETE", "/items/7"),
        ("TRACE", "/items"),  # http.server alone would answer 501
        ("FROB", "/items/7"),  # a verb no HTTP server knows
        ("HEAD", "/items/7"),
        ("OPTIONS", "/items"),
    ],
)
def test_undefined_routes_and_methods_are_api_gateways_403_never_a_5xx(templated, method, path):
    """API Gateway REST answers a request for a resource or method the API does not define with
    403 {"message": "Missing Authentication Token"} (repost.aws/knowledge-center/
    api-gateway-authentication-token-errors; MISSING_AUTHENTICATION_TOKEN, 403, in
    docs.aws.amazon.com/apigateway/latest/developerguide/supported-gateway-response-types.html),
    with or without a key."""
    gw, key, reached = templated
    status, _, payload = call(gw, method, path, headers=[("x-api-key", key)])
    assert status == 403
    if method != "HEAD":
        assert json.loads(payload) == {"message": "Missing Authentication Token"}
    assert reached == []


def test_a_method_that_requires_a_key_refuses_a_request_without_the_plans_key(templated):
    """INVALID_API_KEY: 403 {"message": "Forbidden"} (supported-gateway-response-types.html)."""
    gw, key, reached = templated
    for headers in ([], [("x-api-key", "not-the-key")]):
        status, _, payload = call(gw, "GET", "/items/7", headers=headers)
        assert (status, json.loads(payload)) == (403, {"message": "Forbidden"})
    assert reached == []
    status, _, payload = call(gw, "GET", "/items/7", headers=[("x-api-key", key)])
    assert status == 201
    event = json.loads(payload)["event"]
    assert (event["resource"], event["pathParameters"], event["path"]) == (
        "/items/{id}",
        {"id": "7"},
        "/items/7",
    )
    assert event["requestContext"]["stage"] == "v1"
    assert event["requestContext"]["identity"]["apiKey"] == key


def test_the_usage_plans_token_bucket_throttles_with_429(templated, clock):
    """A token bucket per key: burst 3, 1 token per second; then 429 {"message": "Too Many
    Requests"} (docs.aws.amazon.com/apigateway/latest/developerguide/
    api-gateway-request-throttling.html; THROTTLED in supported-gateway-response-types.html)."""
    gw, key, reached = templated
    statuses = [call(gw, "GET", "/items/1", headers=[("x-api-key", key)])[0] for _ in range(3)]
    assert statuses == [201, 201, 201]
    status, _, payload = call(gw, "GET", "/items/1", headers=[("x-api-key", key)])
    assert (status, json.loads(payload)) == (429, {"message": "Too Many Requests"})
    assert len(reached) == 3
    clock.now += 1.0  # one token back
    assert call(gw, "GET", "/items/1", headers=[("x-api-key", key)])[0] == 201
    assert call(gw, "GET", "/items/1", headers=[("x-api-key", key)])[0] == 429


def test_the_usage_plans_quota_is_429_limit_exceeded(templated, clock):
    gw, key, _ = templated
    for _ in range(5):
        clock.now += 10  # the throttle is not what stops these
        assert call(gw, "GET", "/items/1", headers=[("x-api-key", key)])[0] == 201
    clock.now += 10
    status, _, payload = call(gw, "GET", "/items/1", headers=[("x-api-key", key)])
    assert (status, json.loads(payload)) == (429, {"message": "Limit Exceeded"})


def test_the_stage_throttle_applies_to_every_caller(tmp_path, clock):
    from churnops.local.apigw import RestApi, Throttle

    api, _ = defined_api(tmp_path)
    open_api = RestApi(
        resources={
            "/items/{id}": {
                "GET": dataclasses.replace(
                    api.resources["/items/{id}"]["GET"], api_key_required=False
                )
            }
        },
        stage_throttles={("/*", "*"): Throttle(rate=0.5, burst=2)},
    )
    with LocalApiGateway(echo, api=open_api, clock=clock) as gw:
        assert [call(gw, "GET", "/items/1")[0] for _ in range(3)] == [201, 201, 429]
        clock.now += 2.0
        assert call(gw, "GET", "/items/1")[0] == 201


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"size": 0}', "size: 0 is less than the minimum of 1"),
        (b'{"size": "big"}', "size: 'big' is not of type 'integer'"),
        (b'{"size": 2, "colour": "red"}', "'colour' was unexpected"),
        (b"{}", "'size' is a required property"),
        (b"[1,", "Invalid JSON"),
    ],
)
def test_a_body_the_model_refuses_never_reaches_the_function(templated, body, why):
    """The method's model (draft 4) is checked before the integration; a failure is a 400 in the
    template's BAD_REQUEST_BODY gateway response (docs.aws.amazon.com/apigateway/latest/
    developerguide/api-gateway-method-request-validation.html)."""
    gw, key, reached = templated
    headers = [("x-api-key", key), ("Content-Type", "application/json")]
    status, _, payload = call(gw, "POST", "/items", body, headers)
    answer = json.loads(payload)
    assert (status, answer["error"]) == (400, "invalid_request")
    assert why in answer["message"]
    assert reached == []


def test_a_body_the_model_accepts_or_of_another_content_type_reaches_the_function(templated):
    gw, key, reached = templated
    ok = call(
        gw,
        "POST",
        "/items",
        b'{"size": 2}',
        [("x-api-key", key), ("Content-Type", "application/json; charset=utf-8")],
    )
    # no model for text/plain: API Gateway does not validate it (the function decides)
    other = call(
        gw, "POST", "/items", b"size=0", [("x-api-key", key), ("Content-Type", "text/plain")]
    )
    assert (ok[0], other[0]) == (201, 201)
    assert [event["body"] for event in reached] == ['{"size": 2}', "size=0"]


def test_without_a_template_any_method_reaches_the_function(gateway):
    status, _, payload = call(gateway, "TRACE", "/anything")
    assert status == 201
    assert json.loads(payload)["event"]["httpMethod"] == "TRACE"


def test_a_methods_own_stage_throttle_overrides_the_stage_default(tmp_path, clock):
    from churnops.local.apigw import RestApi, Throttle

    api, _ = defined_api(tmp_path)
    method = dataclasses.replace(api.resources["/items/{id}"]["GET"], api_key_required=False)
    open_api = RestApi(
        resources={"/items/{id}": {"GET": method}},
        stage_throttles={
            ("/*", "*"): Throttle(rate=100, burst=100),
            ("/~1items~1{id}", "GET"): Throttle(rate=0, burst=1),  # MethodSettings' spelling
        },
    )
    with LocalApiGateway(echo, api=open_api, clock=clock) as gw:
        assert [call(gw, "GET", "/items/1")[0] for _ in range(2)] == [201, 429]
