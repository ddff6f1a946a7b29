"""Glue: run the repository's Glue script when a job run starts.

moto 5.2.5 never runs a script: a run only advances through states by moto's clock. moto's checks
stay (the job exists, the concurrency limit); then the runner runs `glue_jobs/<name>.py`'s
`main(argv, spark=...)` on the shared local SparkSession, and the run object records RUNNING ->
SUCCEEDED / FAILED (with ErrorMessage) so `get_job_run` and Step Functions' `.sync` report what
happened. When a run ends, Glue's "Glue Job State Change" event goes to the default bus, as on
AWS (the monitoring rule alerts on FAILED runs). StartJobRun faults can be injected
(`TaskRunner.fail_glue_starts`) so the flows' Retry and Catch are exercised in the twin.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from churnops.local.moto_ext.runner import current_runner

LOG = logging.getLogger("churnops.twin.moto_ext")

# The states a Glue run ends in: it then has a CompletedOn and an ExecutionTime.
_GLUE_TERMINAL = {"STOPPED", "SUCCEEDED", "FAILED", "TIMEOUT", "ERROR"}


def glue_argv(job_name: str, run_id: str, arguments: dict[str, str]) -> list[str]:
    """The argument list Glue hands a script: its reserved job arguments, then every `--key value`
    from the job's DefaultArguments merged with the run's Arguments (moto merged them already)."""
    argv = ["--JOB_ID", f"j_{job_name}", "--JOB_RUN_ID", run_id, "--JOB_NAME", job_name]
    for key, value in arguments.items():
        argv += [key if key.startswith("--") else f"--{key}", str(value)]
    return argv


def _set_run_state(run: Any, state: str, error: str | None = None) -> None:
    # An empty transition list freezes moto's ManagedState: `status` then reports exactly what we
    # set, instead of advancing by moto's own clock.
    run._transitions = []
    run.twin_run = True
    run._status = state
    now = dt.datetime.now(dt.UTC)
    run.modified_on = now
    if state in _GLUE_TERMINAL:
        run.completed_on = now
        run.twin_execution_seconds = int((now - run.started_on).total_seconds())
    if error is not None:
        run.twin_error_message = error


def _glue_fault(code: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    message = "Rate exceeded" if code == "ThrottlingException" else f"injected {code}"
    return JsonRESTError(code, message)


def _patched_start_job_run(original: Any) -> Any:
    def start_job_run(self: Any, **kwargs: Any) -> str:
        fault = current_runner()._next_glue_start_fault()
        if fault is not None:
            raise _glue_fault(fault)
        run_id: str = original(self, **kwargs)  # moto's checks: concurrency limit, merged arguments
        run = next(r for r in self.job_runs if r.job_run_id == run_id)
        runner = current_runner()
        run.started_on = dt.datetime.now(dt.UTC)
        _set_run_state(run, "STARTING")
        script_location = (self.command or {}).get("ScriptLocation", "")
        argv = glue_argv(self.name, run_id, dict(run.arguments or {}))

        def work() -> None:
            _set_run_state(run, "RUNNING")
            try:
                script = runner.script_for(script_location)
                LOG.info("glue %s run %s: %s %s", self.name, run_id, script.name, argv)
                runner.run_glue_script(script, argv, role_arn=self.role, run_id=run_id)
            except BaseException as err:  # a Glue run fails on anything, SystemExit included
                LOG.warning(
                    "glue %s run %s failed: %s: %s", self.name, run_id, type(err).__name__, err
                )
                _set_run_state(run, "FAILED", f"{type(err).__name__}: {err}")
            else:
                _set_run_state(run, "SUCCEEDED")
            _publish_glue_state_change(self, run)

        runner.submit_glue(work)
        return run_id

    start_job_run.__wrapped__ = original  # type: ignore[attr-defined]
    return start_job_run


def _publish_glue_state_change(job: Any, run: Any) -> None:
    """The "Glue Job State Change" event Glue sends to the default bus when a run ends (rules
    such as the monitoring one that alerts on FAILED runs match it)."""
    from moto.events.models import events_backends

    state = run._status
    detail = {
        "jobName": job.name,
        "severity": "INFO" if state == "SUCCEEDED" else "ERROR",
        "state": state,
        "jobRunId": run.job_run_id,
        "message": getattr(run, "twin_error_message", None) or f"Job run {state.lower()}",
    }
    try:
        events_backends[job.backend.account_id][job.backend.region_name].put_events(
            [
                {
                    "Source": "aws.glue",
                    "DetailType": "Glue Job State Change",
                    "Detail": json.dumps(detail),
                    "Resources": [],
                }
            ]
        )
    except Exception:  # an event nobody can receive must not fail the run
        LOG.exception("could not publish the state change of glue run %s", run.job_run_id)


def _patched_job_run_as_dict(original: Any) -> Any:
    def as_dict(self: Any) -> dict[str, Any]:
        result: dict[str, Any] = original(self)
        if getattr(self, "twin_error_message", None):
            result["ErrorMessage"] = self.twin_error_message
        if hasattr(self, "twin_execution_seconds"):
            result["ExecutionTime"] = self.twin_execution_seconds
        if getattr(self, "twin_run", False) and result.get("JobRunState") not in _GLUE_TERMINAL:
            result.pop("CompletedOn", None)  # moto stamps it at creation; a live run has none
        return result

    as_dict.__wrapped__ = original  # type: ignore[attr-defined]
    return as_dict


def patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, replacement builder) for every Glue attribute this module replaces."""
    from moto.glue.models import FakeJob, FakeJobRun

    return [
        (FakeJob, "start_job_run", _patched_start_job_run),
        (FakeJobRun, "as_dict", _patched_job_run_as_dict),
    ]
