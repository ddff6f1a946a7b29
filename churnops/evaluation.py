"""Holdout metrics, the decision threshold, and the skill verdict.

The threshold is chosen on out-of-fold predictions of the training rows (never on the holdout),
then applied to the holdout, so the reported precision and recall are honest.

Cost policy: a retention offer costs `offer_cost` for every customer flagged; a churner who is not
flagged costs `churn_cost` (the value lost); a flagged churner is assumed kept by the offer.
The threshold minimises the total cost; with no costs configured it maximises F1 instead.

The bootstrap here is the one every metric interval uses (the retrain gate's too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from churnops.errors import ChurnOpsError
from churnops.scoring import decide

# What happened to each customer: 1 churned, 0 stayed; integer labels or floats alike (each use
# compares with 1 and 0 or casts).
Outcomes = npt.NDArray[np.number[Any]]


@dataclass(frozen=True)
class CostPolicy:
    offer_cost: float | None = None
    churn_cost: float | None = None

    def __post_init__(self) -> None:
        offer, churn = self.offer_cost, self.churn_cost
        if (offer is None) != (churn is None):
            raise ChurnOpsError("give both --offer-cost and --churn-cost, or neither (F1 is used)")
        if offer is not None and churn is not None and (offer <= 0 or churn <= 0):
            raise ChurnOpsError("--offer-cost and --churn-cost must be positive")

    @property
    def method(self) -> str:
        return "cost" if self.offer_cost is not None else "f1"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "method": self.method}


def _candidate_thresholds(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    grid: npt.NDArray[np.float64] = np.unique(np.quantile(scores, np.linspace(0.01, 0.99, 197)))
    return grid


def choose_threshold(y: Outcomes, scores: npt.NDArray[np.float64], policy: CostPolicy) -> float:
    """Threshold t (predict churn when p >= t) by the cost policy, else by F1."""
    y = np.asarray(y).astype(int)
    best_t, best_value = 0.5, -np.inf
    for t in _candidate_thresholds(scores):
        flagged = decide(scores, float(t)) == 1
        tp = int(np.sum(flagged & (y == 1)))
        fp = int(np.sum(flagged & (y == 0)))
        fn = int(np.sum(~flagged & (y == 1)))
        if policy.offer_cost is not None and policy.churn_cost is not None:  # method "cost"
            value = -(policy.offer_cost * (tp + fp) + policy.churn_cost * fn)
        else:
            value = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if value > best_value:
            best_t, best_value = float(t), value
    return round(best_t, 6)


def top_decile_lift(y: Outcomes, scores: npt.NDArray[np.float64]) -> float:
    """Churn rate among the 10% highest-scored customers over the overall churn rate."""
    y = np.asarray(y).astype(int)
    k = max(1, int(np.ceil(len(y) * 0.1)))
    top = np.argsort(-scores, kind="stable")[:k]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


# ---- the bootstrap ------------------------------------------------------------------------------
# The one resampling behind every metric interval: training's holdout ROC-AUC interval (the skill
# verdict) and the retrain gate's paired challenger-versus-champion intervals
# (churnops.retrain.evaluate). Resamples are multinomial counts (how often each row is picked) and
# a metric is computed with those counts as weights; for ROC-AUC the rows are sorted once and each
# resample costs one pass of cumulative sums, so a thousand resamples of a large holdout stay
# cheap. The counts are drawn a block of resamples at a time (`BOOTSTRAP_BLOCK_VALUES` counts, 64
# MB): the whole [n_bootstrap, n] matrix of a 100,000-row holdout would be 800 MB, and each metric
# makes copies of it. The blocks come from one generator in order, so they are exactly the rows
# `bootstrap_counts` returns, and the figures do not depend on the block size.

# Counts held at once while bootstrapping (8 bytes each): 64 MB per block of resamples.
BOOTSTRAP_BLOCK_VALUES = 8_000_000


def bootstrap_blocks(
    n: int, n_bootstrap: int, seed: int, block_values: int = BOOTSTRAP_BLOCK_VALUES
) -> Iterator[npt.NDArray[np.float64]]:
    """`bootstrap_counts` in blocks of resamples ([k, n] each, k * n <= block_values unless one
    resample alone is larger), drawn in order from one generator: concatenated, the blocks are
    exactly `bootstrap_counts(n, n_bootstrap, seed)`."""
    rng = np.random.default_rng(seed)
    pvals = np.full(n, 1.0 / n)
    per_block = max(1, block_values // max(n, 1))
    for start in range(0, n_bootstrap, per_block):
        size = min(per_block, n_bootstrap - start)
        yield rng.multinomial(n, pvals, size=size).astype(np.float64)


def bootstrap_counts(n: int, n_bootstrap: int, seed: int) -> npt.NDArray[np.float64]:
    """[n_bootstrap, n] multinomial counts: how often each row appears in each resample."""
    return np.concatenate(list(bootstrap_blocks(n, n_bootstrap, seed, n * n_bootstrap)))


def percentile_interval(values: npt.NDArray[np.float64], confidence: float) -> list[float]:
    """The percentile interval of resampled values; a resample where the metric is undefined
    (one class only: NaN) is left out."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


