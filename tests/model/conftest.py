"""Trained models shared by the model tests (training is the slow part: do it once)."""

from __future__ import annotations

import pytest

from churnops.contract import TELCO, get_contract
from churnops.dataset import read_customers
from churnops.synthetic import generate
from churnops.training import TrainingOptions, TrainingResult, train


def clean_rows(path, contract_name: str):  # type: ignore[no-untyped-def]
    contract = get_contract(contract_name)
    return contract.validate(read_customers(path, contract)).clean


@pytest.fixture(scope="session")
def telco_clean(telco_csv):  # type: ignore[no-untyped-def]
    return clean_rows(telco_csv, "telco")


@pytest.fixture(scope="session")
def insurance_clean(insurance_csv):  # type: ignore[no-untyped-def]
    return clean_rows(insurance_csv, "insurance")


@pytest.fixture(scope="session")
def telco_result(telco_clean) -> TrainingResult:  # type: ignore[no-untyped-def]
    """The full recipe (all families, 5-fold CV, holdout) on the real Telco file."""
    return train(telco_clean, TELCO, TrainingOptions(n_jobs=2))


@pytest.fixture(scope="session")
def synthetic_result() -> TrainingResult:
    """A quick logistic model on synthetic customers: runs without the real data."""
    clean = TELCO.validate(generate(8000, seed=21)).clean
    return train(clean, TELCO, TrainingOptions(families=("logistic",), n_jobs=2))
