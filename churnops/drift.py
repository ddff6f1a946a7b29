"""Drift: reference statistics stored with a model, and a report comparing fresh data to them.

Population Stability Index per feature: PSI = sum((a - e) * ln(a / e)) over bins, where e is a
bin's share in the reference (training) data and a its share in the latest data. Numeric features
use the reference's deciles as bin edges; categorical features use the contract's allowed values.
Missing values are a bin of their own, so a feature that starts arriving blank drifts too.
The usual reading: < 0.1 stable, 0.1-0.2 moderate, > 0.2 drifted (flagged here).

The same bins and PSI are measured in two places, published under different metric names
because they mean different things to the pipeline:
- the retrain's snapshot of the customer table against the champion's reference (this module's
  `drift_report`, published by churnops/retrain/drift.py as `SNAPSHOT_DRIFT_METRIC`). It only
  alerts: if a retrain's own finding could start a retrain, every retrain that saw drift would
  start another, and the two would race on the champion pointer.
- the customers the serving function scores, window by window, against the serving champion's
  reference (churnops/serving/app.py `LiveDriftWindow`, `LIVE_DRIFT_METRIC`). The alarm that
  starts the retrain state machine watches this one, which no retrain publishes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from churnops.contract import Contract

PSI_DRIFT_THRESHOLD = 0.2
NUMERIC_BINS = 10
_EPS = 1e-4  # floor on a bin's share: an empty bin would make the log infinite
MISSING = "__missing__"

# CloudWatch metric (namespace ChurnOps, no dimensions) of a retrain's snapshot drift.
SNAPSHOT_DRIFT_METRIC = "SnapshotMaxFeaturePSI"


def _numeric_edges(values: np.ndarray) -> list[float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return []
    quantiles = np.quantile(values, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
    return [float(v) for v in np.unique(quantiles)]


def _numeric_shares(values: np.ndarray, edges: list[float]) -> list[float]:
    """Shares of len(edges)+1 bins (searchsorted side='right'), then the missing share."""
    n = max(values.size, 1)
    missing = np.isnan(values)
    bins = np.searchsorted(np.asarray(edges, dtype=float), values[~missing], side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return [float(c) / n for c in counts] + [float(missing.sum()) / n]


def _category_shares(values: pd.Series, allowed: list[str]) -> dict[str, float]:
    n = max(len(values), 1)
    counts = values.astype(object).where(values.notna(), MISSING).value_counts()
    shares = {v: float(counts.get(v, 0)) / n for v in allowed}
    shares[MISSING] = float(counts.get(MISSING, 0)) / n
    return shares


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


def drift_report(
    reference_stats: dict[str, Any],
    clean: pd.DataFrame,
    contract: Contract,
    *,
    threshold: float = PSI_DRIFT_THRESHOLD,
) -> dict[str, Any]:
    """PSI and missing share per feature of `clean` against `reference_stats`."""
    features: dict[str, Any] = {}
    reference = reference_stats.get("features", {})
    for col in contract.feature_columns:
        ref = reference.get(col.name)
        if ref is None:
            continue
        series = clean[col.name]
        if ref["kind"] == "numeric":
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
            shares = _numeric_shares(values, ref["edges"])
            expected = ref["shares"]
            missing, ref_missing = shares[-1], expected[-1]
        else:
            allowed = list(ref["shares"].keys())
            current = _category_shares(series, [a for a in allowed if a != MISSING])
            expected = [ref["shares"][k] for k in allowed]
            shares = [current.get(k, 0.0) for k in allowed]
            missing, ref_missing = current[MISSING], ref["shares"][MISSING]
        value = psi(expected, shares)
        features[col.name] = {
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
        "rows": len(clean),
        "reference_rows": reference_stats.get("rows"),
        "threshold": threshold,
        "features": features,
        "drifted_features": drifted,
        "max_psi": max((f["psi"] for f in features.values()), default=0.0),
    }
