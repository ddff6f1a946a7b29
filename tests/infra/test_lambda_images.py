"""The Lambda container images build for the platform they run on.

`docker build` cannot run here, but what stops it can be checked: every requirement of an image
must have a wheel for the image's Python, glibc and CPU (the Dockerfiles install wheels only),
and the image must be built for the CPU its functions run on. The facts (base image -> Amazon
Linux release -> glibc) and their sources are in `stacks/images.py`.

Resolving asks the package index (pypi.org): where it cannot be reached these tests skip, and
fail under CHURNOPS_REQUIRE_SERVICES=1 (CI reaches it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from stacks.images import (
    DOCKER_PLATFORM_NAME,
    IMAGES,
    REPO_ROOT,
)
from tests.conftest import need

INDEX = "https://pypi.org/simple"


@cache
def index_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{INDEX}/pip/", timeout=15) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class Resolution:
    ok: bool
    wheels: dict[str, str]  # normalised project name -> wheel file name
    missing: str | None  # the requirement pip found no wheel for
    output: str


def resolve(requirements: Path, *, python: str, platforms: list[str], work: Path) -> Resolution:
    """What `pip install --only-binary=:all:` would install from `requirements` on a machine of
    that Python and those platform tags: pip's own resolver, run against the index with this
    machine's pip configuration ignored (`--isolated`), downloading metadata only."""
    need(index_reachable(), f"the package index ({INDEX})")
    report = work / "report.json"
    command = [
        sys.executable,
        "-m",
        "pip",
        "--isolated",
        "install",
        "--dry-run",
        "--quiet",
        "--ignore-installed",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        *(arg for tag in platforms for arg in ("--platform", tag)),
        "--target",
        str(work / "target"),
        "--index-url",
        INDEX,
        "--report",
        str(report),
        "-r",
        str(requirements),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        missing = re.search(r"satisfies the requirement (\S+)", output)
        return Resolution(False, {}, missing.group(1) if missing else None, output)
    installed = json.loads(report.read_text())["install"]
    wheels = {
        re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["download_info"]["url"]
        .rsplit("/", 1)[-1]
        .split("#")[0]
        for item in installed
    }
    return Resolution(True, wheels, None, output)


def pinned(requirements: Path) -> dict[str, str]:
    found = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_every_requirement_has_a_wheel_for_the_image_platform(name: str, tmp_path: Path) -> None:
    # GIVEN the image's base (Python minor and glibc read from its Dockerfile's FROM line)
    image = IMAGES[name]
    # WHEN pip resolves its requirements for exactly that platform, wheels only
    result = resolve(
        REPO_ROOT / image.requirements,
        python=image.python_version,
        platforms=image.pip_platforms(),
        work=tmp_path,
    )
    # THEN every pin resolves, so `docker build` gets past its pip step
    assert result.ok, (
        f"the {name} image ({image.base_image}, Python {image.python_version}, glibc "
        f"{'.'.join(map(str, image.glibc))}) cannot install {result.missing or '?'}: no wheel "
        f"for that platform\n{result.output[-2000:]}"
    )
    for project in pinned(REPO_ROOT / image.requirements):
        assert project in result.wheels, f"{project} was not resolved for the {name} image"
        wheel = result.wheels[project]
        assert wheel.endswith("-any.whl") or "x86_64" in wheel, f"{wheel} is not for x86_64"


def test_the_check_refuses_what_amazon_linux_2_cannot_install(tmp_path: Path) -> None:
    """The resolution really depends on the platform: the serving pins on the Python 3.11 base
    image (Amazon Linux 2, glibc 2.26), the image this project shipped before, have no
    onnxruntime wheel, and the check says so by name."""
    serving = REPO_ROOT / IMAGES["serving"].requirements
    result = resolve(serving, python="3.11", platforms=old_platforms(), work=tmp_path)
    assert not result.ok
    assert result.missing is not None and result.missing.startswith("onnxruntime")


def old_platforms() -> list[str]:
    """The manylinux tags of glibc 2.26 (Amazon Linux 2)."""
    return [f"manylinux_2_{minor}_x86_64" for minor in range(26, 4, -1)] + [
        "manylinux2014_x86_64",
        "manylinux2010_x86_64",
        "manylinux1_x86_64",
    ]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_image_is_an_amazon_linux_2023_lambda_base_built_for_x86_64(name: str) -> None:
    image = IMAGES[name]
    assert image.base_image.startswith("public.ecr.aws/lambda/python:")
    assert image.glibc >= (2, 34), f"{image.base_image} is not an Amazon Linux 2023 image"
    # A plain `docker build` of the Dockerfile, outside CDK, builds for the same CPU.
    assert image.from_platform == DOCKER_PLATFORM_NAME


def test_the_platform_tags_cover_exactly_what_the_glibc_runs() -> None:
    tags = IMAGES["serving"].pip_platforms()
    assert "manylinux_2_34_x86_64" in tags and "manylinux_2_28_x86_64" in tags
    assert "manylinux2014_x86_64" in tags
    assert not any(tag.startswith("manylinux_2_35") for tag in tags)
    assert old_platforms()[0] == "manylinux_2_26_x86_64"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_dockerfile_copies_files_that_exist(name: str) -> None:
    dockerfile = (REPO_ROOT / IMAGES[name].dockerfile).read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), f"{name} copies {source}, which is missing"


def test_every_image_asset_and_function_is_x86_64(churnops) -> None:  # type: ignore[no-untyped-def]
    """The synthesized assets carry the build platform (an Apple-silicon laptop would otherwise
    build arm64) and every image function runs on x86_64."""
    assembly = churnops.app.synth()
    docker_sources = []
    for manifest in Path(assembly.directory).glob("*.assets.json"):
        for image in json.loads(manifest.read_text()).get("dockerImages", {}).values():
            docker_sources.append(image["source"])
    built = {source["dockerFile"] for source in docker_sources}
    assert built == {image.dockerfile for image in IMAGES.values()}
    for source in docker_sources:
        assert source.get("platform") == DOCKER_PLATFORM_NAME, source
    functions = churnops.template.find_resources("AWS::Lambda::Function")
    images = [f for f in functions.values() if f["Properties"].get("PackageType") == "Image"]
    assert images
    for function in images:
        assert function["Properties"].get("Architectures", ["x86_64"]) == ["x86_64"]
