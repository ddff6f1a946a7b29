"""The champion as serving runs it: the ONNX graph (`churnops.scoring.OnnxModel`) and the card's
factor table.

The ONNX graph is the whole scikit-learn pipeline, preprocessing included, with one input per
contract feature (`[None, 1]`, string for categorical, float32 for numeric) and a `probabilities`
output. Feeding it per-column numpy arrays built straight from the validated JSON keeps pandas
off the hot path: a one-row DataFrame alone costs ten times the model.

The "why" of a score comes from the card's `factors`: for each feature, the change in log-odds
that a customer's value (or value bin) brings relative to the average customer. Ranking them by
size needs numpy only, not scikit-learn.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from churnops.contract import Contract, Kind
from churnops.errors import ChurnOpsError, ContractMismatchError
from churnops.scoring import (
    POSITIVE_INDEX,
    PROBABILITY_OUTPUT,
    Decisions,
    OnnxModel,
    Probabilities,
    predict,
)
from churnops.serving.validation import CustomerBatch
from churnops.wiring import SCORE_COLUMNS

TOP_FACTORS = 3


# Up to this many customers, factors are ranked in plain Python: for one row, numpy's per-call
# overhead costs more than the arithmetic (the single-row path is the latency that matters).
_PYTHON_RANKING_ROWS = 8


@dataclass(frozen=True)
class _NumericFactor:
    edges: npt.NDArray[np.float64]
    effects: npt.NDArray[np.float64]
    edge_list: list[float]
    effect_list: list[float]

    def effect(self, x: float) -> float:
        if x != x:  # NaN: a null value has no effect
            return 0.0
        return self.effect_list[bisect_right(self.edge_list, x)]  # == searchsorted(side="right")


class FactorTable:
    """Per-feature log-odds effects from the model card; ranks each customer's top factors."""

    def __init__(self, factors: dict[str, Any], contract: Contract) -> None:
        features = factors.get("features")
        if not isinstance(features, dict):
            raise ChurnOpsError("the model card's factors have no 'features' table")
        self.baseline = float(factors.get("baseline", 0.0))
        # Integer fields are echoed as the client sent them (12, not 12.0).
        self._integers = {c.name for c in contract.feature_columns if c.kind is Kind.INTEGER}
        self.names: list[str] = []
        self._tables: list[dict[str, float] | _NumericFactor] = []
        for name in contract.feature_names:
            spec = features.get(name)
            if spec is None:  # a feature the table leaves out never ranks
                continue
            if spec.get("kind") == "category":
                table: dict[str, float] | _NumericFactor = {
                    str(k): float(v) for k, v in spec["effects"].items()
                }
            elif spec.get("kind") == "numeric":
                edges = np.asarray(spec["edges"], dtype=np.float64)
                effects = np.asarray(spec["effects"], dtype=np.float64)
                if len(effects) != len(edges) + 1:
                    raise ChurnOpsError(
                        f"factor table for {name}: {len(effects)} effects for {len(edges)} edges"
                    )
                table = _NumericFactor(edges, effects, edges.tolist(), effects.tolist())
            else:
                raise ChurnOpsError(f"factor table for {name}: unknown kind {spec.get('kind')!r}")
            self.names.append(name)
            self._tables.append(table)

    def effects(self, columns: dict[str, list[Any]], n: int) -> npt.NDArray[np.float64]:
        """Matrix [n, features] of log-odds effects (0 where a value is unknown or null)."""
        out = np.zeros((n, len(self.names)), dtype=np.float64)
        for j, (name, table) in enumerate(zip(self.names, self._tables, strict=True)):
            values = columns[name]
            if isinstance(table, dict):
                out[:, j] = [table.get(v, 0.0) for v in values]
            else:
                x = np.asarray(values, dtype=np.float64)
                bins = np.searchsorted(table.edges, x, side="right")
                out[:, j] = np.where(np.isnan(x), 0.0, table.effects[bins])
        return out

    def top(
        self, columns: dict[str, list[Any]], n: int, k: int = TOP_FACTORS
    ) -> list[list[dict[str, Any]]]:
        """Each customer's k largest effects by size, with the direction they push the score."""
        if not self.names:
            return [[] for _ in range(n)]
        k = min(k, len(self.names))
        if n <= _PYTHON_RANKING_ROWS:
            rows = [self._row_effects(columns, i) for i in range(n)]
            orders = [
                sorted(range(len(row)), key=lambda j, row=row: -abs(row[j]))[:k]  # type: ignore[misc]
                for row in rows
            ]
        else:
            matrix = self.effects(columns, n)
            rows = matrix.tolist()
            orders = np.argsort(-np.abs(matrix), axis=1, kind="stable")[:, :k].tolist()
        result = []
        for i, (row, order) in enumerate(zip(rows, orders, strict=True)):
            why = []
            for j in order:
                effect = row[j]
                if effect == 0.0:
                    break  # sorted by size: the rest are zero too
                name = self.names[j]
                value = columns[name][i]
                if isinstance(value, float):  # numbers travel as floats for the model
                    if math.isnan(value):
                        value = None
                    elif name in self._integers:
                        value = int(value)
                why.append(
                    {
                        "feature": name,
                        "value": value,
                        "effect": round(effect, 4),
                        "direction": "raises" if effect > 0 else "lowers",
                    }
                )
            result.append(why)
        return result

    def _row_effects(self, columns: dict[str, list[Any]], i: int) -> list[float]:
        out = []
        for name, table in zip(self.names, self._tables, strict=True):
            value = columns[name][i]
            if isinstance(table, dict):
                out.append(table.get(value, 0.0))
            else:
                out.append(table.effect(value))
        return out


