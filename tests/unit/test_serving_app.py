"""The serving API's routing and response shaping, over a real local registry with no champion.

Predictions with a real champion are tested through HTTP in
tests/integration/test_serving_http.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from churnops.contract import INSURANCE, TELCO
from churnops.errors import ChurnOpsError
from churnops.registry import Registry
from churnops.serving.app import HttpRequest, ServingApp
from churnops.serving.openapi import example_customer as a_customer
from churnops.wiring import ServingEnvironment

JSON = {"content-type": "application/json"}


@pytest.fixture
def app(tmp_path: Path) -> ServingApp:
    return ServingApp(ServingEnvironment(registry_uri=str(tmp_path), refresh_seconds=0))


def call(
    app: ServingApp, method: str, path: str, body: Any = None, headers=JSON
) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    response, _ = app.handle(HttpRequest(method, path, headers, raw))
    proxy = response.to_proxy()
    assert proxy["headers"]["Content-Type"] == "application/json"
    return proxy["statusCode"], json.loads(proxy["body"])


def test_without_a_champion_predict_is_503_with_a_clear_message(app):
    status, body = call(app, "POST", "/predict", a_customer(TELCO))
    assert status == 503
    assert body["error"] == "no_champion"
    assert "no champion model is loaded" in body["message"]
    assert call(app, "GET", "/model")[0] == 503


def test_health_is_alive_without_a_champion_and_says_so(app):
    status, body = call(app, "GET", "/health")
    assert status == 200
    assert (body["status"], body["champion_loaded"], body["model_version"]) == ("ok", False, None)
    assert body["schema_hash"] == TELCO.schema_hash


def test_bad_requests_are_answered_even_without_a_champion(app):
    status, body = call(app, "POST", "/predict", a_customer(TELCO, tenure=-1))
    assert status == 400
    assert body["problems"][0]["field"] == "tenure"


@pytest.mark.parametrize(
    ("content_type", "words"),
    [
        (None, "no Content-Type"),
        ("text/plain", "'text/plain' is not supported"),
        ("application/x-www-form-urlencoded", "not supported"),
        ("application/json; charset=latin-1", "charset 'latin-1' is not supported"),
    ],
)
def test_anything_but_json_is_415(app, content_type, words):
    headers = {"content-type": content_type} if content_type else {}
    status, body = call(app, "POST", "/predict", a_customer(TELCO), headers=headers)
    assert (status, body["error"]) == (415, "unsupported_media_type")
    assert words in body["message"]


def test_json_with_a_charset_parameter_is_accepted(app):
    headers = {"content-type": "Application/JSON; charset=UTF-8"}
    assert call(app, "POST", "/predict", a_customer(TELCO), headers=headers)[0] == 503  # not 415


def test_unknown_routes_are_404_and_wrong_methods_405_with_allow(app):
    status, body = call(app, "GET", "/predictions")
    assert status == 404
    assert "POST /predict" in body["message"]
    response, _ = app.handle(HttpRequest("DELETE", "/predict", JSON, b""))
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert call(app, "GET", "/health/")[0] == 200  # a trailing slash is the same route


def test_the_openapi_document_is_served_and_follows_the_contract(app):
    status, doc = call(app, "GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    customer = doc["components"]["schemas"]["Customer"]
    # the contract's schema, plus what the validator enforces beyond it: no blank id, and the
    # cross-field rule (TotalCharges null or missing only at tenure 0) as if/then
    from churnops.serving.openapi import NOT_BLANK, blank_rules

    expected = TELCO.customer_json_schema()
    expected["properties"][TELCO.id_column]["pattern"] = NOT_BLANK
    assert customer == {
        **expected,
        "allOf": blank_rules(TELCO),
        "description": customer["description"],
    }
    assert set(doc["paths"]) == {"/predict", "/model", "/health", "/openapi.json"}


def test_proxy_events_map_to_routes_whatever_the_resource_style():
    proxied = HttpRequest.from_proxy_event(
        {
            "resource": "/{proxy+}",
            "path": "/prod/predict",
            "pathParameters": {"proxy": "predict"},
            "httpMethod": "post",
            "headers": {"Content-Type": "application/json"},
            "body": base64.b64encode(b'{"a": 1}').decode(),
            "isBase64Encoded": True,
            "requestContext": {"requestId": "r-1"},
        }
    )
    assert (proxied.method, proxied.path, proxied.body, proxied.request_id) == (
        "POST",
        "/predict",
        b'{"a": 1}',
        "r-1",
    )
    assert proxied.headers["content-type"] == "application/json"
    explicit = HttpRequest.from_proxy_event(
        {"resource": "/model", "path": "/model", "httpMethod": "GET", "body": None}
    )
    assert (explicit.path, explicit.body) == ("/model", b"")
    only_multi = HttpRequest.from_proxy_event(
        {"path": "/x", "httpMethod": "GET", "multiValueHeaders": {"X-A": ["1", "2"]}}
    )
    assert only_multi.headers["x-a"] == "2"


def test_invalid_base64_is_a_400_not_a_crash(app):
    request = HttpRequest.from_proxy_event(
        {
            "resource": "/predict",
            "httpMethod": "POST",
            "headers": {"content-type": "application/json"},
            "body": "@@not base64@@",
            "isBase64Encoded": True,
        }
    )
    response, _ = app.handle(request)
    assert response.status == 400


def test_settings_come_from_the_lambda_environment():
    settings = ServingEnvironment.from_env(
        {
            "REGISTRY_URI": "s3://bucket/models",
            "CONTRACT_NAME": "insurance",
            "CHAMPION_REFRESH_SECONDS": "5",
            "MAX_BATCH_SIZE": "10",
        }
    )
    assert (settings.contract_name, settings.refresh_seconds, settings.max_batch_size) == (
        "insurance",
        5.0,
        10,
    )
    defaults = ServingEnvironment.from_env({"REGISTRY_URI": "/tmp/r"})
    assert (defaults.contract_name, defaults.refresh_seconds, defaults.max_batch_size) == (
        "telco",
        30.0,
        1000,
    )
    with pytest.raises(ChurnOpsError, match="REGISTRY_URI"):
        ServingEnvironment.from_env({})
    with pytest.raises(ChurnOpsError, match="MAX_BATCH_SIZE"):
        ServingEnvironment.from_env({"REGISTRY_URI": "/r", "MAX_BATCH_SIZE": "lots"})


def test_a_champion_of_another_contract_is_refused_with_the_reason(tmp_path):
    # GIVEN a registry whose champion was trained on the insurance contract
    registry = Registry.open(str(tmp_path))
    card = {"contract": "insurance", "schema_hash": INSURANCE.schema_hash, "threshold": 0.5}
    version = registry.register({"model.onnx": b"not even read"}, card)
    registry.promote(version, actor="test", reason="setup")
    # WHEN a telco server starts on it
    app = ServingApp(ServingEnvironment(registry_uri=str(tmp_path), refresh_seconds=0))
    app.warm_up()
    # THEN it serves nothing, and says why
    status, body = call(app, "POST", "/predict", a_customer(TELCO))
    assert status == 503
    assert "refused" in body["message"]
    assert INSURANCE.schema_hash in body["message"]
    health = call(app, "GET", "/health")[1]
    assert health["champion_loaded"] is False
    assert "refused" in health["last_refresh_error"]


def test_telemetry_names_fields_but_never_carries_customer_values(app):
    body = a_customer(TELCO, tenure=-1, **{"Jane Doe's phone": "555-0100"})
    response, telemetry = app.handle(
        HttpRequest("POST", "/predict", JSON, json.dumps(body).encode())
    )
    assert response.status == 400
    assert telemetry.problem_fields == ["(unknown field)", "tenure"]
    assert "555-0100" not in repr(telemetry)
    assert "Jane" not in repr(telemetry)
