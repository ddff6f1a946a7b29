"""The serving API end to end: a real champion trained by `churnops.training`, the Lambda
handler, the local API Gateway stand-in, and a real HTTP client.

Covers valid single and batch requests (with parity against the scikit-learn pipeline), every
kind of invalid input, the size limits, no champion, a champion swap picked up without a
restart, a champion of another contract refused, a schema-driven fuzz run against the published
OpenAPI document, `churnops serve`, and (slow) the image's requirements in a clean virtualenv.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from churnops.contract import INSURANCE, TELCO
from churnops.dataset import parse_customers
from churnops.local.apigw import LocalApiGateway
from churnops.model import model_frame, positive_probability
from churnops.registry import Registry
from churnops.serving.app import ServingApp
from churnops.serving.openapi import example_customer
from churnops.synthetic import generate, write_csv
from churnops.training import TrainingOptions, register_result, train
from churnops.wiring import ServingEnvironment
from lambdas.serving import handler as handler_module
from lambdas.serving.handler import make_handler
from tests.conftest import REPO, free_port

MAX_BATCH = 50
MAX_BODY = 200_000


# ---- fixtures -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Champion:
    registry_uri: str
    version: str
    customers: pd.DataFrame  # clean rows the model was trained on (typed, contract order)
    model: Any  # the scikit-learn pipeline, for parity
    files: dict[str, bytes]
    card: dict[str, Any]


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    """A registry whose champion the MODEL helper's training API produced (small and fast)."""
    work = tmp_path_factory.mktemp("serving-champion")
    csv = work / "customers.csv"
    write_csv(generate(3000, seed=11), csv)
    clean = TELCO.validate(parse_customers(csv.read_bytes(), TELCO, str(csv))).clean
    result = train(clean, TELCO, TrainingOptions(families=("logistic",), folds=3))
    registry = Registry.open(str(work / "registry"))
    summary = register_result(result, registry, actor="test")
    assert summary["champion"]["promoted"], summary
    return Champion(
        str(work / "registry"), summary["version"], clean, result.model, result.files, result.card
    )


def copy_registry(champion: Champion, tmp_path: Path) -> Registry:
    target = tmp_path / "registry"
    shutil.copytree(champion.registry_uri, target)
    return Registry.open(str(target))


class Api:
    """A real HTTP client for one local API Gateway."""

    def __init__(self, gateway: LocalApiGateway, app: ServingApp) -> None:
        self.gateway = gateway
        self.app = app

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        raw = (
            body
            if isinstance(body, bytes) or body is None
            else json.dumps(body, allow_nan=False).encode()
        )
        all_headers = dict(headers or {})
        if content_type:
            all_headers["Content-Type"] = content_type
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=30)
        try:
            conn.request(method, path, body=raw, headers=all_headers)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(payload)

    def predict(self, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return self.request("POST", "/predict", body, **kwargs)


def serve(registry_uri: str, *, refresh_seconds: float = 0, api_key: str | None = None) -> Api:
    app = ServingApp(
        ServingEnvironment(
            registry_uri=registry_uri,
            refresh_seconds=refresh_seconds,
            max_batch_size=MAX_BATCH,
            max_body_bytes=MAX_BODY,
        )
    )
    app.warm_up()
    gateway = LocalApiGateway(make_handler(lambda: app), api_key=api_key).start()
    return Api(gateway, app)


@pytest.fixture(scope="module")
def api(champion: Champion) -> Iterator[Api]:
    served = serve(champion.registry_uri)
    yield served
    served.gateway.stop()


def response_validator(doc: dict[str, Any], path: str, method: str, status: int) -> Any:
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, not documented"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": doc["components"]})


# ---- valid requests -----------------------------------------------------------------------------
def test_one_customer_gets_probability_decision_version_and_top_factors(api, champion):
    status, body = api.predict(example_customer(TELCO))
    assert status == 200
    response_validator(api.app.openapi, "/predict", "POST", 200).validate(body)
    [prediction] = body["predictions"]
    assert prediction["customerID"] == "0001-EXAMPLE"
    assert prediction["model_version"] == body["model_version"] == champion.version
    assert prediction["churn_prediction"] == int(
        prediction["churn_probability"] >= champion.card["threshold"]
    )
    factors = prediction["factors"]
    assert len(factors) == 3
    sizes = [abs(f["effect"]) for f in factors]
    assert sizes == sorted(sizes, reverse=True)
    for factor in factors:
        assert factor["direction"] == ("raises" if factor["effect"] > 0 else "lowers")
        assert factor["value"] == example_customer(TELCO)[factor["feature"]]


