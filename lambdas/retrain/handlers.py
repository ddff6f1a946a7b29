"""Retrain state machine tasks: one handler per step, each the CMD of its own container-image
function (`lambdas.retrain.handlers.<step>`, stacks/retrain.py).

Every handler builds the settings from the environment, passes the execution's state to the step
in `churnops.retrain.flow` and returns its small JSON result (URIs, ids, figures; never data).
An error propagates as an exception whose class name Step Functions sees as the error name
(`ChurnOpsError`, `ConcurrentUpdateError`, `NoChampionError`, ...), so Retry and Catch can tell
them apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from churnops.retrain import flow

logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("churnops.retrain")

Step = Callable[[flow.RetrainEnv, Mapping[str, Any]], dict[str, Any]]


def _run(name: str, step: Step, event: Any) -> dict[str, Any]:
    state = event if isinstance(event, Mapping) else {}
    result = step(flow.RetrainEnv.from_env(), state)
    log.info("retrain %s: %s", name, result)
    return result


def snapshot(event: Any, context: Any) -> dict[str, Any]:
    return _run("snapshot", flow.snapshot_step, event)


def drift(event: Any, context: Any) -> dict[str, Any]:
    # Publishes SnapshotMaxFeaturePSI, which only alerts: a retrain's drift never starts one.
    return _run("drift", flow.drift_step, event)


def train(event: Any, context: Any) -> dict[str, Any]:
    return _run("train", flow.train_step, event)


def evaluate(event: Any, context: Any) -> dict[str, Any]:
    return _run("evaluate", flow.evaluate_step, event)


def promote(event: Any, context: Any) -> dict[str, Any]:
    # Safe for Step Functions to retry with the same state, even after the pointer moved: the
    # move carries the run's decision id, so the retry returns it (churnops/retrain/promote.py).
    return _run("promote", flow.promote_step, event)


def reject(event: Any, context: Any) -> dict[str, Any]:
    return _run("reject", flow.reject_step, event)