class SortedScores:
    """Scores sorted once, with tie groups, for weighted ROC-AUC over many weight vectors."""

    def __init__(self, y: Outcomes, scores: npt.NDArray[np.float64]) -> None:
        order = np.argsort(scores, kind="mergesort")
        sorted_scores = scores[order]
        self.order = order
        self.y = y[order].astype(np.float64)
        # Start index of each run of equal scores: tied pairs count one half, as in sklearn.
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        self.starts = starts

    def auc(self, weights: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """ROC-AUC for each row of `weights` (shape [k, n] in original row order)."""
        w = np.atleast_2d(weights)[:, self.order]
        pos = np.add.reduceat(w * self.y, self.starts, axis=1)
        neg = np.add.reduceat(w * (1.0 - self.y), self.starts, axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        total_pos = pos.sum(axis=1)
        total_neg = neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            result: npt.NDArray[np.float64] = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (
                total_pos * total_neg
            )
        return result


def weighted_roc_auc(
    y: Outcomes, p: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """ROC-AUC for each row of `weights` ([k, n]); NaN where a resample has one class only."""
    return SortedScores(y, p).auc(weights)


def bootstrap_interval(
    metric: Callable[
        [Outcomes, npt.NDArray[np.float64], npt.NDArray[np.float64]],
        npt.NDArray[np.float64],
    ],
    y: Outcomes,
    scores: npt.NDArray[np.float64],
    *,
    n_bootstrap: int,
    seed: int,
    confidence: float,
) -> list[float]:
    """Percentile bootstrap interval of `metric` (y, scores, weights[k, n]) -> [k]."""
    resampled = [
        metric(y, scores, counts) for counts in bootstrap_blocks(len(y), n_bootstrap, seed)
    ]
    return percentile_interval(np.concatenate(resampled), confidence)


def holdout_metrics(
    y: Outcomes, scores: npt.NDArray[np.float64], threshold: float, *, seed: int = 0
) -> dict[str, Any]:
    y = np.asarray(y).astype(int)
    if y.min() == y.max():
        raise ChurnOpsError("the holdout has only one class: cannot measure skill")
    predicted = decide(scores, threshold)
    low, high = bootstrap_interval(
        weighted_roc_auc, y, scores, n_bootstrap=1000, seed=seed, confidence=0.95
    )
    return {
        "rows": len(y),
        "positive_rate": round(float(y.mean()), 6),
        "roc_auc": round(float(roc_auc_score(y, scores)), 6),
        "roc_auc_ci95": [round(low, 6), round(high, 6)],
        "pr_auc": round(float(average_precision_score(y, scores)), 6),
        "f1": round(float(f1_score(y, predicted, zero_division=0)), 6),
        "precision": round(float(precision_score(y, predicted, zero_division=0)), 6),
        "recall": round(float(recall_score(y, predicted, zero_division=0)), 6),
        "brier": round(float(brier_score_loss(y, scores)), 6),
        "lift_top_decile": round(top_decile_lift(y, scores), 6),
        "threshold": threshold,
    }


def skill_verdict(metrics: dict[str, Any], *, quality_floor: float) -> tuple[str, str]:
    """(status, reason). No skill: the AUC interval includes 0.5. Below floor: its lower bound
    does not exceed `quality_floor`. Otherwise eligible to become champion."""
    low, high = metrics["roc_auc_ci95"]
    auc = metrics["roc_auc"]
    if not (low > 0.5 or high < 0.5):
        return (
            "no_skill",
            f"no skill: holdout ROC-AUC {auc:.3f}, 95% interval [{low:.3f}, {high:.3f}] includes 0.5",
        )
    if low <= quality_floor:
        return (
            "below_floor",
            f"below the quality floor: ROC-AUC interval lower bound {low:.3f} <= {quality_floor:.3f}",
        )
    return (
        "champion-eligible",
        f"passes the quality floor: ROC-AUC {auc:.3f}, interval lower bound {low:.3f} > {quality_floor:.3f}",
    )