def test_batches_match_the_scikit_learn_pipeline_to_1e_5(api, champion):
    # GIVEN 500 customers the pipeline scores with scikit-learn (the batch path's model),
    # first-month customers with a blank TotalCharges among them
    rows = champion.customers.sample(500, random_state=3).reset_index(drop=True)
    assert (rows["tenure"] == 0).any()
    expected = positive_probability(champion.model, model_frame(rows, TELCO))
    # WHEN the API scores the same customers, in batches of the limit
    got, ids, decisions = [], [], []
    customers = TELCO.api_customers(rows)
    for customer in customers:
        if customer["tenure"] == 0:
            customer["TotalCharges"] = None  # as a CRM holding the raw CSV would send it
    for start in range(0, len(rows), MAX_BATCH):
        status, body = api.predict({"customers": customers[start : start + MAX_BATCH]})
        assert (status, body["count"]) == (200, MAX_BATCH), body
        got += [p["churn_probability"] for p in body["predictions"]]
        ids += [p["customerID"] for p in body["predictions"]]
        decisions += [p["churn_prediction"] for p in body["predictions"]]
    # THEN every probability agrees, in order, and decisions follow the card's threshold
    assert ids == rows["customerID"].tolist()
    assert np.max(np.abs(np.array(got) - expected)) <= 1e-5
    threshold = champion.card["threshold"]
    far = np.abs(expected - threshold) > 1e-5
    assert (np.array(decisions)[far] == (expected[far] >= threshold)).all()


def test_a_first_month_customer_without_total_charges_is_scored(api):
    customer = example_customer(TELCO, tenure=0)
    del customer["TotalCharges"]
    status, body = api.predict(customer)
    assert status == 200
    assert 0 <= body["predictions"][0]["churn_probability"] <= 1


def test_model_and_health_describe_the_champion(api, champion):
    status, model = api.request("GET", "/model")
    assert status == 200
    assert model["model_version"] == champion.version
    assert model["contract"] == "telco"
    assert model["threshold"] == champion.card["threshold"]
    assert model["trained_at"]  # the registry stamps created_at when the card lacks one
    assert model["metrics"]["roc_auc"] == champion.card["metrics"]["roc_auc"]
    response_validator(api.app.openapi, "/model", "GET", 200).validate(model)
    status, health = api.request("GET", "/health")
    assert (status, health["champion_loaded"], health["model_version"]) == (
        200,
        True,
        champion.version,
    )


# ---- invalid requests ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"tenure": "twelve"}, "tenure", "expected an integer, got string"),
        ({"MonthlyCharges": -5}, "MonthlyCharges", "below the minimum 0"),
        ({"tenure": 9000}, "tenure", "above the maximum 600"),
        ({"PaymentMethod": "Bitcoin"}, "PaymentMethod", "expected one of"),
        ({"SeniorCitizen": None}, "SeniorCitizen", "is null"),
        ({"gender": None, "tenure": 3}, "gender", "is null"),
        ({"TotalCharges": None, "tenure": 3}, "TotalCharges", "allowed only when tenure is 0"),
        ({"discount_code": "X1"}, "discount_code", "is not a field of the telco contract"),
        ({"Churn": "Yes"}, "Churn", "is not a field of the telco contract"),
    ],
)
def test_every_kind_of_invalid_field_is_a_400_naming_it(api, changes, field, words):
    status, body = api.predict(example_customer(TELCO, **changes))
    assert status == 400
    assert body["error"] == "invalid_request"
    named = [p for p in body["problems"] if p["field"] == field]
    assert named and words in named[0]["problem"], body
    response_validator(api.app.openapi, "/predict", "POST", 400).validate(body)


