"""ONNX export reproduces scikit-learn's probabilities to 1e-5 on 10,000 customers, for every
family, including customers sitting exactly on quantile-bin edges, and for the MLP on the real
Telco file."""

from __future__ import annotations

import numpy as np
import pytest

from churnops.contract import TELCO
from churnops.model import (
    FAMILIES,
    MLP_FIXED,
    MLP_GRID,
    build,
    fit,
    model_frame,
    positive_probability,
)
from churnops.onnx_export import export, onnx_signature
from churnops.scoring import OnnxModel, open_session
from churnops.synthetic import generate
from churnops.training import ONNX_TOLERANCE

FAMILY_PARAMS = {
    "logistic": {"C": 1.0},
    "gradient_boosting": {"n_estimators": 60, "max_depth": 3},
    "ensemble": {"logistic": {"C": 1.0}, "gradient_boosting": {"n_estimators": 60}},
    "mlp": {"hidden_layer_sizes": (32, 16), "alpha": 1.0},
}


def test_every_family_is_checked() -> None:
    assert set(FAMILY_PARAMS) == set(FAMILIES)


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    train = TELCO.validate(generate(4000, seed=31)).clean
    score = TELCO.validate(generate(10_000, seed=32)).clean
    return model_frame(train, TELCO), TELCO.target_vector(train), model_frame(score, TELCO)


@pytest.mark.parametrize("family", sorted(FAMILY_PARAMS))
def test_onnx_matches_sklearn_on_10000_rows(data, family: str) -> None:  # type: ignore[no-untyped-def]
    X, y, X_score = data
    model = fit(build(family, TELCO, FAMILY_PARAMS[family], seed=1), X, y)
    onnx = OnnxModel(export(model, TELCO), TELCO, version="test", threshold=0.5)
    expected = positive_probability(model, X_score)
    got = onnx.probability(X_score)
    assert len(got) == 10_000
    assert np.max(np.abs(got - expected)) <= 1e-5


@pytest.mark.realdata
@pytest.mark.parametrize("params", MLP_GRID, ids=lambda p: str(p["hidden_layer_sizes"]))
def test_exported_mlp_scores_like_sklearn_on_real_telco(telco_clean, params) -> None:  # type: ignore[no-untyped-def]
    # GIVEN an MLP of the comparison's grid fitted on the real Telco file
    X, y = model_frame(telco_clean, TELCO), TELCO.target_vector(telco_clean).astype(int)
    model = fit(build("mlp", TELCO, {**params, **MLP_FIXED}, seed=42), X, y)
    assert model.named_steps["classifier"].n_iter_ < MLP_FIXED["max_iter"], "early stopping"
    # WHEN its ONNX export scores every customer of the file
    onnx = OnnxModel(export(model, TELCO), TELCO, version="test", threshold=0.5)
    got = onnx.probability(X)
    # THEN it gives scikit-learn's probabilities within the tolerance training stores ONNX at
    assert len(got) == len(telco_clean)
    assert np.max(np.abs(got - positive_probability(model, X))) <= ONNX_TOLERANCE


def test_customers_on_bin_edges_score_alike(data) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a binned logistic model WHEN customers sit exactly on its fitted bin edges
    X, y, X_score = data
    model = fit(build("logistic", TELCO, {"C": 1.0}, seed=1), X, y)
    binner = model.named_steps["features"].named_transformers_["bins"].named_steps["bin"]
    columns = model.named_steps["features"].transformers_[2][2]
    edge_rows = X_score.head(200).copy()
    for column, edges in zip(columns, binner.bin_edges_, strict=True):
        edge_rows[column] = np.resize(edges, len(edge_rows))
    # THEN ONNX Runtime (float32) puts them in the same bins as scikit-learn
    onnx = OnnxModel(export(model, TELCO), TELCO, version="test", threshold=0.5)
    got = onnx.probability(edge_rows)
    assert np.max(np.abs(got - positive_probability(model, edge_rows))) <= 1e-5


def test_onnx_signature_follows_the_contract() -> None:
    signature = onnx_signature(TELCO)
    assert [i["name"] for i in signature["inputs"]] == TELCO.feature_names
    types = {i["name"]: i["type"] for i in signature["inputs"]}
    assert types["tenure"] == "float" and types["Contract"] == "string"
    assert signature["probability_output"] == "probabilities"
    assert signature["positive_index"] == 1


def test_onnx_graph_inputs_match_signature(data) -> None:  # type: ignore[no-untyped-def]
    X, y, _ = data
    model = fit(build("logistic", TELCO, {"C": 1.0}, seed=1), X, y)
    session = open_session(export(model, TELCO))
    inputs = {i.name: i.type for i in session.get_inputs()}
    assert list(inputs) == TELCO.feature_names
    assert inputs["MonthlyCharges"] == "tensor(float)"
    assert inputs["PaymentMethod"] == "tensor(string)"
    assert [o.name for o in session.get_outputs()][-1] == "probabilities"
