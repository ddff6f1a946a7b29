"""The MLP joins the cross-validated comparison and is kept only when it wins.

The comparison's rule (churnops.training): the best mean CV ROC-AUC wins, and among candidates
within `TIE_MARGIN` of the best the simplest family is kept. The MLP is the least simple, so it
is registered only when it beats every other candidate by more than `TIE_MARGIN`. Both sides are
shown with real training: on the real Telco file (whose churn is close to additive in the
features) a simpler family is kept; on synthetic customers whose churn is a non-monotone
function of a weighted sum of all their features, the MLP wins clearly and is registered with
its ONNX export."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnops.contract import TELCO
from churnops.model import FAMILIES
from churnops.synthetic import churn_probability, generate
from churnops.training import (
    ONNX_TOLERANCE,
    SIMPLICITY,
    TIE_MARGIN,
    TrainingOptions,
    TrainingResult,
    train,
)

pytestmark = pytest.mark.slow


def _best(candidates: list[dict[str, Any]], mlp: bool) -> float:
    """The best mean CV AUC of the MLP candidates, or of all the others."""
    return max(c["cv_auc_mean"] for c in candidates if (c["family"] == "mlp") == mlp)


def ridge_customers(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic customers (churnops.synthetic's population) whose churn is most likely in the
    middle of the generator's risk range: churn log-odds 1.5 - 2.5 |s - median(s)|, where s is
    the generator's own log-odds, a weighted sum of every feature. Two ReLU units express that
    exactly; a model additive in the features cannot bend it, and trees approximate the
    diagonal fold only in steps."""
    customers = generate(rows, seed=seed)
    risk = churn_probability(customers)
    s = np.log(risk / (1 - risk))
    logit = 1.5 - 2.5 * np.abs(s - np.median(s))
    draws = np.random.default_rng(seed).random(rows)
    customers["Churn"] = np.where(draws < 1 / (1 + np.exp(-logit)), "Yes", "No")
    return TELCO.validate(customers).clean


@pytest.fixture(scope="module")
def ridge_result() -> TrainingResult:
    """The full recipe, every family, on 4,000 such customers."""
    return train(ridge_customers(4000, seed=41), TELCO, TrainingOptions(n_jobs=2))


def test_the_mlp_is_the_least_simple_family() -> None:
    assert "mlp" in FAMILIES
    assert SIMPLICITY["mlp"] == max(SIMPLICITY.values())
    assert set(SIMPLICITY) == set(FAMILIES)


@pytest.mark.realdata
def test_on_real_telco_the_mlp_does_not_clear_the_margin_and_a_simpler_family_is_kept(
    telco_result,  # type: ignore[no-untyped-def]
) -> None:
    # GIVEN the full recipe on the real Telco file (every family, 5-fold CV)
    candidates = telco_result.candidates
    assert {c["family"] for c in candidates} == set(FAMILIES)
    # THEN the MLP does not beat the best simpler candidate by more than the tie margin
    assert _best(candidates, mlp=True) <= _best(candidates, mlp=False) + TIE_MARGIN
    # AND a simpler family is the one registered
    assert telco_result.family != "mlp"
    assert SIMPLICITY[telco_result.family] < SIMPLICITY["mlp"]


def test_on_a_non_linear_signal_the_mlp_wins_clearly_and_is_kept(ridge_result) -> None:  # type: ignore[no-untyped-def]
    # GIVEN customers whose churn folds along a weighted sum of their features
    candidates = ridge_result.candidates
    # THEN the MLP's CV AUC beats every other candidate's by more than the tie margin
    assert _best(candidates, mlp=True) > _best(candidates, mlp=False) + TIE_MARGIN
    # AND the MLP is registered, its ONNX export stored because it scores like scikit-learn
    assert ridge_result.family == "mlp"
    assert ridge_result.metrics["cv_auc_mean"] == _best(candidates, mlp=True)
    assert "model.onnx" in ridge_result.files
    assert ridge_result.metrics["onnx_max_abs_diff"] <= ONNX_TOLERANCE
    # AND it holds up on the holdout it never saw
    assert ridge_result.metrics["roc_auc"] > 0.8