def test_a_missing_required_field_is_named(api):
    customer = example_customer(TELCO)
    del customer["Contract"]
    status, body = api.predict(customer)
    assert status == 400
    assert body["problems"] == [
        {"field": "Contract", "index": None, "location": "Contract", "problem": "is required"}
    ]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b'{"customerID": "1",', "application/json", 400, "malformed_json"),
        (b"", "application/json", 400, "empty_body"),
        (b"customerID=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"customerID": "1"}', None, 415, "unsupported_media_type"),
        (b"\xff\xfe\x00{", "application/json", 400, "malformed_json"),
    ],
)
def test_bodies_that_are_not_usable_json_get_a_clear_error(api, body, content_type, status, error):
    got_status, got = api.predict(body, content_type=content_type)
    assert (got_status, got["error"]) == (status, error)
    assert got["message"]


def test_a_huge_body_is_413_with_the_limit_named(api):
    customer = example_customer(TELCO, customerID="x" * 60)
    body = json.dumps({"customers": [customer] * 2000}).encode()  # ~1 MB > MAX_BODY
    status, got = api.predict(body)
    assert (status, got["error"]) == (413, "payload_too_large")
    assert f"{MAX_BODY:,}" in got["message"]


def test_a_body_over_api_gateways_own_limit_never_reaches_the_function(api):
    status, got = api.predict(b" " * (10 * 1024 * 1024 + 1))
    assert status == 413
    assert got == {"message": "Request Too Long"}
    response_validator(api.app.openapi, "/predict", "POST", 413).validate(got)


def test_a_batch_over_the_limit_is_413(api):
    batch = [example_customer(TELCO, customerID=f"C{i}") for i in range(MAX_BATCH + 1)]
    status, got = api.predict({"customers": batch})
    assert (status, got["error"]) == (413, "batch_too_large")
    assert f"limit is {MAX_BATCH}" in got["message"]


def test_unknown_routes_and_methods(api):
    assert api.request("GET", "/score")[0] == 404
    assert api.request("GET", "/predict")[0] == 405
    assert api.request("POST", "/model", {})[0] == 405


# ---- the champion's life cycle ------------------------------------------------------------------
def test_no_champion_is_503_with_a_clear_message(tmp_path):
    empty = serve(str(tmp_path))
    try:
        status, body = empty.predict(example_customer(TELCO))
        assert (status, body["error"]) == (503, "no_champion")
        assert "train and promote a model first" in body["message"]
        assert empty.request("GET", "/health")[1]["champion_loaded"] is False
        response_validator(empty.app.openapi, "/predict", "POST", 503).validate(body)
    finally:
        empty.gateway.stop()


def test_a_new_champion_is_picked_up_without_a_restart(champion, tmp_path):
    # GIVEN a running server on a registry with no champion yet
    registry = Registry.open(str(tmp_path / "registry"))
    served = serve(registry.uri)
    try:
        assert served.predict(example_customer(TELCO))[0] == 503
        # WHEN a version is registered and promoted
        first = registry.register(
            dict(champion.files),
            {**champion.card, "status": "champion-eligible"},
        )
        registry.promote(first, actor="test", reason="first")
        # THEN the next request is scored by it
        status, body = served.predict(example_customer(TELCO))
        assert (status, body["model_version"]) == (200, first)
        # AND a later promotion replaces it, still without a restart
        second = registry.register(dict(champion.files), dict(champion.card))
        registry.promote(second, actor="test", reason="a better one")
        assert served.predict(example_customer(TELCO))[1]["model_version"] == second
        # AND a rollback is followed too
        registry.rollback(actor="test", reason="undo")
        assert served.request("GET", "/model")[1]["model_version"] == first
    finally:
        served.gateway.stop()


def test_the_pointer_is_checked_at_most_once_per_interval(champion, tmp_path):
    # GIVEN a server whose clock the test moves, refreshing every 30 s
    registry = copy_registry(champion, tmp_path)
    now = [1000.0]
    app = ServingApp(
        ServingEnvironment(registry_uri=registry.uri, refresh_seconds=30), clock=lambda: now[0]
    )
    app.warm_up()
    newer = registry.register(dict(champion.files), dict(champion.card))
    registry.promote(newer, actor="test", reason="newer")
    # WHEN less than the interval has passed THEN the loaded champion keeps serving
    now[0] += 29
    assert app.champion.current().version == champion.version
    # WHEN the interval has passed THEN the new champion is loaded
    now[0] += 1
    assert app.champion.current().version == newer


