"""The local API Gateway stand-in: real HTTP in, REST v1 proxy events out, responses back.

The function behind it here echoes the event it received, so each test can look at exactly what
a Lambda would have been given.
"""

from __future__ import annotations

import base64
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
