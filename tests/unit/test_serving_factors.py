"""The "why" of a prediction from the card's factor table (interface 2), without scikit-learn."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from churnops.contract import TELCO
from churnops.errors import ChurnOpsError
from churnops.serving.model import FactorTable

FACTORS = {
    "baseline": -1.2,
    "features": {
        "Contract": {
            "kind": "category",
            "effects": {"Month-to-month": 0.9, "One year": -0.4, "Two year": -1.5},
        },
        "tenure": {
            "kind": "numeric",
            "edges": [6.0, 24.0, 48.0],
            "effects": [1.1, 0.3, -0.2, -0.7],
        },
        "gender": {"kind": "category", "effects": {"Male": 0.01, "Female": -0.01}},
        "MonthlyCharges": {"kind": "numeric", "edges": [50.0], "effects": [-0.3, 0.35]},
    },
}


def columns(**values: list) -> dict[str, list]:
    return values


def test_the_top_three_by_size_with_their_direction():
    table = FactorTable(FACTORS, TELCO)
    why = table.top(
        columns(Contract=["Two year"], tenure=[3.0], gender=["Male"], MonthlyCharges=[80.0]), 1
    )
    assert type(why[0][1]["value"]) is int  # an integer field is echoed as the client sent it
    assert why == [
        [
            {"feature": "Contract", "value": "Two year", "effect": -1.5, "direction": "lowers"},
            {"feature": "tenure", "value": 3, "effect": 1.1, "direction": "raises"},
            {"feature": "MonthlyCharges", "value": 80.0, "effect": 0.35, "direction": "raises"},
        ]
    ]


@pytest.mark.parametrize(("tenure", "effect"), [(0.0, 1.1), (6.0, 0.3), (23.9, 0.3), (48.0, -0.7)])
def test_a_numeric_value_falls_in_the_bin_searchsorted_right_picks(tenure, effect):
    table = FactorTable(FACTORS, TELCO)
    assert (
        table.effects(
            columns(Contract=["x"], tenure=[tenure], gender=["x"], MonthlyCharges=[50.0]), 1
        )[0][1]
        == effect
    )
    bins = np.searchsorted(np.array([6.0, 24.0, 48.0]), tenure, side="right")
    assert [1.1, 0.3, -0.2, -0.7][bins] == effect


def test_unknown_categories_and_nulls_have_no_effect_and_are_never_reported():
    table = FactorTable(FACTORS, TELCO)
    why = table.top(
        columns(Contract=[""], tenure=[math.nan], gender=["Male"], MonthlyCharges=[math.nan]), 1
    )
    assert why == [[{"feature": "gender", "value": "Male", "effect": 0.01, "direction": "raises"}]]


def test_one_customer_and_a_batch_rank_identically():
    # GIVEN random customers (the batch path is vectorised, the single path plain Python)
    rng = random.Random(4)
    n = 40
    cols = columns(
        Contract=[rng.choice(["Month-to-month", "One year", "Two year", ""]) for _ in range(n)],
        tenure=[rng.choice([math.nan, *range(0, 72)]) * 1.0 for _ in range(n)],
        gender=[rng.choice(["Male", "Female"]) for _ in range(n)],
        MonthlyCharges=[rng.uniform(10, 120) for _ in range(n)],
    )
    batch = FactorTable(FACTORS, TELCO).top(cols, n)
    for i in range(n):
        alone = {name: [values[i]] for name, values in cols.items()}
        assert FactorTable(FACTORS, TELCO).top(alone, 1)[0] == batch[i]


def test_a_broken_factor_table_is_refused():
    broken = {"features": {"tenure": {"kind": "numeric", "edges": [1.0, 2.0], "effects": [0.1]}}}
    with pytest.raises(ChurnOpsError, match="1 effects for 2 edges"):
        FactorTable(broken, TELCO)
    with pytest.raises(ChurnOpsError, match="no 'features'"):
        FactorTable({"baseline": 0.0}, TELCO)
