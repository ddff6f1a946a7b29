"""The promotion gate (churnops.retrain.gate) on real comparisons from evaluate.compare."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from churnops.contract import TELCO
from churnops.errors import ChurnOpsError
from churnops.retrain.evaluate import ModelScores, compare
from churnops.retrain.gate import decide
from churnops.wiring import GateSettings

SETTINGS = GateSettings(n_bootstrap=300, seed=11)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 4000
    data = {TELCO.target_column: rng.choice(TELCO.column(TELCO.target_column).allowed, n)}
    for column, edges in TELCO.slices:
        data[column] = (
            rng.integers(0, int(edges[-1] * 1.5), n)
            if edges
            else rng.choice(TELCO.column(column).allowed, n)
        )
    return pd.DataFrame(data)


def scores(frame: pd.DataFrame, noise: float, seed: int) -> np.ndarray:
    y = TELCO.target_vector(frame)
    logit = (y * 2 - 1) + np.random.default_rng(seed).normal(0, noise, len(y))
    return 1 / (1 + np.exp(-logit))


def evaluation(frame, challenger, champion, settings=SETTINGS, thresholds=(0.5, 0.5)):  # type: ignore[no-untyped-def]
    champ = None if champion is None else ModelScores("champ", champion, thresholds[1])
    return compare(frame, TELCO, ModelScores("chall", challenger, thresholds[0]), champ, settings)


def failed(decision) -> set[str]:  # type: ignore[no-untyped-def]
    return {c.name for c in decision.checks if not c.passed}


def test_better_challenger_is_promoted(frame: pd.DataFrame) -> None:
    decision = decide(evaluation(frame, scores(frame, 1.0, 1), scores(frame, 2.0, 1)), SETTINGS)
    assert decision.promote, decision.reasons
    assert decision.reasons == []
    assert {c.name for c in decision.checks} == {
        "skill",
        "quality_floor",
        "improvement",
        "guard_brier",
        "guard_recall",
        "slices",
    }


def test_equal_challenger_is_not_promoted(frame: pd.DataFrame) -> None:
    same = scores(frame, 1.5, 2)
    decision = decide(evaluation(frame, same.copy(), same), SETTINGS)
    assert not decision.promote
    assert failed(decision) == {"improvement"}
    assert "needs >=" in decision.reasons[0]


def test_worse_challenger_is_not_promoted(frame: pd.DataFrame) -> None:
    decision = decide(evaluation(frame, scores(frame, 2.0, 3), scores(frame, 1.0, 3)), SETTINGS)
    assert not decision.promote
    assert "improvement" in failed(decision)


def test_gain_below_margin_is_not_promoted_even_with_interval_above_zero(
    frame: pd.DataFrame,
) -> None:
    # GIVEN a real but small improvement, and a margin larger than it
    ev = evaluation(frame, scores(frame, 1.0, 4), scores(frame, 1.3, 4))
    assert ev["difference"]["ci"][0] > 0
    strict = GateSettings(n_bootstrap=300, seed=11, margin=ev["difference"]["point"] + 0.01)
    # THEN the default margin promotes it and the stricter one does not
    assert decide(ev, SETTINGS).promote
    assert failed(decide(ev, strict)) == {"improvement"}


def test_interval_touching_zero_blocks_promotion_whatever_the_point_estimate(
    frame: pd.DataFrame,
) -> None:
    ev = evaluation(frame, scores(frame, 1.0, 5), scores(frame, 2.0, 5))
    ev = copy.deepcopy(ev)
    ev["difference"]["ci"][0] = -0.001
    assert failed(decide(ev, SETTINGS)) == {"improvement"}


def test_no_skill_challenger_is_never_promoted_even_without_champion(frame: pd.DataFrame) -> None:
    coin = np.random.default_rng(6).random(len(frame))
    decision = decide(evaluation(frame, coin, None), SETTINGS)
    assert not decision.promote
    assert {"skill", "quality_floor"} <= failed(decision)


def test_first_model_with_skill_is_promoted_without_champion(frame: pd.DataFrame) -> None:
    decision = decide(evaluation(frame, scores(frame, 1.0, 7), None), SETTINGS)
    assert decision.promote
    assert any(c.name == "no_champion" for c in decision.checks)


def test_quality_floor_applies_to_first_model(frame: pd.DataFrame) -> None:
    ev = evaluation(frame, scores(frame, 2.5, 8), None)
    lower = ev["challenger"]["roc_auc_ci"][0]
    assert lower > 0.5  # it has skill ...
    high_floor = GateSettings(n_bootstrap=300, seed=11, quality_floor=lower + 0.01)
    assert failed(decide(ev, high_floor)) == {"quality_floor"}  # ... but not enough


def test_brier_regression_beyond_tolerance_blocks_promotion(frame: pd.DataFrame) -> None:
    # GIVEN a challenger that ranks better but is badly calibrated (probabilities squashed to 0.5)
    good = scores(frame, 1.0, 9)
    squashed = 0.5 + (good - 0.5) * 0.1
    ev = evaluation(frame, squashed, scores(frame, 2.0, 9))
    assert ev["difference"]["ci"][0] > 0
    decision = decide(ev, SETTINGS)
    assert "guard_brier" in failed(decision)
    assert not decision.promote


def test_recall_regression_beyond_tolerance_blocks_promotion(frame: pd.DataFrame) -> None:
    # GIVEN a better-ranking challenger whose own threshold catches far fewer churners
    ev = evaluation(frame, scores(frame, 1.0, 10), scores(frame, 2.0, 10), thresholds=(0.9, 0.5))
    decision = decide(ev, SETTINGS)
    assert "guard_recall" in failed(decision)
    assert not decision.promote


def test_clear_loss_on_a_large_slice_blocks_an_overall_winner(frame: pd.DataFrame) -> None:
    column = next(c for c, edges in TELCO.slices if not edges)
    victim = TELCO.column(column).allowed[0]
    challenger = scores(frame, 0.6, 12)
    rows = (frame[column] == victim).to_numpy()
    challenger[rows] = np.random.default_rng(13).random(rows.sum())
    ev = evaluation(frame, challenger, scores(frame, 2.5, 12))
    assert ev["difference"]["ci"][0] > 0  # it wins overall ...
    decision = decide(ev, SETTINGS)
    assert failed(decision) == {"slices"}  # ... but loses a whole contract type
    assert victim in decision.reasons[0]


def test_settings_round_trip_through_environment_and_reject_bad_values() -> None:
    custom = GateSettings(margin=0.02, primary_metric="pr_auc", n_bootstrap=500)
    assert GateSettings.from_env(custom.to_env()) == custom
    with pytest.raises(ChurnOpsError, match="GATE_MARGIN"):
        GateSettings.from_env({"GATE_MARGIN": "lots"})
    with pytest.raises(ChurnOpsError, match="unknown primary metric"):
        GateSettings(primary_metric="accuracy")


def test_pr_auc_as_primary_metric_uses_prevalence_as_chance(frame: pd.DataFrame) -> None:
    settings = GateSettings(primary_metric="pr_auc", n_bootstrap=100, seed=1)
    ev = evaluation(frame, scores(frame, 1.0, 14), scores(frame, 2.0, 14), settings=settings)
    assert ev["no_skill_value"] == pytest.approx(TELCO.target_vector(frame).mean())
    assert decide(ev, settings).promote
