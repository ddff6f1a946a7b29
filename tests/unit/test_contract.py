"""The data contract: validation reasons, cleaning quirks, and schemas derived from it."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from churnops.contract import INSURANCE, REJECT_REASON, TELCO, get_contract
from churnops.errors import ChurnOpsError

GOOD = {
    "customerID": "7590-VHVEG",
    "gender": "Female",
    "SeniorCitizen": "0",
    "Partner": "Yes",
    "Dependents": "No",
    "tenure": "1",
    "PhoneService": "No",
    "MultipleLines": "No phone service",
    "InternetService": "DSL",
    "OnlineSecurity": "No",
    "OnlineBackup": "Yes",
    "DeviceProtection": "No",
    "TechSupport": "No",
    "StreamingTV": "No",
    "StreamingMovies": "No",
    "Contract": "Month-to-month",
    "PaperlessBilling": "Yes",
    "PaymentMethod": "Electronic check",
    "MonthlyCharges": "29.85",
    "TotalCharges": "29.85",
    "Churn": "No",
}


def frame(*changes: dict[str, str]) -> pd.DataFrame:
    rows = []
    for i, change in enumerate(changes):
        rows.append({**GOOD, "customerID": f"{i:04d}-TEST", **change})
    return pd.DataFrame(rows, columns=TELCO.column_names)


def reasons(result) -> list[str]:  # type: ignore[no-untyped-def]
    return list(result.rejected[REJECT_REASON])


def test_a_good_row_is_typed_and_canonical() -> None:
    result = TELCO.validate(frame({}))
    assert len(result.rejected) == 0
    row = result.clean.iloc[0]
    assert row["tenure"] == 1 and row["MonthlyCharges"] == pytest.approx(29.85)
    assert list(result.clean.columns) == TELCO.column_names


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"gender": "Robot"}, "gender has value 'Robot', expected one of: Male, Female"),
        ({"tenure": "-1"}, "tenure is below the minimum 0"),
        ({"tenure": "2.5"}, "tenure must be a whole number"),
        ({"MonthlyCharges": "lots"}, "MonthlyCharges has value 'lots', expected a number"),
        ({"Contract": ""}, "Contract is blank"),
        ({"customerID": ""}, "customerID is blank"),
        ({"SeniorCitizen": "2"}, "SeniorCitizen is above the maximum 1"),
    ],
)
def test_rejected_rows_keep_the_raw_row_and_a_reason_naming_the_column(change, expected) -> None:  # type: ignore[no-untyped-def]
    result = TELCO.validate(frame({}, change))
    assert len(result.clean) == 1
    assert reasons(result) == [expected]
    for column, raw in change.items():
        assert result.rejected.iloc[0][column] == raw  # the row as read, not a cleaned copy


def test_several_problems_in_one_row_are_all_named() -> None:
    result = TELCO.validate(frame({"gender": "x", "tenure": "abc"}))
    (reason,) = reasons(result)
    assert "gender" in reason and "tenure" in reason and "; " in reason


def test_total_charges_blank_only_for_new_customers() -> None:
    result = TELCO.validate(
        frame({"tenure": "0", "TotalCharges": " "}, {"tenure": "5", "TotalCharges": " "})
    )
    assert result.clean["TotalCharges"].tolist() == [0.0]
    assert reasons(result) == ["TotalCharges is blank, allowed only when tenure is 0"]


def test_yes_no_case_and_whitespace_are_cleaned() -> None:
    result = TELCO.validate(
        frame({"Partner": " yes ", "Churn": "NO", "Contract": "two YEAR", "customerID": " 1-A "})
    )
    assert len(result.rejected) == 0
    row = result.clean.iloc[0]
    assert (row["Partner"], row["Churn"], row["Contract"]) == ("Yes", "No", "Two year")
    assert row["customerID"] == "1-A"


def test_duplicate_ids_keep_the_first_row() -> None:
    rows = frame({"MonthlyCharges": "10"}, {"MonthlyCharges": "20"})
    rows["customerID"] = "SAME"
    result = TELCO.validate(rows)
    assert result.clean["MonthlyCharges"].tolist() == [10.0]
    assert reasons(result) == ["customerID repeats an earlier row of this file"]


def test_header_problems_raise_one_line() -> None:
    rows = frame({}).drop(columns=["tenure"]).assign(colour="red")
    with pytest.raises(ChurnOpsError, match=r"missing column.*tenure.*unexpected column.*colour"):
        TELCO.validate(rows)
    problems = TELCO.check_header(["customerID", "customerID"])
    assert problems.duplicated == ("customerID",)


def test_scoring_files_may_omit_the_target() -> None:
    rows = frame({}).drop(columns=["Churn"])
    assert len(TELCO.validate(rows, target_required=False).clean) == 1
    with pytest.raises(ChurnOpsError, match="Churn"):
        TELCO.validate(rows)


def test_feature_lists_come_from_the_contract() -> None:
    assert TELCO.id_column not in TELCO.feature_names
    assert TELCO.target_column not in TELCO.feature_names
    assert set(TELCO.numeric_features) == {
        "SeniorCitizen",
        "tenure",
        "MonthlyCharges",
        "TotalCharges",
    }
    assert len(TELCO.feature_names) == len(TELCO.column_names) - 2
    assert sorted(TELCO.numeric_features + TELCO.categorical_features) == sorted(
        TELCO.feature_names
    )
    assert INSURANCE.feature_names == ["age", "annual_premium", "policy_type", "claims_count"]


def test_ddl_is_derived_from_the_columns() -> None:
    ddl = TELCO.ddl()
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS `customers`")
    for name in TELCO.column_names:
        assert f"`{name}`" in ddl
    assert "PRIMARY KEY (`customerID`)" in ddl
    assert "`tenure` BIGINT NOT NULL" in ddl
    assert "`MonthlyCharges` DOUBLE NOT NULL" in ddl
    assert "`Contract` VARCHAR(14) NOT NULL" in ddl  # longest allowed value: Month-to-month
    assert "`Churn` VARCHAR(3) NULL" in ddl  # scored customers have no label yet
    assert "`extra` INT" in TELCO.ddl("t", extra={"extra": "INT"})


def test_json_schema_is_derived_from_the_columns() -> None:
    schema = TELCO.customer_json_schema()
    assert list(schema["properties"]) == [TELCO.id_column, *TELCO.feature_names]
    assert schema["properties"]["Contract"]["enum"] == list(TELCO.column("Contract").allowed)
    assert schema["properties"]["tenure"]["type"] == "integer"
    total = schema["properties"]["TotalCharges"]
    assert {"type": "null"} in total["anyOf"]  # may be blank for new customers
    assert "TotalCharges" not in schema["required"]
    assert "Churn" not in schema["properties"]
    assert schema["additionalProperties"] is False


def test_api_customers_are_what_the_request_schema_accepts() -> None:
    from jsonschema import Draft202012Validator

    # GIVEN clean rows, one with a missing TotalCharges
    clean = TELCO.validate(frame({}, {"tenure": "24", "MonthlyCharges": "70.5"})).clean
    clean.loc[1, "TotalCharges"] = float("nan")
    # WHEN they are turned into API customers
    customers = TELCO.api_customers(clean)
    # THEN each is valid JSON the request schema accepts, typed by column kind, without the target
    validator = Draft202012Validator(TELCO.customer_json_schema())
    for customer in customers:
        validator.validate(customer)
    first, second = customers
    assert first["customerID"] == "0000-TEST" and first["Contract"] == "Month-to-month"
    assert type(first["tenure"]) is int and type(first["MonthlyCharges"]) is float
    assert second["tenure"] == 24 and second["MonthlyCharges"] == 70.5
    assert second["TotalCharges"] is None and "Churn" not in second


def test_schema_hash_is_stable_and_sensitive() -> None:
    assert TELCO.schema_hash == get_contract("telco").schema_hash
    assert TELCO.schema_hash != INSURANCE.schema_hash
    changed = dataclasses.replace(TELCO, positive_label="No")
    assert changed.schema_hash != TELCO.schema_hash


def test_unknown_contract() -> None:
    with pytest.raises(
        ChurnOpsError, match="unknown contract 'nope' \\(known: insurance, telco\\)"
    ):
        get_contract("nope")


def test_target_vector() -> None:
    result = TELCO.validate(frame({"Churn": "Yes"}, {"Churn": "no"}))
    assert TELCO.target_vector(result.clean).tolist() == [1, 0]