def test_a_champion_of_another_contract_is_refused_and_the_old_one_keeps_serving(
    champion, tmp_path
):
    registry = copy_registry(champion, tmp_path)
    served = serve(registry.uri)
    try:
        foreign = registry.register(
            dict(champion.files),
            {**champion.card, "contract": "insurance", "schema_hash": INSURANCE.schema_hash},
        )
        registry.promote(foreign, actor="test", reason="wrong contract")
        status, body = served.predict(example_customer(TELCO))
        assert (status, body["model_version"]) == (200, champion.version)
        health = served.request("GET", "/health")[1]
        assert health["model_version"] == champion.version
        assert "refused" in health["last_refresh_error"]
        assert foreign in health["last_refresh_error"]
    finally:
        served.gateway.stop()


def test_a_broken_model_file_is_refused_until_a_good_champion_replaces_it(champion, tmp_path):
    # GIVEN a champion whose model.onnx is not an ONNX graph
    registry = Registry.open(str(tmp_path / "registry"))
    broken = registry.register({**champion.files, "model.onnx": b"not onnx"}, dict(champion.card))
    registry.promote(broken, actor="test", reason="broken")
    served = serve(registry.uri)
    try:
        # WHEN it is asked to score THEN it answers 503 and says why
        status, body = served.predict(example_customer(TELCO))
        assert status == 503
        assert "model.onnx does not load" in body["message"]
        # AND a good champion is picked up as soon as it is promoted
        good = registry.register(dict(champion.files), dict(champion.card))
        registry.promote(good, actor="test", reason="fixed")
        status, body = served.predict(example_customer(TELCO))
        assert (status, body["model_version"]) == (200, good)
        assert served.request("GET", "/health")[1]["last_refresh_error"] is None
    finally:
        served.gateway.stop()


def test_an_s3_registry_is_served_and_its_champion_swaps_too(champion, aws_env):
    # GIVEN the registry in S3 (moto), as the Lambda sees it
    from churnops.aws import client

    client("s3").create_bucket(Bucket="serving-registry")
    registry = Registry.open("s3://serving-registry/models")
    first = registry.register(dict(champion.files), dict(champion.card))
    registry.promote(first, actor="test", reason="first")
    served = serve(registry.uri)
    try:
        # WHEN a customer is scored THEN the S3 champion answers
        status, body = served.predict(example_customer(TELCO))
        assert (status, body["model_version"]) == (200, first)
        # AND a promotion in S3 is followed (the pointer's ETag changed)
        second = registry.register(dict(champion.files), dict(champion.card))
        registry.promote(second, actor="test", reason="second")
        assert served.predict(example_customer(TELCO))[1]["model_version"] == second
    finally:
        served.gateway.stop()


def test_the_api_key_is_required_when_configured(champion):
    keyed = serve(champion.registry_uri, api_key="k-123")
    try:
        status, body = keyed.request("GET", "/health")
        assert status == 403
        response_validator(keyed.app.openapi, "/health", "GET", 403).validate(body)
        assert keyed.request("GET", "/health", headers={"x-api-key": "k-123"})[0] == 200
    finally:
        keyed.gateway.stop()


