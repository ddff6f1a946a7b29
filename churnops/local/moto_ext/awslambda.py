"""Lambda: run the repository's handler when moto invokes a function.

Without Docker moto 5.2.5 only echoes the payload. moto's own lookup stays (a missing function is
still ResourceNotFoundException); then the function's configuration (handler from
`ImageConfig.Command[0]` for container images or `Handler` for zip, environment, memory size,
timeout, role) goes to the runner's Lambda sandboxes, which run the invocation in an execution
environment of its own. A handler's exception becomes a function error whose `errorType` is the
exception's class name, so Step Functions Retry/Catch see the real error names
(`NoChampionError`, ...); a timeout, out-of-memory end or crash gets Lambda's own error type.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from churnops.local.lambda_sandbox import FunctionSpec
from churnops.local.moto_ext.runner import current_runner

LOG = logging.getLogger("churnops.twin.moto_ext")


class HandlerNotFoundError(LookupError):
    """A function has neither an image command nor a handler: nothing Lambda could run."""


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


def function_spec(fn: Any) -> FunctionSpec:
    """A moto LambdaFunction's configuration, as Lambda reads it to run the function. Lambda's
    defaults apply where the configuration is silent: 128 MB, 3 s."""
    return FunctionSpec(
        name=fn.function_name,
        arn=fn.function_arn,
        handler=handler_of(fn),
        environment=tuple(sorted((fn.environment_vars or {}).items())),
        memory_mb=int(fn.memory_size or 128),
        timeout_seconds=int(fn.timeout or 3),
        role_arn=str(fn.role),
    )


def invoke_function(fn: Any, event: Any) -> tuple[bytes, str | None]:
    """Run a moto LambdaFunction's handler: (JSON payload, function error kind or None)."""
    invocation = current_runner().sandboxes.invoke(function_spec(fn), event)
    if invocation.function_error:
        LOG.info("lambda %s failed: %s", fn.function_name, invocation.payload[:500])
    return invocation.payload, invocation.function_error


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
