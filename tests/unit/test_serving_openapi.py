"""The published OpenAPI document: valid OpenAPI 3.1, generated from the contract."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from churnops.contract import INSURANCE, TELCO
from churnops.serving.openapi import example_customer, openapi_document


@pytest.mark.parametrize("contract", [TELCO, INSURANCE], ids=lambda c: c.name)
def test_the_document_is_valid_openapi_for_every_contract(contract):
    doc = openapi_document(contract, max_batch_size=250)
    validate(doc)  # raises on an invalid document
    schemas = doc["components"]["schemas"]
    assert schemas["CustomerBatch"]["properties"]["customers"]["maxItems"] == 250
    assert set(schemas["Customer"]["properties"]) == {contract.id_column, *contract.feature_names}
    assert contract.target_column not in schemas["Customer"]["properties"]
    assert schemas["Prediction"]["required"][0] == contract.id_column
    assert contract.schema_hash in doc["info"]["description"]


@pytest.mark.parametrize("contract", [TELCO, INSURANCE], ids=lambda c: c.name)
def test_the_request_examples_satisfy_the_documented_request_schema(contract):
    doc = openapi_document(contract, max_batch_size=10)
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    validator = Draft202012Validator({**body["schema"], "components": doc["components"]})
    for example in body["examples"].values():
        validator.validate(example["value"])
    assert body["examples"]["one"]["value"] == example_customer(contract)


def test_every_documented_response_is_json_with_a_schema():
    doc = openapi_document(TELCO, max_batch_size=10)
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                assert "schema" in response["content"]["application/json"], (path, method, status)
            assert "500" not in operation["responses"]  # a 5xx is never a documented answer


# ---- the cross-field rule: TotalCharges may be null or missing only when tenure is 0 -----------
def _customer_validator(doc: dict) -> Draft202012Validator:
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    return Draft202012Validator({**body["schema"], "components": doc["components"]})


def _handler_answer(tmp_path, body: dict) -> int:
    """The status ServingApp (what the Lambda handler runs) answers for `body` with an empty
    registry: 400 when the request is refused, 503 (no champion yet) when it passed validation."""
    from churnops.serving.app import HttpRequest, ServingApp
    from churnops.wiring import ServingEnvironment

    app = ServingApp(ServingEnvironment(registry_uri=str(tmp_path), refresh_seconds=0))
    request = HttpRequest(
        method="POST",
        path="/predict",
        headers={"content-type": "application/json"},
        body=json.dumps(body).encode(),
    )
    response, _ = app.handle(request)
    return response.status


REFUSED = [
    pytest.param({"TotalCharges": None, "tenure": 5}, id="null-total-after-month-0"),
    pytest.param({"tenure": 12}, id="missing-total-after-month-0"),
]
ACCEPTED = [
    pytest.param({"TotalCharges": None, "tenure": 0}, id="null-total-in-month-0"),
    pytest.param({"tenure": 0}, id="missing-total-in-month-0"),
    pytest.param({"TotalCharges": 0.0, "tenure": 0}, id="zero-total-in-month-0"),
    pytest.param({"TotalCharges": 120.5, "tenure": 5}, id="total-after-month-0"),
]


@pytest.mark.parametrize("change", REFUSED)
def test_a_request_breaking_the_total_charges_rule_is_refused_by_the_handler_and_the_document(
    tmp_path, change
):
    customer = example_customer(TELCO, **change)
    if "TotalCharges" not in change:
        del customer["TotalCharges"]
    validator = _customer_validator(openapi_document(TELCO, max_batch_size=10))
    assert not validator.is_valid(customer)
    assert not validator.is_valid({"customers": [customer]})
    assert _handler_answer(tmp_path, customer) == 400
    assert _handler_answer(tmp_path, {"customers": [customer]}) == 400


@pytest.mark.parametrize("change", ACCEPTED)
def test_what_the_handler_accepts_under_the_rule_the_document_accepts(tmp_path, change):
    customer = example_customer(TELCO, **change)
    if "TotalCharges" not in change:
        del customer["TotalCharges"]
    validator = _customer_validator(openapi_document(TELCO, max_batch_size=10))
    assert validator.is_valid(customer), list(validator.iter_errors(customer))
    assert validator.is_valid({"customers": [customer]})
    assert _handler_answer(tmp_path, customer) == 503  # validated; no champion to score it


def test_a_contract_without_the_rule_states_none():
    doc = openapi_document(INSURANCE, max_batch_size=10)
    assert "allOf" not in doc["components"]["schemas"]["Customer"]


def test_not_blank_is_exactly_what_the_validator_does_not_strip():
    import re

    from churnops.serving.openapi import NOT_BLANK

    pattern = re.compile(NOT_BLANK)
    assert all(
        (pattern.search(chr(code)) is None) == chr(code).isspace() for code in range(0x110000)
    )


@pytest.mark.parametrize("customer_id", [" ", "\x1f", "\u3000 \t"])
def test_a_blank_id_is_refused_by_the_handler_and_the_document(tmp_path, customer_id):
    customer = example_customer(TELCO, customerID=customer_id)
    assert not _customer_validator(openapi_document(TELCO, max_batch_size=10)).is_valid(customer)
    assert _handler_answer(tmp_path, customer) == 400


def test_a_batch_repeating_an_id_is_refused_and_the_document_says_so(tmp_path):
    doc = openapi_document(TELCO, max_batch_size=10)
    batch = doc["components"]["schemas"]["CustomerBatch"]["properties"]["customers"]
    assert batch["x-unique-by"] == TELCO.id_column
    same = example_customer(TELCO)
    assert not _customer_validator(doc).is_valid({"customers": [same, same]})
    assert _handler_answer(tmp_path, {"customers": [same, same]}) == 400
