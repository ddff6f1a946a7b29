"""Shared fixtures. Services (Java/Spark, MariaDB, the CDK CLI) are skipped with a visible reason
on a laptop that lacks them, and fail the run when CHURNOPS_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVICES_REQUIRED = os.environ.get("CHURNOPS_REQUIRE_SERVICES") == "1"


def need(condition: bool, what: str) -> None:
    """Skip when `what` is missing, or fail when CHURNOPS_REQUIRE_SERVICES=1 says it must exist."""
    if condition:
        return
    if SERVICES_REQUIRED:
        pytest.fail(f"{what} is missing and CHURNOPS_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{what} is missing (set CHURNOPS_REQUIRE_SERVICES=1 to make this a failure)")


@pytest.fixture(scope="session")
def need_service():  # type: ignore[no-untyped-def]
    """`need` as a fixture: a tier's own conftest.py shadows `from conftest import need`."""
    return need


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def telco_csv() -> Path:
    path = os.environ.get("CHURNOPS_TELCO_CSV")
    # .ci/run always sets it: in CI a missing setting fails instead of skipping.
    need(bool(path), "the real Telco data (set CHURNOPS_TELCO_CSV)")
    assert path is not None and Path(path).is_file(), f"CHURNOPS_TELCO_CSV={path} does not exist"
    return Path(path)


@pytest.fixture(scope="session")
def insurance_csv() -> Path:
    path = os.environ.get("CHURNOPS_INSURANCE_CSV")
    if not path:
        default = REPO.parent / "shared" / "data" / "insurance" / "insurance_data.csv"
        need(default.is_file(), "the insurance data (set CHURNOPS_INSURANCE_CSV)")
        path = str(default)
    return Path(path)


@pytest.fixture(scope="session")
def aws_env() -> Iterator[dict[str, str]]:
    """A moto server on loopback that every boto3 client reaches through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    from churnops.aws import reset_clients

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        reset_clients()
        yield env
        reset_clients()
    server.stop()


@pytest.fixture(scope="session")
def moto_ext(aws_env):  # type: ignore[no-untyped-def]
    """moto with the twin's extension layer: Step Functions executes definitions, Lambda tasks run
    our handlers, Glue runs `glue_jobs/` scripts on local Spark, EventBridge delivers to state
    machines and Lambda. Create state machines AFTER requesting this fixture (moto keeps executable
    state machines in a separate backend). Yields the `TaskRunner`."""
    from churnops.local import moto_ext as extension

    runner = extension.install(extension.TaskRunner())
    yield runner
    extension.uninstall()


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One private MariaDB server for the session (churnops.local.mariadb.PrivateMariaDB)."""
    from churnops.local import mariadb as private_mariadb

    need(private_mariadb.available(), "MariaDB server binaries (/usr/sbin/mariadbd)")
    server = private_mariadb.PrivateMariaDB(tmp_path_factory.mktemp("mariadb") / "data")
    server.start()
    yield server
    server.stop()


TWO_NODE = "two-node"


@pytest.fixture(scope="session", autouse=True)
def spark_cluster() -> Iterator[Any]:
    """With CHURNOPS_SPARK_MASTER=two-node, every Spark session of this test run (the tests',
    the twin's Glue runs) uses a two-node standalone cluster whose executor has a /tmp of its own
    (churnops.local.spark_cluster), as on Glue with two workers; stopped by its own process ids
    at the end. Otherwise nothing starts and Spark runs in local[*]."""
    from churnops.spark import MASTER_ENV

    if os.environ.get(MASTER_ENV) != TWO_NODE:
        yield None
        return
    from churnops.local.spark_cluster import TwoNodeSparkCluster, missing_requirements

    problem = missing_requirements()
    need(problem is None, f"for the two-node Spark cluster, {problem}")
    cluster = TwoNodeSparkCluster().start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MASTER_ENV, cluster.master_url)
        try:
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture(scope="session")
def spark(aws_env):  # type: ignore[no-untyped-def]
    # After aws_env: the session hands its AWS endpoint and credentials to the executors.
    need(shutil.which("java") is not None, "Java (for local Spark)")
    try:
        from churnops.spark import local_spark_session
    except ImportError as err:  # pragma: no cover - pyspark missing
        need(False, f"PySpark ({err})")
    session = local_spark_session("churnops-tests")
    yield session
    session.stop()


def find_python(version: str) -> str | None:
    """An interpreter of Python `version` ("3.12"): on PATH, or one pyenv installed (pyenv's
    shim refuses a version that is not the selected one, so its versions are looked at too)."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}")]
    candidates += [
        str(path)
        for path in sorted(
            pyenv_root.glob(f"versions/{version}.*/bin/python{version}"), reverse=True
        )
    ]
    for candidate in candidates:
        if candidate is None:
            continue
        ran = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if ran.returncode == 0 and ran.stdout.strip() == version:
            return candidate
    return None


@pytest.fixture(scope="session")
def image_python() -> Callable[[str], Path]:
    """`image_python(name)`: the interpreter of a virtualenv with the Python of that Lambda image
    (`stacks.images.IMAGES`) and exactly its requirements, nothing else. Kept in `.venv-images/`
    by a hash of the requirements, so a second run starts at once."""
    from stacks.images import IMAGES

    def build(name: str) -> Path:
        image = IMAGES[name]
        requirements = REPO / image.requirements
        python = find_python(image.python_version)
        need(python is not None, f"Python {image.python_version} (the {name} image's Python)")
        assert python is not None
        digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
        venv = REPO / ".venv-images" / f"{name}-py{image.python_version}-{digest}"
        interpreter = venv / "bin" / "python"
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([python, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [
                    str(interpreter),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--only-binary=:all:",
                    "-r",
                    str(requirements),
                ],
                check=True,
                timeout=900,
            )
            (venv / ".complete").write_text(digest)
        return interpreter

    return build
