"""The retrain flow's steps as the state machine runs them: state in, small JSON out.

Each step takes the execution's state (the input plus what earlier steps returned, each under
its own key as the Lambda invoke result: `state["snapshot"]["Payload"]`, ...) and returns a small
JSON-safe dict of S3 URIs, ids and figures, never data. The handlers in
`lambdas/retrain/handlers.py` only build `RetrainEnv` from the environment and call these.

Nothing here writes the champion pointer. A challenger that passed the gate goes on to its
rollout (churnops/retrain/rollout.py, the rollout state machine), which promotes it directly
only when there is no champion yet, and otherwise stage by stage, always conditionally on the
ETag the evaluate step saw.

Memory is bounded by settings, not by the customer table: the snapshot holds one slice of
`snapshot_slice_rows` customers at a time, drift one part, train a sample of at most
`training_fit_rows` customers plus one part, evaluate at most `evaluation_holdout_rows` holdout
customers plus one part (churnops/retrain/snapshot.py and sampling.py say how each is chosen).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from churnops.contract import Contract, get_contract
from churnops.errors import ChurnOpsError
from churnops.registry import Registry
from churnops.retrain import sampling
from churnops.retrain import snapshot as snap
from churnops.retrain.promote import ACTOR
from churnops.wiring import (
    DEFAULT_EVALUATION_HOLDOUT_ROWS,
    DEFAULT_EVENT_BUS,
    DEFAULT_SNAPSHOT_SLICE_ROWS,
    DRIFT_REPORT,
    METRICS_NAMESPACE,
    MODEL_ONNX,
    NEVER_CHAMPION,
    STATUS_ELIGIBLE,
    GateSettings,
    RetrainEnvironment,
    RolloutSettings,
    snapshot_run_prefix,
)

if TYPE_CHECKING:  # training imports sklearn: only the train step loads it, when it runs
    from churnops.training import TrainingOptions

# Beside a run's snapshot: its drift report (DRIFT_REPORT, as in the registry) and this.
EVALUATION = "evaluation.json"


@dataclass(frozen=True)
class RetrainEnv:
    """What every step needs: the functions' environment (`wiring.RetrainEnvironment`, which
    CDK writes) with the contract resolved. Tests build it directly."""

    registry_uri: str
    curated_bucket: str
    contract: Contract
    gate: GateSettings = field(default_factory=GateSettings)
    db_secret_arn: str | None = None
    db_name: str | None = None  # CDK's instance secret has no dbname: the stack passes it
    event_bus: str = DEFAULT_EVENT_BUS
    # Training: families to try (empty: every family churnops.model knows) and CV folds.
    training_families: tuple[str, ...] = ()
    training_folds: int = 5
    # Customers per slice of the snapshot: one slice is in memory at once.
    snapshot_slice_rows: int = DEFAULT_SNAPSHOT_SLICE_ROWS
    # Most training customers the model is fitted on (None: TrainingOptions' fit_rows): the
    # train step reads a stratified sample of this size, never the whole split.
    training_fit_rows: int | None = None
    evaluation_holdout_rows: int = DEFAULT_EVALUATION_HOLDOUT_ROWS
    metrics_namespace: str = METRICS_NAMESPACE
    # The rollout of a challenger that passed the gate (churnops.retrain.rollout).
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    rollout_alarm_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("snapshot_slice_rows", "training_fit_rows", "evaluation_holdout_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ChurnOpsError(f"{name} must be at least 1, got {value}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetrainEnv:
        return cls.from_wiring(RetrainEnvironment.from_env(environ))

    @classmethod
    def from_wiring(cls, env: RetrainEnvironment) -> RetrainEnv:
        return cls(
            registry_uri=env.registry_uri,
            curated_bucket=env.curated_bucket,
            contract=get_contract(env.contract_name),
            gate=env.gate,
            db_secret_arn=env.db_secret_arn or None,
            db_name=env.db_name or None,
            event_bus=env.event_bus_name,
            training_families=env.train_families,
            training_folds=env.train_folds,
            snapshot_slice_rows=env.snapshot_slice_rows,
            training_fit_rows=env.train_fit_rows or None,
            evaluation_holdout_rows=env.evaluate_holdout_rows,
            metrics_namespace=env.metrics_namespace,
            rollout=env.rollout,
            rollout_alarm_names=env.rollout_alarm_names,
        )

    def training_options(self) -> TrainingOptions:
        from churnops.model import FAMILIES
        from churnops.training import TrainingOptions

        unknown = [f for f in self.training_families if f not in FAMILIES]
        if unknown:
            raise ChurnOpsError(
                f"unknown model family {', '.join(unknown)} (known: {', '.join(FAMILIES)})"
            )
        fit_rows = self.training_fit_rows
        return TrainingOptions(
            quality_floor=self.gate.quality_floor,
            folds=self.training_folds,
            families=self.training_families or FAMILIES,
            fit_rows=TrainingOptions.fit_rows if fit_rows is None else fit_rows,
        )

    @property
    def registry(self) -> Registry:
        return Registry.open(self.registry_uri)


def result_of(state: Mapping[str, Any], step: str) -> dict[str, Any]:
    """What `step` returned, from the state (the Lambda invoke result keeps it under Payload)."""
    try:
        value = state[step]
    except (KeyError, TypeError):
        raise ChurnOpsError(f"the state has no result of the {step} step") from None
    if isinstance(value, Mapping) and "Payload" in value:
        value = value["Payload"]
    if not isinstance(value, Mapping):
        raise ChurnOpsError(f"the {step} step's result is not an object")
    return dict(value)


def json_safe(value: Any) -> Any:
    """Plain JSON: NaN/inf become null (Step Functions rejects them), numpy scalars become
    Python numbers, tuples become lists."""
    if isinstance(value, Mapping):
        return json_object(value)
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_object(value: Mapping[Any, Any]) -> dict[str, Any]:
    """`json_safe` of an object, such as a step's result."""
    return {str(k): json_safe(v) for k, v in value.items()}


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(json_safe(obj), indent=2, sort_keys=True).encode()


