"""Serving during a rollout: a real model as champion and a candidate beside it, a real local
registry moved by its own rollout operations, the app and the Lambda handler.

The candidate is the champion's ONNX graph with a lower threshold in its card: its probabilities
are the champion's, so which customers' decisions differ is known exactly, and a response's
decisions say which model answered.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from jsonschema import Draft202012Validator

from churnops import drift
from churnops.contract import INSURANCE, TELCO
from churnops.registry import Registry
from churnops.serving.app import HttpRequest, ServingApp, Telemetry
from churnops.serving.monitoring import ScoreComparison, bucket
from churnops.synthetic import generate
from churnops.wiring import ServingEnvironment
from lambdas.serving import handler as handler_module
from lambdas.serving.handler import make_handler
from tests.candidate_models import failing_graph

THRESHOLD_DROP = 0.15


def clean(rows: int, seed: int) -> pd.DataFrame:
    raw = generate(rows, seed=seed)
    frame = TELCO.validate(raw.astype(object).where(raw.notna(), "").astype(str)).clean
    # ids unique across seeds: each test's customers are its own
    frame[TELCO.id_column] = [f"S{seed}-{i:05d}" for i in range(len(frame))]
    return frame


@pytest.fixture(scope="module")
def trained() -> tuple[dict[str, bytes], dict[str, Any]]:
    from churnops.training import TrainingOptions, train

    result = train(clean(1500, seed=5), TELCO, TrainingOptions(families=("logistic",), folds=3))
    return result.files, result.card


class Rollout:
    """A registry with a champion and a registered candidate, and an app serving it."""

    def __init__(self, trained: tuple[dict[str, bytes], dict[str, Any]], root: Path, **env: Any):
        files, card = trained
        self.registry = Registry.open(str(root / "registry"))
        self.champion = self.registry.register(files, card)
        self.registry.promote(self.champion, actor="test", reason="champion")
        self.threshold = float(card["threshold"])
        self.candidate = self.registry.register(
            files, {**card, "threshold": self.threshold - THRESHOLD_DROP}
        )
        settings = {"refresh_seconds": 0, "max_batch_size": 1000, **env}
        self.app = ServingApp(ServingEnvironment(registry_uri=self.registry.uri, **settings))

    def start(self, share: float = 0.3) -> dict[str, Any]:
        return self.registry.start_rollout(
            self.candidate, actor="test", reason="gate passed", canary_share=share
        )

    def advance(self) -> dict[str, Any]:
        return self.registry.advance_rollout(actor="test", reason="looks fine")

    def predict(self, frame: pd.DataFrame) -> tuple[dict[str, Any], Telemetry]:
        body = {"customers": TELCO.api_customers(frame)} if len(frame) > 1 else None
        payload = body or TELCO.api_customers(frame)[0]
        response, telemetry = self.app.handle(
            HttpRequest(
                "POST",
                "/predict",
                {"content-type": "application/json"},
                json.dumps(payload).encode(),
            )
        )
        assert response.status == 200, response.body
        return dict(response.body), telemetry


@pytest.fixture
def rollout(trained, tmp_path: Path) -> Rollout:  # type: ignore[no-untyped-def]
    return Rollout(trained, tmp_path)


# ---- the bucket ---------------------------------------------------------------------------------
def test_a_customers_bucket_is_stable_and_the_share_is_honoured_on_many_ids() -> None:
    ids = [f"{i:04d}-CUST" for i in range(20_000)]
    buckets = [bucket("rollout-a", i) for i in ids]
    assert all(0 <= b < 1 for b in buckets)
    assert buckets == [bucket("rollout-a", i) for i in ids]  # the same place every time
    # The share of ids below 0.2 is a binomial count: within 5 standard deviations of 4,000
    below = sum(b < 0.2 for b in buckets)
    assert abs(below - 4000) < 5 * (20_000 * 0.2 * 0.8) ** 0.5
    # Another rollout places customers independently: about 20% of the first canary's are in
    # the second's (the same customers would be 100%)
    again = sum(bucket("rollout-b", i) < 0.2 for i, b in zip(ids, buckets, strict=True) if b < 0.2)
    assert abs(again - 0.2 * below) < 5 * (below * 0.2 * 0.8) ** 0.5


# ---- shadow -------------------------------------------------------------------------------------
def test_in_shadow_the_champion_answers_and_the_candidate_is_measured(rollout: Rollout) -> None:
    # GIVEN a candidate in shadow, whose lower threshold makes it call more customers churners
    started = rollout.start()
    customers = clean(400, seed=21)
    # WHEN customers are scored
    body, telemetry = rollout.predict(customers)
    # THEN every answer is the champion's, by version and by decision
    assert body["model_version"] == rollout.champion
    assert {p["model_version"] for p in body["predictions"]} == {rollout.champion}
    probabilities = np.asarray([p["churn_probability"] for p in body["predictions"]])
    decisions = [p["churn_prediction"] for p in body["predictions"]]
    assert decisions == (probabilities >= rollout.threshold).astype(int).tolist()
    # AND the candidate scored every customer beside it; its decisions differ exactly where a
    # probability lies between the two thresholds
    champion, candidate = (telemetry.versions[v] for v in (rollout.champion, rollout.candidate))
    assert (champion.role, champion.answered, champion.scored) == ("champion", 400, 400)
    assert (candidate.role, candidate.answered, candidate.scored) == ("candidate", 0, 400)
    between = (probabilities >= rollout.threshold - THRESHOLD_DROP) & (
        probabilities < rollout.threshold
    )
    assert telemetry.disagreements == int(between.sum()) > 0
    assert candidate.churners == champion.churners + telemetry.disagreements
    assert candidate.probability_sum == pytest.approx(champion.probability_sum)
    assert telemetry.rollout == {
        "rollout_id": started["rollout_id"],
        "stage": "shadow",
        "candidate_version": rollout.candidate,
    }


def test_the_comparison_window_reports_disagreement_and_score_psi(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    served = Rollout(trained, tmp_path, rollout_comparison_window=300)
    served.start()
    first, second = clean(200, seed=22), clean(200, seed=23)
    _, early = served.predict(first)
    assert early.comparison is None  # 200 of 300
    _, closing = served.predict(second)
    report = closing.comparison
    assert report is not None and report["rows"] == 400
    assert report["disagreement_rate"] == (early.disagreements + closing.disagreements) / 400
    # the same graph scores: the two score distributions are one, PSI 0
    assert report["score_psi"] == 0.0
    assert (report["champion_version"], report["candidate_version"]) == (
        served.champion,
        served.candidate,
    )
    # the next window starts afresh
    assert served.predict(clean(100, seed=24))[1].comparison is None


def test_the_score_psi_is_the_drift_reports_psi_on_the_champions_bins() -> None:
    rng = np.random.default_rng(3)
    champion = rng.beta(2, 5, 1000)
    candidate = np.clip(champion + rng.normal(0.08, 0.05, 1000), 0, 1)
    comparison = ScoreComparison(window=1000)
    report = comparison.observe(champion.tolist(), candidate.tolist(), disagreements=37)
    assert report is not None and report["disagreement_rate"] == 0.037
    # churnops.drift bins a numeric feature of the reference (here: the champion's scores) and
    # computes PSI of the latest (the candidate's) against it
    edges = drift._numeric_edges(champion)
    expected = drift.psi(
        drift._numeric_shares(champion, edges), drift._numeric_shares(candidate, edges)
    )
    assert report["score_psi"] == pytest.approx(expected, abs=1e-6) and expected > 0.1


# ---- canary -------------------------------------------------------------------------------------
def test_in_canary_a_customer_sees_one_model_for_the_whole_stage(rollout: Rollout) -> None:
    started = rollout.start(share=0.3)
    rollout.advance()
    customers = clean(600, seed=31)
    share = {
        row[TELCO.id_column]: bucket(started["rollout_id"], row[TELCO.id_column]) < 0.3
        for _, row in customers.iterrows()
    }
    # WHEN the customers are scored in one batch
    body, telemetry = rollout.predict(customers)
    # THEN each answer is named by the model that gave it, as the bucket rule says, in order
    assert [p[TELCO.id_column] for p in body["predictions"]] == list(share)
    by_version = {p[TELCO.id_column]: p["model_version"] for p in body["predictions"]}
    assert by_version == {
        i: rollout.candidate if in_share else rollout.champion for i, in_share in share.items()
    }
    # ... each with its own model's decision
    for p in body["predictions"]:
        threshold = rollout.threshold - (
            THRESHOLD_DROP if p["model_version"] == rollout.candidate else 0
        )
        assert p["churn_prediction"] == int(p["churn_probability"] >= threshold)
    answered = sum(share.values())
    assert abs(answered - 180) < 5 * (600 * 0.3 * 0.7) ** 0.5
    assert telemetry.versions[rollout.candidate].answered == answered
    assert telemetry.versions[rollout.champion].answered == 600 - answered
    assert body["model_version"] == rollout.champion  # both answered: the champion's
    # AND one at a time, each customer gets the same model again, whatever the request
    for customer_id in list(share)[:40]:
        one = customers[customers[TELCO.id_column] == customer_id]
        single, _ = rollout.predict(one)
        assert single["model_version"] == by_version[customer_id]
        assert single["predictions"][0]["model_version"] == by_version[customer_id]


def test_canary_responses_follow_the_published_document(rollout: Rollout) -> None:
    rollout.start(share=0.5)
    rollout.advance()
    doc = rollout.app.openapi
    schema = doc["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    validator = Draft202012Validator({**schema["schema"], "components": doc["components"]})
    body, _ = rollout.predict(clean(50, seed=32))
    assert {p["model_version"] for p in body["predictions"]} == {
        rollout.champion,
        rollout.candidate,
    }
    validator.validate(body)
    health, _ = rollout.app.handle(HttpRequest("GET", "/health", {}, b""))
    health_schema = doc["paths"]["/health"]["get"]["responses"]["200"]["content"]
    Draft202012Validator(
        {**health_schema["application/json"]["schema"], "components": doc["components"]}
    ).validate(health.body)
    assert (health.body["candidate_version"], health.body["rollout_stage"]) == (
        rollout.candidate,
        "canary",
    )


# ---- the stages as the registry moves them ------------------------------------------------------
def test_the_app_follows_the_rollout_through_full_and_abort(rollout: Rollout) -> None:
    customers = clean(200, seed=41)
    # No rollout: the champion alone, one version in the telemetry
    body, telemetry = rollout.predict(customers)
    assert set(telemetry.versions) == {rollout.champion} and telemetry.rollout is None
    rollout.start(share=0.5)
    rollout.advance()
    candidate_model = rollout.app.champion.served().candidate.model
    # full: the candidate is the champion, served alone, and not loaded a second time
    rollout.advance()
    body, telemetry = rollout.predict(customers)
    assert {p["model_version"] for p in body["predictions"]} == {rollout.candidate}
    assert set(telemetry.versions) == {rollout.candidate} and telemetry.rollout is None
    assert rollout.app.champion.current() is candidate_model
    # a new rollout of the old champion, aborted: the champion answers everyone again
    rollout.registry.start_rollout(rollout.champion, actor="t", reason="back", canary_share=1.0)
    rollout.registry.advance_rollout(actor="t", reason="r")
    body, _ = rollout.predict(customers)
    assert {p["model_version"] for p in body["predictions"]} == {rollout.champion}
    rollout.registry.abort_rollout(actor="t", reason="alarm", alarm="candidate-errors")
    body, telemetry = rollout.predict(customers)
    assert {p["model_version"] for p in body["predictions"]} == {rollout.candidate}
    assert telemetry.rollout is None


def test_a_candidate_of_another_contract_is_refused_and_the_champion_serves_alone(
    trained, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    served = Rollout(trained, tmp_path)
    files, card = trained
    foreign = served.registry.register(files, {**card, "schema_hash": INSURANCE.schema_hash})
    served.registry.start_rollout(foreign, actor="t", reason="wrong contract")
    body, telemetry = served.predict(clean(20, seed=42))
    assert {p["model_version"] for p in body["predictions"]} == {served.champion}
    assert "schema" in (served.app.champion.rollout_error or "")
    assert served.app.champion.status()["candidate_version"] is None
    # AND every request counts as a failure of that candidate: its error alarm must see a
    # candidate that cannot serve, or the rollout would advance on silence and promote it
    for _ in range(2):
        _, telemetry = served.predict(clean(5, seed=43))
        assert telemetry.rollout is not None
        assert telemetry.rollout["candidate_error"] == "unservable"
        assert telemetry.rollout["candidate_version"] == foreign
        assert telemetry.versions[foreign].errors == 1
        assert telemetry.versions[foreign].role == "candidate"
        assert telemetry.versions[foreign].scored == 0
    # ... until the rollout ends: then the champion serves alone, nothing counted
    served.registry.abort_rollout(actor="t", reason="cannot serve")
    _, telemetry = served.predict(clean(5, seed=44))
    assert telemetry.rollout is None and set(telemetry.versions) == {served.champion}


# ---- the handler's metrics ----------------------------------------------------------------------
def emf_records(out: str) -> list[dict[str, Any]]:
    """The EMF records written to stdout, each metric's one value unwrapped from its list."""
    records = []
    for line in out.splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if "_aws" not in record:
            continue
        for metric in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            [record[metric["Name"]]] = record[metric["Name"]]
        records.append(record)
    return records


