"""Fixtures of the unit tier."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(params=["local", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """An empty storage location, once as a local directory and once as a prefix of a fresh S3
    bucket (moto): whatever runs on it must behave the same on both."""
    if request.param == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("aws_env")
    from churnops.aws import client

    bucket = f"store-{uuid.uuid4().hex[:12]}"
    client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/some/prefix"
