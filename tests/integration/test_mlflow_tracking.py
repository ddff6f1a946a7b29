"""Experiment tracking against a real MLflow tracking server: the server `./dev setup` installs in
.venv-mlflow (full mlflow, requirements-mlflow-server.txt), started here on loopback with a SQLite
backend and a local artefact store; the client is the mlflow-skinny the deployed code has.

A small real model (logistic, synthetic customers) is registered in a registry on a local
directory and logged; the run's params, metrics, card and ONNX bytes are read back with
`MlflowClient`, and registry decisions (promotion, a rollout aborted, a rollout to full, a
rollback) are checked against the registered model's `champion` and `candidate` aliases.
Unset, mlflow is never imported.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from churnops import tracking
from churnops.contract import TELCO
from churnops.registry import STATUS_ELIGIBLE, Registry
from churnops.synthetic import generate
from churnops.training import TrainingOptions, TrainingResult, train
from churnops.wiring import CARD, MODEL_ONNX
from tests.conftest import REPO, free_port, need

pytestmark = pytest.mark.slow

MLFLOW_VENV = Path(os.environ.get("CHURNOPS_MLFLOW_VENV", REPO / ".venv-mlflow"))
MODEL = tracking.model_name("telco")
STARTUP_SECONDS = 180  # the first start creates the SQLite schema (alembic migrations)


def _pins(path: Path) -> dict[str, str]:
    return dict(
        line.strip().split("==", 1)
        for line in path.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )


def test_the_client_is_the_servers_version() -> None:
    # The REST API between them is only tested for this pair.
    assert (
        _pins(REPO / "requirements.txt")["mlflow-skinny"]
        == _pins(REPO / "requirements-mlflow-server.txt")["mlflow"]
        == _pins(REPO / "containers" / "training" / "requirements.txt")["mlflow-skinny"]
    )


# ---- the server ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    executable = MLFLOW_VENV / "bin" / "mlflow"
    need(executable.exists(), f"the MLflow tracking server ({executable}; `./dev setup`)")
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(folder),
        # Its background job runner (a handful of worker processes) serves GenAI features only.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with (folder / "server.log").open("wb") as output:
        server = subprocess.Popen(
            [
                str(executable),
                "server",
                "--backend-store-uri",
                f"sqlite:///{folder / 'mlflow.db'}",
                "--artifacts-destination",
                str(folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=folder,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own process group: the server's workers stop with it.
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _healthy(url):
            log = (folder / "server.log").read_text(errors="replace")[-3000:]
            assert server.poll() is None, f"the MLflow server exited:\n{log}"
            assert time.monotonic() < deadline, f"the MLflow server did not start:\n{log}"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def tracking_on(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    # Set here so that the client's own defaults (churnops.tracking) do not outlive the test.
    for key, value in tracking._CLIENT_DEFAULTS.items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=mlflow_server)


# ---- a small real model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained() -> TrainingResult:
    clean = TELCO.validate(generate(3000, seed=14)).clean
    result = train(clean, TELCO, TrainingOptions(families=("logistic",), folds=3))
    assert result.status == STATUS_ELIGIBLE and MODEL_ONNX in result.files
    return result


def _register(registry: Registry, trained: TrainingResult) -> str:
    """A registered version as the retrain's train step makes it (card plus its `retrain` part)."""
    card = {**trained.card, "retrain": {"run_id": "test-run", "snapshot_rows": 3000}}
    return registry.register(trained.files, card)


def _aliases(client: Any) -> dict[str, str]:
    """The registered model's aliases, each as the registry version its model version is."""
    model = client.get_registered_model(MODEL)
    return {
        alias: client.get_model_version(MODEL, number).tags[tracking.VERSION_TAG]
        for alias, number in model.aliases.items()
    }