# ---- 1. snapshot --------------------------------------------------------------------------------
def snapshot_step(env: RetrainEnv, state: Mapping[str, Any]) -> dict[str, Any]:
    from churnops import database

    if not env.db_secret_arn:
        raise ChurnOpsError("DB_SECRET_ARN is not set: the snapshot step reads the database")
    conn = database.connect(env.db_secret_arn, database=env.db_name)
    try:
        taken = snap.take_snapshot(
            conn,
            env.contract,
            env.curated_bucket,
            holdout_share=env.gate.holdout_share,
            slice_rows=env.snapshot_slice_rows,
        )
    finally:
        conn.close()
    return {**taken.to_dict(), "contract": env.contract.name, "trigger": state.get("trigger")}


def stored_snapshot(env: RetrainEnv, taken: Mapping[str, Any]) -> snap.StoredSnapshot:
    """The snapshot the snapshot step took; its own manifest says how it was split (a snapshot
    from before slicing is one object, split on read by the gate's holdout share)."""
    return snap.StoredSnapshot.open(taken["uri"], holdout_share=env.gate.holdout_share)


# ---- 2. drift -----------------------------------------------------------------------------------
def drift_step(env: RetrainEnv, state: Mapping[str, Any]) -> dict[str, Any]:
    from churnops.retrain.drift import run_drift

    taken = result_of(state, "snapshot")
    report_uri = snapshot_run_prefix(env.curated_bucket, taken["run_id"]) + DRIFT_REPORT
    customers = stored_snapshot(env, taken)
    return json_object(
        run_drift(
            env.registry,
            customers,
            env.contract,
            report_uri=report_uri,
            metrics_namespace=env.metrics_namespace,
        )
    )


# ---- 3. train -----------------------------------------------------------------------------------
def train_step(env: RetrainEnv, state: Mapping[str, Any]) -> dict[str, Any]:
    from churnops.training import train

    taken = result_of(state, "snapshot")
    drift = result_of(state, "drift")
    options = env.training_options()
    stored = stored_snapshot(env, taken)
    sample = sampling.training_sample(stored, env.contract, options.fit_rows)
    held_positive, held_negative = sampling.class_counts(stored, env.contract, snap.HOLDOUT)
    result = train(sample.frame, env.contract, options)
    card = {
        **result.card,
        "retrain": {
            "run_id": taken["run_id"],
            "snapshot_uri": taken["uri"],
            "snapshot_rows": taken["rows"],
            "snapshot_sha256": taken["sha256"],
            "training_rows_available": sample.available,
            "training_sample_rows": sample.rows,
            "gate_holdout_share": stored.holdout_share,
            "gate_holdout_rows": held_positive + held_negative,
            "trigger": taken.get("trigger"),
        },
    }
    registry = env.registry
    version = registry.register(result.files, card)
    if result.status != STATUS_ELIGIBLE:
        registry.record_decision(
            version, result.status, actor=ACTOR, reason=result.reason, details={}
        )
    # The drift report of this run goes with the version trained on the same data.
    registry.write_extra(version, DRIFT_REPORT, snap.get_bytes(drift["report_uri"]))
    # Experiment tracking is optional (MLFLOW_TRACKING_URI); the module imports mlflow only then.
    from churnops import tracking

    mlflow_run_id = tracking.log_training_run(registry, version, result.files)
    return json_object(
        {
            **({"mlflow_run_id": mlflow_run_id} if mlflow_run_id else {}),
            "version": version,
            "status": result.status,
            "status_reason": result.reason,
            "family": result.family,
            "threshold": result.threshold,
            "training_rows": sample.rows,
            "training_rows_available": sample.available,
            "has_onnx": MODEL_ONNX in result.files,
            "roc_auc": result.metrics.get("roc_auc"),
        }
    )


