"""The batch scoring Glue job runs without scikit-learn: AWS Glue 5.0 does not ship it and
containers/glue/batch_score.txt leaves it out, so the job's whole scoring path (load the model
from the registry, frame the input, score with ONNX Runtime) must not import it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnops.contract import TELCO
from churnops.model import build, fit, model_frame, positive_probability
from churnops.onnx_export import export
from churnops.registry import MODEL_ONNX, Registry
from churnops.synthetic import generate

REPO = Path(__file__).resolve().parents[2]

# The child scores through the job's own functions, then reports what it imported.
CHILD = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    sys.path.insert(0, sys.argv[1])
    from churnops import batch_scoring
    from churnops.contract import get_contract
    from churnops.scoring import score

    model = batch_scoring.load_model(sys.argv[2], None, "telco")
    rows = pd.read_json(sys.argv[3], orient="split", dtype=False)
    scores = score(rows, batch_scoring.scorer(model), get_contract("telco"))
    probability = scores["churn_probability"]
    heavy = sorted(m for m in ("sklearn", "scipy", "joblib") if m in sys.modules)
    print(json.dumps({"probability": [float(p) for p in probability], "imported": heavy}))
    """
)


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    raw = generate(800, seed=11)
    return TELCO.validate(raw.astype(object).where(raw.notna(), "").astype(str)).clean


def test_scoring_a_champion_imports_neither_sklearn_nor_scipy(
    tmp_path: Path, clean: pd.DataFrame
) -> None:
    # GIVEN a champion (a scikit-learn pipeline, exported to ONNX) in a local registry
    train, score = clean.iloc[:600], clean.iloc[600:650]
    model = fit(
        build("logistic", TELCO, {"C": 1.0}, 42),
        model_frame(train, TELCO),
        TELCO.target_vector(train),
    )
    registry = Registry.open(str(tmp_path / "registry"))
    version = registry.register(
        {MODEL_ONNX: export(model, TELCO)},
        {"contract": TELCO.name, "schema_hash": TELCO.schema_hash, "threshold": 0.5},
    )
    registry.promote(version, actor="test", reason="the only model")
    rows = tmp_path / "rows.json"
    score.reset_index(drop=True).to_json(rows, orient="split")

    # WHEN a fresh interpreter scores the rows the way the job's Spark tasks do
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO), str(tmp_path / "registry"), str(rows)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)

    # THEN scikit-learn and its stack were never imported, and the scores are the pipeline's
    assert report["imported"] == []
    expected = positive_probability(model, model_frame(score, TELCO))
    np.testing.assert_allclose(report["probability"], expected, atol=1e-5)
