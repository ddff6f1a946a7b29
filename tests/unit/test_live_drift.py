"""Live drift: the serving side measures the customers it scores against the serving champion's
reference, window by window, with the same PSI the retrain's snapshot report uses. This is the
measurement the retrain-starting drift alarm watches (stacks/monitoring.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churnops.contract import TELCO
from churnops.drift import drift_report, reference_statistics
from churnops.errors import ChurnOpsError
from churnops.registry import Registry
from churnops.serving.app import HttpRequest, ServingApp
from churnops.serving.monitoring import LiveDriftWindow
from churnops.serving.validation import RequestValidator
from churnops.synthetic import generate
from churnops.wiring import ServingEnvironment

SHIFT = "price_rise,payment_mix"  # monthly charges up 30%, most customers on electronic cheques
SHIFTED = {"MonthlyCharges", "PaymentMethod"}


def clean(rows: int, seed: int, shift: str | None = None) -> pd.DataFrame:
    raw = generate(rows, seed=seed, shift=shift)
    return TELCO.validate(raw.astype(object).where(raw.notna(), "").astype(str)).clean


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return reference_statistics(clean(8000, seed=5), TELCO)


def served_columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """The customers as the serving validator hands them to the model (and to the window)."""
    validator = RequestValidator(TELCO, max_batch_size=len(frame))
    return validator.customers({"customers": TELCO.api_customers(frame)}).columns


def test_a_window_measures_what_the_snapshot_report_measures(reference) -> None:  # type: ignore[no-untyped-def]
    # GIVEN customers whose prices and payment methods moved, as the API receives them
    latest = clean(2000, seed=6, shift=SHIFT)
    window = LiveDriftWindow(reference, TELCO, window=len(latest))
    # WHEN they are counted in two requests
    half = len(latest) // 2
    assert window.observe(served_columns(latest.iloc[:half]), half) is None
    live = window.observe(served_columns(latest.iloc[half:]), len(latest) - half)
    # THEN the closed window gives the snapshot report's PSI for every feature
    assert live is not None and live["rows"] == len(latest)
    snapshot = drift_report(reference, latest, TELCO)
    for name, feature in snapshot["features"].items():
        assert live["psi"][name] == pytest.approx(feature["psi"], abs=1e-6), name
    assert set(live["drifted_features"]) == SHIFTED == set(snapshot["drifted_features"])
    assert live["max_psi"] == pytest.approx(snapshot["max_psi"], abs=1e-6)
    assert json.loads(json.dumps(live)) == live


def test_customers_like_the_reference_stay_below_the_line_in_a_default_window(reference) -> None:  # type: ignore[no-untyped-def]
    window = LiveDriftWindow(reference, TELCO)  # the deployed default size
    latest = clean(window.window, seed=7)
    report = window.observe(served_columns(latest), len(latest))
    assert report is not None
    assert report["drifted_features"] == [] and report["max_psi"] < 0.05


def test_a_window_starts_afresh_once_reported(reference) -> None:  # type: ignore[no-untyped-def]
    window = LiveDriftWindow(reference, TELCO, window=300)
    shifted, normal = clean(300, seed=8, shift=SHIFT), clean(300, seed=9)
    assert window.observe(served_columns(shifted), 300)["drifted_features"]
    # The next window holds only what came after: these customers look like the reference.
    assert window.observe(served_columns(normal), 300)["drifted_features"] == []


# ---- in the serving app ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, bytes], dict[str, Any]]:
    """A small real model (files and card, reference statistics included)."""
    from churnops.training import TrainingOptions, train

    result = train(clean(1500, seed=5), TELCO, TrainingOptions(families=("logistic",), folds=3))
    assert "reference_stats" in result.card and "model.onnx" in result.files
    return result.files, result.card


def predict(app: ServingApp, frame: pd.DataFrame) -> Any:
    body = json.dumps({"customers": TELCO.api_customers(frame)}).encode()
    response, telemetry = app.handle(
        HttpRequest("POST", "/predict", {"content-type": "application/json"}, body)
    )
    assert response.status == 200, response.body
    return telemetry


def test_the_app_reports_a_drifted_window_against_the_serving_champion(
    trained, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a server whose live window is 200 customers
    files, card = trained
    registry = Registry.open(str(tmp_path / "registry"))
    champion = registry.register(files, card)
    registry.promote(champion, actor="test", reason="champion")
    app = ServingApp(
        ServingEnvironment(registry_uri=registry.uri, refresh_seconds=0, live_drift_window=200)
    )
    shifted = clean(400, seed=12, shift=SHIFT)
    # WHEN drifted customers are scored, 100 per request
    first = predict(app, shifted.iloc[:100])
    second = predict(app, shifted.iloc[100:200])
    # THEN only the request that completes the window carries its report, for the handler to
    # publish as the live drift metric
    assert first.live_drift is None
    report = second.live_drift
    assert report["rows"] == 200 and report["model_version"] == champion
    assert set(report["drifted_features"]) >= SHIFTED and report["max_psi"] > 0.2
    # AND when another champion takes over, its reference starts a new window: the customers
    # counted against the old one are not mixed in
    successor = registry.register(files, card)
    registry.promote(successor, actor="test", reason="successor")
    assert predict(app, shifted.iloc[200:300]).live_drift is None
    after = predict(app, shifted.iloc[300:400]).live_drift
    assert after["rows"] == 200 and after["model_version"] == successor


def test_a_champion_without_reference_statistics_is_served_unmeasured(
    trained, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    files, card = trained
    registry = Registry.open(str(tmp_path / "registry"))
    bare = registry.register(files, {k: v for k, v in card.items() if k != "reference_stats"})
    registry.promote(bare, actor="test", reason="older card")
    app = ServingApp(
        ServingEnvironment(registry_uri=registry.uri, refresh_seconds=0, live_drift_window=1)
    )
    assert predict(app, clean(5, seed=13)).live_drift is None


def test_the_window_size_comes_from_the_environment() -> None:
    settings = ServingEnvironment.from_env({"REGISTRY_URI": "r", "LIVE_DRIFT_WINDOW": "250"})
    assert settings.live_drift_window == 250
    assert ServingEnvironment.from_env({"REGISTRY_URI": "r"}).live_drift_window == 1000
    with pytest.raises(ChurnOpsError, match="LIVE_DRIFT_WINDOW"):
        ServingEnvironment.from_env({"REGISTRY_URI": "r", "LIVE_DRIFT_WINDOW": "0"})
