"""Challenger versus champion on the same holdout, with a paired bootstrap.

Both models score the same customers, and every bootstrap resample is applied to both at once, so
the interval is for the *difference* and the customers both models find easy or hard cancel out.
That makes the interval far narrower than comparing two separate intervals, which is what lets a
small real improvement through and keeps noise out.

The resamples are `churnops.evaluation`'s bootstrap (the one training's holdout interval uses too):
multinomial counts as weights, drawn a block at a time, every metric computed on the same block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from churnops.contract import Contract
from churnops.errors import ChurnOpsError
from churnops.evaluation import (
    BOOTSTRAP_BLOCK_VALUES,
    Outcomes,
    bootstrap_blocks,
    percentile_interval,
    weighted_roc_auc,
)
from churnops.scoring import decide
from churnops.wiring import PRIMARY_METRIC_NAMES, GateSettings


def _pr_auc(
    y: Outcomes, p: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    from sklearn.metrics import average_precision_score

    return np.array(
        [average_precision_score(y, p, sample_weight=w) for w in np.atleast_2d(weights)]
    )


# Higher is better for every primary metric; each takes (y, proba, weights[k, n]) -> [k].
PRIMARY_METRICS: dict[
    str,
    Callable[
        [Outcomes, npt.NDArray[np.float64], npt.NDArray[np.float64]],
        npt.NDArray[np.float64],
    ],
] = {
    "roc_auc": weighted_roc_auc,
    "pr_auc": _pr_auc,
}
assert tuple(PRIMARY_METRICS) == PRIMARY_METRIC_NAMES


def no_skill_value(metric: str, y: npt.NDArray[np.float64]) -> float:
    """What a model that ranks at random scores: 0.5 for ROC-AUC, the positive share for PR-AUC."""
    return 0.5 if metric == "roc_auc" else float(np.mean(y))


def brier(y: npt.NDArray[np.float64], p: npt.NDArray[np.float64]) -> float:
    return float(np.mean((p - y) ** 2))


def recall_at(y: npt.NDArray[np.float64], p: npt.NDArray[np.float64], threshold: float) -> float:
    positives = y == 1
    if not positives.any():
        return float("nan")
    return float(np.mean(decide(p[positives], threshold)))


def slice_labels(frame: pd.DataFrame, column: str, edges: tuple[float, ...]) -> pd.Series[str]:
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
    proba: npt.NDArray[np.float64]
    threshold: float


def _model_summary(
    metric: str, y: npt.NDArray[np.float64], scores: ModelScores, point: float, ci: list[float]
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
    rows: npt.NDArray[np.intp]
    differences: list[npt.NDArray[np.float64]]


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

    ch_blocks: list[npt.NDArray[np.float64]] = []
    cp_blocks: list[npt.NDArray[np.float64]] = []
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
            metric, y, challenger, ch_point, percentile_interval(ch_boot, settings.confidence)
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
        metric, y, champion, cp_point, percentile_interval(cp_boot, settings.confidence)
    )
    result["difference"] = {
        "point": ch_point - cp_point,
        "ci": percentile_interval(ch_boot - cp_boot, settings.confidence),
    }
    out = []
    for planned in slices:
        entry = planned.entry
        if entry["evaluable"]:
            ci = percentile_interval(np.concatenate(planned.differences), settings.confidence)
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
    y: npt.NDArray[np.float64],
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
