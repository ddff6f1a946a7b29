"""Assets shared by constructs: the churnops package as Glue jobs need it, the Glue entry scripts,
and each Glue job's third-party Python dependencies as a zip of wheels."""

from __future__ import annotations

import email.parser
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import (
    AssetHashType,
    AssetStaging,
    BundlingOptions,
    BundlingOutput,
    DockerImage,
    IgnoreMode,
    ILocalBundling,
    Stack,
)
from aws_cdk import aws_s3 as s3
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


# ---- Glue jobs' Python dependencies: a zip of wheels -------------------------------------------
#
# The jobs run in isolated subnets (no route to PyPI), so `--additional-python-modules` cannot name
# packages for pip to fetch at job start. Glue 5.0 also accepts a "zip of wheels": an S3 object
# whose name ends in `.gluewheels.zip`, holding a `wheels/` folder with the wheels and a
# requirements.txt, installed with `--python-modules-installer-option --no-index` so pip uses the
# zip as its only index (AWS Glue developer guide, "Using Python libraries with AWS Glue",
# Appendix A). The zip is built at synth time by local bundling (`pip download`; no Docker) and
# published by `cdk deploy` like any file asset.
#
# Why `--no-deps` and an explicit list instead of letting pip resolve the dependencies:
# - the asset hash is derived from the list, so the list must fix the content exactly; a resolved
#   closure would pick up whatever transitive versions are newest on the day of the synth while
#   the hash (and so the S3 key, which cdk-assets does not upload again) stays the same;
# - a resolver downloads numpy, packaging, ... although Glue 5.0 already ships them; installing
#   those wheels in the job would replace the versions Glue's pandas and pyarrow were built with.
# A list can forget a dependency, so `check_glue_closure` reads every wheel's Requires-Dist and
# fails the synth, naming it, when a dependency is neither in the list nor shipped by Glue 5.0
# (or Glue's version does not satisfy it).

GLUE_REQUIREMENTS_DIR = REPO_ROOT / "containers" / "glue"
GLUE_WHEELS_SUFFIX = ".gluewheels"  # + the asset's ".zip": the suffix Glue recognises
GLUE_WHEELS_FOLDER = "wheels"  # the zip's one folder: requirements.txt and the .whl files
GLUE_INSTALLER_OPTION = "--no-index"  # pip installs from the zip only, never from an index
# Glue 5.0: CPython 3.11 on Amazon Linux 2023 (glibc 2.34), x86_64. pip accepts a wheel tagged
# for any of these platforms or an older manylinux (it expands each tag downwards).
GLUE_PYTHON_VERSION = "3.11"
GLUE_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
# Environment markers of that interpreter, for the dependencies declared in wheel metadata.
GLUE_MARKER_ENVIRONMENT = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.0",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.0",
    "python_version": "3.11",
    "sys_platform": "linux",
    "extra": "",
}
# What Glue 5.0 ships ("Python modules already provided in AWS Glue", AWS Glue developer guide):
# never bundled (a pin of one of them at another version would replace it, deliberately).
GLUE_PROVIDED = {
    "aiobotocore": "2.13.1",
    "aiohappyeyeballs": "2.3.5",
    "aiohttp": "3.10.1",
    "aioitertools": "0.11.0",
    "aiosignal": "1.3.1",
    "appdirs": "1.4.4",
    "attrs": "24.2.0",
    "boto3": "1.34.131",
    "botocore": "1.34.131",
    "certifi": "2024.7.4",
    "charset-normalizer": "3.3.2",
    "contourpy": "1.2.1",
    "cycler": "0.12.1",
    "fonttools": "4.53.1",
    "frozenlist": "1.4.1",
    "fsspec": "2024.6.1",
    "idna": "2.10",
    "jmespath": "0.10.0",
    "kaleido": "0.2.1",
    "kiwisolver": "1.4.5",
    "matplotlib": "3.9.0",
    "multidict": "6.0.5",
    "numpy": "1.26.4",
    "packaging": "24.1",
    "pandas": "2.2.2",
    "pillow": "10.4.0",
    "pip": "23.0.1",
    "plotly": "5.23.0",
    "pyarrow": "17.0.0",
    "pyparsing": "3.1.2",
    "python-dateutil": "2.9.0.post0",
    "pytz": "2024.1",
    "requests": "2.32.2",
    "s3fs": "2024.6.1",
    "s3transfer": "0.10.2",
    "seaborn": "0.13.2",
    "setuptools": "59.6.0",
    "six": "1.16.0",
    "tenacity": "9.0.0",
    "tzdata": "2024.1",
    "urllib3": "1.25.10",
    "virtualenv": "20.4.0",
    "wrapt": "1.16.0",
    "yarl": "1.9.4",
}
# Bump when the zip's layout or the pip arguments change: the asset hash changes with it.
_GLUE_WHEELS_LAYOUT = 1
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>[A-Za-z0-9.+!_-]+)$"
)
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # same bytes for the same wheels, whenever built
# Signs in pip's output that the index itself could not be reached (rather than a missing version).
_UNREACHABLE = (
    "Retrying (",
    "NewConnectionError",
    "Failed to establish a new connection",
    "ConnectTimeoutError",
    "ProxyError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
)


