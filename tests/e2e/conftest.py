"""What every end-to-end twin test needs on the machine (failing, not skipping, in CI)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def services(need_service) -> None:  # type: ignore[no-untyped-def]
    from churnops.local import mariadb

    need_service(shutil.which("java") is not None, "Java (for local Spark)")
    need_service(mariadb.available(), "MariaDB server binaries")
    need_service((REPO / "node_modules" / ".bin" / "cdk").is_file(), "the CDK CLI")
