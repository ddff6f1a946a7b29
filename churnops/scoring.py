"""Score clean customers with a registry version (the champion by default).

Used by `churnops predict` and by the retrain flow's batch scoring. The scikit-learn pipeline
(model.joblib) is used here; serving uses the same version's ONNX export, which matches it to
1e-5. A model of another contract (name or schema hash) is refused.

model.joblib is a pickle: load it only from a registry you control (the registry bucket is
written by the training role alone).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops.contract import Contract
from churnops.errors import ChurnOpsError
from churnops.model import model_frame, positive_probability
from churnops.registry import MODEL_JOBLIB, Registry

OUTPUT_COLUMNS = ("churn_probability", "churn_prediction", "model_version")


@dataclass(frozen=True)
class LoadedModel:
    version: str
    card: dict[str, Any]
    model: Any

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])


def load_model(registry: Registry, contract: Contract, version: str | None = None) -> LoadedModel:
    """Load `version`, or the champion; raises NoChampionError / ContractMismatchError."""
    import joblib

    if version is None:
        version = registry.require_champion()["version"]
    card = registry.card(version)
    contract.check_model_card(card)
    try:
        model = joblib.load(io.BytesIO(registry.read(version, MODEL_JOBLIB)))
    except ChurnOpsError:
        raise
    except Exception as err:  # an unreadable artefact is the registry's problem, said in one line
        raise ChurnOpsError(f"cannot load {MODEL_JOBLIB} of version {version}: {err}") from None
    return LoadedModel(version=version, card=card, model=model)


def score(clean: pd.DataFrame, loaded: LoadedModel, contract: Contract) -> pd.DataFrame:
    """One row per customer: id, churn_probability, churn_prediction (1 = will churn, at the
    model's threshold), model_version."""
    if clean.empty:
        probability = np.empty(0)
    else:
        probability = positive_probability(loaded.model, model_frame(clean, contract))
    return pd.DataFrame(
        {
            contract.id_column: clean[contract.id_column].to_numpy(),
            "churn_probability": probability,
            "churn_prediction": (probability >= loaded.threshold).astype(np.int64),
            "model_version": loaded.version,
        }
    )
