"""Paired bootstrap comparison of challenger and champion (churnops.retrain.evaluate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churnops.contract import TELCO
from churnops.errors import ChurnOpsError
from churnops.evaluation import SortedScores, bootstrap_counts
from churnops.retrain.evaluate import ModelScores, compare, slice_labels
from churnops.wiring import GateSettings

SETTINGS = GateSettings(n_bootstrap=400, seed=3)


def holdout(n: int, seed: int = 0) -> pd.DataFrame:
    """Customers with the target and the contract's slice columns, values from the contract."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {TELCO.target_column: rng.choice(TELCO.column(TELCO.target_column).allowed, n)}
    )
    for column, edges in TELCO.slices:
        col = TELCO.column(column)
        if edges:
            frame[column] = rng.integers(0, int(edges[-1] * 1.5), n)
        else:
            frame[column] = rng.choice(col.allowed, n)
    return frame


def noisy_scores(y: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Probabilities that rank churners higher, less so as `noise` grows."""
    rng = np.random.default_rng(seed)
    logit = (y * 2 - 1) + rng.normal(0, noise, len(y))
    return 1 / (1 + np.exp(-logit))


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auc_matches_sklearn_with_sample_weights(ties: bool) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = rng.random(500)
    if ties:
        p = np.round(p, 1)  # many tied scores: each tied pair counts one half
    counts = bootstrap_counts(500, 5, seed=2)
    ours = SortedScores(y, p).auc(counts)
    theirs = [roc_auc_score(y, p, sample_weight=w) for w in counts]
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_bootstrap_counts_resample_every_row_count_once_per_draw() -> None:
    counts = bootstrap_counts(300, 50, seed=9)
    assert counts.shape == (50, 300)
    assert (counts.sum(axis=1) == 300).all()
    # Same seed, same resamples: a decision can be reproduced from its settings.
    np.testing.assert_array_equal(counts, bootstrap_counts(300, 50, seed=9))


def test_slice_labels_band_numeric_columns_by_the_contract_edges() -> None:
    column, edges = next(s for s in TELCO.slices if s[1])
    frame = pd.DataFrame({column: [0, 11, 12, 47, 48, 70]})
    labels = slice_labels(frame, column, edges).tolist()
    assert labels[0] == labels[1] == f"{column} <{edges[0]:g}"
    assert labels[2] == f"{column} {edges[0]:g}-{edges[1]:g}"
    assert labels[4] == labels[5] == f"{column} {edges[-1]:g}+"


def test_paired_interval_is_narrower_than_unpaired_for_correlated_models() -> None:
    # GIVEN two models that share most of their errors (as a retrained model does)
    frame = holdout(3000)
    y = TELCO.target_vector(frame)
    shared = noisy_scores(y, 1.5, seed=4)
    rng = np.random.default_rng(5)
    champion = ModelScores("champ", shared, 0.5)
    challenger = ModelScores("chall", np.clip(shared + rng.normal(0, 0.02, len(y)), 0, 1), 0.5)
    # WHEN compared
    result = compare(frame, TELCO, challenger, champion, SETTINGS)
    # THEN the interval of the difference is much narrower than either model's own interval
    d_lo, d_hi = result["difference"]["ci"]
    c_lo, c_hi = result["challenger"]["roc_auc_ci"]
    assert d_lo <= result["difference"]["point"] <= d_hi
    assert (d_hi - d_lo) < (c_hi - c_lo) / 3


def test_clearly_better_challenger_has_interval_above_zero() -> None:
    frame = holdout(3000, seed=1)
    y = TELCO.target_vector(frame)
    champion = ModelScores("champ", noisy_scores(y, 2.5, seed=1), 0.5)
    challenger = ModelScores("chall", noisy_scores(y, 1.0, seed=1), 0.5)
    result = compare(frame, TELCO, challenger, champion, SETTINGS)
    assert result["difference"]["point"] > 0.05
    assert result["difference"]["ci"][0] > 0
    assert result["challenger"]["roc_auc"] == pytest.approx(roc_auc_score(y, challenger.proba))
    assert result["holdout_positives"] == int(y.sum())


def test_without_champion_only_the_challenger_is_measured() -> None:
    frame = holdout(1000)
    y = TELCO.target_vector(frame)
    proba = noisy_scores(y, 1, 0)
    result = compare(frame, TELCO, ModelScores("v1", proba, 0.4), None, SETTINGS)
    assert result["champion"] is None and result["difference"] is None
    assert result["slices"] == []
    assert result["challenger"]["recall_at_threshold"] == pytest.approx(
        float(np.mean(proba[y == 1] >= 0.4))
    )
    assert result["challenger"]["brier"] == pytest.approx(float(np.mean((proba - y) ** 2)))


def test_slice_where_challenger_loses_is_flagged_as_clear_loss() -> None:
    # GIVEN a challenger better overall but useless on month-to-month customers
    frame = holdout(6000, seed=2)
    y = TELCO.target_vector(frame)
    column = next(c for c, edges in TELCO.slices if not edges)
    victim = TELCO.column(column).allowed[0]
    good = noisy_scores(y, 0.8, seed=6)
    champion_p = noisy_scores(y, 1.2, seed=7)
    challenger_p = good.copy()
    rows = (frame[column] == victim).to_numpy()
    challenger_p[rows] = np.random.default_rng(8).random(rows.sum())
    result = compare(
        frame,
        TELCO,
        ModelScores("chall", challenger_p, 0.5),
        ModelScores("champ", champion_p, 0.5),
        SETTINGS,
    )
    by_slice = {s["slice"]: s for s in result["slices"]}
    assert by_slice[victim]["clear_loss"] is True
    assert by_slice[victim]["ci"][1] < 0
    others = [s for s in result["slices"] if s["column"] == column and s["slice"] != victim]
    assert others and not any(s["clear_loss"] for s in others)
    # Small slices are not judged: every reported slice is at least the minimum share.
    assert all(s["share"] >= SETTINGS.slice_min_share for s in result["slices"])


def test_holdout_with_one_class_is_refused_with_a_clear_error() -> None:
    frame = holdout(50)
    frame[TELCO.target_column] = TELCO.negative_label
    with pytest.raises(ChurnOpsError, match="both churned and retained"):
        compare(frame, TELCO, ModelScores("v", np.full(50, 0.2), 0.5), None, SETTINGS)