# ---- training runs ------------------------------------------------------------------------------
def test_a_training_run_logs_params_metrics_card_and_onnx(
    tracking_on: Any, trained: TrainingResult, tmp_path: Path
) -> None:
    client = tracking_on
    registry = Registry.open(str(tmp_path / "registry"))
    # GIVEN a registered version
    version = _register(registry, trained)
    card = registry.card(version)

    # WHEN it is logged
    run_id = tracking.log_training_run(registry, version, trained.files)

    # THEN one finished run, named and tagged by the registry version, in the contract's experiment
    assert run_id is not None
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == version
    assert client.get_experiment(run.info.experiment_id).name == MODEL
    assert run.data.tags[tracking.VERSION_TAG] == version
    assert run.data.tags[tracking.REGISTRY_TAG] == registry.uri
    # params: the family, every hyperparameter, the training options and the retrain's snapshot
    params = run.data.params
    assert params["family"] == card["family"] == "logistic"
    assert params["contract"] == "telco" and params["status"] == STATUS_ELIGIBLE
    for name, value in card["params"].items():
        assert json.loads(params[f"model.{name}"]) == value
    assert params["training.folds"] == "3" and params["training.seed"] == "42"
    assert params["retrain.run_id"] == "test-run" and params["retrain.snapshot_rows"] == "3000"
    # metrics: the holdout figures, the AUC interval, the CV mean and every fold
    metrics, figures = run.data.metrics, card["metrics"]
    for name in ("roc_auc", "pr_auc", "brier", "cv_auc_mean", "cv_auc_std", "threshold"):
        assert metrics[name] == pytest.approx(figures[name])
    assert [metrics["roc_auc_ci95_low"], metrics["roc_auc_ci95_high"]] == figures["roc_auc_ci95"]
    folds = client.get_metric_history(run_id, "cv_auc_folds")
    assert [m.value for m in sorted(folds, key=lambda m: m.step)] == figures["cv_auc_folds"]
    assert metrics["candidate.logistic.cv_auc_mean"] == pytest.approx(figures["cv_auc_mean"])
    # the card exactly as the registry stores it, and the same ONNX bytes
    card_copy = Path(client.download_artifacts(run_id, CARD, str(tmp_path)))
    assert card_copy.read_bytes() == registry.read(version, CARD)
    onnx_copy = Path(client.download_artifacts(run_id, f"model/{MODEL_ONNX}", str(tmp_path)))
    assert onnx_copy.read_bytes() == registry.read(version, MODEL_ONNX)
    # and a version of the registered model, tagged with the registry version
    [model_version] = client.search_model_versions(
        f"name = '{MODEL}' and tags.{tracking.VERSION_TAG} = '{version}'"
    )
    assert model_version.run_id == run_id and model_version.source == f"runs:/{run_id}/model"

    # WHEN the same version is logged again (a retried step)
    # THEN it is the same run and the same model version
    assert tracking.log_training_run(registry, version, trained.files) == run_id
    assert len(client.search_model_versions(f"tags.{tracking.VERSION_TAG} = '{version}'")) == 1


def test_churnops_train_logs_its_run_and_its_first_champion_moves_the_alias(
    tracking_on: Any, trained: TrainingResult, tmp_path: Path
) -> None:
    from churnops.training import register_result

    client = tracking_on
    registry = Registry.open(str(tmp_path / "registry"))
    # WHEN `churnops train` registers a model into an empty registry (it becomes champion)
    summary = register_result(trained, registry, actor="analyst")
    # THEN its run is logged like the retrain's, and the champion alias names it
    version = summary["version"]
    [run] = client.search_runs(
        [client.get_experiment_by_name(MODEL).experiment_id],
        filter_string=f"tags.{tracking.VERSION_TAG} = '{version}'",
    )
    assert run.data.params["family"] == "logistic"
    assert _aliases(client)["champion"] == version


