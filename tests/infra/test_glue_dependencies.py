"""The Glue jobs' Python dependencies (stacks/assets.py: glue_dependencies_asset): a zip of wheels
built at synth time by local bundling (`pip download`), published as a CDK file asset and handed
to Glue 5.0 as `--additional-python-modules s3://.../<hash>.gluewheels.zip` with
`--python-modules-installer-option --no-index`, because the jobs' subnets have no route to PyPI.

These tests download real wheels through the pip index this machine is configured with (fast: pip
caches them); the synthesized app comes from the session fixture `churnops` (tests/infra/conftest).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Match
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from stacks.assets import (
    GLUE_INSTALLER_OPTION,
    GLUE_PROVIDED,
    GlueDependencies,
    GlueDependencyError,
    build_glue_wheels_zip,
    check_glue_closure,
    glue_dependencies_asset,
    glue_pins,
    glue_requirements,
    glue_wheels_hash,
)

REPO = Path(__file__).resolve().parents[2]
# construct path of each job's zip of wheels -> the job's script (and requirements file)
JOBS = {
    "Ingestion/IngestDependencies": "ingest_customers.py",
    "Retrain/BatchScoreDependencies": "batch_score.py",
}
WHEELS_ZIP_URL = re.compile(
    r"^s3://cdk-[a-z0-9]+-assets-\$\{AWS::AccountId\}-\$\{AWS::Region\}/[0-9a-f]{64}\.gluewheels\.zip$"
)
# What Glue 5.0's CPython 3.11 on x86_64 (glibc 2.34) accepts, computed independently of the code
# under test: every manylinux tag up to glibc 2.34 and the legacy aliases.
GLUE_PLATFORM_TAGS = [f"manylinux_2_{minor}_x86_64" for minor in range(34, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
GLUE_TAGS: set[Tag] = set(cpython_tags((3, 11), platforms=GLUE_PLATFORM_TAGS)) | set(
    compatible_tags((3, 11), "cp311", platforms=GLUE_PLATFORM_TAGS)
)


def _dependencies(churnops: Any) -> dict[str, GlueDependencies]:
    """construct path (below the stack) -> the app's GlueDependencies constructs."""
    found = {}
    for construct in churnops.stack.node.find_all():
        if isinstance(construct, GlueDependencies):
            found[construct.node.path.split("/", 1)[1]] = construct
    return found


def _jobs(churnops: Any) -> dict[str, dict[str, Any]]:
    return churnops.template.find_resources("AWS::Glue::Job")


def _wheel_names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return [n.split("/", 1)[1] for n in archive.namelist() if n.endswith(".whl")]


def _requirements_txt(lines: list[str]) -> dict[str, str]:
    pins = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name.split("[", 1)[0])] = version.strip()
    return pins


# ---- the requirement lists ---------------------------------------------------------------------
@pytest.mark.parametrize("script", sorted(JOBS.values()))
def test_each_job_lists_exact_pins_at_the_versions_the_tests_ran(script: str) -> None:
    # GIVEN a job's list (containers/glue/<job>.txt) and the repository's requirements.txt
    pins = glue_pins(glue_requirements(script))
    tested = _requirements_txt((REPO / "requirements.txt").read_text().splitlines())
    # THEN a package both pin has the same version in both
    drift = {n: (v, tested[n]) for n, v in pins.items() if n in tested and tested[n] != v}
    assert not drift, f"{script}: Glue pins differ from requirements.txt: {drift}"
    assert not set(pins) & set(GLUE_PROVIDED), "a Glue 5.0 module is bundled again"


def test_a_list_that_does_not_fix_the_content_is_refused() -> None:
    with pytest.raises(ValueError, match="not an exact pin"):
        glue_pins(["onnxruntime>=1.20"])
    with pytest.raises(ValueError, match="not an exact pin"):
        glue_pins(["onnxruntime"])
    with pytest.raises(ValueError, match="listed twice"):
        glue_pins(["PyMySQL==1.2.4", "pymysql==1.2.4"])
    with pytest.raises(ValueError, match=r"already ships numpy==1\.26\.4"):
        glue_pins(["numpy==1.26.4"])
    with pytest.raises(ValueError, match="empty"):
        glue_pins([])


