"""Experiment tracking in MLflow, on when `MLFLOW_TRACKING_URI` is set (the deployed retrain gets it
from the cdk.json context key `retrain.mlflow_tracking_uri`); unset, nothing here imports mlflow.

- `log_training_run`: one MLflow run per trained registry version, in the experiment
  `churnops-<contract>`: params (family, hyperparameters, training options, cost policy, the
  retrain's snapshot), metrics (the card's holdout and cross-validation figures), the model card
  exactly as the registry stores it, and `model/model.onnx`. A version with an ONNX model also
  becomes a version of the registered model `churnops-<contract>`, tagged with its registry
  version.
- Registry decisions move the registered model's aliases: `champion` follows the champion pointer
  (promotion, rollback, a rollout reaching full), `candidate` names a rollout's candidate while it
  is in shadow or canary and is removed when the rollout ends (full or aborted).

The registry is the source of truth, MLflow a view of it: a failure to reach MLflow is a warning,
never a failed training or decision. A registry version with no MLflow counterpart (trained before
tracking was on) gets no alias, and an alias never keeps naming a model the decision replaced.
Warnings name the error, never the tracking URI (it may carry credentials).

The mlflow client retries a failed request 7 times over about 4 minutes by default; a promotion
or rollback must not wait that long for a view, so unless they are set explicitly the client
here retries twice and gives a request 20 s (`MLFLOW_HTTP_REQUEST_*`, mlflow's own settings).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from churnops.wiring import ACTIVE_STAGES, CARD, MODEL_ONNX

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from churnops.registry import Registry

log = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
CHAMPION_ALIAS = "champion"
CANDIDATE_ALIAS = "candidate"
# Tag on runs and model versions: the registry version they are the MLflow side of.
VERSION_TAG = "registry_version"
REGISTRY_TAG = "registry_uri"
MODEL_ARTIFACTS = "model"  # the run's folder holding model.onnx; a model version's source

_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # The client prints run links to stdout: noise in a Lambda log, and a URI with credentials.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
# mlflow's limits: a param value's length and a log_batch call's size.
_PARAM_VALUE_MAX = 6000
_BATCH = 100
_USERINFO = re.compile(r"(\w+://)[^/\s@]+@")


def tracking_uri(environ: Mapping[str, str] | None = None) -> str | None:
    """The MLflow tracking URI, or None when tracking is off."""
    value = (os.environ if environ is None else environ).get(TRACKING_URI_ENV, "").strip()
    return value or None


def model_name(contract: str) -> str:
    """The registered model (and the experiment) of a contract's versions."""
    return f"churnops-{contract}"


def _client() -> MlflowClient:
    for key, value in _CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def _describe(err: BaseException) -> str:
    """An error for a log line: its type and message, any credentials in a URL masked."""
    message = _USERINFO.sub(r"\1***@", str(err))
    return f"{type(err).__name__}: {message[:300]}"


# ---- training runs ------------------------------------------------------------------------------
def log_training_run(registry: Registry, version: str, files: Mapping[str, bytes]) -> str | None:
    """Log registered `version` (its card read back from `registry`, its `files` as registered)
    as an MLflow run and, with an ONNX model, as a version of the registered model. Returns the
    run id; None when tracking is off or MLflow failed (logged as a warning). Run again for the
    same version, it returns the run it logged the first time."""
    if tracking_uri() is None:
        return None
    try:
        return _log_training_run(_client(), registry, version, files)
    except Exception as err:
        log.warning(
            "MLflow tracking: version %s was not logged (%s); the registry has it all the same",
            version,
            _describe(err),
        )
        return None


