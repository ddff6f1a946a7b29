"""Challenger versus champion on the same holdout, with a paired bootstrap.

Both models score the same customers, and every bootstrap resample is applied to both at once, so
the interval is for the *difference* and the customers both models find easy or hard cancel out.
That makes the interval far narrower than comparing two separate intervals, which is what lets a
small real improvement through and keeps noise out.

Resamples are drawn as multinomial counts (how often each row is picked) and every metric is
computed with those counts as weights; for ROC-AUC the rows are sorted once per model and each
resample costs one pass of cumulative sums, so a thousand resamples of a large holdout stay cheap.
The counts are drawn and used a block of resamples at a time (`BOOTSTRAP_BLOCK_VALUES` counts per
block, 64 MB): the whole [n_bootstrap, n] matrix of a 100,000-row holdout would be 800 MB, and
each metric makes copies of it. The blocks come from one generator in order, so they are exactly
the rows `bootstrap_counts` returns, and the figures do not depend on the block size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.contract import Contract
from churnops.errors import ChurnOpsError
from churnops.retrain.settings import PRIMARY_METRIC_NAMES, GateSettings


class _SortedScores:
    """Scores sorted once, with tie groups, for weighted ROC-AUC over many weight vectors."""

    def __init__(self, y: np.ndarray, scores: np.ndarray) -> None:
        order = np.argsort(scores, kind="mergesort")
        sorted_scores = scores[order]
        self.order = order
        self.y = y[order].astype(np.float64)
        # Start index of each run of equal scores: tied pairs count one half, as in sklearn.
        starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
        self.starts = starts

    def auc(self, weights: np.ndarray) -> np.ndarray:
        """ROC-AUC for each row of `weights` (shape [k, n] in original row order)."""
        w = np.atleast_2d(weights)[:, self.order]
        pos = np.add.reduceat(w * self.y, self.starts, axis=1)
        neg = np.add.reduceat(w * (1.0 - self.y), self.starts, axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        total_pos = pos.sum(axis=1)
        total_neg = neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)


def _roc_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return _SortedScores(y, p).auc(weights)


def _pr_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    from sklearn.metrics import average_precision_score

    return np.array(
        [average_precision_score(y, p, sample_weight=w) for w in np.atleast_2d(weights)]
    )


# Higher is better for every primary metric; each takes (y, proba, weights[k, n]) -> [k].
PRIMARY_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "roc_auc": _roc_auc,
    "pr_auc": _pr_auc,
}
assert tuple(PRIMARY_METRICS) == PRIMARY_METRIC_NAMES


def no_skill_value(metric: str, y: np.ndarray) -> float:
    """What a model that ranks at random scores: 0.5 for ROC-AUC, the positive share for PR-AUC."""
    return 0.5 if metric == "roc_auc" else float(np.mean(y))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def recall_at(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    positives = y == 1
    if not positives.any():
        return float("nan")
    return float(np.mean(p[positives] >= threshold))


# Counts held at once while bootstrapping (8 bytes each): 64 MB per block of resamples.
BOOTSTRAP_BLOCK_VALUES = 8_000_000


def bootstrap_blocks(
    n: int, n_bootstrap: int, seed: int, block_values: int = BOOTSTRAP_BLOCK_VALUES
) -> Iterator[np.ndarray]:
    """`bootstrap_counts` in blocks of resamples ([k, n] each, k * n <= block_values unless one
    resample alone is larger), drawn in order from one generator: concatenated, the blocks are
    exactly `bootstrap_counts(n, n_bootstrap, seed)`."""
    rng = np.random.default_rng(seed)
    pvals = np.full(n, 1.0 / n)
    per_block = max(1, block_values // max(n, 1))
    for start in range(0, n_bootstrap, per_block):
        size = min(per_block, n_bootstrap - start)
        yield rng.multinomial(n, pvals, size=size).astype(np.float64)


def bootstrap_counts(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """[n_bootstrap, n] multinomial counts: how often each row appears in each resample."""
    return np.concatenate(list(bootstrap_blocks(n, n_bootstrap, seed, n * n_bootstrap)))


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def slice_labels(frame: pd.DataFrame, column: str, edges: tuple[float, ...]) -> pd.Series:
    """One label per row: the category itself, or the band of a numeric column ("tenure 12-24")."""
    if not edges:
        return frame[column].astype(str).rename(column)
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bins = np.searchsorted(np.asarray(edges), values, side="right")
    bounds = [None, *edges, None]
    names = []
    for i in range(len(edges) + 1):
        lo, hi = bounds[i], bounds[i + 1]
        if lo is None:
            names.append(f"{column} <{hi:g}")
        elif hi is None:
            names.append(f"{column} {lo:g}+")
        else:
            names.append(f"{column} {lo:g}-{hi:g}")
    return pd.Series(np.asarray(names, dtype=object)[bins], index=frame.index, name=column)


@dataclass(frozen=True)
class ModelScores:
    """One model's probabilities on the holdout, with the threshold it decides at."""

    version: str
    proba: np.ndarray
    threshold: float


