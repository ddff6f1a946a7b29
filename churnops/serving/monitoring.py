"""What serving measures about the models it runs, without pandas: the live drift window of the
champion's features, and the comparison of a rollout's candidate with the champion on the same
customers. One PSI, the bins and PSI of churnops/drift.py (which the serving image does not
carry: it copies only the serving modules); tests/unit/test_live_drift.py holds a window's PSI
equal to drift_report's, and tests/unit/test_serving_rollout.py the score comparison's.
"""

from __future__ import annotations

import hashlib
import math
import threading
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from churnops.contract import Contract
from churnops.wiring import DEFAULT_LIVE_DRIFT_WINDOW, DEFAULT_ROLLOUT_COMPARISON_WINDOW

PSI_DRIFT_THRESHOLD = 0.2
# The reference statistics' key for missing values, and the floor on a bin's share (as in
# churnops/drift.py).
_MISSING = "__missing__"
_EPS = 1e-4


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    total = 0.0
    for reference_share, share in zip(expected, actual, strict=True):
        e, a = max(reference_share, _EPS), max(share, _EPS)
        total += (a - e) * math.log(a / e)
    return total


class LiveDriftWindow:
    """PSI of the customers a server scores against the reference of the model that scores them.

    Each scored customer's values are counted into the reference's own bins as requests arrive
    (a bisect per number, a dict lookup per category: a few microseconds for a one-customer
    request, and nothing about a customer is kept but the counts). When `window` customers have
    been counted, the window's PSI per feature is computed as churnops.drift.drift_report would
    compute it on those customers, returned, and counting starts again. One window per model
    version: a new champion brings a new reference."""

    def __init__(
        self,
        reference_stats: Mapping[str, Any],
        contract: Contract,
        *,
        window: int = DEFAULT_LIVE_DRIFT_WINDOW,
        threshold: float = PSI_DRIFT_THRESHOLD,
    ) -> None:
        if window < 1:
            raise ValueError("a live drift window holds at least one customer")
        self.window = window
        self.threshold = threshold
        reference = reference_stats.get("features") or {}
        # Per feature: its name, how a value finds its bin, the bin of a missing value, and the
        # reference's shares in the same bin order.
        self._numeric: list[tuple[str, list[float], int, list[float]]] = []
        self._category: list[tuple[str, dict[str, int], int, list[float]]] = []
        for col in contract.feature_columns:
            ref = reference.get(col.name)
            if ref is None:
                continue
            if ref["kind"] == "numeric":
                edges = [float(e) for e in ref["edges"]]
                shares = [float(x) for x in ref["shares"]]  # bins, then missing
                self._numeric.append((col.name, edges, len(edges) + 1, shares))
            else:
                keys = list(ref["shares"])
                index = {key: i for i, key in enumerate(keys)}
                shares = [float(ref["shares"][key]) for key in keys]
                self._category.append((col.name, index, index[_MISSING], shares))
        self._lock = threading.Lock()  # the local server scores requests on several threads
        self._reset()

    def _reset(self) -> None:
        self._rows = 0
        self._numeric_counts = [[0] * len(f[3]) for f in self._numeric]
        self._category_counts = [[0] * len(f[3]) for f in self._category]

    def observe(self, columns: Mapping[str, Sequence[Any]], rows: int) -> dict[str, Any] | None:
        """Count `rows` scored customers (feature -> values, as the validator gives them: NaN
        for a missing number, None for a missing category). Returns the window's report when
        these customers complete it, else None."""
        with self._lock:
            for (name, edges, missing, _), counts in zip(
                self._numeric, self._numeric_counts, strict=True
            ):
                for x in columns[name]:
                    counts[missing if x is None or x != x else bisect_right(edges, x)] += 1
            for (name, index, missing, _), counts in zip(
                self._category, self._category_counts, strict=True
            ):
                for value in columns[name]:
                    # A value the reference never saw has no bin, as in drift_report.
                    j = missing if value is None else index.get(value)
                    if j is not None:
                        counts[j] += 1
            self._rows += rows
            if self._rows < self.window:
                return None
            report = self._report()
            self._reset()
            return report

    def _report(self) -> dict[str, Any]:
        rows = self._rows
        per_feature: dict[str, float] = {}
        for (name, *_, expected), counts in zip(
            [*self._numeric, *self._category],
            [*self._numeric_counts, *self._category_counts],
            strict=True,
        ):
            per_feature[name] = round(psi(expected, [c / rows for c in counts]), 6)
        drifted = sorted(
            (name for name, value in per_feature.items() if value > self.threshold),
            key=lambda name: -per_feature[name],
        )
        return {
            "rows": rows,
            "threshold": self.threshold,
            "psi": per_feature,
            "drifted_features": drifted,
            "max_psi": max(per_feature.values(), default=0.0),
        }


# Quantiles of the champion's scores that bound the bins of a comparison: deciles, as
# churnops.drift bins a numeric feature of the reference.
_SCORE_QUANTILES = [i / 10 for i in range(1, 10)]


def score_edges(scores: Sequence[float]) -> list[float]:
    """Bin edges of a score distribution: its deciles, without repeats (churnops.drift's rule
    for a numeric feature's reference bins)."""
    if not scores:
        return []
    return [float(v) for v in np.unique(np.quantile(np.asarray(scores), _SCORE_QUANTILES))]


def shares(values: Sequence[float], edges: list[float]) -> list[float]:
    """Share of `values` in each of the len(edges)+1 bins (a value on an edge goes right)."""
    counts = [0] * (len(edges) + 1)
    for x in values:
        counts[bisect_right(edges, x)] += 1
    n = max(len(values), 1)
    return [c / n for c in counts]


def bucket(rollout_id: str, customer_id: str) -> float:
    """A customer's place in [0, 1) for one rollout: the same customer, the same place for the
    whole rollout (and an independent one in the next)."""
    digest = hashlib.sha256(f"{rollout_id}\x00{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class ScoreComparison:
    """A rollout's candidate against the champion on the same customers, window by window.

    Each compared customer adds the two probabilities and whether the two decisions (each at its
    own model's threshold) differ; nothing else about a customer is kept. When `window`
    customers have been compared, the window's disagreement rate and the PSI of the candidate's
    scores against the champion's (bins: the deciles of the champion's scores in the window) are
    returned and counting starts again."""

    def __init__(self, *, window: int = DEFAULT_ROLLOUT_COMPARISON_WINDOW) -> None:
        if window < 1:
            raise ValueError("a comparison window holds at least one customer")
        self.window = window
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._champion: list[float] = []
        self._candidate: list[float] = []
        self._disagreements = 0

    def observe(
        self,
        champion: Sequence[float],
        candidate: Sequence[float],
        disagreements: int,
    ) -> dict[str, Any] | None:
        """Add the two models' probabilities for the same customers, in the same order, and how
        many of their decisions differ. Returns the window's report when they complete it."""
        with self._lock:
            self._champion.extend(champion)
            self._candidate.extend(candidate)
            self._disagreements += disagreements
            if len(self._champion) < self.window:
                return None
            report = self.report()
            self._reset()
            return report

    def report(self) -> dict[str, Any]:
        """The window so far (`observe` returns it when the window closes)."""
        rows = len(self._champion)
        edges = score_edges(self._champion)
        return {
            "rows": rows,
            "disagreement_rate": self._disagreements / rows if rows else 0.0,
            "score_psi": round(
                psi(shares(self._champion, edges), shares(self._candidate, edges)), 6
            ),
            "champion_mean": sum(self._champion) / rows if rows else 0.0,
            "candidate_mean": sum(self._candidate) / rows if rows else 0.0,
        }
