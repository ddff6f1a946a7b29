"""Train, evaluate and register a churn model.

Protocol (every number in the card is measured on rows the scored model never saw):
1. Split off a stratified holdout (20%) before anything else looks at the data.
2. On the remaining training rows, score every candidate (each family over a small grid) by
   stratified 5-fold cross-validated ROC-AUC; the soft-vote ensemble of the best logistic and
   the best boosting candidate is scored the same way. The best mean AUC wins; a simpler family
   wins ties within `TIE_MARGIN` (`SIMPLICITY`: the MLP is the least simple, so it is kept only
   when it wins by more than that).
3. The decision threshold comes from the winner's out-of-fold predictions (cost policy or F1).
4. The winner is fitted on the training rows and measured on the holdout: ROC-AUC with a
   bootstrap 95% interval, PR-AUC, F1, precision, recall, Brier, top-decile lift.
5. The model that is registered is the same recipe refitted on all rows (training + holdout),
   unless `refit_full=False`; the card says which.

Large files: candidates are compared on a stratified sample of at most `tune_rows` training rows
and the final model is fitted on at most `fit_rows` rows (gradient boosting is not incremental,
and more than a few hundred thousand customers add nothing measurable); the card records both.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split

from churnops import __version__
from churnops.contract import Contract
from churnops.drift import reference_statistics
from churnops.errors import ChurnOpsError
from churnops.evaluation import CostPolicy, choose_threshold, holdout_metrics, skill_verdict
from churnops.model import (
    BOOSTING_FIXED,
    BOOSTING_GRID,
    FAMILIES,
    LOGISTIC_GRID,
    MLP_FIXED,
    MLP_GRID,
    build,
    fit,
    model_frame,
    positive_probability,
)
from churnops.onnx_export import export, onnx_signature
from churnops.scoring import OnnxModel

TIE_MARGIN = 0.0005  # CV AUC differences this small are noise on 6,000 rows
ONNX_TOLERANCE = 1e-5
MIN_ROWS_PER_CLASS = 20
FACTOR_SAMPLE = 400
# FAMILIES' order: logistic (0) < gradient_boosting < ensemble < mlp (3), the least simple, which
# is therefore kept only when its CV AUC beats every other candidate's by more than TIE_MARGIN.
SIMPLICITY = {family: rank for rank, family in enumerate(FAMILIES)}

Labels = npt.NDArray[np.int_]  # 1 churned, 0 retained
Scores = npt.NDArray[np.float64]  # positive-class probabilities (or their log-odds)
Rows = npt.NDArray[np.intp]  # row positions of a fold


@dataclass(frozen=True)
class TrainingOptions:
    seed: int = 42
    holdout_share: float = 0.2
    folds: int = 5
    cost_policy: CostPolicy = field(default_factory=CostPolicy)
    quality_floor: float = 0.6
    tune_rows: int = 50_000
    fit_rows: int = 200_000
    families: tuple[str, ...] = FAMILIES
    refit_full: bool = True
    n_jobs: int = 1


@dataclass
class TrainingResult:
    model: Any
    family: str
    params: dict[str, Any]
    candidates: list[dict[str, Any]]
    metrics: dict[str, Any]
    threshold: float
    status: str
    reason: str
    card: dict[str, Any]
    files: dict[str, bytes]


def data_hash(clean: pd.DataFrame) -> str:
    """Content hash of the clean rows (independent of how the file was formatted)."""
    hashed = pd.util.hash_pandas_object(clean, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(clean.columns).encode())
    return digest.hexdigest()[:32]


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def _stratified_sample(
    X: pd.DataFrame, y: Labels, rows: int, seed: int
) -> tuple[pd.DataFrame, Labels]:
    if len(y) <= rows:
        return X, y
    X_small, _, y_small, _ = train_test_split(X, y, train_size=rows, stratify=y, random_state=seed)
    return X_small, y_small


def _fold_scores(
    family: str,
    params: dict[str, Any],
    contract: Contract,
    X: pd.DataFrame,
    y: Labels,
    train_idx: Rows,
    test_idx: Rows,
    seed: int,
) -> Scores:
    model = fit(build(family, contract, params, seed), X.iloc[train_idx], y[train_idx])
    return positive_probability(model, X.iloc[test_idx])


def _summarise(
    family: str,
    params: dict[str, Any],
    oof: Scores,
    y: Labels,
    splits: list[tuple[Rows, Rows]],
) -> dict[str, Any]:
    aucs = [roc_auc_score(y[test], oof[test]) for _, test in splits]
    return {
        "family": family,
        "params": params,
        "cv_auc_mean": round(float(np.mean(aucs)), 6),
        "cv_auc_std": round(float(np.std(aucs)), 6),
        "cv_auc_folds": [round(float(a), 6) for a in aucs],
        "_oof": oof,
    }


def _cross_validate(
    candidates: list[tuple[str, dict[str, Any]]],
    contract: Contract,
    X: pd.DataFrame,
    y: Labels,
    splits: list[tuple[Rows, Rows]],
    options: TrainingOptions,
) -> list[dict[str, Any]]:
    from joblib import Parallel, delayed

    jobs = [(c, s) for c in range(len(candidates)) for s in range(len(splits))]
    scores = Parallel(n_jobs=options.n_jobs)(
        delayed(_fold_scores)(*candidates[c], contract, X, y, *splits[s], options.seed)
        for c, s in jobs
    )
    results = []
    for c, (family, params) in enumerate(candidates):
        oof = np.empty(len(y))
        for (cc, s), fold_scores in zip(jobs, scores, strict=True):
            if cc == c:
                oof[splits[s][1]] = fold_scores
        results.append(_summarise(family, params, oof, y, splits))
    return results


def _pick(results: list[dict[str, Any]]) -> dict[str, Any]:
    top = max(r["cv_auc_mean"] for r in results)
    close = [r for r in results if r["cv_auc_mean"] >= top - TIE_MARGIN]
    return min(close, key=lambda r: (SIMPLICITY[r["family"]], -r["cv_auc_mean"]))


def select_candidate(
    contract: Contract, X: pd.DataFrame, y: Labels, options: TrainingOptions
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Cross-validate every candidate; return the winner (with its out-of-fold scores) and all."""
    unknown = [f for f in options.families if f not in FAMILIES]
    if unknown or not options.families:
        raise ChurnOpsError(f"unknown model families {unknown} (known: {', '.join(FAMILIES)})")
    first_round: list[tuple[str, dict[str, Any]]] = []
    wants = set(options.families)
    if wants & {"logistic", "ensemble"}:
        first_round += [("logistic", dict(p)) for p in LOGISTIC_GRID]
    if wants & {"gradient_boosting", "ensemble"}:
        first_round += [("gradient_boosting", {**p, **BOOSTING_FIXED}) for p in BOOSTING_GRID]
    if "mlp" in wants:
        first_round += [("mlp", {**p, **MLP_FIXED}) for p in MLP_GRID]
    splits = list(
        StratifiedKFold(options.folds, shuffle=True, random_state=options.seed).split(X, y)
    )
    results = _cross_validate(first_round, contract, X, y, splits, options)
    if "ensemble" in wants:
        best = {
            fam: max((r for r in results if r["family"] == fam), key=lambda r: r["cv_auc_mean"])
            for fam in ("logistic", "gradient_boosting")
        }
        # A soft vote averages its members' probabilities, and the members here are the very
        # models fitted on the same folds with the same seeds: its out-of-fold scores are the
        # average of theirs, so it costs no extra fits.
        oof = (best["logistic"]["_oof"] + best["gradient_boosting"]["_oof"]) / 2
        params = {fam: best[fam]["params"] for fam in best}
        results.append(_summarise("ensemble", params, oof, y, splits))
    eligible = [r for r in results if r["family"] in wants]
    return _pick(eligible), results


