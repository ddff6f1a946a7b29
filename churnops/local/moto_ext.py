"""The twin's extension layer over moto: run OUR Lambda handlers and Glue scripts when moto invokes
them, deliver EventBridge matches to Step Functions, Lambda and SNS targets, and fire schedules.

This is the ONLY module that touches moto internals. moto is pinned to an exact version
(`MOTO_VERSION`) and `tests/integration/test_moto_ext.py` fails loudly when an attribute patched
here disappears. Everything happens in-process: the moto server is a `ThreadedMotoServer` in the
same Python process, so the patched backends are the ones that serve requests.

What moto 5.2.5 does on its own, and what this module changes:
- Lambda: without Docker moto only echoes payloads. We keep moto's own lookup (a missing function
  is still `ResourceNotFoundException`), then import the handler named by the function's
  `ImageConfig.Command[0]` (container images) or `Handler` (zip) and call it. An exception becomes a
  Lambda function error whose `errorType` is the exception's class name, so Step Functions
  Retry/Catch see real error names (`NoChampionError`, ...).
- Glue: moto never runs a script and its Step Functions `.sync` integration crashes (a callback
  endpoint that is None for `.sync`-only services, then datetimes in the task output). We keep
  moto's checks (job exists, concurrency limit), run `glue_jobs/<name>.py`'s `main(argv, spark=...)`
  on one shared local SparkSession (one run at a time: 2 cores), and record RUNNING -> SUCCEEDED /
  FAILED (with ErrorMessage) in moto's run object so `get_job_run` and `.sync` report it, and
  put Glue's "Glue Job State Change" event on the default bus when a run ends.
- EventBridge: moto raises on Lambda, Step Functions and SNS targets, and S3's notification code swallows
  that error, skipping the rule's later targets. We deliver those targets ourselves, honouring
  Input / InputPath / InputTransformer, and isolate each target's failure.
- Step Functions: moto names every execution started without a name "None", so a second unnamed
  start fails; we name it with a UUID as AWS does.
- Schedules: moto never fires scheduled rules or EventBridge Scheduler schedules; `fire_schedule`
  does it on demand.
- S3: moto reads the whole object for every ranged GET and then slices it; the ingest job reads
  a file in byte-range splits, so the twin answers a range by reading only that range.
- The Step Functions interpreter builds its boto3 clients for `localhost:$MOTO_PORT` (5000 by
  default); we point them at the server that actually runs (`AWS_ENDPOINT_URL`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import importlib
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import moto

LOG = logging.getLogger("churnops.twin.moto_ext")

MOTO_VERSION = "5.2.5"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Glue run states the Step Functions `.sync` integration treats as finished.
_GLUE_TERMINAL = {"STOPPED", "SUCCEEDED", "FAILED", "TIMEOUT", "ERROR"}
_SYNC_POLL_SECONDS = 0.5


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
        function = getattr(module, function_name, None)
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
            _environment(
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


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update({key: str(value) for key, value in values.items()})
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# ----------------------------------------------------------------------------------------------
# The patches. Each is (owner object, attribute name, replacement builder); `install` records the
# originals so `uninstall` restores them exactly.
# ----------------------------------------------------------------------------------------------
_state_lock = threading.RLock()
_runner: TaskRunner | None = None
_originals: list[tuple[Any, str, Any]] = []
_saved_sfn_config: bool | None = None
_saved_lambda_docker: bool | None = None


def current_runner() -> TaskRunner:
    if _runner is None:
        raise RuntimeError("moto_ext is not installed")
    return _runner


def patch_targets() -> list[tuple[Any, str]]:
    """Every (object, attribute) this module replaces; the guard test asserts they all exist."""
    from moto.awslambda.models import LambdaFunction
    from moto.events.models import Rule
    from moto.glue.models import FakeJob, FakeJobRun
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_glue,
    )
    from moto.stepfunctions.parser.asl.utils import boto_client
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    glue_task = state_task_service_glue.StateTaskServiceGlue
    return [
        (StepFunctionsParserBackend, "start_execution"),
        (LambdaFunction, "invoke"),
        (FakeJob, "start_job_run"),
        (FakeJobRun, "as_dict"),
        (glue_task, "_eval_integration_pattern"),
        (glue_task, "_build_sync_resolver"),
        (glue_task, "_from_error"),
        (Rule, "send_to_targets"),
        (boto_client, "boto3"),
        (FakeKey, "value"),
        (S3Response, "get_object"),
        (S3Response, "_handle_range_header"),
    ]


def installed() -> bool:
    return _runner is not None


def install(task_runner: TaskRunner | None = None) -> TaskRunner:
    """Patch moto in this process (idempotent: a second call only swaps the runner)."""
    global _runner, _saved_sfn_config, _saved_lambda_docker
    if moto.__version__ != MOTO_VERSION:
        raise RuntimeError(
            f"churnops.local.moto_ext is written against moto {MOTO_VERSION}, found "
            f"{moto.__version__}; re-check every hook before changing the pin"
        )
    from moto.core.config import default_user_config

    runner = task_runner or TaskRunner()
    with _state_lock:
        if _runner is not None:
            _runner = runner
            return runner
        replacements = _replacements()
        for owner, name in patch_targets():
            _originals.append((owner, name, getattr(owner, name)))
            setattr(owner, name, replacements[name](getattr(owner, name)))
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
        _runner = runner
    return runner


def uninstall(*, cancel_queued: bool = True) -> None:
    """Restore moto exactly as it was (idempotent). The Glue run in progress finishes first;
    queued runs are dropped unless `cancel_queued` is False."""
    global _runner, _saved_sfn_config, _saved_lambda_docker
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
        runner, _runner = _runner, None
    if runner is not None:
        runner.shutdown(cancel_queued=cancel_queued)


def _replacements() -> dict[str, Callable[[Any], Any]]:
    return {
        "start_execution": _patched_start_execution,
        "invoke": _patched_lambda_invoke,
        "start_job_run": _patched_start_job_run,
        "as_dict": _patched_job_run_as_dict,
        "_eval_integration_pattern": _patched_glue_integration_pattern,
        "_build_sync_resolver": _patched_glue_sync_resolver,
        "_from_error": _patched_glue_error_name,
        "send_to_targets": _patched_send_to_targets,
        "boto3": _Boto3AtTwinEndpoint,
        "value": _patched_key_value,
        "get_object": _patched_get_object,
        "_handle_range_header": _patched_handle_range_header,
    }


# -- S3 -----------------------------------------------------------------------------------------
# S3 serves a byte range without reading the rest of the object; moto 5.2.5 reads the whole
# object (FakeKey.value) for every ranged GET, then slices it. The ingest job reads a file in
# byte-range splits, so a 1.4 GB upload in 48 splits would be read, and held, 48 times in the
# twin's memory. While a GET with a Range header is being answered, the object's value is a
# view that reads only the bytes that are sliced out of it.
_ranged_get = threading.local()


class _ObjectBytes:
    """The stored bytes of one object, read from moto's buffer only where sliced."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.size)

    def __getitem__(self, index: slice) -> bytes:
        start, stop, step = index.indices(len(self))
        if step != 1:
            return self.whole()[index]
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return bytes(self.key._value_buffer.read(max(0, stop - start)))

    def whole(self) -> bytes:
        with self.key.lock:
            self.key._value_buffer.seek(0)
            return bytes(self.key._value_buffer.read())


