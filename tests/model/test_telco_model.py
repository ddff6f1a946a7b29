"""The full recipe on the real Telco file: skill, honesty, and behaviour (Made-With-ML style)."""

from __future__ import annotations

import numpy as np
import pytest

from churnops.contract import TELCO
from churnops.model import model_frame, positive_probability
from churnops.scoring import OnnxModel

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_cross_validated_auc_beats_published_baselines_without_leakage(telco_result) -> None:  # type: ignore[no-untyped-def]
    metrics = telco_result.metrics
    assert metrics["cv_auc_mean"] >= 0.84
    assert metrics["cv_auc_mean"] < 0.87, "above 0.87 signals leakage"
    assert len(metrics["cv_auc_folds"]) == 5


def test_holds_up_on_the_holdout(telco_result) -> None:  # type: ignore[no-untyped-def]
    metrics = telco_result.metrics
    assert metrics["roc_auc"] >= 0.82
    low, high = metrics["roc_auc_ci95"]
    assert low < metrics["roc_auc"] < high
    assert low > 0.6
    assert telco_result.status == "champion-eligible"
    assert metrics["lift_top_decile"] > 2
    assert 0 < metrics["brier"] < 0.2
    for key in ("pr_auc", "f1", "precision", "recall"):
        assert 0 < metrics[key] < 1


def test_at_least_two_families_were_compared(telco_result) -> None:  # type: ignore[no-untyped-def]
    families = {c["family"] for c in telco_result.candidates}
    assert {"logistic", "gradient_boosting"} <= families
    best = max(c["cv_auc_mean"] for c in telco_result.candidates)
    assert telco_result.metrics["cv_auc_mean"] >= best - 0.001


def test_card_follows_interface(telco_result) -> None:  # type: ignore[no-untyped-def]
    card = telco_result.card
    for key in (
        "contract",
        "schema_hash",
        "data_hash",
        "rows",
        "family",
        "params",
        "code_version",
        "threshold",
        "cost_policy",
        "metrics",
        "status",
        "onnx",
        "reference_stats",
        "factors",
    ):
        assert key in card, key
    assert card["schema_hash"] == TELCO.schema_hash
    assert card["rows"] == 6000
    assert set(telco_result.files) == {"model.joblib", "model.onnx", "metrics.json"}


def test_onnx_of_the_registered_model_matches(telco_result, telco_clean) -> None:  # type: ignore[no-untyped-def]
    X = model_frame(telco_clean, TELCO)
    onnx = OnnxModel(telco_result.files["model.onnx"], TELCO, version="test", threshold=0.5)
    diff = np.abs(onnx.probability(X) - positive_probability(telco_result.model, X))
    assert diff.max() <= 1e-5


def _score(result, frame):  # type: ignore[no-untyped-def]
    return positive_probability(result.model, model_frame(frame, TELCO))


def test_longer_contract_never_raises_churn(telco_result, telco_clean) -> None:  # type: ignore[no-untyped-def]
    monthly = telco_clean.copy()
    monthly["Contract"] = "Month-to-month"
    two_year = telco_clean.copy()
    two_year["Contract"] = "Two year"
    before, after = _score(telco_result, monthly), _score(telco_result, two_year)
    assert np.all(after <= before + 1e-3)
    assert np.mean(before - after) > 0.1


def test_gender_changes_little(telco_result, telco_clean) -> None:  # type: ignore[no-untyped-def]
    male, female = telco_clean.copy(), telco_clean.copy()
    male["gender"], female["gender"] = "Male", "Female"
    diff = np.abs(_score(telco_result, male) - _score(telco_result, female))
    assert diff.max() < 0.03
    assert diff.mean() < 0.01


def test_security_and_support_add_ons_do_not_raise_churn_on_average(
    telco_result, telco_clean
) -> None:  # type: ignore[no-untyped-def]
    internet = telco_clean[telco_clean["InternetService"] != "No"]
    without, with_ = internet.copy(), internet.copy()
    without["OnlineSecurity"] = without["TechSupport"] = "No"
    with_["OnlineSecurity"] = with_["TechSupport"] = "Yes"
    assert np.mean(_score(telco_result, with_) - _score(telco_result, without)) < -0.03


def test_minimum_functionality(telco_result, telco_clean) -> None:  # type: ignore[no-untyped-def]
    base = telco_clean.iloc[[0]].copy()
    risky = base.assign(
        Contract="Month-to-month",
        tenure=1,
        InternetService="Fiber optic",
        OnlineSecurity="No",
        TechSupport="No",
        PaymentMethod="Electronic check",
        PaperlessBilling="Yes",
        MonthlyCharges=95.0,
        TotalCharges=95.0,
    )
    safe = base.assign(
        Contract="Two year",
        tenure=70,
        InternetService="DSL",
        OnlineSecurity="Yes",
        TechSupport="Yes",
        PaymentMethod="Bank transfer (automatic)",
        PaperlessBilling="No",
        MonthlyCharges=60.0,
        TotalCharges=4200.0,
    )
    assert _score(telco_result, risky)[0] > 0.5
    assert _score(telco_result, safe)[0] < 0.1


def test_factor_table_matches_interface_and_intuition(telco_result) -> None:  # type: ignore[no-untyped-def]
    factors = telco_result.card["factors"]
    assert np.isfinite(factors["baseline"])
    assert set(factors["features"]) == set(TELCO.feature_names)
    for name, table in factors["features"].items():
        if table["kind"] == "numeric":
            assert len(table["effects"]) == len(table["edges"]) + 1, name
        else:
            assert set(table["effects"]) == set(TELCO.column(name).allowed or ()), name
    contract = factors["features"]["Contract"]["effects"]
    assert contract["Month-to-month"] > contract["One year"] > contract["Two year"]
    tenure = factors["features"]["tenure"]["effects"]
    assert tenure[0] > 0 > tenure[-1]