# ---- aliases from registry decisions --------------------------------------------------------------
def test_registry_decisions_move_the_champion_and_candidate_aliases(
    tracking_on: Any, trained: TrainingResult, tmp_path: Path
) -> None:
    client = tracking_on
    registry = Registry.open(str(tmp_path / "registry"))
    first, second, third = (_register(registry, trained) for _ in range(3))
    for version in (first, second, third):
        assert tracking.log_training_run(registry, version, trained.files) is not None

    # WHEN the first is promoted: it is `champion`
    registry.promote(first, actor="test", reason="first")
    assert _aliases(client) == {"champion": first}

    # WHEN the second starts a rollout: it is `candidate`, through shadow and canary
    registry.start_rollout(second, actor="test", reason="gate passed")
    assert _aliases(client) == {"champion": first, "candidate": second}
    registry.advance_rollout(actor="test", reason="bake over")
    assert _aliases(client) == {"champion": first, "candidate": second}

    # WHEN that rollout is aborted: `candidate` goes, `champion` stays
    registry.abort_rollout(actor="test", reason="errors", alarm="candidate-errors")
    assert _aliases(client) == {"champion": first}

    # WHEN the third goes shadow, canary, full: it is `champion`, and `candidate` goes
    registry.start_rollout(third, actor="test", reason="gate passed")
    assert _aliases(client) == {"champion": first, "candidate": third}
    registry.advance_rollout(actor="test", reason="bake over")
    registry.advance_rollout(actor="test", reason="bake over")
    assert registry.champion()["version"] == third  # type: ignore[index]
    assert _aliases(client) == {"champion": third}

    # WHEN it is rolled back: `champion` is the first again
    registry.rollback(actor="test", reason="alarm", from_version=third)
    assert _aliases(client) == {"champion": first}


def test_a_version_mlflow_does_not_know_is_skipped_not_an_error(
    tracking_on: Any, trained: TrainingResult, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = tracking_on
    registry = Registry.open(str(tmp_path / "registry"))
    logged = _register(registry, trained)
    tracking.log_training_run(registry, logged, trained.files)
    registry.promote(logged, actor="test", reason="first")
    assert _aliases(client)["champion"] == logged
    # GIVEN a version trained while tracking was off (never logged)
    unlogged = _register(registry, trained)

    # WHEN it becomes champion
    with caplog.at_level(logging.INFO, logger="churnops.tracking"):
        pointer = registry.promote(unlogged, actor="test", reason="by hand")

    # THEN the decision stands, and `champion` no longer names the replaced model
    assert pointer["version"] == unlogged == registry.champion()["version"]  # type: ignore[index]
    assert "champion" not in _aliases(client)
    assert f"{unlogged} has no version of {MODEL}" in caplog.text


def test_an_unreachable_mlflow_fails_no_decision_and_leaks_no_credentials(
    trained: TrainingResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a tracking URI with credentials where nothing listens
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ops:s3cret-token@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    registry = Registry.open(str(tmp_path / "registry"))
    first, second = _register(registry, trained), _register(registry, trained)

    # WHEN versions are logged, promoted, rolled out and rolled back
    with caplog.at_level(logging.WARNING, logger="churnops.tracking"):
        assert tracking.log_training_run(registry, first, trained.files) is None
        registry.promote(first, actor="test", reason="first")
        registry.start_rollout(second, actor="test", reason="gate passed")
        registry.advance_rollout(actor="test", reason="bake over")
        registry.advance_rollout(actor="test", reason="bake over")
        registry.rollback(actor="test", reason="alarm", from_version=second)

    # THEN every decision happened, each MLflow failure is a warning, and none shows the secret
    assert registry.champion()["version"] == first  # type: ignore[index]
    assert [h["action"] for h in registry.history()].count("rollback") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) >= 5
    assert all("the registry" in r.getMessage() for r in warnings)
    assert "s3cret-token" not in caplog.text


# ---- off ----------------------------------------------------------------------------------------
def test_unset_mlflow_is_never_imported(tmp_path: Path) -> None:
    # GIVEN no MLFLOW_TRACKING_URI, WHEN a process trains, registers, logs, promotes and rolls out
    script = f"""
import sys
from churnops import tracking
from churnops.contract import TELCO
from churnops.registry import Registry
from churnops.synthetic import generate
from churnops.training import TrainingOptions, train

result = train(TELCO.validate(generate(3000, seed=14)).clean, TELCO,
               TrainingOptions(families=("logistic",), folds=3))
registry = Registry.open({str(tmp_path / "registry")!r})
first, second = (registry.register(result.files, result.card) for _ in range(2))
assert tracking.log_training_run(registry, first, result.files) is None
registry.promote(first, actor="test", reason="first")
registry.start_rollout(second, actor="test", reason="gate")
registry.abort_rollout(actor="test", reason="alarm")
print(sorted(name for name in sys.modules if name.split(".")[0] == "mlflow"))
"""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # THEN mlflow was never imported
    assert done.stdout.strip().splitlines()[-1] == "[]"