class GlueDependencyError(RuntimeError):
    """The Glue jobs' wheels cannot be built: unreachable index, missing wheel, incomplete list."""


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name (PyMySQL -> pymysql, scikit_learn -> scikit-learn)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def glue_requirements(script: str) -> list[str]:
    """The pinned requirements of one Glue job: `containers/glue/<script stem>.txt`, one
    `name==version` per line, `#` comments. The one place each job's list is written."""
    path = GLUE_REQUIREMENTS_DIR / f"{Path(script).stem}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no requirements file {path} for the Glue job {script}")
    lines = (raw.split("#", 1)[0].strip() for raw in path.read_text().splitlines())
    return [line for line in lines if line]


def glue_pins(requirements: Sequence[str]) -> dict[str, str]:
    """canonical name -> version, refusing anything but exact, unique pins of packages Glue 5.0
    does not already ship at that version."""
    if not requirements:
        raise ValueError("a Glue job's dependency list is empty: leave the zip of wheels out")
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = _PIN.match(requirement.strip())
        if match is None:
            raise ValueError(
                f"Glue requirement {requirement!r} is not an exact pin 'name==version': the asset "
                "hash is derived from the list, so every version must be fixed"
            )
        name = canonical_name(match["name"])
        if name in pins:
            raise ValueError(f"Glue requirement {name} is listed twice")
        if GLUE_PROVIDED.get(name) == match["version"]:
            raise ValueError(
                f"Glue 5.0 already ships {name}=={match['version']}: drop {requirement!r}"
            )
        pins[name] = match["version"]
    return pins


