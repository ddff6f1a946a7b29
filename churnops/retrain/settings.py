"""Settings of the retrain flow: what counts as "really better".

CDK passes them to the task functions as environment variables (`RetrainSettings` in
stacks/training.py writes them from `cdk.json` context); tests build them directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from churnops.errors import ChurnOpsError

# Environment variable of each gate setting, e.g. GATE_MARGIN for `margin`.
ENV_PREFIX = "GATE_"
# Metrics the gate can use as primary (evaluate.PRIMARY_METRICS implements each). Listed here so
# the CDK app can validate settings without importing numpy.
PRIMARY_METRIC_NAMES = ("roc_auc", "pr_auc")


@dataclass(frozen=True)
class GateSettings:
    # The metric the challenger must win on; a key of evaluate.PRIMARY_METRICS.
    primary_metric: str = "roc_auc"
    # Minimum improvement of the primary metric (point estimate) over the champion.
    margin: float = 0.005
    # The challenger's own interval lower bound must clear this (skill beyond chance is checked
    # separately, against the metric's no-skill value).
    quality_floor: float = 0.6
    # Guards: how much worse than the champion the challenger may be.
    brier_tolerance: float = 0.005
    recall_tolerance: float = 0.05
    # A slice counts as large from this share of the holdout; a loss on it is "clear" when the
    # challenger is worse by more than `slice_tolerance` and the paired interval lies below zero.
    slice_min_share: float = 0.15
    slice_tolerance: float = 0.01
    # Bootstrap: resamples, two-sided confidence and seed (a fixed seed makes decisions repeatable).
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 20240601
    # Share of customers held out from training (chosen by a stable hash of the id).
    holdout_share: float = 0.25

    def __post_init__(self) -> None:
        if self.primary_metric not in PRIMARY_METRIC_NAMES:
            known = ", ".join(PRIMARY_METRIC_NAMES)
            raise ChurnOpsError(f"unknown primary metric '{self.primary_metric}' (known: {known})")
        if not 0 < self.confidence < 1:
            raise ChurnOpsError(f"confidence must be between 0 and 1, got {self.confidence}")
        if not 0 < self.holdout_share < 1:
            raise ChurnOpsError(f"holdout share must be between 0 and 1, got {self.holdout_share}")
        if self.n_bootstrap < 100:
            raise ChurnOpsError(f"n_bootstrap must be at least 100, got {self.n_bootstrap}")

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Setting name -> environment variable name (CDK uses this; nothing restates it)."""
        return {f.name: ENV_PREFIX + f.name.upper() for f in fields(cls)}

    def to_env(self) -> dict[str, str]:
        return {env: str(getattr(self, name)) for name, env in self.env_names().items()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GateSettings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(getattr(cls, f.name))
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ChurnOpsError(
                    f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from None
        return cls(**values)  # type: ignore[arg-type]