def test_the_handler_emits_per_version_metrics_and_the_comparison(
    trained, tmp_path: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a candidate in shadow and a comparison window of 30 customers
    served = Rollout(trained, tmp_path, rollout_comparison_window=30)
    started = served.start()
    handler = make_handler(lambda: served.app)
    monkeypatch.setattr(handler_module.logger.registered_handler, "stream", io.StringIO())
    customers = TELCO.api_customers(clean(30, seed=51))
    event = {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"customers": customers}),
        "requestContext": {"requestId": "r-1"},
    }
    capsys.readouterr()
    # WHEN the handler serves a request that closes the window
    response = handler(event, None)
    assert response["statusCode"] == 200
    records = emf_records(capsys.readouterr().out)
    # THEN one record per version, under (ModelVersion, Role) and (Role)
    per_version = {r["ModelVersion"]: r for r in records if "ModelVersion" in r}
    assert set(per_version) == {served.champion, served.candidate}
    for version, role in ((served.champion, "champion"), (served.candidate, "candidate")):
        record = per_version[version]
        [directive] = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "ChurnOps"
        dimensions = [sorted(d) for d in directive["Dimensions"]]
        assert ["ModelVersion", "Role"] in [[d for d in s if d != "service"] for s in dimensions]
        assert ["Role"] in [[d for d in s if d != "service"] for s in dimensions]
        assert record["Role"] == role and record["rollout_id"] == started["rollout_id"]
        assert record["VersionPredictions"] == 30 and record["VersionErrors"] == 0
        assert 0 <= record["VersionMeanChurnProbability"] <= 1
        assert 0 <= record["VersionChurnShare"] <= 1
        assert record["VersionScoringLatency"] >= 0
    # only the version that answered has a request latency
    assert "VersionLatency" in per_version[served.champion]
    assert "VersionLatency" not in per_version[served.candidate]
    assert (
        per_version[served.candidate]["VersionChurnShare"]
        >= per_version[served.champion]["VersionChurnShare"]
    )
    # AND the candidate's record carries the closed window's comparison with the champion
    candidate = per_version[served.candidate]
    probabilities = np.asarray(
        [p["churn_probability"] for p in json.loads(response["body"])["predictions"]]
    )
    between = (probabilities >= served.threshold - THRESHOLD_DROP) & (
        probabilities < served.threshold
    )
    assert candidate["ShadowDecisionDisagreement"] == pytest.approx(between.sum() / 30)
    assert candidate["ShadowScorePSI"] == 0.0
    assert candidate["champion_version"] == served.champion
    assert "ShadowScorePSI" not in per_version[served.champion]
    # AND the request-level record keeps its dimensions and names
    [general] = [r for r in records if "ModelVersion" not in r]
    assert "PredictLatency" in general and "Role" not in general