def _model_summary(
    metric: str, y: np.ndarray, scores: ModelScores, point: float, ci: list[float]
) -> dict[str, Any]:
    return {
        "version": scores.version,
        "threshold": scores.threshold,
        metric: point,
        f"{metric}_ci": ci,
        "brier": brier(y, scores.proba),
        "recall_at_threshold": recall_at(y, scores.proba, scores.threshold),
    }


@dataclass
class _SliceRows:
    """A slice large enough to matter, with its resampled differences as blocks arrive."""

    entry: dict[str, Any]
    rows: np.ndarray
    differences: list[np.ndarray]


def compare(
    frame: pd.DataFrame,
    contract: Contract,
    challenger: ModelScores,
    champion: ModelScores | None,
    settings: GateSettings,
    *,
    block_values: int = BOOTSTRAP_BLOCK_VALUES,
) -> dict[str, Any]:
    """Everything the gate needs, as plain JSON: both models' metrics, the paired difference of
    the primary metric with its interval, the guard metrics and the per-slice comparison."""
    y = contract.target_vector(frame).astype(np.float64)
    n = len(y)
    if n == 0 or y.min() == y.max():
        raise ChurnOpsError(
            f"holdout of {n} rows needs both churned and retained customers to compare models"
        )
    metric = settings.primary_metric
    score = PRIMARY_METRICS[metric]
    ones = np.ones((1, n))
    slices = _plan_slices(frame, contract, y, challenger, champion, settings) if champion else []

    ch_blocks: list[np.ndarray] = []
    cp_blocks: list[np.ndarray] = []
    for counts in bootstrap_blocks(n, settings.n_bootstrap, settings.seed, block_values):
        ch_blocks.append(score(y, challenger.proba, counts))
        if champion is None:
            continue
        cp_blocks.append(score(y, champion.proba, counts))
        for planned in slices:
            if not planned.entry["evaluable"]:
                continue
            sub = counts[:, planned.rows]
            ys = y[planned.rows]
            planned.differences.append(
                score(ys, challenger.proba[planned.rows], sub)
                - score(ys, champion.proba[planned.rows], sub)
            )

    ch_point = float(score(y, challenger.proba, ones)[0])
    ch_boot = np.concatenate(ch_blocks)
    result: dict[str, Any] = {
        "primary_metric": metric,
        "holdout_rows": n,
        "holdout_positives": int(y.sum()),
        "no_skill_value": no_skill_value(metric, y),
        "n_bootstrap": settings.n_bootstrap,
        "confidence": settings.confidence,
        "challenger": _model_summary(
            metric, y, challenger, ch_point, _interval(ch_boot, settings.confidence)
        ),
        "champion": None,
        "difference": None,
        "slices": [],
    }
    if champion is None:
        return result

    cp_point = float(score(y, champion.proba, ones)[0])
    cp_boot = np.concatenate(cp_blocks)
    result["champion"] = _model_summary(
        metric, y, champion, cp_point, _interval(cp_boot, settings.confidence)
    )
    result["difference"] = {
        "point": ch_point - cp_point,
        "ci": _interval(ch_boot - cp_boot, settings.confidence),
    }
    out = []
    for planned in slices:
        entry = planned.entry
        if entry["evaluable"]:
            ci = _interval(np.concatenate(planned.differences), settings.confidence)
            entry.update(
                ci=ci,
                clear_loss=bool(entry["difference"] < -settings.slice_tolerance and ci[1] < 0),
            )
        out.append(entry)
    result["slices"] = out
    return result


def _plan_slices(
    frame: pd.DataFrame,
    contract: Contract,
    y: np.ndarray,
    challenger: ModelScores,
    champion: ModelScores,
    settings: GateSettings,
) -> list[_SliceRows]:
    """The slices large enough to matter, with their point figures; the paired intervals come
    from the same resamples restricted to each slice's rows, added block by block in `compare`.
    A slice with one class only cannot be scored (evaluable=False, never a clear loss) and takes
    no resamples."""
    score = PRIMARY_METRICS[settings.primary_metric]
    out = []
    for column, edges in contract.slices:
        labels = slice_labels(frame, column, edges).to_numpy()
        for label in sorted(set(labels)):
            rows = labels == label
            share = float(rows.mean())
            if share < settings.slice_min_share:
                continue
            ys = y[rows]
            entry: dict[str, Any] = {
                "column": column,
                "slice": str(label),
                "rows": int(rows.sum()),
                "share": share,
            }
            if ys.min() == ys.max():
                # One class only: the metric is undefined, so the slice cannot show a loss.
                entry.update(evaluable=False, clear_loss=False)
                out.append(_SliceRows(entry, np.flatnonzero(rows), []))
                continue
            ones = np.ones((1, int(rows.sum())))
            ch = float(score(ys, challenger.proba[rows], ones)[0])
            cp = float(score(ys, champion.proba[rows], ones)[0])
            entry.update(evaluable=True, challenger=ch, champion=cp, difference=ch - cp)
            out.append(_SliceRows(entry, np.flatnonzero(rows), []))
    return out
