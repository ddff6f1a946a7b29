"""The twin's Lambda execution environments (churnops/local/lambda_sandbox.py): each invocation in
a worker process of its own, with exactly the function's environment, its timeout and memory size
enforced with the error names Lambda and Step Functions report, side by side, warm when reused.

AWS facts these tests hold the twin to:
- Reserved variables and credentials a function sees:
  https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
- Step Functions reports a function timeout or out-of-memory end as `Lambda.Unknown`:
  https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html
- Lambda reuses an execution environment between invocations (state outside the handler
  survives) and runs concurrent invocations in separate environments:
  https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/churnops-twin-execution"

HANDLERS = '''
import os
import time
from pathlib import Path

INVOCATIONS = 0  # module state: survives between invocations of one warm environment


def environment(event, context):
    return {"keys": sorted(os.environ), "pid": os.getpid(), "memory": context.memory_limit_in_mb}


def count(event, context):
    global INVOCATIONS
    INVOCATIONS += 1
    return {"pid": os.getpid(), "invocations": INVOCATIONS}


def sleep(event, context):
    time.sleep(event["seconds"])
    return {"slept": event["seconds"]}


def hog(event, context):
    held = b"\\x01" * (event["mb"] << 20)  # written, so resident
    time.sleep(5)
    return {"held": len(held)}


def meet(event, context):
    """Arrive, then wait for `expected` arrivals: only invocations running side by side meet."""
    room = Path(event["room"])
    (room / str(os.getpid())).write_text("here")
    deadline = time.monotonic() + 20
    while len(list(room.iterdir())) < event["expected"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(room.iterdir()))} arrived")
        time.sleep(0.05)
    return {"pid": os.getpid()}


def shout(event, context):
    print("this line goes to the function's logs, not into the response")
    return {"ok": True}
'''


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sandbox_root")
    (root / "sandbox_handlers").mkdir()
    (root / "sandbox_handlers" / "__init__.py").write_text("")
    (root / "sandbox_handlers" / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    return root


@pytest.fixture(scope="module")
def runner(moto_ext, task_root):  # type: ignore[no-untyped-def]
    from churnops.local import moto_ext as extension
    from churnops.local.provision import ensure_execution_role

    ensure_execution_role()
    previous = extension.current_runner()
    swapped = extension.install(extension.TaskRunner(repo_root=task_root))
    yield swapped
    extension.install(previous)


def _function(handler: str, *, timeout: int = 30, memory: int = 256, env: Any = None) -> str:
    from churnops.aws import client

    name = f"sandbox-{uuid.uuid4().hex[:8]}"
    client("lambda").create_function(
        FunctionName=name,
        Role=ROLE,
        PackageType="Image",
        Code={"ImageUri": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/churnops:test"},
        # a bare name is one of HANDLERS; a dotted one is taken as written
        ImageConfig={
            "Command": [handler if "." in handler else f"sandbox_handlers.handlers.{handler}"]
        },
        Environment={"Variables": env or {}},
        Timeout=timeout,
        MemorySize=memory,
    )
    return name


def _invoke(name: str, event: Any) -> tuple[Any, str | None]:
    from churnops.aws import client

    response = client("lambda").invoke(FunctionName=name, Payload=json.dumps(event).encode())
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def _run_in_state_machine(function: str) -> dict[str, Any]:
    """One Lambda task, as CDK's LambdaInvoke synthesizes it, with a Catch on Lambda.Unknown."""
    from churnops.aws import client

    arn = client("lambda").get_function(FunctionName=function)["Configuration"]["FunctionArn"]
    definition = {
        "StartAt": "Step",
        "States": {
            "Step": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": arn, "Payload": {"seconds": 5, "mb": 400}},
                "OutputPath": "$.Payload",
                "Catch": [
                    {"ErrorEquals": ["Lambda.Unknown"], "ResultPath": "$.error", "Next": "Caught"}
                ],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    sfn = client("stepfunctions")
    machine = sfn.create_state_machine(
        name=f"sandbox-{uuid.uuid4().hex[:8]}", definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, input="{}")["executionArn"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.2)
    raise AssertionError("execution still running")


def test_the_function_sees_exactly_its_environment(runner, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a variable only the twin's own process has
    monkeypatch.setenv("CHURNOPS_DAEMON_ONLY", "must not leak")
    name = _function("environment", memory=512, env={"CHURN_THRESHOLD": "0.35"})
    # WHEN the function runs
    result, error = _invoke(name, {})
    # THEN it sees its own variables, Lambda's reserved ones and the twin's endpoint; nothing else
    assert error is None, result
    reserved = {
        "_HANDLER",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_TASK_ROOT",
        "LANG",
        "PATH",
        "TZ",
    }
    twin = {"AWS_ENDPOINT_URL", "PYTHONPATH"}
    # a Python interpreter may add LC_CTYPE to its own environment at start-up
    assert set(result["keys"]) - {"LC_CTYPE"} == reserved | twin | {"CHURN_THRESHOLD"}
    assert result["memory"] == 512
    assert result["pid"] != __import__("os").getpid()


def test_a_warm_environment_is_reused_and_keeps_module_state(runner) -> None:  # type: ignore[no-untyped-def]
    name = _function("count")
    first, _ = _invoke(name, {})
    second, _ = _invoke(name, {})
    assert second["pid"] == first["pid"]
    assert (first["invocations"], second["invocations"]) == (1, 2)


def test_a_timeout_ends_the_invocation_with_lambdas_error_and_a_fresh_environment(runner) -> None:  # type: ignore[no-untyped-def]
    name = _function("sleep", timeout=1)
    # WHEN the handler outlives the function's timeout
    result, error = _invoke(name, {"seconds": 5})
    # THEN Lambda's own error, and the environment is discarded
    assert error == "Unhandled"
    assert result["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in result["errorMessage"]
    assert runner.sandboxes.warm_count(_spec(name)) == 0
    # AND an invocation within the timeout still succeeds (a new, cold environment)
    assert _invoke(name, {"seconds": 0}) == ({"slept": 0}, None)


def test_memory_above_the_function_size_ends_it_out_of_memory(runner) -> None:  # type: ignore[no-untyped-def]
    name = _function("hog", memory=128)
    result, error = _invoke(name, {"mb": 400})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.OutOfMemory"
    # the same allocation fits a function configured with more memory
    roomy = _function("hog", memory=1024, timeout=30)
    assert _invoke(roomy, {"mb": 400}) == ({"held": 400 << 20}, None)


@pytest.mark.parametrize(("handler", "memory", "timeout"), [("sleep", 256, 1), ("hog", 128, 30)])
def test_step_functions_catches_timeout_and_out_of_memory_as_lambda_unknown(
    runner, handler: str, memory: int, timeout: int
) -> None:  # type: ignore[no-untyped-def]
    name = _function(handler, memory=memory, timeout=timeout)
    execution = _run_in_state_machine(name)
    assert execution["status"] == "SUCCEEDED", execution
    caught = json.loads(execution["output"])["error"]
    assert caught["Error"] == "Lambda.Unknown"
    assert json.loads(caught["Cause"])["errorType"] in ("Sandbox.Timedout", "Runtime.OutOfMemory")


def test_invocations_run_side_by_side_in_separate_environments(runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = _function("meet", timeout=30)
    outcomes: list[tuple[Any, str | None]] = []
    event = {"room": str(tmp_path), "expected": 3}
    threads = [
        threading.Thread(target=lambda: outcomes.append(_invoke(name, event))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # all three met in the room: none waited for another to finish
    assert [error for _, error in outcomes] == [None, None, None], outcomes
    assert len({result["pid"] for result in [r for r, _ in outcomes]}) == 3


def test_what_the_handler_prints_stays_out_of_the_response(runner) -> None:  # type: ignore[no-untyped-def]
    name = _function("shout")
    assert _invoke(name, {}) == ({"ok": True}, None)


def test_an_unimportable_handler_is_an_import_error(runner) -> None:  # type: ignore[no-untyped-def]
    result, error = _invoke(_function("sandbox_handlers.missing.handler"), {})
    assert error == "Unhandled"
    assert result["errorType"] == "Runtime.ImportModuleError"


def _spec(name: str) -> Any:
    from moto.awslambda.models import lambda_backends

    from churnops.local.moto_ext.awslambda import function_spec

    return function_spec(lambda_backends[ACCOUNT]["us-east-1"].get_function(name))
