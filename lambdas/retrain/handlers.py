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
from churnops.retrain import rollout as rollout_steps

logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("churnops.retrain")

Step = Callable[[flow.RetrainEnv, Mapping[str, Any]], dict[str, Any]]
Handler = Callable[[Any, Any], dict[str, Any]]


def _handler(name: str, step: Step) -> Handler:
    """The Lambda handler of one step: the settings from the environment, the execution's state
    in, the step's result out (and in the log)."""

    def handler(event: Any, context: Any) -> dict[str, Any]:
        state = event if isinstance(event, Mapping) else {}
        result = step(flow.RetrainEnv.from_env(), state)
        log.info("retrain %s: %s", name, result)
        return result

    handler.__name__ = handler.__qualname__ = name
    return handler


# Module-level names: each function's image CMD is `lambdas.retrain.handlers.<step>`
# (stacks/retrain.py names one per step in STEPS).
snapshot = _handler("snapshot", flow.snapshot_step)
# Publishes SnapshotMaxFeaturePSI, which only alerts: a retrain's drift never starts one.
drift = _handler("drift", flow.drift_step)
train = _handler("train", flow.train_step)
evaluate = _handler("evaluate", flow.evaluate_step)
reject = _handler("reject", flow.reject_step)
# The rollout state machine's steps. Safe for Step Functions to retry with the same state, even
# after a pointer moved: each write carries a decision id, so a retry returns what it wrote
# (churnops/retrain/rollout.py).
rollout = _handler("rollout", rollout_steps.rollout_step)
rollout_check = _handler("rollout_check", rollout_steps.rollout_check_step)