def _logit(p: Scores) -> Scores:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def explain_factors(
    model: Any, X: pd.DataFrame, contract: Contract, reference: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Interface 2's factor table: partial dependence in log-odds.

    For a category value (or a numeric bin, represented by the median training value in it) the
    effect is the mean log-odds of a sample of customers all given that value, minus the mean
    log-odds of the same customers as they are: the change for a customer having that value,
    relative to the average customer."""
    sample = X.sample(n=min(FACTOR_SAMPLE, len(X)), random_state=seed)
    baseline_logits = _logit(positive_probability(model, sample))
    baseline = float(baseline_logits.mean())
    features: dict[str, Any] = {}
    for col in contract.feature_columns:
        name = col.name
        if col.is_numeric:
            edges = list(reference["features"][name]["edges"])
            values = X[name].to_numpy(dtype=float)
            bins = np.searchsorted(np.asarray(edges), values, side="right")
            reps = []
            for b in range(len(edges) + 1):
                in_bin = values[(bins == b) & ~np.isnan(values)]
                if in_bin.size:
                    reps.append(float(np.median(in_bin)))
                elif edges:  # an empty bin (e.g. below a 0/1 feature's first edge)
                    reps.append(float(edges[b - 1]) if b else float(edges[0]))
                else:  # no values at all: the imputer's fallback
                    reps.append(0.0)
            points: list[Any] = reps
        else:
            points = list(col.allowed or ())
        stacked = pd.concat([sample] * len(points), ignore_index=True)
        stacked[name] = np.repeat(np.asarray(points, dtype=object), len(sample))
        if col.is_numeric:
            stacked[name] = stacked[name].astype(np.float32).astype(np.float64)
        logits = _logit(positive_probability(model, stacked)).reshape(len(points), len(sample))
        effects = [round(float(v), 6) for v in logits.mean(axis=1) - baseline]
        if col.is_numeric:
            features[name] = {"kind": "numeric", "edges": edges, "effects": effects}
        else:
            features[name] = {
                "kind": "category",
                "effects": dict(zip(points, effects, strict=True)),
            }
    return {"baseline": round(baseline, 6), "features": features}


def onnx_parity(model_bytes: bytes, model: Any, X: pd.DataFrame, contract: Contract) -> float:
    # The graph as serving and batch scoring run it; the threshold plays no part in parity.
    onnx = OnnxModel(model_bytes, contract, version="candidate", threshold=0.5)
    return float(np.max(np.abs(onnx.probability(X) - positive_probability(model, X))))


def _serialise(model: Any) -> bytes:
    import joblib

    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=3)
    return buffer.getvalue()


def train(
    clean: pd.DataFrame, contract: Contract, options: TrainingOptions | None = None
) -> TrainingResult:
    """Select, evaluate and fit a model on clean rows of `contract` (with the target)."""
    options = options or TrainingOptions()
    started = time.monotonic()
    clean = clean[clean[contract.target_column].notna()].reset_index(drop=True)
    y_all = contract.target_vector(clean).astype(int)
    positives = int(y_all.sum())
    negatives = len(y_all) - positives
    if min(positives, negatives) < MIN_ROWS_PER_CLASS:
        raise ChurnOpsError(
            f"need at least {MIN_ROWS_PER_CLASS} churned and {MIN_ROWS_PER_CLASS} retained "
            f"customers to train; got {positives} and {negatives}"
        )
    X_all = model_frame(clean, contract)
    X_train, X_hold, y_train, y_hold = train_test_split(
        X_all,
        y_all,
        test_size=options.holdout_share,
        stratify=y_all,
        random_state=options.seed,
    )
    X_tune, y_tune = _stratified_sample(X_train, y_train, options.tune_rows, options.seed)
    winner, results = select_candidate(contract, X_tune, y_tune, options)
    family, params = winner["family"], winner["params"]
    threshold = choose_threshold(y_tune, winner["_oof"], options.cost_policy)

    X_fit, y_fit = _stratified_sample(X_train, y_train, options.fit_rows, options.seed)
    evaluated = fit(build(family, contract, params, options.seed), X_fit, y_fit)
    hold_scores = positive_probability(evaluated, X_hold)
    metrics = holdout_metrics(y_hold, hold_scores, threshold, seed=options.seed)
    metrics["cv_auc_mean"] = winner["cv_auc_mean"]
    metrics["cv_auc_std"] = winner["cv_auc_std"]
    metrics["cv_auc_folds"] = winner["cv_auc_folds"]
    status, reason = skill_verdict(metrics, quality_floor=options.quality_floor)

    if options.refit_full:
        X_final, y_final = _stratified_sample(X_all, y_all, options.fit_rows, options.seed)
        model = fit(build(family, contract, params, options.seed), X_final, y_final)
    else:
        model, X_final = evaluated, X_fit

    reference = reference_statistics(clean, contract)
    factors = explain_factors(model, X_final, contract, reference, options.seed)
    files = {"model.joblib": _serialise(model)}
    try:
        onnx_bytes = export(model, contract)
        parity_rows = X_hold if len(X_hold) <= 10_000 else X_hold.sample(10_000, random_state=0)
        parity = onnx_parity(onnx_bytes, model, parity_rows, contract)
    except Exception as err:  # a failed export leaves the version ONNX-less (never champion)
        onnx_bytes, parity = b"", float("nan")
        reason += f"; ONNX export failed ({type(err).__name__}: {str(err)[:120]})"
    if onnx_bytes and parity <= ONNX_TOLERANCE:
        files["model.onnx"] = onnx_bytes
    elif onnx_bytes:
        reason += f"; ONNX differs from scikit-learn by {parity:.2e} > {ONNX_TOLERANCE}, not stored"
    metrics["onnx_max_abs_diff"] = None if np.isnan(parity) else float(f"{parity:.3e}")

    candidates = [{k: v for k, v in r.items() if k != "_oof"} for r in results]
    card = {
        "contract": contract.name,
        "schema_hash": contract.schema_hash,
        "data_hash": data_hash(clean),
        "rows": len(clean),
        "family": family,
        "params": params,
        "code_version": code_version(),
        "threshold": threshold,
        "cost_policy": options.cost_policy.to_dict(),
        "metrics": metrics,
        "status": status,
        "status_reason": reason,
        "onnx": onnx_signature(contract),
        "reference_stats": reference,
        "factors": factors,
        "candidates": candidates,
        "training": {
            "seed": options.seed,
            "holdout_share": options.holdout_share,
            "holdout_rows": len(y_hold),
            "folds": options.folds,
            "tuned_on_rows": len(y_tune),
            "evaluated_model_fit_rows": len(y_fit),
            "final_fit_rows": len(X_final),
            "refit_full": options.refit_full,
            "quality_floor": options.quality_floor,
            "seconds": round(time.monotonic() - started, 1),
        },
    }
    files["metrics.json"] = _json_bytes(metrics)
    return TrainingResult(
        model=model,
        family=family,
        params=params,
        candidates=candidates,
        metrics=metrics,
        threshold=threshold,
        status=status,
        reason=reason,
        card=card,
        files=files,
    )


def _json_bytes(obj: Any) -> bytes:
    import json

    return json.dumps(obj, indent=2, sort_keys=True).encode()


def register_result(result: TrainingResult, registry: Any, *, actor: str) -> dict[str, Any]:
    """Register the version; make it champion if it is the first to pass the quality floor.
    Returns the summary `churnops train` prints."""
    from churnops import tracking
    from churnops.registry import STATUS_ELIGIBLE, ConcurrentUpdateError

    version = registry.register(result.files, result.card)
    # Every training run, the retrain's and this one, is an MLflow run when tracking is on.
    tracking.log_training_run(registry, version, result.files)
    promoted = False
    if result.status != STATUS_ELIGIBLE:
        decision = f"not promoted: {result.reason}"
        registry.record_decision(
            version, result.status, actor=actor, reason=result.reason, details={}
        )
    elif "model.onnx" not in result.files:
        decision = f"not promoted: no ONNX model ({result.reason})"
    else:
        current = registry.champion()
        if current is None:
            try:
                registry.promote(
                    version,
                    actor=actor,
                    reason=f"first version to pass the quality floor ({result.reason})",
                    expected_etag=None,
                )
                promoted = True
                decision = "promoted: first version to pass the quality floor"
            except ConcurrentUpdateError:
                decision = "not promoted: another version became champion meanwhile"
        else:
            decision = (
                f"not promoted: champion {current['version']} exists; comparing challengers is "
                "the retrain gate's job (or use `churnops registry promote`)"
            )
    return {
        "version": version,
        "registry": registry.uri,
        "contract": result.card["contract"],
        "family": result.family,
        "params": result.params,
        "status": result.status,
        "metrics": result.metrics,
        "threshold": result.threshold,
        "cost_policy": result.card["cost_policy"],
        "champion": {"promoted": promoted, "reason": decision},
        "candidates": [
            {k: c[k] for k in ("family", "params", "cv_auc_mean", "cv_auc_std")}
            for c in result.candidates
        ],
        "training": result.card["training"],
    }
