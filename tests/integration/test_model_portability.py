"""A model crosses Python minors unchanged.

The retrain functions train in the training image (Python 3.12, Amazon Linux 2023); the batch
scoring job scores on Glue 5.0 (Python 3.11); serving runs the ONNX export in the serving image
(3.12); the tests and the twin run 3.11. Same pinned scikit-learn, joblib and onnxruntime on
both sides, so a model trained on either must load on the other and give the same
probabilities: exactly, not approximately, since the same library code computes them.

The 3.12 side is a virtualenv with only the training image's requirements
(`containers/training/requirements.txt`), so it also shows those are enough to train.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from churnops.synthetic import generate, write_csv

PROBE = Path(__file__).with_name("model_portability_probe.py")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run_probe(python: Path | str, *arguments: str) -> str:
    done = subprocess.run(
        [str(python), str(PROBE), *arguments],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": os.environ["HOME"]},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{python} {arguments[0]} failed:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def customers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("portability")
    training, scoring = work / "training.csv", work / "scoring.csv"
    write_csv(generate(2000, seed=5), training)
    write_csv(generate(500, seed=6), scoring)
    return training, scoring


@pytest.mark.parametrize("trained_on", ["glue", "image"])
def test_a_model_scores_identically_on_both_pythons(
    trained_on: str, customers: tuple[Path, Path], image_python, tmp_path: Path
) -> None:
    interpreters = {"glue": Path(sys.executable), "image": image_python("training")}
    training, scoring = customers
    registry = tmp_path / "registry"
    # GIVEN a champion trained under one Python
    trained = json.loads(run_probe(interpreters[trained_on], "train", str(registry), str(training)))
    # WHEN each Python scores the same customers with it, through joblib and through ONNX
    scored = {}
    for side, python in interpreters.items():
        out = tmp_path / f"{side}.json"
        run_probe(python, "score", str(registry), str(scoring), str(out))
        scored[side] = json.loads(out.read_text())
    # THEN the interpreters really differ, and every probability is the same on both
    assert scored["glue"]["python"] == "3.11"
    assert scored["image"]["python"] == "3.12"
    for side in scored.values():
        assert side["version"] == trained["version"]
        assert len(side["joblib"]) == len(side["onnx"]) == 500
    assert scored["glue"]["joblib"] == scored["image"]["joblib"]
    assert scored["glue"]["onnx"] == scored["image"]["onnx"]
    # AND ONNX still matches scikit-learn on each side (the project's parity bound)
    for side in scored.values():
        worst = max(abs(a - b) for a, b in zip(side["joblib"], side["onnx"], strict=True))
        assert worst < 1e-5