def test_asset_hash_follows_the_pins_not_their_order_or_spelling() -> None:
    base = glue_wheels_hash(["onnxruntime==1.32.0", "PyMySQL==1.2.4"])
    assert glue_wheels_hash(["pymysql==1.2.4", "onnxruntime==1.32.0"]) == base
    assert glue_wheels_hash(["onnxruntime==1.32.0", "PyMySQL==1.2.3"]) != base
    assert re.fullmatch(r"[0-9a-f]{64}", base)


# ---- the synthesized jobs ----------------------------------------------------------------------
def test_both_glue_jobs_install_a_zip_of_wheels_from_the_asset_bucket_without_an_index(
    churnops: Any,
) -> None:
    jobs = _jobs(churnops)
    assert len(jobs) == 2, sorted(jobs)
    # Both jobs: an S3 object in the CDK assets bucket named <sha256>.gluewheels.zip, which pip
    # uses as its only index, so nothing is fetched from PyPI at job start.
    churnops.template.resource_properties_count_is(
        "AWS::Glue::Job",
        Match.object_like(
            {
                "GlueVersion": "5.0",
                "DefaultArguments": Match.object_like(
                    {
                        "--additional-python-modules": {
                            "Fn::Sub": Match.string_like_regexp(WHEELS_ZIP_URL.pattern)
                        },
                        "--python-modules-installer-option": GLUE_INSTALLER_OPTION,
                    }
                ),
            }
        ),
        2,
    )
    for job in jobs.values():  # and no argument names a package for pip to find elsewhere
        arguments = job["Properties"]["DefaultArguments"]
        assert not any("==" in json.dumps(v) for v in arguments.values()), arguments


def test_each_job_gets_its_own_zip_and_its_role_may_read_exactly_that_object(churnops: Any) -> None:
    dependencies = _dependencies(churnops)
    assert set(dependencies) == set(JOBS)
    resolve = churnops.stack.resolve
    urls = {path: resolve(d.s3_object_url) for path, d in dependencies.items()}
    jobs = _jobs(churnops)
    policies = json.dumps(churnops.template.find_resources("AWS::IAM::Policy"))
    for path, url in urls.items():
        users = [
            job
            for job in jobs.values()
            if job["Properties"]["DefaultArguments"]["--additional-python-modules"] == url
        ]
        assert len(users) == 1, f"{path}: {url} is used by {len(users)} jobs"
        key = dependencies[path].s3_object_key
        assert key.endswith(".gluewheels.zip")
        assert f"/{key}" in policies, f"no role may read {key}"
    assert len({json.dumps(u) for u in urls.values()}) == len(urls)


def test_the_asset_manifest_publishes_the_staged_zip_under_the_gluewheels_key(
    churnops: Any,
) -> None:
    outdir = Path(churnops.app.outdir)
    manifest = json.loads((outdir / f"{churnops.stack.artifact_id}.assets.json").read_text())
    for dependency in _dependencies(churnops).values():
        entry = manifest["files"][f"{dependency.asset_hash}.gluewheels"]
        assert entry["source"] == {"path": dependency.staged_path.name, "packaging": "file"}
        assert {d["objectKey"] for d in entry["destinations"].values()} == {
            dependency.s3_object_key
        }
        assert (outdir / entry["source"]["path"]).stat().st_size > 0


# ---- what is in the zips -----------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(JOBS))
def test_zip_has_glues_layout_and_cp311_manylinux_x86_64_wheels_only(
    churnops: Any, path: str
) -> None:
    dependency = _dependencies(churnops)[path]
    with zipfile.ZipFile(dependency.staged_path) as archive:
        names = archive.namelist()
        listed = archive.read("wheels/requirements.txt").decode().split()
    # Glue's layout: one wheels/ folder with the requirements file and the wheels
    assert all(n.startswith("wheels/") and n.count("/") == 1 for n in names), names
    assert listed == list(glue_requirements(JOBS[path]))
    wheels = _wheel_names(dependency.staged_path)
    assert len(wheels) == len(listed)
    for wheel in wheels:
        name, version, _build, tags = parse_wheel_filename(wheel)
        assert tags & GLUE_TAGS, f"{wheel} does not install on CPython 3.11 manylinux x86_64"
        assert f"{name}=={version}" in {
            f"{canonicalize_name(n)}=={v}" for n, v in (r.split("==") for r in listed)
        }


def test_ingest_zip_holds_pymysql(churnops: Any) -> None:
    wheels = _wheel_names(_dependencies(churnops)["Ingestion/IngestDependencies"].staged_path)
    assert [parse_wheel_filename(w)[0] for w in wheels] == ["pymysql"]


