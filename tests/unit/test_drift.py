"""Drift: reference statistics and PSI react to shifted features and ignore unshifted ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from churnops.contract import TELCO
from churnops.drift import PSI_DRIFT_THRESHOLD, drift_report, psi, reference_statistics
from churnops.synthetic import generate


@pytest.fixture(scope="module")
def reference():  # type: ignore[no-untyped-def]
    return reference_statistics(TELCO.validate(generate(20_000, seed=5)).clean, TELCO)


def _latest(**kwargs):  # type: ignore[no-untyped-def]
    return TELCO.validate(generate(20_000, seed=6, **kwargs)).clean


def test_reference_stats_are_json_and_cover_every_feature(reference) -> None:  # type: ignore[no-untyped-def]
    assert json.loads(json.dumps(reference)) == reference
    assert set(reference["features"]) == set(TELCO.feature_names)
    tenure = reference["features"]["tenure"]
    assert tenure["kind"] == "numeric"
    assert len(tenure["shares"]) == len(tenure["edges"]) + 2  # bins + missing
    assert abs(sum(tenure["shares"]) - 1) < 1e-9
    contract_shares = reference["features"]["Contract"]["shares"]
    assert abs(sum(contract_shares.values()) - 1) < 1e-9


def test_same_population_does_not_drift(reference) -> None:  # type: ignore[no-untyped-def]
    report = drift_report(reference, _latest(), TELCO)
    assert report["drifted_features"] == []
    assert report["max_psi"] < 0.05


def test_price_rise_drifts_charges_only(reference) -> None:  # type: ignore[no-untyped-def]
    report = drift_report(reference, _latest(shift="price_rise"), TELCO)
    assert "MonthlyCharges" in report["drifted_features"]
    assert report["features"]["MonthlyCharges"]["psi"] > PSI_DRIFT_THRESHOLD
    for stable in ("Contract", "gender", "PaymentMethod", "tenure"):
        assert report["features"][stable]["psi"] < 0.05, stable


def test_contract_mix_drifts_contract(reference) -> None:  # type: ignore[no-untyped-def]
    report = drift_report(reference, _latest(shift="contract_mix"), TELCO)
    assert report["drifted_features"][0] in {"Contract", "tenure"}
    assert "Contract" in report["drifted_features"]
    assert "MonthlyCharges" not in report["drifted_features"]


def test_missing_values_show_as_missing_share_and_drift(reference) -> None:  # type: ignore[no-untyped-def]
    latest = _latest()
    latest.loc[latest.index[: len(latest) // 2], "MonthlyCharges"] = np.nan
    latest.loc[latest.index[: len(latest) // 2], "PaymentMethod"] = None
    report = drift_report(reference, latest, TELCO)
    assert report["features"]["MonthlyCharges"]["missing_share"] == pytest.approx(0.5)
    assert report["features"]["PaymentMethod"]["missing_share"] == pytest.approx(0.5)
    assert {"MonthlyCharges", "PaymentMethod"} <= set(report["drifted_features"])


def test_psi_basics() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.5, 0.5], [0.9, 0.1]) > PSI_DRIFT_THRESHOLD
    assert np.isfinite(psi([1.0, 0.0], [0.0, 1.0]))