def glue_wheels_hash(requirements: Sequence[str]) -> str:
    """The asset hash: a function of the pins and the pip arguments only, so a synth with an
    unchanged list finds the bundle already staged and does not download again."""
    spec = {
        "layout": _GLUE_WHEELS_LAYOUT,
        "python": GLUE_PYTHON_VERSION,
        "platforms": list(GLUE_PLATFORMS),
        "requirements": sorted(f"{n}=={v}" for n, v in glue_pins(requirements).items()),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def download_glue_wheels(requirements: Sequence[str], destination: Path) -> list[Path]:
    """`pip download` exactly these pins (no dependencies) as CPython 3.11 manylinux x86_64
    wheels into `destination`; a clear GlueDependencyError when pip cannot."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--only-binary=:all:",
        "--no-deps",
        *(arg for platform in GLUE_PLATFORMS for arg in ("--platform", platform)),
        "--python-version",
        GLUE_PYTHON_VERSION,
        "--implementation",
        "cp",
        "--dest",
        str(destination),
        "--progress-bar",
        "off",
        "--disable-pip-version-check",
        "--retries",
        "2",
        "--timeout",
        "60",
        *requirements,
    ]
    listed = ", ".join(requirements)
    try:
        result = subprocess.run(  # noqa: S603 - this interpreter's pip, arguments we built
            command, capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired:
        raise GlueDependencyError(
            f"pip download of the Glue job wheels ({listed}) took over 15 minutes; "
            "check the connection to the package index"
        ) from None
    if result.returncode != 0:
        output = result.stderr + result.stdout
        errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR")]
        detail = errors[-1] if errors else (output.strip().splitlines() or ["no output"])[-1]
        network = [
            line.strip() for line in output.splitlines() if any(s in line for s in _UNREACHABLE)
        ]
        if network:
            raise GlueDependencyError(
                f"cannot reach the Python package index to download the Glue job wheels "
                f"({listed}): {network[-1][:300]}. The synth needs the index pip is configured "
                "with (PyPI, PIP_INDEX_URL or pip.conf)"
            )
        raise GlueDependencyError(
            f"pip could not download the Glue job wheels ({listed}) as CPython "
            f"{GLUE_PYTHON_VERSION} manylinux x86_64 binaries: {detail}"
        )
    return sorted(destination.glob("*.whl"))


def wheel_requires(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(names) != 1:
            raise GlueDependencyError(f"{wheel.name} has no single .dist-info/METADATA")
        metadata = email.parser.Parser().parsestr(archive.read(names[0]).decode("utf-8"))
    return list(metadata.get_all("Requires-Dist") or [])


def wheel_name_version(wheel: Path) -> tuple[str, str]:
    """(canonical name, version) from a wheel file name (name-version[-build]-py-abi-plat.whl)."""
    parts = wheel.name.removesuffix(".whl").split("-")
    if len(parts) not in (5, 6):
        raise GlueDependencyError(f"{wheel.name} is not a wheel file name")
    return canonical_name(parts[0]), parts[1]


def check_glue_closure(wheels: Sequence[Path], requirements: Sequence[str]) -> None:
    """Every pin has its wheel, and every dependency a wheel declares for Glue's interpreter is
    satisfied by another wheel of the set or by a module Glue 5.0 ships; else GlueDependencyError
    naming each gap."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import Version

    pins = glue_pins(requirements)
    present = dict(wheel_name_version(w) for w in wheels)
    missing = sorted(
        f"{n}=={v}"
        for n, v in pins.items()
        if n not in present or Version(present[n]) != Version(v)
    )
    if missing:
        raise GlueDependencyError(f"pip did not deliver wheels for {', '.join(missing)}")
    available = {**GLUE_PROVIDED, **present}
    gaps: list[str] = []
    for wheel in wheels:
        name, version = wheel_name_version(wheel)
        owner = f"{name}=={version}"
        for line in wheel_requires(wheel):
            try:
                needed = Requirement(line)
            except InvalidRequirement as err:
                raise GlueDependencyError(f"{owner}: unreadable Requires-Dist {line!r}") from err
            if needed.marker is not None and not needed.marker.evaluate(GLUE_MARKER_ENVIRONMENT):
                continue
            dependency = canonical_name(needed.name)
            found = available.get(dependency)
            if found is None:
                gaps.append(f"{owner} needs {needed}: not in the list, not shipped by Glue 5.0")
            elif not needed.specifier.contains(found, prereleases=True):
                source = "the list" if dependency in present else "Glue 5.0"
                gaps.append(f"{owner} needs {needed}, but {source} has {dependency}=={found}")
    if gaps:
        raise GlueDependencyError(
            "the Glue job's wheels are not a complete set: "
            + "; ".join(gaps)
            + ". Add or change exact pins (name==version) in the job's containers/glue/*.txt"
        )


def _zip_entry(archive: zipfile.ZipFile, name: str, data: bytes, compress: int) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
    info.compress_type = compress
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build_glue_wheels_zip(requirements: Sequence[str], destination: Path) -> Path:
    """Download, check and zip the wheels in the layout Glue expects:
    `wheels/requirements.txt` (the pins) and `wheels/<name>-<version>-<tags>.whl`."""
    glue_pins(requirements)  # refuses a bad list before any download
    with tempfile.TemporaryDirectory(prefix="churnops-gluewheels-") as tmp:
        wheels = download_glue_wheels(requirements, Path(tmp))
        check_glue_closure(wheels, requirements)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(destination, "w") as archive:
            pinned = "".join(f"{r.strip()}\n" for r in requirements).encode()
            _zip_entry(
                archive, f"{GLUE_WHEELS_FOLDER}/requirements.txt", pinned, zipfile.ZIP_DEFLATED
            )
            for wheel in wheels:  # already compressed: stored as is
                _zip_entry(
                    archive,
                    f"{GLUE_WHEELS_FOLDER}/{wheel.name}",
                    wheel.read_bytes(),
                    zipfile.ZIP_STORED,
                )
    return destination


@jsii.implements(ILocalBundling)
class _PipDownloadBundling:
    """CDK local bundling: builds the zip of wheels on this machine (there is no Docker
    fallback: it either succeeds or raises, never returns False)."""

    def __init__(self, requirements: Sequence[str]) -> None:
        self._requirements = tuple(requirements)

    def try_bundle(self, output_dir: str, *_options: Any, **_keywords: Any) -> bool:
        # jsii passes the BundlingOptions struct positionally; nothing in it is needed here.
        build_glue_wheels_zip(
            self._requirements, Path(output_dir) / f"glue-dependencies{GLUE_WHEELS_SUFFIX}.zip"
        )
        return True


class GlueDependencies(Construct):
    """A Glue job's zip of wheels in the CDK assets bucket, for `--additional-python-modules`.

    Not an `s3_assets.Asset`: an Asset's object key is `<hash>.zip`, and Glue only treats an
    object ending in `.gluewheels.zip` as a zip of wheels. So the bundle is staged with
    `AssetStaging` (local bundling, custom hash) and registered with the stack's synthesizer
    under the id `<hash>.gluewheels`, which makes the key `<hash>.gluewheels.zip`. It offers what
    the constructs use of an Asset (`bucket`, `s3_object_key`, `s3_object_url`: grant
    s3:GetObject on `bucket.arn_for_objects(s3_object_key)`), plus `job_arguments`.
    """

    def __init__(self, scope: Construct, id: str, *, requirements: Sequence[str]) -> None:
        super().__init__(scope, id)
        self.requirements = tuple(r.strip() for r in requirements)
        staging = AssetStaging(
            self,
            "Stage",
            source_path=str(GLUE_REQUIREMENTS_DIR),  # not read: the hash is custom
            asset_hash_type=AssetHashType.CUSTOM,
            asset_hash=glue_wheels_hash(self.requirements),
            bundling=BundlingOptions(
                # Required by the API, never run: the local bundling does the work or fails.
                image=DockerImage.from_registry("churnops/local-bundling-only"),
                local=_PipDownloadBundling(self.requirements),
                output_type=BundlingOutput.ARCHIVED,
            ),
        )
        stack = Stack.of(self)
        location = stack.synthesizer.add_file_asset(
            source_hash=f"{staging.asset_hash}{GLUE_WHEELS_SUFFIX}",
            file_name=staging.relative_staged_path(stack),
            packaging=staging.packaging,
            display_name=f"{self.node.path} (Glue zip of wheels)",
        )
        self.asset_hash = staging.asset_hash
        self.staged_path = Path(staging.absolute_staged_path)
        self.s3_bucket_name = location.bucket_name
        self.s3_object_key = location.object_key
        self.s3_object_url = location.s3_object_url
        self.bucket = s3.Bucket.from_bucket_name(self, "AssetBucket", location.bucket_name)

    @property
    def job_arguments(self) -> dict[str, str]:
        """The Glue DefaultArguments that install the zip, from it alone."""
        return {
            "--additional-python-modules": self.s3_object_url,
            "--python-modules-installer-option": GLUE_INSTALLER_OPTION,
        }


def glue_dependencies_asset(
    scope: Construct, id: str, requirements: Sequence[str]
) -> GlueDependencies:
    """The zip of wheels for a Glue job's pinned `requirements` (see `glue_requirements`)."""
    return GlueDependencies(scope, id, requirements=requirements)
