"""Lambda: run the repository's handler when moto invokes a function.

Without Docker moto 5.2.5 only echoes the payload. moto's own lookup stays (a missing function is
still ResourceNotFoundException); then the handler named by the function's
`ImageConfig.Command[0]` (container images) or `Handler` (zip) is imported and called by the
runner. An exception becomes a Lambda function error whose `errorType` is the exception's class
name, so Step Functions Retry/Catch see the real error names (`NoChampionError`, ...).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from churnops.local.moto_ext.runner import HandlerNotFoundError, LambdaContext, current_runner

LOG = logging.getLogger("churnops.twin.moto_ext")


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


def patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, replacement builder) for every Lambda attribute this module replaces."""
    from moto.awslambda.models import LambdaFunction

    return [(LambdaFunction, "invoke", _patched_lambda_invoke)]
