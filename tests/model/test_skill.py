"""Known skill on synthetic data, and no skill on the insurance data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churnops.contract import TELCO, get_contract
from churnops.errors import ChurnOpsError
from churnops.evaluation import CostPolicy, choose_threshold
from churnops.model import model_frame, positive_probability
from churnops.registry import Registry
from churnops.synthetic import churn_probability, generate
from churnops.training import TrainingOptions, register_result, train


def test_synthetic_model_reaches_the_known_skill(synthetic_result) -> None:  # type: ignore[no-untyped-def]
    # GIVEN customers from another seed, whose true churn probabilities we know
    fresh = TELCO.validate(generate(20_000, seed=777)).clean
    y = TELCO.target_vector(fresh)
    best_possible = roc_auc_score(y, churn_probability(fresh))
    # WHEN the model trained on 8,000 synthetic customers scores them
    achieved = roc_auc_score(
        y, positive_probability(synthetic_result.model, model_frame(fresh, TELCO))
    )
    # THEN it gets close to the best any model can do, and is eligible
    assert achieved > best_possible - 0.02
    assert achieved <= best_possible + 0.01  # it cannot beat the truth by more than noise
    assert synthetic_result.status == "champion-eligible"


def test_cost_policy_moves_the_threshold() -> None:
    # GIVEN calibrated scores (the true probabilities) and labels drawn from them
    customers = generate(20_000, seed=8)
    p = churn_probability(customers)
    y = TELCO.target_vector(customers)
    # WHEN offers are cheap relative to a lost customer THEN more customers are flagged; the
    # chosen threshold sits near the cost ratio, as decision theory says for calibrated scores
    cheap = choose_threshold(y, p, CostPolicy(offer_cost=5, churn_cost=50))
    dear = choose_threshold(y, p, CostPolicy(offer_cost=30, churn_cost=50))
    assert cheap < dear
    assert abs(cheap - 0.1) < 0.05 and abs(dear - 0.6) < 0.08
    f1 = choose_threshold(y, p, CostPolicy())
    assert 0.2 < f1 < 0.5
    with pytest.raises(ChurnOpsError):
        CostPolicy(offer_cost=5)


def test_insurance_is_no_skill_and_never_champion(insurance_clean, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clean = insurance_clean
    result = train(clean, get_contract("insurance"), TrainingOptions(n_jobs=2))
    assert result.status == "no_skill"
    low, high = result.metrics["roc_auc_ci95"]
    assert low <= 0.5 <= high
    registry = Registry.open(str(tmp_path / "registry"))
    summary = register_result(result, registry, actor="test")
    assert summary["champion"]["promoted"] is False
    assert "no skill" in summary["champion"]["reason"]
    assert registry.champion() is None
    assert [h["action"] for h in registry.history()] == ["no_skill"]
    with pytest.raises(Exception, match="no_skill"):
        registry.promote(summary["version"], actor="test", reason="force")


def test_first_eligible_version_becomes_champion_and_later_ones_wait(
    synthetic_result, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    registry = Registry.open(str(tmp_path / "registry"))
    first = register_result(synthetic_result, registry, actor="test")
    second = register_result(synthetic_result, registry, actor="test")
    assert first["champion"]["promoted"] is True
    assert second["champion"]["promoted"] is False
    assert registry.champion()["version"] == first["version"]
    assert np.isclose(registry.card(second["version"])["threshold"], synthetic_result.threshold)
