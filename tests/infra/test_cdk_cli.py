"""The CDK CLI synthesizes the app as a user's `cdk synth` would (cdk.json's app command, the
cdk-nag plugin on), and cfn-lint finds no error in any synthesized template."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.infra.template_helpers import REPO

CDK = REPO / "node_modules" / ".bin" / "cdk"

pytestmark = [pytest.mark.cdk, pytest.mark.slow]


@pytest.fixture(scope="module")
def cloud_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(CDK.is_file() and shutil.which("node") is not None, "the CDK CLI (node_modules/.bin/cdk)")
    out = tmp_path_factory.mktemp("cdk-cli-out")
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "CDK_DISABLE_VERSION_CHECK": "1",
    }
    result = subprocess.run(
        [str(CDK), "synth", "--quiet", "--no-notices", "--output", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_cli_synthesizes_the_churnops_stack(cloud_assembly: Path) -> None:
    templates = sorted(p.name for p in cloud_assembly.glob("*.template.json"))
    assert templates == ["ChurnOps.template.json"]


def test_nag_ran_during_the_cli_synth_and_left_nothing_open(cloud_assembly: Path) -> None:
    report = json.loads((cloud_assembly / "validation-report.json").read_text())
    plugins = {p["pluginName"]: p for p in report["pluginReports"]}
    nag = plugins["AwsSolutions"]
    assert nag["conclusion"] == "success"
    assert nag.get("violations", []) == []
    for acknowledged in nag.get("suppressedViolations", []):
        assert len(acknowledged["reason"].split()) >= 6, acknowledged["acknowledgedId"]


def test_cfn_lint_finds_no_error_in_any_template(cloud_assembly: Path) -> None:
    need(shutil.which("cfn-lint") is not None or _venv_cfn_lint().is_file(), "cfn-lint")
    templates = sorted(str(p) for p in cloud_assembly.glob("*.template.json"))
    assert templates
    result = subprocess.run(
        [str(_cfn_lint()), "--format", "json", *templates],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    errors = [
        f"{f['Rule']['Id']} {f['Message']} ({f['Location']['Path']})"
        for f in findings
        if f["Level"] == "Error"
    ]
    assert errors == []
    # Warnings are allowed only where they are understood: W3005 is CDK adding a DependsOn that a
    # GetAtt already implies (a role and its default policy before the function).
    assert {f["Rule"]["Id"] for f in findings if f["Level"] == "Warning"} <= {"W3005"}


def _venv_cfn_lint() -> Path:
    return REPO / ".venv" / "bin" / "cfn-lint"


def _cfn_lint() -> Path | str:
    return _venv_cfn_lint() if _venv_cfn_lint().is_file() else str(shutil.which("cfn-lint"))