def test_batch_score_zip_holds_onnxruntime_its_dependencies_and_pymysql_but_nothing_glue_ships(
    churnops: Any,
) -> None:
    wheels = _wheel_names(_dependencies(churnops)["Retrain/BatchScoreDependencies"].staged_path)
    names = {parse_wheel_filename(w)[0] for w in wheels}
    onnxruntime = next(w for w in wheels if w.startswith("onnxruntime-1.32.0-cp311-cp311-"))
    assert "manylinux" in onnxruntime and onnxruntime.endswith("_x86_64.whl")
    # onnxruntime needs flatbuffers, numpy, packaging and protobuf: Glue 5.0 has numpy, packaging
    assert {"onnxruntime", "flatbuffers", "protobuf", "pymysql"} <= names
    assert not names & {canonicalize_name(n) for n in GLUE_PROVIDED}, names & set(GLUE_PROVIDED)
    assert not names & {"numpy", "pandas", "pyarrow", "boto3", "botocore", "packaging"}


@pytest.mark.parametrize("path", sorted(JOBS))
def test_every_dependency_of_every_wheel_is_in_the_zip_or_in_glue(
    churnops: Any, path: str, tmp_path: Path
) -> None:
    dependency = _dependencies(churnops)[path]
    with zipfile.ZipFile(dependency.staged_path) as archive:
        archive.extractall(tmp_path)
    check_glue_closure(sorted((tmp_path / "wheels").glob("*.whl")), dependency.requirements)


# ---- the checks that stop a synth --------------------------------------------------------------
def test_a_list_missing_a_dependency_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(GlueDependencyError) as failure:
        build_glue_wheels_zip(["onnxruntime==1.32.0"], tmp_path / "x.gluewheels.zip")
    message = str(failure.value)
    assert "flatbuffers" in message and "protobuf" in message
    assert "numpy" not in message  # Glue 5.0 ships a numpy onnxruntime accepts
    assert not (tmp_path / "x.gluewheels.zip").exists()


def test_a_dependency_glue_ships_too_old_fails_naming_both_versions(tmp_path: Path) -> None:
    # s3transfer 0.14 needs botocore>=1.37.4; Glue 5.0 ships botocore 1.34.131
    with pytest.raises(GlueDependencyError, match=r"botocore.*Glue 5\.0 has botocore==1\.34\.131"):
        build_glue_wheels_zip(["s3transfer==0.14.0"], tmp_path / "x.gluewheels.zip")


def test_a_version_that_does_not_exist_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(GlueDependencyError, match=r"PyMySQL==0\.0\.999"):
        build_glue_wheels_zip(["PyMySQL==0.0.999"], tmp_path / "x.gluewheels.zip")


def test_synth_fails_clearly_when_pip_cannot_reach_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN pip pointed at an index nobody listens on, with no other source of wheels
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    app = App(outdir=str(tmp_path / "cdk.out"))
    stack = Stack(app, "Unreachable")
    # WHEN a construct needs its zip of wheels THEN the synth stops, saying why
    with pytest.raises(RuntimeError, match="cannot reach the Python package index") as failure:
        glue_dependencies_asset(stack, "Deps", ["PyMySQL==1.2.4"])
    assert "PyMySQL==1.2.4" in str(failure.value)


def test_a_second_synth_reuses_the_staged_zip_instead_of_downloading_again(tmp_path: Path) -> None:
    # Two separate processes (no in-memory cache), the same cdk.out: one download only.
    script = textwrap.dedent(
        """
        import sys
        from aws_cdk import App, Stack
        from stacks.assets import glue_dependencies_asset
        app = App(outdir=sys.argv[1])
        deps = glue_dependencies_asset(Stack(app, "Reuse"), "Deps", ["PyMySQL==1.2.4"])
        print("KEY", deps.s3_object_key)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "cdk.out")],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=300,
            check=True,
        )
        for _ in range(2)
    ]
    keys = [re.search(r"^KEY (\S+)$", r.stdout, re.MULTILINE)[1] for r in runs]
    assert keys[0] == keys[1] and keys[0].endswith(".gluewheels.zip")
    assert "Bundling asset Reuse/Deps" in runs[0].stderr
    assert "Bundling asset" not in runs[1].stderr
