"""One Lambda execution environment of the twin: the process a sandbox runs (`python -m
churnops.local.lambda_worker`), playing the part of Lambda's Python runtime interface client.

Its environment is exactly what Lambda gives a function (its configured variables, the reserved
ones, its role's credentials; see `churnops/local/lambda_sandbox.py`). As on Lambda, the handler's
module is imported once, at cold start (the init phase), and the handler is then called once per
invocation for as long as the environment lives, so module-level state (clients, a cached model)
carries over between warm invocations exactly as it does there.

The protocol with the sandbox is one JSON document per line: requests arrive on stdin; the init
outcome and each invocation's outcome leave on the process's original stdout. The handler's own
stdout goes to stderr, which the sandbox logs under the function's name (Lambda sends both to the
function's log stream), so nothing the handler prints can corrupt a response.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any


@dataclass
class LambdaContext:
    """The attributes of AWS's Lambda context object that handlers and Powertools read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    deadline: float  # time.monotonic() when the sandbox ends the invocation
    function_version: str = "$LATEST"

    def __post_init__(self) -> None:
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = f"{dt.datetime.now(dt.UTC):%Y/%m/%d}/[$LATEST]{self.aws_request_id}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def _error(error_type: str, message: str, err: BaseException | None = None) -> dict[str, Any]:
    stack = traceback.format_tb(err.__traceback__) if err is not None else []
    return {"errorType": error_type, "errorMessage": message, "stackTrace": stack}


def _load_handler(handler: str) -> Callable[..., Any]:
    """Import the handler's module as Lambda's Python runtime does at init; its error names
    (Runtime.ImportModuleError, Runtime.HandlerNotFound, Runtime.MalformedHandlerName) are the
    ones the runtime reports."""
    module_name, _, function_name = handler.rpartition(".")
    if not module_name:
        raise _InitError(
            "Runtime.MalformedHandlerName", f"Bad handler '{handler}': not enough values to unpack"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any failure at import is the function's init failing
        raise _InitError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {err}"
        ) from err
    function = getattr(module, function_name, None)
    if not callable(function):
        raise _InitError(
            "Runtime.HandlerNotFound",
            f"Handler '{function_name}' missing on module '{module_name}'",
        )
    return function  # type: ignore[no-any-return]


class _InitError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _send(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def serve(requests: IO[str], responses: IO[str]) -> int:
    handler_name = os.environ["_HANDLER"]
    try:
        handler = _load_handler(handler_name)
    except _InitError as err:
        _send(responses, {"init_error": _error(err.error_type, str(err), err.__cause__)})
        return 1
    _send(responses, {"ready": True})
    for line in requests:
        request = json.loads(line)
        context = LambdaContext(
            function_name=os.environ["AWS_LAMBDA_FUNCTION_NAME"],
            invoked_function_arn=request["function_arn"],
            memory_limit_in_mb=int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]),
            aws_request_id=request["request_id"],
            # the sandbox's deadline: it ends this process when the time is up
            deadline=time.monotonic() + request["remaining_ms"] / 1000,
        )
        try:
            result = handler(request["event"], context)
        except Exception as err:
            _send(responses, {"error": _error(type(err).__name__, str(err), err)})
            continue
        try:
            _send(responses, {"result": result})
        except (TypeError, ValueError) as err:
            _send(
                responses,
                {"error": _error("Runtime.MarshalError", f"Unable to marshal response: {err}")},
            )
    return 0


def main() -> int:
    # The original stdout carries responses only; the handler's prints go to stderr (its logs).
    responses = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)
    return serve(sys.stdin, responses)


if __name__ == "__main__":
    sys.exit(main())
