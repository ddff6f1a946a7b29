"""Every error name a Retry or Catch of the synthesized state machines relies on is a name the
service can really report; a name nothing reports makes its Retry dead code that passes review.

Where the names come from:
- `States.*`: the Amazon States Language's own (Step Functions Developer Guide, "Handling errors
  in Step Functions workflows"); `States.Timeout` only where the state has a timeout.
- `Lambda.*`: Lambda service errors as Step Functions reports them (Step Functions best
  practices, "Handle Lambda service exceptions"): ClientExecutionTimeoutException,
  ServiceException, AWSLambdaException, SdkClientException, TooManyRequestsException, and
  Lambda.Unknown for unhandled ends (timeout, out of memory).
- A Lambda step's own failure: the class name of the exception the handler raised; it must be
  an exception the deployed code can raise (ours, or botocore's), never pymysql's (wrapped by
  churnops.database.connect).
- `Glue.*`: a modeled Glue API error (botocore's Glue model) except those the integration's SDK
  has no class for, which arrive as `Glue.AWSGlueException` (throttling among them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import botocore.session
import pytest

from churnops import errors as churnops_errors
from churnops.local.moto_ext import SFN_GLUE_GENERIC_ERROR, SFN_GLUE_UNMODELED_ERRORS

STATES_ERRORS = {
    "States.ALL",
    "States.TaskFailed",
    "States.Permissions",
    "States.Timeout",
    "States.HeartbeatTimeout",
    "States.DataLimitExceeded",
    "States.Runtime",
}
LAMBDA_ERRORS = {
    f"Lambda.{name}"
    for name in (
        "ClientExecutionTimeoutException",
        "ServiceException",
        "AWSLambdaException",
        "SdkClientException",
        "TooManyRequestsException",
        "Unknown",
    )
}
NEVER_REPORTED = {
    "OperationalError",
    "InterfaceError",
    "ThrottlingException",
    "Glue.ThrottlingException",
}


def glue_error_names() -> set[str]:
    model = botocore.session.get_session().get_service_model("glue")
    modeled = {shape.name for shape in model.error_shapes} - SFN_GLUE_UNMODELED_ERRORS
    return {f"Glue.{name}" for name in modeled} | {SFN_GLUE_GENERIC_ERROR}


def raisable_class_names() -> set[str]:
    ours = {
        name
        for name, value in vars(churnops_errors).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    botocore_names = {
        name
        for name, value in vars(botocore.exceptions).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    return ours | botocore_names


def definitions(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each state machine's definition, its tokens (ARNs, names) replaced by a placeholder."""
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        body = resource["Properties"]["DefinitionString"]
        if isinstance(body, dict):
            parts = body["Fn::Join"][1]
            body = "".join(part if isinstance(part, str) else "TOKEN" for part in parts)
        yield logical_id, json.loads(body)


def handlers(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str, str]]:
    """(state name, state, "Retry" or "Catch", error name) for every state, nested ones too."""
    for name, state in states.items():
        for kind in ("Retry", "Catch"):
            for rule in state.get(kind, []):
                for error in rule["ErrorEquals"]:
                    yield name, state, kind, error
        for branch in state.get("Branches", []):
            yield from handlers(branch["States"])
        for key in ("Iterator", "ItemProcessor"):
            if key in state:
                yield from handlers(state[key]["States"])


@pytest.fixture(scope="module")
def error_handlers(churnops) -> list[tuple[str, str, dict[str, Any], str, str]]:  # type: ignore[no-untyped-def]
    template = churnops.template.to_json()
    found = [
        (machine, *handler)
        for machine, definition in definitions(template)
        for handler in handlers(definition["States"])
    ]
    assert found, "no Retry or Catch found: the parser missed the definitions"
    return found


def test_every_retried_or_caught_name_can_be_reported(error_handlers) -> None:  # type: ignore[no-untyped-def]
    known = STATES_ERRORS | LAMBDA_ERRORS | glue_error_names() | raisable_class_names()
    unknown = sorted(
        f"{machine}/{state} {kind}: {error}"
        for machine, state, _, kind, error in error_handlers
        if error not in known or error in NEVER_REPORTED
    )
    assert not unknown, f"names no service reports: {unknown}"


def test_states_timeout_is_relied_on_only_where_the_state_has_a_timeout(error_handlers) -> None:  # type: ignore[no-untyped-def]
    for machine, name, state, kind, error in error_handlers:
        if error == "States.Timeout":
            assert "TimeoutSeconds" in state or "TimeoutSecondsPath" in state, (
                f"{machine}/{name} {kind}s States.Timeout but has no timeout"
            )


def test_glue_starts_retry_throttling_as_step_functions_reports_it(error_handlers) -> None:  # type: ignore[no-untyped-def]
    glue_retries = {
        error
        for _, _, state, kind, error in error_handlers
        if kind == "Retry" and str(state.get("Resource", "")).endswith("glue:startJobRun.sync")
    }
    assert {"Glue.AWSGlueException", "Glue.ConcurrentRunsExceededException"} <= glue_retries


def test_the_retrain_steps_retry_an_unreachable_database(error_handlers) -> None:  # type: ignore[no-untyped-def]
    lambda_retries = {
        error
        for _, _, state, kind, error in error_handlers
        if kind == "Retry" and "lambda:invoke" in str(state.get("Resource", ""))
    }
    assert "DatabaseUnavailableError" in lambda_retries
    assert "Lambda.ServiceException" in lambda_retries