# ---- schema-driven fuzz -------------------------------------------------------------------------
def _valid_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a JSON schema node accepts (the subset the contract's schemas use)."""
    if "anyOf" in schema:
        return st.one_of([_valid_value(s) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "integer":
        return st.integers(int(schema.get("minimum", -(10**6))), int(schema.get("maximum", 10**6)))
    if kind == "number":
        return st.floats(
            schema.get("minimum", -1e6), schema.get("maximum", 1e6), allow_nan=False, width=32
        )
    if kind == "string":
        return st.from_regex(rf"[A-Za-z0-9-]{{1,{schema.get('maxLength', 64)}}}", fullmatch=True)
    raise AssertionError(f"schema node the fuzzer does not know: {schema}")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def valid_customers(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    customer = {name: draw(_valid_value(node)) for name, node in schema["properties"].items()}
    # The contract rule a JSON schema cannot say: TotalCharges may be null only at tenure 0.
    if customer.get("TotalCharges") is None and customer.get("tenure") != 0:
        customer["TotalCharges"] = draw(st.floats(0, 1e6, width=32))
    return customer


@st.composite
def mutated_customers(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    customer = draw(valid_customers(schema))
    names = list(schema["properties"])
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop" and customer:
            customer.pop(draw(st.sampled_from(sorted(customer))), None)
        elif action == "replace":
            customer[draw(st.sampled_from(names))] = draw(JSON_VALUES)
        else:
            customer[draw(st.text(min_size=1, max_size=12))] = draw(JSON_VALUES)
    return customer


@pytest.fixture(scope="module")
def openapi_doc(api: Api) -> dict[str, Any]:
    status, doc = api.request("GET", "/openapi.json")
    assert status == 200
    return doc


def _customer_schema(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["components"]["schemas"]["Customer"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_valid_customers_from_the_published_schema_always_score(api, openapi_doc, data):
    schema = _customer_schema(openapi_doc)
    batch = data.draw(st.lists(valid_customers(schema), min_size=1, max_size=5))
    for i, customer in enumerate(batch):
        customer["customerID"] = f"{i}-{customer['customerID']}"[:64]
    status, body = api.predict(batch[0] if len(batch) == 1 else {"customers": batch})
    assert status == 200, body
    response_validator(openapi_doc, "/predict", "POST", 200).validate(body)
    assert body["count"] == len(batch)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_any_request_gets_a_documented_answer_and_never_a_5xx(api, openapi_doc, data):
    schema = _customer_schema(openapi_doc)
    shape = data.draw(st.sampled_from(["customer", "batch", "json", "bytes"]))
    if shape == "customer":
        body: Any = data.draw(mutated_customers(schema))
    elif shape == "batch":
        body = {
            "customers": data.draw(st.lists(mutated_customers(schema) | JSON_VALUES, max_size=4))
        }
    elif shape == "json":
        body = data.draw(JSON_VALUES)
    else:
        body = data.draw(st.binary(max_size=200))
    content_type = data.draw(
        st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", None])
    )
    status, answer = api.predict(body, content_type=content_type)
    assert status < 500, answer
    response_validator(openapi_doc, "/predict", "POST", status).validate(answer)


# ---- the Lambda handler's logs and metrics ------------------------------------------------------
def test_the_handler_logs_one_json_line_and_emits_emf_metrics_without_customer_fields(
    api, champion, capsys, monkeypatch
):
    # GIVEN a real-shaped API Gateway REST event (tests/events) with a customer in its body
    event = json.loads((REPO / "tests" / "events" / "apigw_rest_predict.json").read_text())
    handler = make_handler(lambda: api.app)
    # (the Powertools logger holds the stdout of import time; give it one this test can read)
    log_stream = io.StringIO()
    monkeypatch.setattr(handler_module.logger.registered_handler, "stream", log_stream)
    capsys.readouterr()
    # WHEN the Lambda handler serves it
    response = handler(event, None)
    # THEN it answers like API Gateway expects from a proxy integration
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/json"
    assert json.loads(response["body"])["predictions"][0]["customerID"] == "7590-VHVEG"
    written_lines = log_stream.getvalue().splitlines() + capsys.readouterr().out.splitlines()
    lines = [json.loads(line) for line in written_lines if line.startswith("{")]
    [log] = [line for line in lines if line.get("message") == "request served"]
    assert (log["route"], log["status"], log["batch_size"]) == ("POST /predict", 200, 1)
    assert log["model_version"] == champion.version
    assert log["customer_ids"] == ["7590-VHVEG"]
    assert log["request_id"] == event["requestContext"]["requestId"]
    # AND the metrics are CloudWatch embedded-metric-format records in the ChurnOps namespace
    # (the request's record, and one per model version that scored it: the champion's)
    [emf] = [line for line in lines if "_aws" in line and "ModelVersion" not in line]
    [directive] = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "ChurnOps"
    names = {m["Name"] for m in directive["Metrics"]}
    assert {"PredictLatency", "BatchSize", "PredictedChurners", "MeanChurnProbability"} <= names
    assert emf["model_version"] == champion.version
    [version] = [line for line in lines if "_aws" in line and "ModelVersion" in line]
    assert (version["ModelVersion"], version["Role"]) == (champion.version, "champion")
    names = {m["Name"] for m in version["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"VersionLatency", "VersionPredictions", "VersionChurnShare"} <= names
    # AND no customer field but the id is written anywhere
    written = json.dumps(lines)
    for value in ("Electronic check", "Month-to-month", "29.85", "redacted-example-key"):
        assert value not in written


# ---- the command line ---------------------------------------------------------------------------
def test_churnops_serve_serves_the_handler_over_http(champion, tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "churnops",
            "serve",
            "--registry",
            champion.registry_uri,
            "--port",
            str(port),
        ],
        cwd=tmp_path,  # not the repository root: the command finds lambdas/ itself
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(2)]  # a log line, then the banner
        banner = next((line for line in lines if line.startswith("serving ")), "".join(lines))
        assert f"http://127.0.0.1:{port}" in banner, banner
        assert champion.version in banner
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            "/predict",
            json.dumps(example_customer(TELCO)),
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["model_version"] == champion.version
        conn.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    log_lines = [json.loads(line) for line in [*lines, *process.stdout] if line.startswith("{")]
    served = [r for r in log_lines if r.get("message") == "request served"]
    assert served and served[0]["customer_ids"] == ["0001-EXAMPLE"]
    # Customer fields other than the id never reach the logs.
    assert not any(
        "Electronic check" in json.dumps(r) or "Month-to-month" in json.dumps(r) for r in log_lines
    )


def test_churnops_serve_rejects_a_missing_registry(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "churnops", "serve", "--registry", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no such registry directory" in result.stderr
    assert "Traceback" not in result.stderr


# ---- the container image's libraries ------------------------------------------------------------
def _dockerfile_copies() -> list[tuple[list[str], str]]:
    """The repository paths the serving Dockerfile copies, and where they land."""
    copies = []
    for line in (REPO / "containers" / "serving" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "requirements" not in line:
            *sources, target = line.split()[1:]
            copies.append((sources, target.replace("${LAMBDA_TASK_ROOT}", "")))
    return copies


@pytest.mark.slow
def test_the_image_requirements_run_the_handler_in_a_clean_virtualenv(
    champion, image_python, tmp_path
):
    # GIVEN the serving image's Python (3.12, not the 3.11 that trained the champion) with only
    # containers/serving/requirements.txt
    python = image_python("serving")
    # AND exactly the files the Dockerfile copies into the task root
    task_root = tmp_path / "task"
    for sources, target in _dockerfile_copies():
        destination = task_root / target.strip("/")
        destination.mkdir(parents=True, exist_ok=True)
        for source in sources:
            path = REPO / source.rstrip("/")
            if path.is_dir():
                shutil.copytree(
                    path,
                    destination,
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
            else:
                shutil.copy2(path, destination / path.name)
    script = """
import json, sys
blocked = []
for name in ("pandas", "sklearn", "scipy", "pyspark"):
    try:
        __import__(name)
        blocked.append(name)
    except ImportError:
        pass
from lambdas.serving.handler import handler
event = {"resource": "/predict", "path": "/predict", "httpMethod": "POST",
         "headers": {"Content-Type": "application/json"}, "body": sys.argv[1]}
print(json.dumps({"importable": blocked, "response": handler(event, None)}))
"""
    env = {
        "PATH": os.environ["PATH"],
        "REGISTRY_URI": champion.registry_uri,
        "PYTHONPATH": str(task_root),
        "POWERTOOLS_METRICS_NAMESPACE": "ChurnOps",
    }
    # WHEN the handler scores a customer there
    result = subprocess.run(
        [str(python), "-c", script, json.dumps(example_customer(TELCO))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    # THEN it answers 200 with the champion, and none of the training libraries exist there
    assert outcome["importable"] == []
    response = outcome["response"]
    assert response["statusCode"] == 200, response
    assert json.loads(response["body"])["model_version"] == champion.version
    assert re.search(
        r"^onnxruntime==", (REPO / "containers/serving/requirements.txt").read_text(), re.M
    )
