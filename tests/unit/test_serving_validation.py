"""Request validation for POST /predict: derived from the contract, plain Python, strict."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from churnops.contract import INSURANCE, TELCO, Column, Contract, Kind
from churnops.serving.openapi import example_customer
from churnops.serving.validation import BATCH_KEY, RequestRejected, RequestValidator


def a_customer(contract: Contract = TELCO, **overrides: Any) -> dict[str, Any]:
    return example_customer(contract, **{"customerID": "7590-VHVEG", **overrides})


def rejected(validator: RequestValidator, payload: Any) -> RequestRejected:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(RequestRejected) as caught:
        validator.parse(body)
    return caught.value


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator(TELCO, max_batch_size=5, max_body_bytes=20_000)


def test_a_single_valid_customer_becomes_one_row_of_model_columns(validator):
    customers = validator.parse(json.dumps(a_customer(tenure=12, Contract="Two year")).encode())
    assert customers.ids == ["7590-VHVEG"]
    assert not customers.is_batch
    assert set(customers.columns) == set(TELCO.feature_names)
    assert customers.columns["tenure"] == [12.0]
    assert customers.columns["Contract"] == ["Two year"]


def test_a_batch_keeps_order_and_every_feature(validator):
    batch = [a_customer(customerID=f"C{i}", tenure=i) for i in range(5)]
    customers = validator.parse(json.dumps({BATCH_KEY: batch}).encode())
    assert customers.is_batch
    assert customers.ids == [f"C{i}" for i in range(5)]
    assert customers.columns["tenure"] == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("tenure", "12", "expected an integer, got string"),
        ("tenure", True, "expected an integer, got boolean"),
        ("tenure", 1.5, "must be a whole number"),
        ("tenure", -1, "is below the minimum 0"),
        ("tenure", 601, "is above the maximum 600"),
        ("MonthlyCharges", [1], "expected a number, got array"),
        ("MonthlyCharges", 10**400, "is above the maximum"),
        ("Contract", "Monthly", "has value 'Monthly', expected one of: Month-to-month"),
        ("Contract", "month-to-month", "expected one of"),  # the API takes canonical spellings
        ("gender", 1, "expected a string (one of: Male, Female), got number"),
        ("customerID", "   ", "is blank"),
        ("customerID", "x" * 65, "is longer than 64 characters"),
        ("customerID", {"id": 1}, "expected a string, got object"),
        ("Partner", None, "is null; a value is required"),
    ],
)
def test_each_invalid_field_is_named_with_the_reason(validator, field, value, expected):
    problem = rejected(validator, a_customer(**{field: value}))
    assert problem.status == 400
    [only] = problem.problems
    assert only.field == field
    assert expected in only.problem
    assert only.index is None
    assert field in problem.message


def test_a_missing_required_field_is_named(validator):
    customer = a_customer()
    del customer["InternetService"]
    [only] = rejected(validator, customer).problems
    assert (only.field, only.problem) == ("InternetService", "is required")


def test_an_unknown_field_is_rejected_by_name_even_when_another_field_is_missing(validator):
    customer = a_customer(Gender="Male", Churn="No")
    del customer["gender"]
    problems = {(p.field, p.problem) for p in rejected(validator, customer).problems}
    assert ("gender", "is required") in problems
    assert ("Gender", "is not a field of the telco contract") in problems
    assert ("Churn", "is not a field of the telco contract") in problems


def test_total_charges_may_be_blank_only_for_a_customer_in_the_first_month(validator):
    # GIVEN the contract's cleaning rule: a blank TotalCharges means 0 when tenure is 0
    new_customer = a_customer(tenure=0)
    del new_customer["TotalCharges"]
    # WHEN it is missing (or null) for a first-month customer THEN it is 0
    assert validator.parse(json.dumps(new_customer).encode()).columns["TotalCharges"] == [0.0]
    null_total = a_customer(tenure=0, TotalCharges=None)
    assert validator.parse(json.dumps(null_total).encode()).columns["TotalCharges"] == [0.0]
    # AND for anyone else it is a named problem
    [only] = rejected(validator, a_customer(tenure=5, TotalCharges=None)).problems
    assert only.field == "TotalCharges"
    assert "allowed only when tenure is 0" in only.problem


def test_every_problem_of_every_customer_is_reported_with_its_position(validator):
    batch = [a_customer(customerID="A"), a_customer(customerID="B", tenure=-3, gender="X"), 7]
    problem = rejected(validator, {BATCH_KEY: batch})
    located = {p.location for p in problem.problems}
    assert located == {"customers[1].tenure", "customers[1].gender", "customers[2]"}
    assert problem.body()["problem_count"] == 3


def test_a_customer_twice_in_one_batch_is_rejected(validator):
    problem = rejected(validator, {BATCH_KEY: [a_customer(), a_customer()]})
    [only] = problem.problems
    assert only.location == "customers[1].customerID"
    assert "repeats customers[0]" in only.problem


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        (b"", "empty_body", "empty"),
        (b"  \n ", "empty_body", "empty"),
        (b'{"customerID": ', "malformed_json", "not valid JSON"),
        (b'{"tenure": NaN}', "malformed_json", "NaN"),
        (b"[" * 10_000 + b"]" * 10_000, "malformed_json", "not valid JSON"),
        (b"\xff\xfe{}", "malformed_json", "not UTF-8"),
        (b"[1, 2]", "invalid_request", "got array"),
        (b'"customer"', "invalid_request", "got string"),
    ],
)
def test_bodies_that_are_not_a_json_object_get_a_clear_400(validator, body, error, words):
    problem = rejected(validator, body)
    assert (problem.status, problem.error) == (400, error)
    assert words in problem.message


def test_batch_shape_problems(validator):
    assert "expected an array" in rejected(validator, {BATCH_KEY: {}}).message
    assert "is empty" in rejected(validator, {BATCH_KEY: []}).message
    beside = rejected(validator, {BATCH_KEY: [a_customer()], "model": "x"})
    assert [p.field for p in beside.problems] == ["model"]


def test_a_batch_over_the_limit_is_413_and_a_body_over_the_limit_is_413(validator):
    over = rejected(validator, {BATCH_KEY: [a_customer(customerID=str(i)) for i in range(6)]})
    assert (over.status, over.error) == (413, "batch_too_large")
    assert "limit is 5" in over.message
    huge = rejected(validator, b" " * 20_001)
    assert (huge.status, huge.error) == (413, "payload_too_large")


def test_the_report_of_a_very_bad_batch_stays_readable():
    validator = RequestValidator(TELCO, max_batch_size=1000)
    body = {BATCH_KEY: [{"x": 1} for _ in range(500)]}
    problem = rejected(validator, body)
    assert problem.body()["problem_count"] > 500
    assert len(problem.body()["problems"]) == 50


def test_the_validator_follows_whichever_contract_it_is_given():
    validator = RequestValidator(INSURANCE)
    customer = example_customer(INSURANCE, age=17)
    [only] = rejected(validator, customer).problems
    assert (only.field, only.problem) == ("age", "is below the minimum 18")
    ok = validator.parse(json.dumps(example_customer(INSURANCE)).encode())
    assert set(ok.columns) == set(INSURANCE.feature_names)
    assert not any(isinstance(v, float) and math.isnan(v) for v in ok.columns["age"])


def test_serving_validation_imports_no_pandas():
    # The serving image has no pandas: importing the serving package must not need it.
    import subprocess
    import sys

    code = (
        "import sys; import churnops.serving.app, churnops.serving.validation;"
        "bad = [m for m in ('pandas', 'sklearn', 'scipy') if m in sys.modules];"
        "print(' '.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_a_number_the_float32_model_cannot_hold_is_rejected_even_without_a_maximum():
    unbounded = Contract(
        name="unbounded",
        description="a float column without range",
        id_column="id",
        target_column="y",
        positive_label="1",
        table="t",
        columns=(
            Column("id", Kind.STRING),
            Column("amount", Kind.FLOAT),
            Column("y", Kind.CATEGORY, allowed=("1", "0")),
        ),
    )
    validator = RequestValidator(unbounded)
    for huge in (1e39, -(10**50), 10**400):
        [only] = rejected(validator, {"id": "a", "amount": huge}).problems
        assert "between -3.4e38 and 3.4e38" in only.problem
    assert validator.parse(b'{"id": "a", "amount": -1e30}').columns["amount"] == [-1e30]