class _RangeAwareValue(property):
    """FakeKey.value, answering a view instead of the bytes while a ranged GET is answered."""

    __wrapped__: Any = None


def _patched_key_value(original: property) -> property:
    def value(self: Any) -> Any:
        if getattr(_ranged_get, "active", False):
            return _ObjectBytes(self)
        return original.fget(self) if original.fget else None

    patched = _RangeAwareValue(value, original.fset, original.fdel, original.__doc__)
    patched.__wrapped__ = original
    return patched


def _patched_get_object(original: Any) -> Any:
    def get_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        _ranged_get.active = bool(self.headers.get("range"))
        try:
            status, headers, body = original(self, *args, **kwargs)
        finally:
            _ranged_get.active = False
        if isinstance(body, _ObjectBytes) and status != 200:  # a part-number GET: whole
            body = body.whole()
        return status, headers, body

    get_object.__wrapped__ = original  # type: ignore[attr-defined]
    return get_object


def _patched_handle_range_header(original: Any) -> Any:
    def handle_range_header(self: Any, *args: Any, **kwargs: Any) -> Any:
        status, headers, body = original(self, *args, **kwargs)
        if isinstance(body, _ObjectBytes):  # a range S3 answers with the whole object
            body = body.whole()
        return status, headers, body

    handle_range_header.__wrapped__ = original  # type: ignore[attr-defined]
    return handle_range_header