class ServingModel:
    """One registered version, loaded for serving. Refuses a model of another contract."""

    def __init__(self, *, card: dict[str, Any], onnx_bytes: bytes, contract: Contract) -> None:
        self.version = str(card.get("version"))
        if card.get("schema_hash") != contract.schema_hash:
            raise ContractMismatchError(
                f"model {self.version} was trained on contract {card.get('contract')!r} with schema "
                f"hash {card.get('schema_hash')}; this server serves {contract.name!r} with schema "
                f"hash {contract.schema_hash}, so the model is refused"
            )
        self.card = card
        self.contract = contract
        try:
            threshold = float(card["threshold"])
            onnx_card = card["onnx"]
            output = str(onnx_card.get("probability_output", PROBABILITY_OUTPUT))
            positive = int(onnx_card.get("positive_index", POSITIVE_INDEX))
        except (KeyError, TypeError, ValueError) as err:
            raise ChurnOpsError(f"model card of {self.version} is incomplete: {err}") from None
        self.model = OnnxModel(
            onnx_bytes,
            contract,
            version=self.version,
            threshold=threshold,
            probability_output=output,
            positive_index=positive,
        )
        try:
            self.factors = FactorTable(card.get("factors") or {"features": {}}, contract)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ChurnOpsError(f"model {self.version}: malformed factor table ({err!r})") from None

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def probabilities(self, customers: CustomerBatch) -> npt.NDArray[np.float64]:
        return self.model.probability(customers.columns)

    def score(self, customers: CustomerBatch) -> tuple[Probabilities, Decisions]:
        """Probability and decision (at the card's threshold) of each customer."""
        return predict(self.model, customers.columns)

    def predict(
        self,
        customers: CustomerBatch,
        scores: tuple[Probabilities, Decisions] | None = None,
    ) -> list[dict[str, Any]]:
        """One result per customer: probability, decision at the card's threshold, top factors.
        `scores` are this model's `score` of these customers when the caller already has them."""
        probabilities, decisions = scores if scores is not None else self.score(customers)
        factors = self.factors.top(customers.columns, len(customers))
        id_column = self.contract.id_column
        results = []
        for customer_id, p, d, why in zip(
            customers.ids, probabilities, decisions, factors, strict=True
        ):
            # a score row as the batch job writes it (churnops.scoring.score): the score schema's
            # columns in its order, each filled by name
            values = {
                "churn_probability": round(float(p), 6),
                "churn_prediction": int(d),
                "model_version": self.version,
            }
            score = {name: values[name] for name in SCORE_COLUMNS}
            results.append({id_column: customer_id, **score, "factors": why})
        return results

    def describe(self) -> dict[str, Any]:
        """What `GET /model` shows."""
        card = self.card
        return {
            "model_version": self.version,
            "contract": card.get("contract"),
            "schema_hash": card.get("schema_hash"),
            "family": card.get("family"),
            "threshold": self.threshold,
            "trained_at": card.get("created_at"),
            "rows": card.get("rows"),
            "metrics": card.get("metrics") or {},
            "status": card.get("status"),
        }
