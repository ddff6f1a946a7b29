"""A challenger's rollout in the running twin, as deployed: the rollout state machine the CDK
app synthesizes, its Lambda steps in sandboxes as their own roles, the serving function behind
the API answering live traffic, its EMF metrics turned into CloudWatch metrics, and the
candidate's alarms evaluated by the twin (churnops/local/moto_ext/cloudwatch.py). The twin
synthesizes with short bakes (churnops/local/synthesis.py TWIN_CONTEXT).

Each scenario registers a candidate beside the champion and starts the rollout state machine
with the input the retrain flow hands it (its snapshot, train and evaluate results), while a
client keeps calling POST /predict; then it checks where the rollout ended, what the registry's
history says and which model the API answers with:
- a candidate that fails when scoring is rolled back by its error alarm;
- a candidate whose scores diverge from the champion's is rolled back by the disagreement or
  score-PSI alarm;
- a healthy candidate goes shadow -> canary -> full, becomes champion and batch-scores.

Slow (a few minutes): one twin for the module."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.mariadb, pytest.mark.cdk]

REPO = Path(__file__).resolve().parents[2]
ROWS = 2000
BATCH = 50  # customers per request: the failing graph fails on any batch but 14


@pytest.fixture(scope="module")
def customers_csv(tmp_path_factory) -> Path:
    from churnops.synthetic import generate, write_csv

    path = tmp_path_factory.mktemp("rollout-data") / "customers.csv"
    write_csv(generate(ROWS, 71), path)
    return path


@pytest.fixture(scope="module")
def twin(services, customers_csv, tmp_path_factory):
    """A twin with customers and a first champion (promoted directly: nothing to compare)."""
    from churnops.local.twin import Twin

    twin = Twin(tmp_path_factory.mktemp("rollout-twin") / "state")
    twin.up()
    try:
        assert twin.upload(customers_csv)["status"] == "succeeded"
        first = twin.retrain()
        assert first["execution"] == "SUCCEEDED", first
        assert first["rollout"]["execution"] == "SUCCEEDED", first["rollout"]
        assert first["rollout"]["stage"] == "full" and first["rollout"]["stages"] == []
        twin.handover = first["output"]  # the retrain's results, as StartRollout passes them
        yield twin
    finally:
        twin.down()


def _clean(rows: int, seed: int, *, flip: bool = False):
    from churnops.contract import TELCO
    from churnops.synthetic import generate

    raw = generate(rows, seed)
    text = raw.astype(object).where(raw.notna(), "").astype(str)
    clean = TELCO.validate(text).clean
    if flip:  # a model of the opposite of churn: confident, and wrong the other way round
        target = TELCO.target_vector(clean)
        clean[TELCO.target_column] = [
            TELCO.negative_label if value == 1 else TELCO.positive_label for value in target
        ]
    return clean


def _register(twin, files: dict[str, bytes], card: dict[str, Any]) -> str:
    with twin.environment():
        return str(twin.registry().register(files, card))


def _trained(seed: int, *, flip: bool = False) -> tuple[dict[str, bytes], dict[str, Any]]:
    from churnops.contract import TELCO
    from churnops.training import TrainingOptions, train

    result = train(
        _clean(ROWS, seed, flip=flip), TELCO, TrainingOptions(families=("logistic",), folds=3)
    )
    assert result.status == "champion-eligible", result.reason
    return result.files, result.card


def _start_rollout(twin, candidate: str) -> str:
    """The rollout state machine started as the retrain's StartRollout starts it."""
    from churnops.aws import client

    with twin.environment() as state:
        registry = twin.registry()
        champion = registry.champion()
        handed = twin.handover
        run_id = f"e2e-{secrets.token_hex(3)}"
        evaluate = {
            **handed["evaluate"]["Payload"],
            "promote": True,
            "challenger_version": candidate,
            "champion_version": champion["version"],
            "champion_etag": registry.champion_etag(),
            "summary": "test candidate",
        }
        return str(
            client("stepfunctions").start_execution(
                stateMachineArn=state["layout"]["rollout_state_machine"],
                name=f"{run_id}-{candidate}",
                input=json.dumps(
                    {
                        "snapshot": {
                            "Payload": {**handed["snapshot"]["Payload"], "run_id": run_id}
                        },
                        "train": {"Payload": {**handed["train"]["Payload"], "version": candidate}},
                        "evaluate": {"Payload": evaluate},
                    }
                ),
            )["executionArn"]
        )


class Traffic:
    """A client calling POST /predict with batches of the twin's customers until stopped; it
    records every answer (status, the version the response names)."""

    def __init__(self, twin, customers_csv: Path) -> None:
        from churnops.commands.demo import api_customers

        state = twin.status()
        self.base, self.key = state["api_url"], state["api_key"]
        self.customers = api_customers(customers_csv, ROWS)
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from churnops.commands.demo import call_api

        offset = 0
        while not self._stop.is_set():
            batch = self.customers[offset : offset + BATCH]
            offset = (offset + BATCH) % (len(self.customers) - BATCH)
            status, body = call_api(
                self.base, "POST", "/predict", {"customers": batch}, api_key=self.key
            )
            self.answers.append((status, (body or {}).get("model_version")))
            time.sleep(0.1)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _follow(twin, execution_arn: str) -> dict[str, Any]:
    return twin.follow_rollout(execution_arn, timeout=600)


def _champion(twin) -> str:
    with twin.environment():
        return str(twin.registry().champion()["version"])