# -- Step Functions -----------------------------------------------------------------------------
def _patched_start_execution(original: Any) -> Any:
    """AWS names an unnamed execution with a UUID; moto's executing backend names every one of
    them "None", so the second unnamed start of a state machine fails with ExecutionAlreadyExists."""

    def start_execution(
        self: Any, state_machine_arn: str, name: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        return original(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs)

    start_execution.__wrapped__ = original  # type: ignore[attr-defined]
    return start_execution


# -- Lambda -------------------------------------------------------------------------------------
def handler_of(fn: Any) -> str:
    """The handler string of a moto LambdaFunction: image CMD first, else the zip Handler."""
    command = list(getattr(fn.image_config, "cmd", None) or [])
    if command:
        return str(command[0])
    if fn.handler:
        return str(fn.handler)
    raise HandlerNotFoundError(
        f"function {fn.function_name} has neither ImageConfig.Command nor Handler"
    )


def invoke_function(fn: Any, event: Any) -> tuple[bytes, str | None]:
    """Run a moto LambdaFunction's handler: (JSON payload, function error kind or None)."""
    runner = current_runner()
    context = LambdaContext(
        function_name=fn.function_name,
        invoked_function_arn=fn.function_arn,
        memory_limit_in_mb=int(fn.memory_size or 128),
        timeout_seconds=int(fn.timeout or 3),
    )
    try:
        result = runner.run_lambda(
            handler=handler_of(fn),
            event=event,
            environment=dict(fn.environment_vars or {}),
            context=context,
        )
    except Exception as err:
        LOG.info("lambda %s raised %s: %s", fn.function_name, type(err).__name__, err)
        return _error_payload(type(err).__name__, str(err), err), "Unhandled"
    try:
        return json.dumps(result).encode("utf-8"), None
    except (TypeError, ValueError) as err:
        return _error_payload(
            "Runtime.MarshalError", f"Unable to marshal response: {err}"
        ), "Unhandled"


def _error_payload(error_type: str, message: str, err: BaseException | None = None) -> bytes:
    stack = traceback.format_tb(err.__traceback__) if err is not None else []
    return json.dumps(
        {"errorMessage": message, "errorType": error_type, "stackTrace": stack}
    ).encode("utf-8")


def _patched_lambda_invoke(original: Any) -> Any:
    def invoke(self: Any, body: Any, request_headers: Any, response_headers: Any) -> bytes:
        # moto's LambdaBackend.invoke has already looked the function up (a missing one raised
        # ResourceNotFoundException); from here on it is our handler's turn.
        event = json.loads(body) if body else {}
        invocation_type = request_headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type == "Event":
            threading.Thread(
                target=invoke_function, args=(self, event), name="twin-lambda-event", daemon=True
            ).start()
            return b""
        if invocation_type == "DryRun":
            return b""
        payload, function_error = invoke_function(self, event)
        if function_error:
            response_headers["x-amz-function-error"] = function_error
        response_headers["x-amz-executed-version"] = "$LATEST"
        response_headers["x-amz-log-result"] = base64.b64encode(b"").decode()
        return payload

    invoke.__wrapped__ = original  # type: ignore[attr-defined]
    return invoke


# -- Glue ---------------------------------------------------------------------------------------
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
        run_id = original(self, **kwargs)  # moto's checks: concurrency limit, merged arguments
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
                runner.run_glue_script(script, argv)
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
        result = original(self)
        if getattr(self, "twin_error_message", None):
            result["ErrorMessage"] = self.twin_error_message
        if hasattr(self, "twin_execution_seconds"):
            result["ExecutionTime"] = self.twin_execution_seconds
        if getattr(self, "twin_run", False) and result.get("JobRunState") not in _GLUE_TERMINAL:
            result.pop("CompletedOn", None)  # moto stamps it at creation; a live run has none
        return result

    as_dict.__wrapped__ = original  # type: ignore[attr-defined]
    return as_dict


def _json_safe(value: Any) -> Any:
    """Step Functions reports Glue timestamps as epoch milliseconds; boto3 hands us datetimes."""
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def _patched_glue_sync_resolver(original: Any) -> Any:
    def build(
        self: Any,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: Any,
        state_credentials: Any,
    ) -> Any:
        resolver = original(
            self, env, resource_runtime_part, normalised_parameters, state_credentials
        )

        def resolve() -> Any:
            return _json_safe(resolver())

        return resolve

    build.__wrapped__ = original  # type: ignore[attr-defined]
    return build


# Glue error codes that Step Functions' Glue integration does not report under their own name:
# its SDK has no class for them, so they arrive as `Glue.AWSGlueException` with the code in the
# cause ("Rate exceeded (Service: AWSGlue; Status Code: 400; Error Code: ThrottlingException
# ..."). moto names every error `Glue.<code>`, which would let a Retry on a name AWS never
# reports pass in the twin. stacks/flows.py GLUE_START_ERRORS retries what AWS reports.
SFN_GLUE_UNMODELED_ERRORS = frozenset({"ThrottlingException"})
SFN_GLUE_GENERIC_ERROR = "Glue.AWSGlueException"


def _patched_glue_error_name(original: Any) -> Any:
    def from_error(self: Any, env: Any, ex: Exception) -> Any:
        from botocore.exceptions import ClientError

        event = original(self, env, ex)
        if not isinstance(ex, ClientError):
            return event
        code = ex.response["Error"]["Code"]
        if code not in SFN_GLUE_UNMODELED_ERRORS:
            return event
        from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
            CustomErrorName,
        )

        details = event.event_details["taskFailedEventDetails"]
        details["error"] = SFN_GLUE_GENERIC_ERROR
        details["cause"] = (
            f"{ex.response['Error'].get('Message', '')} (Service: AWSGlue; Status Code: 400; "
            f"Error Code: {code}; Request ID: {uuid.uuid4()}; Proxy: null)"
        )
        event.error_name = CustomErrorName(SFN_GLUE_GENERIC_ERROR)
        return event

    from_error.__wrapped__ = original  # type: ignore[attr-defined]
    return from_error


