"""Lambda's execution environments for the twin: each invocation runs in a worker process of its
own (`churnops/local/lambda_worker.py`), under the limits the function is configured with.

What Lambda does and the twin therefore does (sources in the comments where each is enforced):
- **Environment.** A worker sees the function's configured variables, Lambda's reserved ones and
  its role's temporary credentials, and nothing of the daemon's environment. The twin adds two
  of its own: `AWS_ENDPOINT_URL` (how boto3 reaches moto instead of AWS) and `PYTHONPATH` (the
  repository standing for the image's `LAMBDA_TASK_ROOT`).
- **Concurrency and reuse.** Invocations run side by side, one environment each; a free warm
  environment of the same function configuration is reused (module state survives, as on Lambda),
  otherwise a new one starts cold. An environment that timed out, ran out of memory or crashed
  is discarded, as Lambda discards it.
- **Timeout.** The invocation ends when the function's timeout passes: the worker is killed and
  the caller gets `Sandbox.Timedout`.
- **Memory.** The worker's resident memory is sampled while it runs; above the function's memory
  size it is killed and the caller gets `Runtime.OutOfMemory`.
- **Logs and embedded metrics.** What the function writes goes to the twin's log under its name,
  as Lambda sends it to the function's log group. A line that is an embedded metric format (EMF)
  document is also handed to the EMF sink (`set_emf_sink`), standing for CloudWatch Logs, which
  extracts the metrics on its own account, not the function's role: no request of the function
  is involved (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger("churnops.twin.lambda")

WORKER_MODULE = "churnops.local.lambda_worker"
# Lambda's init phase may take up to 10 s before the invocation's own timeout starts counting
# (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html, "Init phase").
INIT_SECONDS = 10.0
# How often a running worker's resident memory is sampled against its function's memory size.
_MEMORY_SAMPLE_SECONDS = 0.02
# The error types Lambda reports for an invocation its runtime, not the handler, ended.
TIMED_OUT = "Sandbox.Timedout"
OUT_OF_MEMORY = "Runtime.OutOfMemory"
EXITED = "Runtime.ExitError"
RUNTIME_ERRORS = frozenset({TIMED_OUT, OUT_OF_MEMORY, EXITED})


@dataclass(frozen=True)
class FunctionSpec:
    """What Lambda knows of a function when it runs it: its configuration."""

    name: str
    arn: str
    handler: str
    environment: tuple[tuple[str, str], ...]
    memory_mb: int
    timeout_seconds: int
    role_arn: str

    @property
    def region(self) -> str:
        return self.arn.split(":")[3]


@dataclass(frozen=True)
class Invocation:
    """What the Invoke API answers: the payload, and `Unhandled` when the function failed."""

    payload: bytes
    function_error: str | None = None

    def error_type(self) -> str | None:
        if self.function_error is None:
            return None
        return str(json.loads(self.payload).get("errorType", ""))


Credentials = Callable[[FunctionSpec], Mapping[str, str]]
# Where an EMF document a function logged goes (CloudWatch Logs' metric extraction): the extension
# layer sets it when installed (`churnops.local.moto_ext.install`), None leaves logs as logs.
EmfSink = Callable[[FunctionSpec, dict[str, Any]], None]
_emf_sink: EmfSink | None = None


def set_emf_sink(sink: EmfSink | None) -> EmfSink | None:
    """Hand the EMF documents functions log to `sink` from now on; returns the previous sink."""
    global _emf_sink
    previous, _emf_sink = _emf_sink, sink
    return previous


def emf_document(line: str) -> dict[str, Any] | None:
    """The log line as an EMF document, or None. The spec: the log event "MUST be a valid JSON
    object with no additional data at the beginning or end" and carry the metadata member `_aws`
    (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html,
    "Root node"). Whether the rest of it is valid is the sink's business, as it is CloudWatch's."""
    text = line.strip()
    if not text.startswith("{") or '"_aws"' not in text:  # cheap: most lines are not EMF
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) and "_aws" in document else None


def _error_payload(error_type: str, message: str, stack: list[str] | None = None) -> bytes:
    return json.dumps(
        {"errorType": error_type, "errorMessage": message, "stackTrace": stack or []}
    ).encode("utf-8")


class _Ended(Exception):
    """The worker is gone or was ended: the invocation fails with `error_type`."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class _Worker:
    """One execution environment: a worker process, its response pipe and its log pump."""

    def __init__(self, spec: FunctionSpec, environment: Mapping[str, str], cwd: Path) -> None:
        self.spec = spec
        self.peak_rss_mb = 0.0
        self.process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            # -u: what the handler writes reaches its logs as it writes it, not when a buffer
            # fills or the environment ends. Lambda's Python runtime does the same: its bootstrap
            # wraps sys.stdout and sys.stderr in `Unbuffered` (aws-lambda-python-runtime-interface-
            # client, awslambdaric/bootstrap.py, `run`); EMF metrics depend on it.
            [sys.executable, "-u", "-m", WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(environment),
            cwd=cwd,
        )
        self._buffer = b""
        threading.Thread(
            target=self._pump_logs, name=f"lambda-log-{spec.name}", daemon=True
        ).start()

    def _pump_logs(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            LOG.info("%s: %s", self.spec.name, line)
            sink = _emf_sink
            document = emf_document(line) if sink is not None else None
            if sink is not None and document is not None:
                try:
                    sink(self.spec, document)
                except Exception:  # a sink's failure must not stop the function's log stream
                    LOG.exception("%s: embedded metrics not extracted", self.spec.name)

    def _rss_mb(self) -> float:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """End an idle environment: closing its stdin ends the worker's request loop."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()

    def _exit_reason(self) -> str:
        code = self.process.wait(timeout=10)
        if code < 0:
            return f"signal: {signal.Signals(-code).name.removeprefix('SIG').lower()}"
        return f"exit status {code}"

    def read(self, deadline: float, limit_mb: int, request_id: str, timeout: float) -> Any:
        """The next response line, while holding the worker to its deadline and memory size."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            rss = self._rss_mb()
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            if rss > limit_mb:
                self.kill()
                raise _Ended(
                    OUT_OF_MEMORY,
                    f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise _Ended(
                    TIMED_OUT,
                    f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds",
                )
            ready, _, _ = select.select([fd], [], [], min(remaining, _MEMORY_SAMPLE_SECONDS))
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise _Ended(
                        EXITED,
                        f"RequestId: {request_id} Error: Runtime exited with error: "
                        f"{self._exit_reason()}",
                    )
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode("utf-8") + b"\n")
        self.process.stdin.flush()


class LambdaSandboxes:
    """Runs invocations in execution environments, keeping warm ones per function configuration.

    `endpoint` is where the workers' boto3 reaches AWS (moto); `credentials(spec)` gives the
    temporary credentials of the function's role, as Lambda obtains them by assuming it.
    """

    def __init__(
        self, task_root: Path, endpoint: Callable[[], str], credentials: Credentials
    ) -> None:
        self.task_root = Path(task_root).resolve()
        self._endpoint = endpoint
        self._credentials = credentials
        self._idle: dict[FunctionSpec, list[_Worker]] = {}
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def environment(self, spec: FunctionSpec, request_id: str) -> dict[str, str]:
        """The worker's whole environment: the function's variables, Lambda's reserved ones
        (https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime)
        and the twin's two."""
        return {
            **dict(spec.environment),
            "_HANDLER": spec.handler,
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{time.strftime('%Y/%m/%d')}/[$LATEST]{request_id}",
            "LAMBDA_TASK_ROOT": str(self.task_root),
            "LANG": "en_US.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "TZ": ":UTC",
            **dict(self._credentials(spec)),
            "AWS_ENDPOINT_URL": self._endpoint(),
            "PYTHONPATH": str(self.task_root),
        }

    def invoke(self, spec: FunctionSpec, event: Any) -> Invocation:
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        try:
            worker = self._acquire(spec, request_id)
        except _Ended as ended:
            return Invocation(_error_payload(ended.error_type, str(ended)), "Unhandled")
        keep = False
        try:
            deadline = time.monotonic() + spec.timeout_seconds
            worker.send(
                {
                    "request_id": request_id,
                    "function_arn": spec.arn,
                    "event": event,
                    "remaining_ms": spec.timeout_seconds * 1000,
                }
            )
            response = worker.read(deadline, spec.memory_mb, request_id, spec.timeout_seconds)
            keep = True
            if "error" in response:
                error = response["error"]
                return Invocation(
                    _error_payload(
                        error["errorType"], error["errorMessage"], error.get("stackTrace")
                    ),
                    "Unhandled",
                )
            return Invocation(json.dumps(response["result"]).encode("utf-8"))
        except _Ended as ended:
            return Invocation(_error_payload(ended.error_type, str(ended)), "Unhandled")
        finally:
            LOG.info(
                "REPORT %s RequestId: %s Duration: %.0f ms Memory Size: %d MB "
                "Max Memory Used: %.0f MB",
                spec.name,
                request_id,
                (time.monotonic() - started) * 1000,
                spec.memory_mb,
                worker.peak_rss_mb,
            )
            self._release(worker, keep)

    def _acquire(self, spec: FunctionSpec, request_id: str) -> _Worker:
        with self._lock:
            if self._closed:
                raise _Ended(EXITED, f"RequestId: {request_id} Error: the twin is stopping")
            idle = self._idle.get(spec)
            if idle:
                worker = idle.pop()
                self._busy.add(worker)
                return worker
        worker = _Worker(spec, self.environment(spec, request_id), self.task_root)
        with self._lock:
            self._busy.add(worker)
        try:
            ready = worker.read(
                time.monotonic() + INIT_SECONDS + spec.timeout_seconds,
                spec.memory_mb,
                request_id,
                spec.timeout_seconds,
            )
        except _Ended:
            self._release(worker, keep=False)
            raise
        if "init_error" in ready:
            self._release(worker, keep=False)
            error = ready["init_error"]
            raise _Ended(error["errorType"], error["errorMessage"])
        return worker

    def _release(self, worker: _Worker, keep: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            if keep and not self._closed and worker.process.poll() is None:
                self._idle.setdefault(worker.spec, []).append(worker)
                return
        worker.kill()

    def warm_count(self, spec: FunctionSpec) -> int:
        with self._lock:
            return len(self._idle.get(spec, []))

    def shutdown(self) -> None:
        """Stop every environment: idle ones end their loop, running ones are killed."""
        with self._lock:
            self._closed = True
            idle = [worker for workers in self._idle.values() for worker in workers]
            busy = list(self._busy)
            self._idle.clear()
        for worker in idle:
            worker.stop()
        for worker in busy:
            worker.kill()

    def reopen(self) -> None:
        with self._lock:
            self._closed = False
