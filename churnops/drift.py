"""Drift: reference statistics stored with a model, and a report comparing fresh data to them.

Population Stability Index per feature: PSI = sum((a - e) * ln(a / e)) over bins, where e is a
bin's share in the reference (training) data and a its share in the latest data. Numeric features
use the reference's deciles as bin edges; categorical features use the contract's allowed values.
Missing values are a bin of their own, so a feature that starts arriving blank drifts too.
The usual reading: < 0.1 stable, 0.1-0.2 moderate, > 0.2 drifted (flagged here).

The same bins and PSI are measured in two places, published under different metric names
because they mean different things to the pipeline:
- the retrain's snapshot of the customer table against the champion's reference (this module's
  `drift_report`, published by churnops/retrain/drift.py as `wiring.SNAPSHOT_DRIFT_METRIC`). It only
  alerts: if a retrain's own finding could start a retrain, every retrain that saw drift would
  start another, and the two would race on the champion pointer.
- the customers the serving function scores, window by window, against the serving champion's
  reference (churnops/serving/monitoring.py `LiveDriftWindow`, `wiring.LIVE_DRIFT_METRIC`). The alarm that
  starts the retrain state machine watches this one, which no retrain publishes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from churnops.contract import Contract

PSI_DRIFT_THRESHOLD = 0.2
NUMERIC_BINS = 10
_EPS = 1e-4  # floor on a bin's share: an empty bin would make the log infinite
MISSING = "__missing__"


def _numeric_edges(values: npt.NDArray[np.float64]) -> list[float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return []
    quantiles = np.quantile(values, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
    return [float(v) for v in np.unique(quantiles)]


def _numeric_counts(values: npt.NDArray[np.float64], edges: list[float]) -> npt.NDArray[np.int64]:
    """Counts of len(edges)+1 bins (searchsorted side='right'), then the missing count."""
    missing = np.isnan(values)
    bins = np.searchsorted(np.asarray(edges, dtype=float), values[~missing], side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return np.append(counts, missing.sum()).astype(np.int64)


def _numeric_shares(values: npt.NDArray[np.float64], edges: list[float]) -> list[float]:
    """Shares of len(edges)+1 bins (searchsorted side='right'), then the missing share."""
    n = max(values.size, 1)
    return [float(c) / n for c in _numeric_counts(values, edges)]


def _category_counts(values: pd.Series[Any], allowed: list[str]) -> dict[str, int]:
    """Count per allowed value, then MISSING; a value outside `allowed` has no bin."""
    counts = values.astype(object).where(values.notna(), MISSING).value_counts()
    out = {v: int(counts.get(v, 0)) for v in allowed}
    out[MISSING] = int(counts.get(MISSING, 0))
    return out


def _category_shares(values: pd.Series[Any], allowed: list[str]) -> dict[str, float]:
    n = max(len(values), 1)
    return {v: float(c) / n for v, c in _category_counts(values, allowed).items()}


def reference_statistics(clean: pd.DataFrame, contract: Contract) -> dict[str, Any]:
    """Per-feature reference distributions of the training data (JSON-serialisable)."""
    features: dict[str, Any] = {}
    for col in contract.feature_columns:
        series = clean[col.name]
        if col.is_numeric:
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
            edges = _numeric_edges(values)
            features[col.name] = {
                "kind": "numeric",
                "edges": edges,
                "shares": _numeric_shares(values, edges),
                "mean": float(np.nanmean(values)) if np.isfinite(values).any() else None,
            }
        else:
            features[col.name] = {
                "kind": "category",
                "shares": _category_shares(series, list(col.allowed or ())),
            }
    return {"rows": len(clean), "contract": contract.name, "features": features}


def psi(expected: list[float], actual: list[float]) -> float:
    e = np.clip(np.asarray(expected, dtype=float), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


class DriftCounts:
    """The latest data counted into the reference's bins, frame by frame: a table read part by
    part gives the same report as the whole table at once (counts add up; shares and PSI are
    computed from the totals at the end), in the memory of one part."""

    def __init__(self, reference_stats: dict[str, Any], contract: Contract) -> None:
        self.reference_stats = reference_stats
        reference = reference_stats.get("features", {})
        # Feature -> its reference entry, in the contract's order (features the reference lacks
        # are not compared).
        self._features = {
            col.name: reference[col.name]
            for col in contract.feature_columns
            if reference.get(col.name) is not None
        }
        self._counts: dict[str, npt.NDArray[np.int64]] = {}
        for name, ref in self._features.items():
            bins = len(ref["edges"]) + 2 if ref["kind"] == "numeric" else len(ref["shares"])
            self._counts[name] = np.zeros(bins, dtype=np.int64)
        self.rows = 0

    @property
    def columns(self) -> list[str]:
        """The columns `add` reads."""
        return list(self._features)

    def add(self, frame: pd.DataFrame) -> DriftCounts:
        for name, ref in self._features.items():
            series = frame[name]
            if ref["kind"] == "numeric":
                values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
                self._counts[name] += _numeric_counts(values, ref["edges"])
            else:
                keys = list(ref["shares"].keys())  # the allowed values, then MISSING
                counted = _category_counts(series, [k for k in keys if k != MISSING])
                self._counts[name] += np.asarray([counted.get(k, 0) for k in keys])
        self.rows += len(frame)
        return self

    def report(self, *, threshold: float = PSI_DRIFT_THRESHOLD) -> dict[str, Any]:
        """PSI and missing share per feature of everything added against the reference."""
        n = max(self.rows, 1)
        features: dict[str, Any] = {}
        for name, ref in self._features.items():
            shares = [float(c) / n for c in self._counts[name]]
            if ref["kind"] == "numeric":
                expected = ref["shares"]
                missing, ref_missing = shares[-1], expected[-1]
            else:
                keys = list(ref["shares"].keys())
                expected = [ref["shares"][k] for k in keys]
                missing = shares[keys.index(MISSING)]
                ref_missing = ref["shares"][MISSING]
            value = psi(expected, shares)
            features[name] = {
                "psi": round(value, 6),
                "missing_share": missing,
                "reference_missing_share": ref_missing,
                "drifted": value > threshold,
            }
        drifted = sorted(
            (name for name, f in features.items() if f["drifted"]),
            key=lambda name: -features[name]["psi"],
        )
        return {
            "rows": self.rows,
            "reference_rows": self.reference_stats.get("rows"),
            "threshold": threshold,
            "features": features,
            "drifted_features": drifted,
            "max_psi": max((f["psi"] for f in features.values()), default=0.0),
        }


def drift_report(
    reference_stats: dict[str, Any],
    clean: pd.DataFrame,
    contract: Contract,
    *,
    threshold: float = PSI_DRIFT_THRESHOLD,
) -> dict[str, Any]:
    """PSI and missing share per feature of `clean` against `reference_stats`."""
    return DriftCounts(reference_stats, contract).add(clean).report(threshold=threshold)
