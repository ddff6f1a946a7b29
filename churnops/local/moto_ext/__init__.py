"""The twin's extension layer over moto: run OUR Lambda handlers and Glue scripts when moto invokes
them, deliver EventBridge matches to Step Functions, Lambda and SNS targets, fire schedules, and
turn functions' embedded metrics into CloudWatch metrics that alarms are evaluated on.

This package is the ONLY code that touches moto internals. moto is pinned to an exact version
(`MOTO_VERSION`): `install` refuses any other, and `tests/integration/test_moto_ext.py` fails
loudly when an attribute patched here disappears. The moto server is a `ThreadedMotoServer` in the
same Python process, so the patched backends are the ones that serve requests; Glue scripts run in
that process too, while each Lambda invocation runs in an execution environment of its own (a
worker process: `churnops/local/lambda_sandbox.py`) that calls the server back over HTTP.

One module per service it extends, each saying what moto lacks there and why the twin needs it:
- `awslambda`: invoking a function runs its handler in a sandbox with the function's environment,
  role, timeout and memory size (moto only echoes without Docker);
- `glue`: a job run runs its script on local Spark and ends with Glue's state-change event;
- `stepfunctions`: unnamed executions, the interpreter's endpoint, the Glue `.sync` integration,
  a Lambda timeout or out-of-memory end reported as `Lambda.Unknown`;
- `events`: rule delivery to Lambda, Step Functions and SNS targets; `fire_schedule`;
- `s3`: a ranged GET reads only its range;
- `cloudwatch`: metrics from the embedded metric format a function logs (the Lambda sandboxes'
  EMF sink, set by `install`), GetMetricStatistics on the exact combination of dimensions, alarms
  created INSUFFICIENT_DATA and kept in their state on update, and `evaluate_alarms`, which
  evaluates them as CloudWatch does (periods sliding back from the evaluation instant), acts on
  their SNS actions and puts their state change events on the default bus (`AlarmEvaluator`
  repeats it on a timer);
- `iam`: once enforced, every request is authorized as AWS does, as the role that sends it
  (resources and condition keys per action); services assume their roles as service principals;
- `runner`: no moto in it, the `TaskRunner` that hands invocations to the sandboxes and runs Glue
  scripts, each as its role once a role-assuming function is set.

Each service module's `patches()` lists (owner, attribute, replacement builder); `install`
records the originals so `uninstall` restores them exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import moto

from churnops.local import lambda_sandbox
from churnops.local.moto_ext import awslambda, cloudwatch, events, glue, iam, s3, stepfunctions
from churnops.local.moto_ext.cloudwatch import AlarmChange, AlarmEvaluator, evaluate_alarms
from churnops.local.moto_ext.events import fire_schedule
from churnops.local.moto_ext.runner import (
    TaskRunner,
    active_runner,
    current_runner,
    swap_runner,
)
from churnops.local.moto_ext.stepfunctions import SFN_GLUE_GENERIC_ERROR, SFN_GLUE_UNMODELED_ERRORS

__all__ = [
    "MOTO_VERSION",
    "SFN_GLUE_GENERIC_ERROR",
    "SFN_GLUE_UNMODELED_ERRORS",
    "AlarmChange",
    "AlarmEvaluator",
    "TaskRunner",
    "current_runner",
    "evaluate_alarms",
    "fire_schedule",
    "install",
    "installed",
    "patch_targets",
    "uninstall",
]

MOTO_VERSION = "5.2.5"

_SERVICES = (stepfunctions, awslambda, glue, events, s3, cloudwatch, iam)

_state_lock = threading.RLock()
_originals: list[tuple[Any, str, Any]] = []
_saved_sfn_config: bool | None = None
_saved_lambda_docker: bool | None = None
_saved_emf_sink: list[lambda_sandbox.EmfSink | None] = []


def _patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    return [patch for service in _SERVICES for patch in service.patches()]


def patch_targets() -> list[tuple[Any, str]]:
    """Every (object, attribute) this package replaces; the guard test asserts they all exist."""
    return [(owner, name) for owner, name, _ in _patches()]


def installed() -> bool:
    return active_runner() is not None


def install(task_runner: TaskRunner | None = None) -> TaskRunner:
    """Patch moto in this process (idempotent: a second call only swaps the runner)."""
    global _saved_sfn_config, _saved_lambda_docker
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"churnops.local.moto_ext is written against moto {MOTO_VERSION}, found "
            f"{moto.__version__}; re-check every hook before changing the pin"
        )
    from moto.core.config import default_user_config

    runner = task_runner or TaskRunner()
    with _state_lock:
        if active_runner() is not None:
            swap_runner(runner)
            return runner
        for owner, name, build in _patches():
            _originals.append((owner, name, getattr(owner, name)))
            setattr(owner, name, build(getattr(owner, name)))
        # The real switch for executing definitions: moto's Step Functions picks its "parser"
        # backend per request when this is on. State machines must be created after it is set.
        sfn_config = default_user_config.setdefault("stepfunctions", {})
        _saved_sfn_config = sfn_config.get("execute_state_machine", False)
        sfn_config["execute_state_machine"] = True
        # Docker-backed Lambda backend (not the echoing "simple" one) so invoke reaches
        # LambdaFunction.invoke, which we replace; it never touches Docker on that path.
        lambda_config = default_user_config.setdefault("lambda", {})
        _saved_lambda_docker = lambda_config.get("use_docker", True)
        lambda_config["use_docker"] = True
        # CloudWatch Logs' part: what a function logs in the embedded metric format is metrics.
        _saved_emf_sink.append(lambda_sandbox.set_emf_sink(cloudwatch.emf_sink))
        swap_runner(runner)
    return runner


def uninstall(*, cancel_queued: bool = True) -> None:
    """Restore moto exactly as it was (idempotent). The Glue run in progress finishes first;
    queued runs are dropped unless `cancel_queued` is False."""
    global _saved_sfn_config, _saved_lambda_docker
    from moto.core.config import default_user_config

    with _state_lock:
        while _originals:
            owner, name, original = _originals.pop()
            setattr(owner, name, original)
        if _saved_sfn_config is not None:
            default_user_config.setdefault("stepfunctions", {})["execute_state_machine"] = (
                _saved_sfn_config
            )
            _saved_sfn_config = None
        if _saved_lambda_docker is not None:
            default_user_config.setdefault("lambda", {})["use_docker"] = _saved_lambda_docker
            _saved_lambda_docker = None
        if _saved_emf_sink:
            lambda_sandbox.set_emf_sink(_saved_emf_sink.pop())
        runner = swap_runner(None)
    if runner is not None:
        runner.shutdown(cancel_queued=cancel_queued)
