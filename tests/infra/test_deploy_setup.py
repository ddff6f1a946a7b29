"""`./dev deploy-setup` gives a laptop what `cdk deploy` needs, and nothing the tests need.

The set-up runs as a user would on macOS or a non-root Linux: no Debian package, no Java,
MariaDB or Spark; a virtualenv of requirements-deploy.txt and the pinned CDK CLI. The proof is
the CLI synthesizing the whole app (assets and cdk-nag included) from that virtualenv alone.
The virtualenv goes where CHURNOPS_VENV says, so the repository's own .venv is left alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.infra.template_helpers import REPO

CDK = REPO / "node_modules" / ".bin" / "cdk"

pytestmark = [pytest.mark.cdk, pytest.mark.slow]


def test_a_laptop_set_up_synthesizes_the_app_without_test_services(tmp_path: Path) -> None:
    need(shutil.which("npm") is not None, "npm (for the CDK CLI)")
    venv = tmp_path / "deploy-venv"
    env = {
        **os.environ,
        "CHURNOPS_VENV": str(venv),
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "18,20",
        "CDK_DISABLE_VERSION_CHECK": "1",
    }
    # GIVEN the one documented set-up command
    setup = subprocess.run(
        [str(REPO / "dev"), "deploy-setup"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert setup.returncode == 0, setup.stderr[-3000:]
    assert "installing Debian packages" not in setup.stderr
    # THEN the virtualenv holds no test, twin or Spark package
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    for absent in ("pyspark", "moto", "pytest", "scikit-learn", "onnxruntime"):
        assert f"{absent}==" not in listed, f"{absent} is installed for a deploy"
    # AND the CDK CLI synthesizes the app with it (cdk.json's app names .venv, so --app)
    out = tmp_path / "cdk.out"
    synth = subprocess.run(
        [
            str(CDK),
            "synth",
            "--quiet",
            "--no-notices",
            "--output",
            str(out),
            "--app",
            f"{venv / 'bin' / 'python'} app.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert synth.returncode == 0, synth.stderr[-4000:]
    assert (out / "ChurnOps.template.json").is_file()
