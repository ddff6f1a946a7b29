"""Where the twin runs task bodies: the stand-in for Lambda's and Glue's compute.

moto has no compute of its own: without Docker it only echoes a Lambda payload, and it never runs
a Glue script. The service modules of this package hand those calls here. `TaskRunner` runs each
Lambda invocation in an execution environment of its own (`churnops/local/lambda_sandbox.py`:
a worker process with the function's environment, role, timeout and memory size), and runs a Glue
script's `main` on one shared SparkSession in this process, one run at a time. Nothing in this module
touches moto; `current_runner()` is how the patched moto code finds the runner `install` set.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churnops.local import processes
from churnops.local.lambda_sandbox import FunctionSpec, LambdaSandboxes

REPO_ROOT = Path(__file__).resolve().parents[3]


class GlueScriptNotFoundError(LookupError):
    """A Glue job's ScriptLocation names a script that is not in the glue_jobs directory."""


@dataclass
class TaskRunner:
    """Runs task bodies the way Lambda and Glue would, inside this process.

    `repo_root` is where handler modules (`lambdas.*`) import from; `glue_jobs_dir` (default
    `<repo_root>/glue_jobs`) is where a Glue job's script is looked up by file name;
    `spark_factory` builds the one SparkSession all Glue runs share (default: the local session,
    which `getOrCreate` shares with any session the process already has); `endpoint_url` is the
    moto server the Step Functions interpreter and the Lambda workers must call (default:
    `AWS_ENDPOINT_URL` at call time); `assume_role(role_arn, service_principal, session_name,
    source_arn=...)` gives a role's temporary credentials as a service obtains them
    (`churnops.local.moto_ext.iam.assume_role_as_service` when the twin authorizes calls; None:
    every task uses this process's own credentials, for a moto that does not check who calls).
    """

    repo_root: Path = REPO_ROOT
    glue_jobs_dir: Path | None = None
    spark_factory: Callable[[], Any] | None = None
    endpoint_url: str | None = None
    assume_role: Callable[..., Mapping[str, str]] | None = None

    def __post_init__(self) -> None:
        self.repo_root = Path(self.repo_root).resolve()
        self.glue_jobs_dir = Path(self.glue_jobs_dir or self.repo_root / "glue_jobs").resolve()
        self._sandboxes: LambdaSandboxes | None = None
        self._spark: Any = None
        self._spark_lock = threading.Lock()
        self._glue_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # Error codes the next StartJobRun calls answer with, one call each (fault injection:
        # what a burst of uploads meets on AWS, so Retry and Catch are exercised in the twin).
        self._glue_start_faults: list[str] = []

    def fail_glue_starts(self, error_code: str, times: int = 1) -> None:
        """The next `times` StartJobRun calls fail with `error_code` (e.g. "ThrottlingException",
        as the Glue API answers a burst), before moto looks at the job."""
        with self._pool_lock:
            self._glue_start_faults.extend([error_code] * times)

    def _next_glue_start_fault(self) -> str | None:
        with self._pool_lock:
            return self._glue_start_faults.pop(0) if self._glue_start_faults else None

    # -- endpoints -----------------------------------------------------------------------------
    def moto_endpoint(self) -> str:
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        if not endpoint:
            raise RuntimeError("moto_ext: no moto endpoint (set AWS_ENDPOINT_URL or endpoint_url)")
        return endpoint

    # -- Lambda ----------------------------------------------------------------------------------
    @property
    def sandboxes(self) -> LambdaSandboxes:
        """Lambda's execution environments (started on first use, stopped by `shutdown`)."""
        with self._pool_lock:
            if self._sandboxes is None:
                self._sandboxes = LambdaSandboxes(
                    self.repo_root, self.moto_endpoint, self.function_credentials
                )
            return self._sandboxes

    def function_credentials(self, spec: FunctionSpec) -> Mapping[str, str]:
        """The credentials Lambda hands a function's environment: its role, assumed by Lambda."""
        if self.assume_role is not None:
            return self.assume_role(spec.role_arn, "lambda.amazonaws.com", spec.name)
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        return {name: os.environ[name] for name in names if name in os.environ}

    # -- Glue ------------------------------------------------------------------------------------
    def script_for(self, script_location: str) -> Path:
        name = script_location.rstrip("/").rsplit("/", 1)[-1]
        assert self.glue_jobs_dir is not None
        path = self.glue_jobs_dir / name
        if not name.endswith(".py") or not path.is_file():
            raise GlueScriptNotFoundError(
                f"Glue script {script_location} has no counterpart {path} (mapped by file name)"
            )
        return path

    def spark(self) -> Any:
        with self._spark_lock:
            if self._spark is None:
                if self.spark_factory is not None:
                    self._spark = self.spark_factory()
                else:
                    from churnops.spark import local_spark_session

                    self._spark = local_spark_session("churnops-twin")
            return self._spark

    def stop_spark(self) -> None:
        """Stop the session if this runner built it (a factory's session belongs to its owner)."""
        with self._spark_lock:
            session, self._spark = self._spark, None
        if session is None or self.spark_factory is not None:
            return
        session.stop()
        # session.stop() leaves the JVM running until this interpreter exits; stop and reap it
        # now so a long-lived process (the twin daemon) leaves no JVM, running or defunct, behind
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        process = getattr(gateway, "proc", None)
        if gateway is not None:
            with contextlib.suppress(Exception):
                gateway.shutdown()
            SparkContext._gateway = None
            SparkContext._jvm = None
        if process is not None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # the gateway JVM exits when its stdin closes
            try:
                process.wait(timeout=20)
            except Exception:
                process.kill()
                process.wait(timeout=10)

    def run_glue_script(
        self, script: Path, argv: list[str], *, role_arn: str | None = None, run_id: str = "run"
    ) -> Any:
        """Load the script fresh (edits show up without a restart) and call its `main` with the
        job role's credentials, as Glue assumes the role for a run. Runs execute one at a time,
        so the driver's credentials are this process's for the run; boto3 clients made during it
        are dropped afterwards. (The shared Spark session's executors keep the credentials they
        started with.)"""
        root = str(self.repo_root)
        if root not in sys.path:
            sys.path.insert(0, root)
        module_name = f"_twin_glue_{script.stem}_{uuid.uuid4().hex[:8]}"
        spec = importlib.util.spec_from_file_location(module_name, script)
        if spec is None or spec.loader is None:
            raise GlueScriptNotFoundError(f"cannot load Glue script {script}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        main = getattr(module, "main", None)
        if not callable(main):
            raise GlueScriptNotFoundError(f"Glue script {script} defines no main(argv, spark)")
        spark = self.spark()
        if self.assume_role is None or role_arn is None:
            return main(argv, spark=spark)
        from churnops.aws import reset_clients

        credentials = self.assume_role(role_arn, "glue.amazonaws.com", run_id)
        with processes.environment(credentials):
            reset_clients()
            try:
                return main(argv, spark=spark)
            finally:
                reset_clients()

    def submit_glue(self, work: Callable[[], None]) -> None:
        with self._pool_lock:
            if self._glue_pool is None:
                # One worker: Glue runs queue up and execute one at a time (2 cores cannot carry
                # two Spark jobs side by side, and the shared session is not meant for it).
                self._glue_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-glue")
            self._glue_pool.submit(work)

    def shutdown(self, *, cancel_queued: bool = False) -> None:
        """Stop Lambda's execution environments and wait for the Glue run in progress (and, unless
        `cancel_queued`, the queued ones); a later invocation or run starts afresh."""
        with self._pool_lock:
            pool, self._glue_pool = self._glue_pool, None
            sandboxes, self._sandboxes = self._sandboxes, None
        if sandboxes is not None:
            sandboxes.shutdown()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=cancel_queued)


# The runner the patched moto code hands work to: `install` sets it, `uninstall` clears it.
_current: TaskRunner | None = None


def current_runner() -> TaskRunner:
    if _current is None:
        raise RuntimeError("moto_ext is not installed")
    return _current


def active_runner() -> TaskRunner | None:
    """The installed runner, or None when moto runs unextended."""
    return _current


def swap_runner(runner: TaskRunner | None) -> TaskRunner | None:
    """Make `runner` the current one; returns the one it replaces (`install`/`uninstall` only)."""
    global _current
    previous, _current = _current, runner
    return previous