def _log_training_run(
    client: MlflowClient, registry: Registry, version: str, files: Mapping[str, bytes]
) -> str:
    from mlflow.entities import RunStatus

    card_bytes = registry.read(version, CARD)
    card: dict[str, Any] = json.loads(card_bytes)
    name = model_name(card["contract"])
    experiment_id = _experiment_id(client, name)
    logged = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{VERSION_TAG} = '{version}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if logged:
        run_id: str = logged[0].info.run_id
    else:
        tags = {VERSION_TAG: version, REGISTRY_TAG: registry.uri, "status": str(card["status"])}
        run_id = client.create_run(experiment_id, run_name=version, tags=tags).info.run_id
        try:
            _log_run_contents(client, run_id, card, card_bytes, files)
        except BaseException:
            # Marked failed if MLflow still answers; the error that stopped the run is the news.
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        client.set_terminated(run_id)
    if MODEL_ONNX in files:
        _register_model_version(client, name, run_id, version, card, registry.uri)
    return run_id


def _experiment_id(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return client.create_experiment(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # Another training created it meanwhile.
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None
        return str(experiment.experiment_id)


def _log_run_contents(
    client: MlflowClient,
    run_id: str,
    card: Mapping[str, Any],
    card_bytes: bytes,
    files: Mapping[str, bytes],
) -> None:
    from mlflow.entities import Metric, Param

    params = run_params(card)
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step) for key, value, step in run_metrics(card)]
    items = [Param(key, value) for key, value in sorted(params.items())]
    for start in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[start : start + _BATCH])
    for start in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + _BATCH])
    with _files({CARD: card_bytes}) as folder:
        client.log_artifact(run_id, str(folder / CARD))
    if MODEL_ONNX in files:
        with _files({MODEL_ONNX: files[MODEL_ONNX]}) as folder:
            client.log_artifact(run_id, str(folder / MODEL_ONNX), MODEL_ARTIFACTS)


@contextlib.contextmanager
def _files(contents: Mapping[str, bytes]) -> Iterator[Path]:
    """The client uploads files: write the bytes to a temporary folder (/tmp in Lambda)."""
    with tempfile.TemporaryDirectory(prefix="churnops-mlflow-") as folder:
        for name, data in contents.items():
            (Path(folder) / name).write_bytes(data)
        yield Path(folder)


def run_params(card: Mapping[str, Any]) -> dict[str, str]:
    """What the card says was chosen: the model, its hyperparameters (`model.<name>`), the
    training options (`training.<name>`), cost policy and the retrain's snapshot. The card
    artefact holds everything; these are what MLflow compares runs by."""
    params: dict[str, Any] = {
        key: card[key]
        for key in (
            "contract",
            "schema_hash",
            "data_hash",
            "rows",
            "family",
            "threshold",
            "status",
            "code_version",
        )
        if key in card
    }
    for section, prefix in (
        ("params", "model"),
        ("training", "training"),
        ("cost_policy", "cost_policy"),
        ("retrain", "retrain"),
    ):
        for key, value in (card.get(section) or {}).items():
            if (section, key) != ("training", "seconds"):  # a measurement: a metric
                params[f"{prefix}.{key}"] = value
    return {key: _param_value(value) for key, value in params.items()}


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:_PARAM_VALUE_MAX]


