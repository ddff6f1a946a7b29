"""Run by tests/integration/test_model_portability.py under two Pythons: the repository's (3.11,
as Glue 5.0 runs) and the Lambda images' (3.12, with only the training image's requirements).

    probe.py train REGISTRY CSV        train a small model, register it as champion, print its version
    probe.py score REGISTRY CSV OUT    score CSV with the champion's model.joblib (as `churnops
                                       predict` and the retrain evaluation do) and model.onnx (as
                                       serving and batch scoring do); write both as JSON to OUT

Only the repository's code and the interpreter's installed packages are used: this file is the
test's hands in the other interpreter, not a second implementation.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from churnops.contract import get_contract
from churnops.dataset import parse_customers
from churnops.features import model_frame
from churnops.registry import MODEL_ONNX, Registry
from churnops.scoring import load_model, score
from churnops.serving.model import ServingModel
from churnops.serving.validation import CustomerBatch
from churnops.training import TrainingOptions, register_result, train

TELCO = get_contract("telco")


def _clean(csv: str):  # type: ignore[no-untyped-def]
    raw = parse_customers(Path(csv).read_bytes(), TELCO, csv)
    return TELCO.validate(raw).clean


def train_command(registry_uri: str, csv: str) -> None:
    # Both tree and linear models: the joblib pickles of each must cross interpreters.
    options = TrainingOptions(families=("logistic", "gradient_boosting", "ensemble"), folds=2)
    result = train(_clean(csv), TELCO, options)
    summary = register_result(result, Registry.open(registry_uri), actor=f"python-{_python()}")
    print(json.dumps({"version": summary["version"], "family": summary["family"]}))


def score_command(registry_uri: str, csv: str, out: str) -> None:
    registry = Registry.open(registry_uri)
    clean = _clean(csv)
    loaded = load_model(registry, TELCO)
    joblib_scores = score(clean, loaded, TELCO)["churn_probability"].tolist()
    served = ServingModel(
        card=loaded.card, onnx_bytes=registry.read(loaded.version, MODEL_ONNX), contract=TELCO
    )
    frame = model_frame(clean, TELCO)
    batch = CustomerBatch(
        ids=clean[TELCO.id_column].tolist(),
        columns={name: frame[name].tolist() for name in TELCO.feature_names},
        is_batch=True,
    )
    onnx_scores = served.probabilities(batch).tolist()
    Path(out).write_text(
        json.dumps(
            {
                "python": _python(),
                "version": loaded.version,
                "joblib": joblib_scores,
                "onnx": onnx_scores,
            }
        )
    )


def _python() -> str:
    return ".".join(platform.python_version_tuple()[:2])


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"train": train_command, "score": score_command}[command](*arguments)