def _patched_glue_integration_pattern(original: Any) -> Any:
    """moto's shared implementation dereferences a callback endpoint that `.sync`-only services
    (Glue) never get; this is the same `.sync` loop without it."""

    def eval_integration_pattern(
        self: Any,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: Any,
        state_credentials: Any,
    ) -> None:
        task_output = env.stack.pop()
        self.timeout.eval(env=env)
        env.stack.pop()  # the task's timeout; Glue's own run timeout governs locally
        env.stack.append(task_output)
        resolver = self._build_sync_resolver(
            env=env,
            resource_runtime_part=resource_runtime_part,
            normalised_parameters=normalised_parameters,
            state_credentials=state_credentials,
        )
        result = None
        while env.is_running():
            result = resolver()  # raises the States.TaskFailed failure event on FAILED runs
            if result:
                break
            time.sleep(_SYNC_POLL_SECONDS)
        env.stack.append(result)

    eval_integration_pattern.__wrapped__ = original  # type: ignore[attr-defined]
    return eval_integration_pattern


# -- the Step Functions interpreter's boto3 clients ---------------------------------------------
class _Boto3AtTwinEndpoint:
    """Stands in for the `boto3` module inside moto's Step Functions `boto_client` helper so its
    clients reach the moto server that runs, not localhost:5000."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def client(self, *args: Any, **kwargs: Any) -> Any:
        if "endpoint_url" in kwargs and _runner is not None:
            kwargs["endpoint_url"] = _runner.moto_endpoint()
        return self._real.client(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


# -- EventBridge --------------------------------------------------------------------------------
def _event_time_iso(event: dict[str, Any]) -> dict[str, Any]:
    """moto keeps `time` as epoch seconds; AWS delivers an ISO-8601 string."""
    event = dict(event)
    if isinstance(event.get("time"), int | float):
        event["time"] = dt.datetime.fromtimestamp(float(event["time"]), dt.UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return event


def target_input(target: dict[str, Any], event: dict[str, Any]) -> Any:
    """What EventBridge hands a target: Input, InputPath, InputTransformer, or the whole event."""
    if target.get("Input") is not None:
        return json.loads(target["Input"])
    if target.get("InputPath"):
        from jsonpath_ng.ext import parse

        matches = parse(target["InputPath"]).find(event)
        return matches[0].value if matches else None
    transformer = target.get("InputTransformer")
    if transformer:
        from moto.events.utils import EventTemplateParser

        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=event,
        )
    return event


def deliver_to_target(target: dict[str, Any], payload: Any, account: str, region: str) -> None:
    """Deliver one event to a Step Functions, Lambda or SNS target (others are moto's business)."""
    from moto.stepfunctions.responses import get_backend as sfn_backend
    from moto.utilities.arns import parse_arn

    arn = parse_arn(target["Arn"])
    if arn.service == "states":
        execution = sfn_backend(arn.account or account, arn.region or region).start_execution(
            target["Arn"], name=str(uuid.uuid4()), execution_input=json.dumps(payload)
        )
        LOG.info("delivered event to %s as %s", target["Arn"], execution.execution_arn)
    elif arn.service == "lambda":
        from moto.awslambda.utils import get_backend as lambda_backend

        fn = lambda_backend(arn.account or account, arn.region or region).get_function(
            target["Arn"]
        )
        # EventBridge invokes Lambda asynchronously: do not hold up the event's producer.
        threading.Thread(
            target=invoke_function, args=(fn, payload), name="twin-lambda-event", daemon=True
        ).start()
    elif arn.service == "sns":
        from moto.sns.models import sns_backends

        topic = sns_backends[arn.account or account][arn.region or region].get_topic(target["Arn"])
        topic.publish(payload if isinstance(payload, str) else json.dumps(payload))
    else:
        raise ValueError(f"not a Step Functions, Lambda or SNS target: {target['Arn']}")


def _is_ours(target: dict[str, Any]) -> bool:
    return target["Arn"].split(":")[2:3] in (["states"], ["lambda"], ["sns"])


def _patched_send_to_targets(original: Any) -> Any:
    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if self.state != "ENABLED" or not self.event_pattern.matches_event(original_event):
            return
        event = _event_time_iso(original_event)
        for target in list(self.targets):
            try:
                if _is_ours(target):
                    deliver_to_target(
                        target, target_input(target, event), self.account_id, self.region_name
                    )
                else:
                    # moto's own delivery for one target at a time, so a failing target no longer
                    # skips the ones after it.
                    single = _SingleTargetRule(self, target)
                    original(single, original_event, transform_input)
            except Exception:
                LOG.exception("rule %s: delivery to %s failed", self.name, target.get("Arn"))

    send_to_targets.__wrapped__ = original  # type: ignore[attr-defined]
    return send_to_targets


class _SingleTargetRule:
    """A view of a moto Rule that has exactly one target (moto's delivery code reads attributes)."""

    def __init__(self, rule: Any, target: dict[str, Any]) -> None:
        self._rule = rule
        self.targets = [target]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rule, name)