def run_metrics(card: Mapping[str, Any]) -> list[tuple[str, float, int]]:
    """(key, value, step): the card's holdout and cross-validation figures. An interval
    `x_ci95` becomes `x_ci95_low` and `x_ci95_high`, the per-fold CV AUCs one series (step = fold),
    and every candidate family's CV AUC is `candidate.<family>.cv_auc_mean` / `_std`."""
    found: list[tuple[str, float, int]] = []
    for key, value in (card.get("metrics") or {}).items():
        if _number(value):
            found.append((key, float(value), 0))
        elif isinstance(value, list) and all(_number(v) for v in value):
            if key.endswith("_ci95") and len(value) == 2:
                found += [(f"{key}_low", float(value[0]), 0), (f"{key}_high", float(value[1]), 0)]
            else:
                found += [(key, float(v), step) for step, v in enumerate(value)]
    for candidate in card.get("candidates") or []:
        for key in ("cv_auc_mean", "cv_auc_std"):
            if _number(candidate.get(key)):
                found.append((f"candidate.{candidate['family']}.{key}", float(candidate[key]), 0))
    seconds = (card.get("training") or {}).get("seconds")
    if _number(seconds):
        found.append(("training_seconds", float(seconds), 0))
    return found


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _register_model_version(
    client: MlflowClient,
    name: str,
    run_id: str,
    version: str,
    card: Mapping[str, Any],
    registry_uri: str,
) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name, description=f"ChurnOps models of the {card['contract']} contract"
        )
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    if _model_version(client, name, version) is not None:
        return
    client.create_model_version(
        name,
        source=f"runs:/{run_id}/{MODEL_ARTIFACTS}",
        run_id=run_id,
        tags={
            VERSION_TAG: version,
            REGISTRY_TAG: registry_uri,
            "family": str(card.get("family")),
            "status": str(card.get("status")),
        },
        description=str(card.get("status_reason") or ""),
    )


def _model_version(client: MlflowClient, name: str, version: str) -> ModelVersion | None:
    """The MLflow model version of registry `version`, found by its tag."""
    found = client.search_model_versions(
        f"name = '{name}' and tags.{VERSION_TAG} = '{version}'", max_results=1
    )
    return found[0] if found else None


# ---- aliases from registry decisions --------------------------------------------------------------
def set_alias(contract: str, registry_version: str, alias: str) -> str | None:
    """Point `alias` of the contract's registered model at the MLflow version of
    `registry_version` and return that version's number. A registry version MLflow does not know
    (trained before tracking was on) gets no alias: `alias` is removed instead, so it never keeps
    naming a model the decision replaced, and None is returned. Raises what MLflow raises."""
    client = _client()
    name = model_name(contract)
    found = _model_version(client, name, registry_version)
    if found is None:
        log.info(
            "MLflow tracking: %s has no version of %s (logged before tracking was on?); "
            "alias %s removed instead of moved",
            registry_version,
            name,
            alias,
        )
        _delete_alias(client, name, alias)
        return None
    client.set_registered_model_alias(name, alias, found.version)
    return str(found.version)


def delete_alias(contract: str, alias: str) -> None:
    """Remove `alias` from the contract's registered model (nothing if it is not set)."""
    client = _client()
    _delete_alias(client, model_name(contract), alias)


def _delete_alias(client: MlflowClient, name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as err:
        # No registered model yet (nothing was ever logged): there is no alias to remove.
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def on_champion_moved(registry: Registry, version: str) -> None:
    """The champion pointer now names `version` (a promotion, a rollback, a rollout's full):
    `champion` follows it."""
    if tracking_uri() is None:
        return
    _apply(registry, version, CHAMPION_ALIAS, point=True)


def on_rollout_step(registry: Registry, record: Mapping[str, Any]) -> None:
    """A rollout step was written: its candidate is `candidate` while the rollout is in shadow or
    canary; at full or aborted the alias goes (full moved `champion` through the promotion)."""
    if tracking_uri() is None:
        return
    _apply(registry, record["version"], CANDIDATE_ALIAS, point=record["stage"] in ACTIVE_STAGES)


def _apply(registry: Registry, version: str, alias: str, *, point: bool) -> None:
    """Point `alias` at `version`'s MLflow version, or (`point=False`) remove it; MLflow's
    failures are warnings."""
    try:
        contract = registry.card(version).get("contract")
        if not contract:
            log.info("MLflow tracking: version %s names no contract; no alias set", version)
            return
        if point:
            set_alias(contract, version, alias)
        else:
            delete_alias(contract, alias)
    except Exception as err:
        log.warning(
            "MLflow tracking: alias %s not updated for version %s (%s); the registry decision "
            "stands",
            alias,
            version,
            _describe(err),
        )
