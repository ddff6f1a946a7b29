"""Step Functions: let moto's executing backend run the twin's state machines as AWS would.

What moto 5.2.5 gets wrong there, and the twin needs right:
- An execution started without a name is named "None", so the second unnamed start of a state
  machine fails with ExecutionAlreadyExists; AWS names it with a UUID.
- The interpreter builds its boto3 clients for `localhost:$MOTO_PORT` (5000 by default); the twin's
  moto server listens elsewhere, so they are pointed at the runner's endpoint (`AWS_ENDPOINT_URL`).
- The Glue `.sync` integration (`glue:startJobRun.sync`, how the ingest flow runs its job) crashes:
  the shared `.sync` loop dereferences a callback endpoint that `.sync`-only services never get,
  and the task output carries datetimes, which are not JSON. It also reports every Glue error as
  `Glue.<code>`, where AWS reports codes its SDK does not model as `Glue.AWSGlueException`, so a
  Retry on a name AWS never reports would pass in the twin.
- The Step Functions integration (`states:startExecution`, how the retrain flow hands a challenger
  to its rollout) sends the definition's parameters to boto3 as written (`StateMachineArn`,
  `Input`, `Name`), where the API's members are `stateMachineArn`, `input`, `name`, so every start
  fails with a KeyError; and its result keeps boto3's member names, where Step Functions names
  them as the definition does (`ExecutionArn`, `StartDate`: docs.aws.amazon.com/step-functions/
  latest/dg/connect-stepfunctions.html), so a later state reading `$.x.ExecutionArn` finds nothing.
- A Lambda task whose function timed out, ran out of memory or whose runtime exited fails with the
  payload's `errorType` (`Sandbox.Timedout`, ...); Step Functions reports these as
  `Lambda.Unknown` (https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html:
  "Unhandled errors in Lambda are reported as Lambda.Unknown ... These include out-of-memory
  errors and function timeouts"), which is what a definition's Retry and Catch must name.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from churnops.local.lambda_sandbox import RUNTIME_ERRORS
from churnops.local.moto_ext.runner import active_runner

# What Step Functions reports when the Lambda runtime, not the function's code, ended a task.
SFN_LAMBDA_UNKNOWN = "Lambda.Unknown"

_SYNC_POLL_SECONDS = 0.5


def _patched_start_execution(original: Any) -> Any:
    """AWS names an unnamed execution with a UUID; moto's executing backend names every one of
    them "None", so the second unnamed start of a state machine fails with ExecutionAlreadyExists."""

    def start_execution(
        self: Any, state_machine_arn: str, name: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        return original(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs)

    start_execution.__wrapped__ = original  # type: ignore[attr-defined]
    return start_execution


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


def _runtime_error_type(payload: Any) -> str | None:
    try:
        error_type = json.loads(payload).get("errorType")
    except (TypeError, ValueError, AttributeError):
        return None
    return error_type if error_type in RUNTIME_ERRORS else None


def _patched_lambda_error_name(original: Any) -> Any:
    def from_error(self: Any, env: Any, ex: Exception) -> Any:
        from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
            CustomErrorName,
        )
        from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
            lambda_eval_utils,
        )

        event = original(self, env, ex)
        if not isinstance(ex, lambda_eval_utils.LambdaFunctionErrorException):
            return event
        if _runtime_error_type(ex.payload) is None or not event.event_details:
            return event
        for details in event.event_details.values():
            details["error"] = SFN_LAMBDA_UNKNOWN
        event.error_name = CustomErrorName(SFN_LAMBDA_UNKNOWN)
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


@functools.cache
def _sfn_operation(action: str) -> Any:
    """The Step Functions API operation whose boto3 method is `action` (start_execution); the
    service model is read from botocore's data files once per action, not per task."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model("stepfunctions")
    for name in model.operation_names:
        if xform_name(name) == action:
            return model.operation_model(name)
    raise KeyError(action)


def _patched_sfn_parameters(original: Any) -> Any:
    """The definition's parameter names mapped onto the API's members, as Step Functions does
    (moto's parser has the mapping, `_to_boto_request`, but never calls it for this service)."""

    def normalise(
        self: Any,
        parameters: dict[str, Any],
        boto_service_name: str | None = None,
        service_action_name: str | None = None,
    ) -> None:
        original(self, parameters, boto_service_name, service_action_name)
        action = service_action_name or self._get_boto_service_action()
        self._to_boto_request(parameters, _sfn_operation(action).input_shape)

    normalise.__wrapped__ = original  # type: ignore[attr-defined]
    return normalise


def _patched_sfn_result(original: Any) -> Any:
    """The call's result named as Step Functions names it: `ExecutionArn`, `StartDate` (epoch
    milliseconds, as for Glue above)."""

    def eval_service_task(
        self: Any,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: Any,
        state_credentials: Any,
    ) -> None:
        original(self, env, resource_runtime_part, normalised_parameters, state_credentials)
        response = env.stack.pop()
        if isinstance(response, dict):
            response = {self._to_sfn_cased(k): _json_safe(v) for k, v in response.items()}
        env.stack.append(response)

    eval_service_task.__wrapped__ = original  # type: ignore[attr-defined]
    return eval_service_task


class _Boto3AtTwinEndpoint:
    """Stands in for the `boto3` module inside moto's Step Functions `boto_client` helper so its
    clients reach the moto server that runs, not localhost:5000."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def client(self, *args: Any, **kwargs: Any) -> Any:
        runner = active_runner()
        if "endpoint_url" in kwargs and runner is not None:
            kwargs["endpoint_url"] = runner.moto_endpoint()
        return self._real.client(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, replacement builder) for every Step Functions attribute replaced here."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_lambda
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_glue,
        state_task_service_lambda,
        state_task_service_sfn,
    )
    from moto.stepfunctions.parser.asl.utils import boto_client
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    glue_task = state_task_service_glue.StateTaskServiceGlue
    sfn_task = state_task_service_sfn.StateTaskServiceSfn
    return [
        (sfn_task, "_normalise_parameters", _patched_sfn_parameters),
        (sfn_task, "_eval_service_task", _patched_sfn_result),
        (StepFunctionsParserBackend, "start_execution", _patched_start_execution),
        (glue_task, "_eval_integration_pattern", _patched_glue_integration_pattern),
        (glue_task, "_build_sync_resolver", _patched_glue_sync_resolver),
        (glue_task, "_from_error", _patched_glue_error_name),
        (
            state_task_service_lambda.StateTaskServiceLambda,
            "_from_error",
            _patched_lambda_error_name,
        ),
        (state_task_lambda.StateTaskLambda, "_from_error", _patched_lambda_error_name),
        (boto_client, "boto3", _Boto3AtTwinEndpoint),
    ]
