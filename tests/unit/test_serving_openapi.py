"""The published OpenAPI document: valid OpenAPI 3.1, generated from the contract."""

from __future__ import annotations

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
