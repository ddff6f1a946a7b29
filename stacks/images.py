"""The container images of the Lambda functions, and the platform each one really runs on.

One definition serves the stacks (the image asset and the function's architecture), `./dev setup`
(the Python it installs the images' requirements under, for the portability test) and the tests
that resolve each image's requirements for its platform. A wheel that does not exist for the
image's Python, glibc and CPU stops `docker build`, and with it the first `cdk deploy`, so
`tests/infra/test_lambda_images.py` asks the package index before a user's deploy does.

Facts this rests on (each checked by that test module):
- The AWS Lambda base images `public.ecr.aws/lambda/python:3.8` to `3.11` are Amazon Linux 2,
  `3.12` and later Amazon Linux 2023 (AWS Lambda Developer Guide, "Building Lambda functions
  with Python", the runtime table). python3.11 was deprecated on 2026-06-30 there; python3.12
  is supported until 2028-10-31.
- Amazon Linux 2 ships glibc 2.26, Amazon Linux 2023 glibc 2.34 (Amazon Linux 2023 User Guide,
  "Core toolchain packages glibc, gcc, binutils"), so an AL2023 image takes manylinux wheels up
  to manylinux_2_34.
- Python 3.12 is the newest Lambda base image the pinned numpy 1.26.4 (the line PySpark 3.5 and
  Glue 5.0 are built against) has wheels for: 3.13 would fail to build on numpy.

The images run Python 3.12 while Glue 5.0 and the tests run 3.11: models cross between them
(trained in the training image, scored by Glue and by the tests), which
`tests/integration/test_model_portability.py` checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE_REPOSITORY = "public.ecr.aws/lambda/python"
# glibc of each Lambda Python base image, by its tag (see the module docstring for sources).
BASE_IMAGE_GLIBC: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("3.8", "3.9", "3.10", "3.11"), (2, 26)),  # Amazon Linux 2
    **dict.fromkeys(("3.12", "3.13", "3.14"), (2, 34)),  # Amazon Linux 2023
}
# The CPU of every function: x86_64. Images are built for it whatever machine runs `cdk deploy`
# (from an Apple-silicon laptop, an unpinned build would ship arm64 into an x86_64 function).
DOCKER_PLATFORM = ecr_assets.Platform.LINUX_AMD64
DOCKER_PLATFORM_NAME = "linux/amd64"
LAMBDA_ARCHITECTURE = lambda_.Architecture.X86_64
MACHINE = "x86_64"
_FROM = re.compile(r"^FROM\s+(?:--platform=(\S+)\s+)?(\S+?):(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class LambdaImage:
    """A container image that Lambda functions run: its Dockerfile (built from the repository
    root), the requirements it installs, and what the build context leaves out."""

    dockerfile: str
    requirements: str
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def _from(self) -> tuple[str | None, str, str]:
        text = (REPO_ROOT / self.dockerfile).read_text()
        match = _FROM.search(text)
        if match is None:
            raise ValueError(f"{self.dockerfile} has no FROM line")
        return match.group(1), match.group(2), match.group(3)

    @property
    def base_image(self) -> str:
        _, repository, tag = self._from()
        return f"{repository}:{tag}"

    @property
    def from_platform(self) -> str | None:
        """The `--platform=` of the FROM line (what a plain `docker build` builds for)."""
        return self._from()[0]

    @property
    def python_version(self) -> str:
        """The Python minor of the base image: its tag (`3.12`)."""
        _, repository, tag = self._from()
        if repository != BASE_IMAGE_REPOSITORY or tag not in BASE_IMAGE_GLIBC:
            raise ValueError(
                f"{self.dockerfile}: {repository}:{tag} is not a Lambda Python base image "
                f"this module knows the platform of ({', '.join(BASE_IMAGE_GLIBC)})"
            )
        return tag

    @property
    def glibc(self) -> tuple[int, int]:
        return BASE_IMAGE_GLIBC[self.python_version]

    def pip_platforms(self) -> list[str]:
        """Every manylinux tag a wheel may carry and still run on this image's glibc and CPU,
        as pip's `--platform` takes them (the legacy aliases included)."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{MACHINE}" for m in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{MACHINE}" for m, name in legacy.items() if m <= minor]
        return tags

    def code(self, *, cmd: list[str] | None = None) -> lambda_.DockerImageCode:
        return lambda_.DockerImageCode.from_image_asset(
            str(REPO_ROOT),
            file=self.dockerfile,
            platform=DOCKER_PLATFORM,
            cmd=cmd,
            exclude=list(self.exclude) or None,
        )


SERVING_IMAGE = LambdaImage(
    dockerfile="containers/serving/Dockerfile",
    requirements="containers/serving/requirements.txt",
)
# Only what the image needs goes into the training image's build context (the repository root
# holds .venv, node_modules and data that would make every synth hash gigabytes).
TRAINING_IMAGE = LambdaImage(
    dockerfile="containers/training/Dockerfile",
    requirements="containers/training/requirements.txt",
    exclude=("*", "!churnops", "!lambdas", "!containers/training", "**/__pycache__", "**/*.pyc"),
)
IMAGES = {"serving": SERVING_IMAGE, "training": TRAINING_IMAGE}
