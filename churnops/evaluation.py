"""Holdout metrics, the decision threshold, and the skill verdict.

The threshold is chosen on out-of-fold predictions of the training rows (never on the holdout),
then applied to the holdout, so the reported precision and recall are honest.

Cost policy: a retention offer costs `offer_cost` for every customer flagged; a churner who is not
flagged costs `churn_cost` (the value lost); a flagged churner is assumed kept by the offer.
The threshold minimises the total cost; with no costs configured it maximises F1 instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from churnops.errors import ChurnOpsError


@dataclass(frozen=True)
class CostPolicy:
    offer_cost: float | None = None
    churn_cost: float | None = None

    def __post_init__(self) -> None:
        given = (self.offer_cost is not None, self.churn_cost is not None)
        if given[0] != given[1]:
            raise ChurnOpsError("give both --offer-cost and --churn-cost, or neither (F1 is used)")
        if all(given) and (self.offer_cost <= 0 or self.churn_cost <= 0):  # type: ignore[operator]
            raise ChurnOpsError("--offer-cost and --churn-cost must be positive")

    @property
    def method(self) -> str:
        return "cost" if self.offer_cost is not None else "f1"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "method": self.method}


def _candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    grid = np.unique(np.quantile(scores, np.linspace(0.01, 0.99, 197)))
    return grid


def choose_threshold(y: np.ndarray, scores: np.ndarray, policy: CostPolicy) -> float:
    """Threshold t (predict churn when p >= t) by the cost policy, else by F1."""
    y = np.asarray(y).astype(int)
    best_t, best_value = 0.5, -np.inf
    for t in _candidate_thresholds(scores):
        flagged = scores >= t
        tp = int(np.sum(flagged & (y == 1)))
        fp = int(np.sum(flagged & (y == 0)))
        fn = int(np.sum(~flagged & (y == 1)))
        if policy.method == "cost":
            value = -(policy.offer_cost * (tp + fp) + policy.churn_cost * fn)  # type: ignore[operator]
        else:
            value = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if value > best_value:
            best_t, best_value = float(t), value
    return round(best_t, 6)


def bootstrap_auc_interval(
    y: np.ndarray, scores: np.ndarray, *, rounds: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of ROC-AUC (resampling customers)."""
    y = np.asarray(y).astype(int)
    rng = np.random.default_rng(seed)
    n = len(y)
    aucs = []
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue
        aucs.append(roc_auc_score(y[idx], scores[idx]))
    if not aucs:
        return (float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return float(low), float(high)


def top_decile_lift(y: np.ndarray, scores: np.ndarray) -> float:
    """Churn rate among the 10% highest-scored customers over the overall churn rate."""
    y = np.asarray(y).astype(int)
    k = max(1, int(np.ceil(len(y) * 0.1)))
    top = np.argsort(-scores, kind="stable")[:k]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


def holdout_metrics(
    y: np.ndarray, scores: np.ndarray, threshold: float, *, seed: int = 0
) -> dict[str, Any]:
    y = np.asarray(y).astype(int)
    if y.min() == y.max():
        raise ChurnOpsError("the holdout has only one class: cannot measure skill")
    predicted = (scores >= threshold).astype(int)
    low, high = bootstrap_auc_interval(y, scores, seed=seed)
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
