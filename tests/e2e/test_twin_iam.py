"""IAM in the twin: every handler, Glue job and state machine calls AWS as its own synthesized role,
so a stack that forgets a grant fails in the twin where it would fail on AWS, with AccessDenied
naming the action (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_access-denied.html:
"... is not authorized to perform: <action> on resource: <arn> because no identity-based policy
allows the <action> action"). The whole flow passing with enforcement on is tests/e2e/test_twin.py.

Slow: a twin of its own, provisioned from the synthesized assembly with one grant removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.mariadb, pytest.mark.cdk]

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT_HANDLER = "lambdas.retrain.handlers.snapshot"
SECRET_READ = "secretsmanager:GetSecretValue"


@pytest.fixture(scope="module")
def services(need_service) -> None:  # type: ignore[no-untyped-def]
    from churnops.local import mariadb

    need_service(mariadb.available(), "MariaDB server binaries")
    need_service((REPO / "node_modules" / ".bin" / "cdk").is_file(), "the CDK CLI")


def _without_grant(template: dict[str, Any], handler: str, action: str) -> list[dict[str, Any]]:
    """Remove `action` from the policy statements of the role of the function running `handler`
    (found by the template's structure); returns the statements it was removed from."""
    resources = template["Resources"]
    (function,) = [
        resource
        for resource in resources.values()
        if resource["Type"] == "AWS::Lambda::Function"
        and (resource["Properties"].get("ImageConfig") or {}).get("Command") == [handler]
    ]
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    changed = []
    for resource in resources.values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        if {"Ref": role} not in resource["Properties"].get("Roles", []):
            continue
        statements = resource["Properties"]["PolicyDocument"]["Statement"]
        for statement in statements:
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            if action in actions:
                statement["Action"] = [a for a in actions if a != action]
                changed.append(statement)
        resource["Properties"]["PolicyDocument"]["Statement"] = [
            s for s in statements if s["Action"]
        ]
    return changed


def test_a_stack_missing_one_grant_fails_at_that_step_with_access_denied(
    services, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from churnops.local.synthesis import STACK_NAME, synthesize
    from churnops.local.twin import Twin

    # GIVEN the synthesized assembly with one grant removed: the snapshot step's secret read
    assembly = tmp_path / "cdk.out"
    shutil.copytree(synthesize(REPO), assembly)
    template_file = assembly / f"{STACK_NAME}.template.json"
    template = json.loads(template_file.read_text())
    assert _without_grant(template, SNAPSHOT_HANDLER, SECRET_READ), "the grant to remove is gone"
    template_file.write_text(json.dumps(template))
    twin = Twin(tmp_path / "state", cdk_out=assembly)
    twin.up()
    try:
        assert twin.require_ready()["iam_enforced"] is True
        # WHEN the retrain flow runs
        outcome = twin.retrain(timeout=300)
    finally:
        twin.down()
    # THEN it fails at the snapshot step, refused the action it was not granted
    assert outcome["execution"] == "FAILED", outcome
    failed = outcome["failed_step"]
    assert failed is not None and "snapshot" in failed["step"].lower(), failed
    assert f"not authorized to perform: {SECRET_READ}" in failed["cause"], failed
    assert "AccessDenied" in failed["cause"], failed
