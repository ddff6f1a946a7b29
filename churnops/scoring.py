"""How a churn score is made, once for every caller: the API (`churnops.serving`), batch scoring
(Glue's Spark tasks), the retrain gate's evaluation, training's ONNX parity check and
`churnops predict`.

- `open_session`: the ONNX Runtime session, its options set here only.
- `OnnxModel`: a version's ONNX graph, checked against the contract, giving the probability of
  churn for feature columns. Serving and batch scoring use it.
- `PipelineModel` (`load_model`): a version's scikit-learn pipeline (model.joblib), which the
  gate evaluates and `churnops predict` scores with; its ONNX export matches it to 1e-5.
- `decide`: the threshold rule; `predict`: feature columns -> (probability, decision), whichever
  the model; `score`: clean customers -> rows of the score schema (`churnops.wiring`).

Feature columns are a mapping of feature name -> values: a `churnops.features.model_frame`, or
the serving validator's per-column lists (a one-row DataFrame would cost the API ten times the
model). Only numpy and the contract are imported up front: the serving image has neither pandas
nor scikit-learn, and the batch job has no scikit-learn (tests/unit/test_batch_score_imports.py).

model.joblib is a pickle: load it only from a registry you control (the registry bucket is
written by the training role alone).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from churnops.contract import Contract
from churnops.errors import ChurnOpsError, ContractMismatchError

if TYPE_CHECKING:
    import pandas as pd

    from churnops.registry import Registry

    # Feature name -> values: a model frame, or the serving validator's per-column lists.
    Features: TypeAlias = Mapping[str, Any] | pd.DataFrame

Probabilities: TypeAlias = npt.NDArray[np.float64]
Decisions: TypeAlias = npt.NDArray[np.int32]

# The graph's probability output, [N, 2] with the positive class at this index (onnx_export
# writes them into the card's `onnx` entry).
PROBABILITY_OUTPUT = "probabilities"
POSITIVE_INDEX = 1


class Scorer(Protocol):
    """What `predict` and `score` need of a model: `OnnxModel` and `PipelineModel` are ones."""

    @property
    def version(self) -> str: ...

    @property
    def threshold(self) -> float: ...

    def probability(self, features: Features) -> Probabilities: ...


def decide(probability: Probabilities, threshold: float) -> Decisions:
    """The churn decision: 1 when the probability reaches the model's threshold, else 0."""
    return (np.asarray(probability) >= threshold).astype(np.int32)


def predict(model: Scorer, features: Features) -> tuple[Probabilities, Decisions]:
    """(probability, decision) of each customer."""
    probability = model.probability(features)
    return probability, decide(probability, model.threshold)


def open_session(onnx_bytes: bytes) -> Any:
    """An ONNX Runtime session over the graph's bytes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread: Spark already runs one task per executor core, and a serving Lambda scores one
    # row or a few hundred on one or two vCPUs, where a thread pool's wake-up costs more than it
    # saves. Every caller then also sums in the same order.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Errors only: skl2onnx leaves unused initialisers, and ONNX Runtime's warnings about them
    # would land, unstructured, in the logs at every session (every Lambda cold start).
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """A version's ONNX graph, refused when its inputs are not the contract's features."""

    def __init__(
        self,
        onnx_bytes: bytes,
        contract: Contract,
        *,
        version: str,
        threshold: float,
        probability_output: str = PROBABILITY_OUTPUT,
        positive_index: int = POSITIVE_INDEX,
    ) -> None:
        self.version = version
        self.threshold = threshold
        self.contract = contract
        try:
            self.session = open_session(onnx_bytes)
        except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph classes
            raise ChurnOpsError(f"model {version}: model.onnx does not load: {err}") from None
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        features = set(contract.feature_names)
        if set(inputs) != features:
            raise ContractMismatchError(
                f"model {version}: ONNX inputs differ from the contract's features "
                f"(missing: {sorted(features - set(inputs))}, extra: {sorted(set(inputs) - features)})"
            )
        if probability_output not in {o.name for o in self.session.get_outputs()}:
            raise ChurnOpsError(f"model {version}: ONNX graph has no output {probability_output}")
        self._output = probability_output
        self._positive = positive_index
        # Numbers go in as float32 (what the graph computes in), categories as Python strings.
        self._feeds = [
            (name, np.float32 if inputs[name] == "tensor(float)" else object)
            for name in contract.feature_names
        ]

    def probability(self, features: Features) -> Probabilities:
        feed = {
            name: np.asarray(features[name], dtype=dtype).reshape(-1, 1)
            for name, dtype in self._feeds
        }
        out = self.session.run([self._output], feed)[0]
        return np.asarray(out, dtype=np.float64)[:, self._positive]


@dataclass(frozen=True)
class PipelineModel:
    """A version's scikit-learn pipeline, with its card."""

    version: str
    card: dict[str, Any]
    model: Any

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"])

    def probability(self, features: Features) -> Probabilities:
        import pandas as pd

        from churnops.model import positive_probability

        # DataFrame() of a frame shares its columns, and makes serving's column lists one.
        return np.asarray(positive_probability(self.model, pd.DataFrame(features)), np.float64)


def load_model(registry: Registry, contract: Contract, version: str | None = None) -> PipelineModel:
    """Load `version`, or the champion; raises NoChampionError / ContractMismatchError."""
    import joblib

    from churnops.wiring import MODEL_JOBLIB

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
    return PipelineModel(version=version, card=card, model=model)


def score(clean: pd.DataFrame, model: Scorer, contract: Contract) -> pd.DataFrame:
    """One score row per customer: the contract's id column, then the score schema's columns
    (churnops.wiring.SCORE_SCHEMA) in its order."""
    import pandas as pd

    from churnops.features import model_frame
    from churnops.wiring import SCORE_COLUMNS

    if clean.empty:
        probability, decision = np.empty(0), decide(np.empty(0), model.threshold)
    else:
        probability, decision = predict(model, model_frame(clean, contract))
    values = {
        "churn_probability": probability,
        "churn_prediction": decision,
        "model_version": model.version,
    }
    return pd.DataFrame(
        {
            contract.id_column: clean[contract.id_column].to_numpy(),
            **{name: values[name] for name in SCORE_COLUMNS},
        }
    )
