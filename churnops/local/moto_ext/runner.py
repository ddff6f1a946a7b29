"""Where the twin runs task bodies: the in-process stand-in for Lambda's and Glue's compute.

moto has no compute of its own: without Docker it only echoes a Lambda payload, and it never runs
a Glue script. The service modules of this package hand those calls here. `TaskRunner` imports a
handler from the repository and calls it with the function's environment, and runs a Glue
script's `main` on one shared local SparkSession, one run at a time. Nothing in this module
touches moto; `current_runner()` is how the patched moto code finds the runner `install` set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import importlib.util
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnops.local import processes

REPO_ROOT = Path(__file__).resolve().parents[3]


class GlueScriptNotFoundError(LookupError):
    """A Glue job's ScriptLocation names a script that is not in the glue_jobs directory."""


class HandlerNotFoundError(LookupError):
    """A Lambda function's handler string does not name an importable function."""


@dataclass
class LambdaContext:
    """The attributes of AWS's Lambda context object that handlers and Powertools read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"{dt.datetime.now(dt.UTC):%Y/%m/%d}/[$LATEST]{self.aws_request_id}"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class TaskRunner:
    """Runs task bodies the way Lambda and Glue would, inside this process.

    `repo_root` is where handler modules (`lambdas.*`) import from; `glue_jobs_dir` (default
    `<repo_root>/glue_jobs`) is where a Glue job's script is looked up by file name;
    `spark_factory` builds the one SparkSession all Glue runs share (default: the local session,
    which `getOrCreate` shares with any session the process already has); `endpoint_url` is the
    moto server the Step Functions interpreter must call (default: `AWS_ENDPOINT_URL` at call time).
    """

    repo_root: Path = REPO_ROOT
    glue_jobs_dir: Path | None = None
    spark_factory: Callable[[], Any] | None = None
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        self.repo_root = Path(self.repo_root).resolve()
        self.glue_jobs_dir = Path(self.glue_jobs_dir or self.repo_root / "glue_jobs").resolve()
        self._env_lock = threading.Lock()
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
    def resolve_handler(self, handler: str) -> Callable[..., Any]:
        module_name, _, function_name = handler.rpartition(".")
        if not module_name:
            raise HandlerNotFoundError(f"handler {handler!r} is not 'module.function'")
        root = str(self.repo_root)
        if root not in sys.path:
            sys.path.insert(0, root)
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise HandlerNotFoundError(
                f"cannot import handler module {module_name}: {err}"
            ) from err
        function: object = getattr(module, function_name, None)
        if not callable(function):
            raise HandlerNotFoundError(f"{module_name} has no function {function_name}")
        return function

    def run_lambda(
        self,
        *,
        handler: str,
        event: Any,
        environment: dict[str, str],
        context: LambdaContext,
    ) -> Any:
        """Call the handler with the function's environment applied for the duration of the call.

        Environment variables are process-wide, so calls are serialised by a lock and the previous
        values restored afterwards.
        """
        function = self.resolve_handler(handler)
        with (
            self._env_lock,
            processes.environment(
                {
                    **environment,
                    "AWS_LAMBDA_FUNCTION_NAME": context.function_name,
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(context.memory_limit_in_mb),
                }
            ),
        ):
            return function(event, context)

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

    def run_glue_script(self, script: Path, argv: list[str]) -> Any:
        """Load the script fresh (edits show up without a restart) and call its `main`."""
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
        return main(argv, spark=self.spark())

    def submit_glue(self, work: Callable[[], None]) -> None:
        with self._pool_lock:
            if self._glue_pool is None:
                # One worker: Glue runs queue up and execute one at a time (2 cores cannot carry
                # two Spark jobs side by side, and the shared session is not meant for it).
                self._glue_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-glue")
            self._glue_pool.submit(work)

    def shutdown(self, *, cancel_queued: bool = False) -> None:
        """Wait for the Glue run in progress (and, unless `cancel_queued`, the queued ones); a
        later run starts a fresh worker."""
        with self._pool_lock:
            pool, self._glue_pool = self._glue_pool, None
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
