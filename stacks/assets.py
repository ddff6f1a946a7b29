"""Assets shared by constructs: the churnops package as Glue jobs need it."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import IgnoreMode
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

REPO_ROOT = Path(__file__).resolve().parent.parent


def churnops_package_asset(scope: Construct, id: str = "ChurnOpsPackage") -> s3_assets.Asset:
    """A zip with `churnops/` at its root, for Glue's `--extra-py-files`.

    Glue adds the zip to sys.path, so the package folder must be the zip's top level; an asset of
    the `churnops/` folder itself would put the modules at the root and `import churnops` would
    fail. Everything but the package is excluded.
    """
    return s3_assets.Asset(
        scope,
        id,
        path=str(REPO_ROOT),
        ignore_mode=IgnoreMode.GLOB,
        exclude=["*", "!churnops", "!churnops/**", "**/__pycache__", "**/*.pyc"],
    )


def glue_script_asset(scope: Construct, id: str, script: str) -> s3_assets.Asset:
    """A Glue entry script from `glue_jobs/`, uploaded as is (Glue needs a .py object)."""
    path = REPO_ROOT / "glue_jobs" / script
    if not path.is_file():
        raise FileNotFoundError(f"no Glue script {path}")
    return s3_assets.Asset(scope, id, path=str(path))