# ---- 4. evaluate + gate -------------------------------------------------------------------------
def evaluate_step(env: RetrainEnv, state: Mapping[str, Any]) -> dict[str, Any]:
    from churnops.retrain.evaluate import ModelScores, compare
    from churnops.retrain.gate import Check, GateDecision, decide
    from churnops.scoring import load_model, score

    taken = result_of(state, "snapshot")
    challenger_version = result_of(state, "train")["version"]
    registry = env.registry
    # ETag first, pointer second: if the pointer moves in between, the ETag is the older one and
    # the promotion fails safe instead of overwriting a champion this run never compared with.
    champion_etag = registry.champion_etag()
    pointer = registry.champion()
    chosen = sampling.evaluation_holdout(
        stored_snapshot(env, taken), env.contract, env.evaluation_holdout_rows
    )
    holdout = chosen.frame

    def scores(version: str) -> ModelScores:
        loaded = load_model(registry, env.contract, version)
        scored = score(holdout, loaded, env.contract)
        return ModelScores(
            version, scored["churn_probability"].to_numpy(dtype=float), loaded.threshold
        )

    challenger = scores(challenger_version)
    champion = scores(pointer["version"]) if pointer else None
    evaluation = compare(holdout, env.contract, challenger, champion, env.gate)
    evaluation["holdout_rows_available"] = chosen.available
    evaluation["holdout_rows_cap"] = env.evaluation_holdout_rows
    decision = decide(evaluation, env.gate)

    # The registry refuses a champion without ONNX or with a no-skill/below-floor status; say
    # so as a gate check rather than failing later in the promote step.
    card = registry.card(challenger_version)
    eligible = card.get("status") not in NEVER_CHAMPION and MODEL_ONNX in card.get("files", [])
    decision = GateDecision(
        decision.promote and eligible,
        (
            *decision.checks,
            Check(
                "registry_eligible",
                eligible,
                f"challenger status {card.get('status')}, "
                f"{'has' if MODEL_ONNX in card.get('files', []) else 'lacks'} {MODEL_ONNX}",
            ),
        ),
    )
    evaluation_uri = snapshot_run_prefix(env.curated_bucket, taken["run_id"]) + EVALUATION
    snap.put_bytes(
        evaluation_uri,
        _json_bytes({"evaluation": evaluation, "decision": decision.to_dict()}),
        content_type="application/json",
    )
    metric = env.gate.primary_metric
    return json_object(
        {
            "promote": decision.promote,
            "challenger_version": challenger_version,
            "champion_version": pointer["version"] if pointer else None,
            "champion_etag": champion_etag,
            "evaluation_uri": evaluation_uri,
            "primary_metric": metric,
            "challenger_metric": evaluation["challenger"][metric],
            "champion_metric": evaluation["champion"][metric] if champion else None,
            "difference": evaluation["difference"],
            "holdout_rows": chosen.rows,
            "holdout_rows_available": chosen.available,
            "reasons": decision.reasons,
            "summary": decision.summary,
        }
    )


# ---- 5. reject (a challenger that passed goes to churnops.retrain.rollout) -----------------
def decision_details(state: Mapping[str, Any], verdict: Mapping[str, Any]) -> dict[str, Any]:
    taken = result_of(state, "snapshot")
    return {
        "run_id": taken["run_id"],
        "snapshot_sha256": taken["sha256"],
        "evaluation_uri": verdict["evaluation_uri"],
        "primary_metric": verdict["primary_metric"],
        "challenger_metric": verdict["challenger_metric"],
        "champion_version": verdict["champion_version"],
        "champion_metric": verdict["champion_metric"],
        "difference": verdict["difference"],
    }


def reject_step(env: RetrainEnv, state: Mapping[str, Any]) -> dict[str, Any]:
    from churnops.retrain.reject import reject

    verdict = result_of(state, "evaluate")
    reasons = list(verdict.get("reasons") or [])
    entry = reject(
        env.registry,
        verdict["challenger_version"],
        reasons=reasons,
        details=decision_details(state, verdict),
        actor=ACTOR,
    )
    return json_object(
        {"version": verdict["challenger_version"], "reasons": reasons, "at": entry["at"]}
    )