# ---- a candidate that fails -----------------------------------------------------------------------
def test_a_failing_candidate_is_counted_and_the_champion_answers(
    trained, tmp_path: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    served = Rollout(trained, tmp_path)
    files, card = trained
    broken = served.registry.register({**files, "model.onnx": failing_graph()}, card)
    served.registry.start_rollout(broken, actor="t", reason="r", canary_share=1.0)
    served.registry.advance_rollout(actor="t", reason="r")  # canary: it would answer everyone
    assert served.app.champion.served().candidate.model.version == broken  # it loads
    handler = make_handler(lambda: served.app)
    monkeypatch.setattr(handler_module.logger.registered_handler, "stream", io.StringIO())
    event = {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"customers": TELCO.api_customers(clean(3, seed=61))}),
        "requestContext": {"requestId": "r-2"},
    }
    capsys.readouterr()
    response = handler(event, None)
    # THEN every customer gets the champion's answer, and the failure is the candidate's metric
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert {p["model_version"] for p in body["predictions"]} == {served.champion}
    per_version = {
        r["ModelVersion"]: r for r in emf_records(capsys.readouterr().out) if "Role" in r
    }
    assert per_version[broken]["VersionErrors"] == 1 and per_version[broken]["Role"] == "candidate"
    assert "VersionPredictions" not in per_version[broken]
    assert per_version[served.champion]["VersionErrors"] == 0
    assert per_version[served.champion]["VersionPredictions"] == 3
