"""The serving container image's recipe: what it installs and what it copies.

Whether those libraries and files really run the handler is checked, slowly, in a clean
virtualenv by tests/integration/test_serving_http.py."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "containers" / "serving"


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\[\]-]+)==(\S+)", line.strip())
        if match:
            name = re.sub(r"\[.*\]", "", match.group(1)).lower().replace("_", "-")
            found[name] = match.group(2)
    return found


def test_the_image_installs_no_training_or_data_libraries():
    installed = pins(IMAGE / "requirements.txt")
    assert {"onnxruntime", "numpy", "boto3", "aws-lambda-powertools"} <= set(installed)
    assert not {"pandas", "scipy", "scikit-learn", "pyspark", "skl2onnx", "pyarrow"} & set(
        installed
    )


def test_the_image_pins_the_same_versions_as_the_repository():
    repository = pins(REPO / "requirements.txt")
    for name, version in pins(IMAGE / "requirements.txt").items():
        if name in repository:
            assert repository[name] == version, (
                f"{name}: image {version}, repository {repository[name]}"
            )


def test_the_dockerfile_runs_the_serving_handler():
    # Its base image and platform: tests/infra/test_lambda_images.py.
    dockerfile = (IMAGE / "Dockerfile").read_text()
    assert dockerfile.strip().endswith('CMD ["lambdas.serving.handler.handler"]')