def _abort_step(ended: dict[str, Any]) -> dict[str, Any]:
    (step,) = [s for s in ended["stages"] if s["action"] == "rollout_abort"]
    return step


def test_a_candidate_that_fails_is_rolled_back_by_its_error_alarm(twin, customers_csv):
    from tests.candidate_models import failing_graph

    # GIVEN a candidate whose graph loads but fails whenever it scores a batch of 50
    champion = _champion(twin)
    with twin.environment():
        card = twin.registry().card(champion)
        files = {name: twin.registry().read(champion, name) for name in card["files"]}
    candidate = _register(twin, {**files, "model.onnx": failing_graph()}, card)
    # WHEN its rollout runs under live traffic
    with Traffic(twin, customers_csv) as traffic:
        ended = _follow(twin, _start_rollout(twin, candidate))
    # THEN the rollout was rolled back by the candidate's error alarm, recorded as such
    assert ended["execution"] == "SUCCEEDED", ended
    assert ended["stage"] == "aborted", ended
    assert ended["alarm"] == "churnops-candidate-errors", ended
    step = _abort_step(ended)
    assert step["alarm"] == "churnops-candidate-errors"
    assert "ALARM" in step["reason"] and step["actor"] == "retrain-state-machine"
    # ... the champion never changed, and no customer got an error or the candidate's answer
    assert _champion(twin) == champion
    assert traffic.answers and {status for status, _ in traffic.answers} == {200}
    assert {version for _, version in traffic.answers} == {champion}


def test_a_candidate_whose_scores_diverge_is_rolled_back_by_the_comparison(twin, customers_csv):
    # GIVEN a candidate that learned the opposite of churn: it works, but disagrees
    champion = _champion(twin)
    candidate = _register(twin, *_trained(seed=72, flip=True))
    # WHEN its rollout runs under live traffic
    with Traffic(twin, customers_csv) as traffic:
        ended = _follow(twin, _start_rollout(twin, candidate))
    # THEN the comparison with the champion on the same customers rolled it back
    assert ended["execution"] == "SUCCEEDED", ended
    assert ended["stage"] == "aborted", ended
    assert ended["alarm"] in ("churnops-candidate-disagreement", "churnops-candidate-score-psi")
    assert _abort_step(ended)["alarm"] == ended["alarm"]
    assert _champion(twin) == champion
    assert {status for status, _ in traffic.answers} == {200}
    with twin.environment():
        assert twin.registry().active_rollout() is None


def test_a_healthy_candidate_goes_through_every_stage_and_becomes_champion(twin, customers_csv):
    # GIVEN a candidate trained like the champion on the same kind of customers
    champion = _champion(twin)
    candidate = _register(twin, *_trained(seed=73))
    # WHEN its rollout runs under live traffic
    with Traffic(twin, customers_csv) as traffic:
        ended = _follow(twin, _start_rollout(twin, candidate))
    # THEN it went shadow -> canary -> full with every alarm quiet, and is champion
    assert ended["execution"] == "SUCCEEDED", ended
    assert ended["stage"] == "full" and ended["version"] == candidate, ended
    assert [(s["action"], s["stage"]) for s in ended["stages"]] == [
        ("rollout_start", "shadow"),
        ("rollout_advance", "canary"),
        ("rollout_advance", "full"),
    ]
    assert _champion(twin) == candidate
    status = twin.rollout_status()
    assert status["champion"] == candidate and status["active"] is False
    assert status["latest_execution"]["status"] == "SUCCEEDED"
    # ... the alarms were evaluated on the candidate's own data, and none fired
    assert set(status["candidate_alarms"]) == {
        f"churnops-candidate-{signal}"
        for signal in ("errors", "latency", "disagreement", "score-psi")
    }
    assert all(a["state"] != "ALARM" for a in status["candidate_alarms"].values())
    # ... customers were answered throughout, by the champion and, in canary, the candidate
    assert {status for status, _ in traffic.answers} == {200}
    assert {version for _, version in traffic.answers} <= {champion, candidate}
    # ... and every customer was batch-scored with the new champion
    from churnops import database

    with twin.environment() as state:
        layout = state["layout"]
        conn = database.connect(layout["db_secret_arn"], database=layout["database_name"])
        try:
            scores = database.read_table(conn, database.SCORES_TABLE)
        finally:
            conn.close()
    assert set(scores["model_version"]) >= {candidate}
    assert (scores["model_version"] == candidate).sum() == ROWS


def test_a_person_can_abort_a_rollout_from_the_twins_command_line(twin, customers_csv):
    import subprocess
    import sys

    champion = _champion(twin)
    candidate = _register(twin, *_trained(seed=74))
    execution = _start_rollout(twin, candidate)

    def churnops(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "churnops", "local", "--state-dir", str(twin.state_dir), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return dict(json.loads(done.stdout))

    deadline = time.monotonic() + 60
    while not churnops("rollout", "status")["active"] and time.monotonic() < deadline:
        time.sleep(0.5)
    aborted = churnops("rollout", "abort", "--reason", "not today", "--actor", "oncall")
    assert aborted["stage"] == "aborted" and aborted["actor"] == "oncall"
    ended = _follow(twin, execution)
    assert ended["execution"] == "SUCCEEDED" and ended["stage"] == "aborted", ended
    assert ended["alarm"] is None
    assert _abort_step(ended)["reason"] == "not today"
    assert _champion(twin) == champion
