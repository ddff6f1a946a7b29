"""Synthetic Telco customers: contract-valid, reproducible, realistic, shiftable."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from churnops.contract import INSURANCE, TELCO
from churnops.dataset import read_customers
from churnops.errors import ChurnOpsError
from churnops.synthetic import SHIFT_PRESETS, churn_probability, generate, resolve_shift, write_csv


@pytest.fixture(scope="module")
def customers():  # type: ignore[no-untyped-def]
    return generate(20_000, seed=3)


def test_columns_follow_the_contract_and_every_row_validates(customers, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert list(customers.columns) == TELCO.column_names
    path = tmp_path / "customers.csv"
    write_csv(customers, path)
    result = TELCO.validate(read_customers(path, TELCO))
    assert len(result.rejected) == 0, result.rejected.head()
    assert len(result.clean) == len(customers)
    assert result.clean[TELCO.id_column].is_unique


def test_total_charges_blank_quirk_for_new_customers(customers, tmp_path) -> None:  # type: ignore[no-untyped-def]
    new = customers["tenure"] == 0
    assert new.any(), "some customers should be in their first month"
    assert customers.loc[new, "TotalCharges"].isna().all()
    assert customers.loc[~new, "TotalCharges"].notna().all()
    path = tmp_path / "c.csv"
    write_csv(customers.head(5000), path)
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    total_at = header.index("TotalCharges")
    blanks = [line for line in lines[1:] if line.split(",")[total_at] == " "]
    assert len(blanks) == int(new.head(5000).sum())


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path) -> None:
    paths = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        path = tmp_path / f"{name}.csv"
        write_csv(generate(3000, seed), path)
        paths.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert paths[0] == paths[1]
    assert paths[0] != paths[2]


def test_churn_mechanism_is_realistic(customers) -> None:  # type: ignore[no-untyped-def]
    churned = customers["Churn"] == "Yes"
    assert 0.18 < churned.mean() < 0.32
    by_contract = churned.groupby(customers["Contract"], observed=True).mean()
    assert by_contract["Month-to-month"] > by_contract["One year"] > by_contract["Two year"]
    by_internet = churned.groupby(customers["InternetService"], observed=True).mean()
    assert by_internet["Fiber optic"] > by_internet["DSL"] > by_internet["No"]
    short = churned[customers["tenure"] <= 6].mean()
    long = churned[customers["tenure"] >= 48].mean()
    assert short > 2 * long
    by_gender = churned.groupby(customers["gender"], observed=True).mean()
    assert abs(by_gender["Male"] - by_gender["Female"]) < 0.03  # gender has no effect


def test_services_are_consistent(customers) -> None:  # type: ignore[no-untyped-def]
    no_internet = customers["InternetService"] == "No"
    assert (customers.loc[no_internet, "OnlineSecurity"] == "No internet service").all()
    assert (customers.loc[~no_internet, "OnlineSecurity"] != "No internet service").all()
    no_phone = customers["PhoneService"] == "No"
    assert (customers.loc[no_phone, "MultipleLines"] == "No phone service").all()
    fiber = customers.loc[customers["InternetService"] == "Fiber optic", "MonthlyCharges"]
    dsl = customers.loc[customers["InternetService"] == "DSL", "MonthlyCharges"]
    assert fiber.mean() > dsl.mean()


def test_true_probability_gives_known_skill(customers) -> None:  # type: ignore[no-untyped-def]
    from sklearn.metrics import roc_auc_score

    truth = churn_probability(customers)
    auc = roc_auc_score(customers["Churn"] == "Yes", truth)
    assert 0.80 < auc < 0.90  # comparable to the real Telco data: learnable, not trivial
    assert abs(truth.mean() - (customers["Churn"] == "Yes").mean()) < 0.02


def test_shift_moves_some_features_and_leaves_others(customers) -> None:  # type: ignore[no-untyped-def]
    shifted = generate(20_000, seed=3, shift="price_rise")
    assert shifted["MonthlyCharges"].mean() > 1.2 * customers["MonthlyCharges"].mean()
    for unchanged in ("Contract", "InternetService", "gender"):
        assert (
            shifted[unchanged]
            .value_counts(normalize=True)
            .sub(customers[unchanged].value_counts(normalize=True))
            .abs()
            .max()
            < 0.02
        )
    mix = generate(20_000, seed=3, shift={"contract_probs": (0.9, 0.05, 0.05)})
    assert (mix["Contract"] == "Month-to-month").mean() > 0.85


def test_shift_parsing() -> None:
    assert (
        resolve_shift("price_rise,new_customers").tenure_scale
        == SHIFT_PRESETS["new_customers"]["tenure_scale"]
    )
    assert resolve_shift("monthly_charge_factor=1.5").monthly_charge_factor == 1.5
    assert resolve_shift("contract_probs=0.2/0.3/0.5").contract_probs == (0.2, 0.3, 0.5)
    for bad in (
        "no_such_preset",
        "bogus_field=1",
        "monthly_charge_factor=abc",
        "contract_probs=1/2",
    ):
        with pytest.raises(ChurnOpsError):
            resolve_shift(bad)


def test_only_telco_and_positive_rows() -> None:
    with pytest.raises(ChurnOpsError, match="telco"):
        generate(10, seed=1, contract=INSURANCE)
    with pytest.raises(ChurnOpsError):
        generate(0, seed=1)


def test_churn_probability_is_monotone_in_contract(customers) -> None:  # type: ignore[no-untyped-def]
    sample = customers.head(2000).copy()
    sample["Contract"] = "Month-to-month"
    monthly = churn_probability(sample)
    sample["Contract"] = "Two year"
    assert np.all(churn_probability(sample) < monthly)