# -- schedules ----------------------------------------------------------------------------------
def fire_schedule(
    name: str,
    *,
    group: str | None = None,
    account: str = "123456789012",
    region: str | None = None,
) -> list[str]:
    """Fire a scheduled EventBridge rule or an EventBridge Scheduler schedule now.

    Returns what was started (execution ARNs for state machines, function ARNs for Lambda).
    Raises LookupError when neither a scheduled rule nor a schedule has that name.
    """
    region = (
        region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    from moto.events.models import events_backends

    for bus in events_backends[account][region].event_buses.values():
        rule = bus.rules.get(name)
        if rule is not None and rule.scheduled_expression:
            event = {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": account,
                "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": region,
                "resources": [rule.arn],
                "detail": {},
            }
            return [_fire_target(t, target_input(t, event), account, region) for t in rule.targets]

    from moto.scheduler.exceptions import ScheduleNotFound
    from moto.scheduler.models import scheduler_backends

    try:
        schedule = scheduler_backends[account][region].get_schedule(group, name)
    except ScheduleNotFound as err:
        raise LookupError(f"no scheduled rule or schedule named {name!r}") from err
    target = dict(schedule.target)
    payload = json.loads(target["Input"]) if target.get("Input") else {}
    return [_fire_target(target, payload, account, region)]


def _fire_target(target: dict[str, Any], payload: Any, account: str, region: str) -> str:
    from moto.stepfunctions.responses import get_backend as sfn_backend

    arn = target["Arn"]
    if arn.split(":")[2] == "states":
        execution = sfn_backend(account, region).start_execution(
            arn, name=str(uuid.uuid4()), execution_input=json.dumps(payload)
        )
        return str(execution.execution_arn)
    deliver_to_target({**target, "Input": json.dumps(payload)}, payload, account, region)
    return str(arn)
