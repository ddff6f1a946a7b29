"""One place that builds boto3 clients.

Clients are cached per (service, region, endpoint) because building one costs milliseconds that
matter on a Lambda cold start; `reset_clients` clears the cache (tests, and the twin after it
points AWS_ENDPOINT_URL somewhere new). boto3 itself honours AWS_ENDPOINT_URL, which is how the
local twin reaches moto without any twin-only code in handlers.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
from botocore.config import Config

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str | None], Any] = {}

_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60
)


def client(service: str, region: str | None = None) -> Any:
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    key = (service, region, endpoint)
    with _lock:
        if key not in _clients:
            # The service is named at run time; boto3-stubs overloads `client` on literal service
            # names only (each returning its own client class), and no overload takes a str.
            _clients[key] = boto3.session.Session().client(  # type: ignore[call-overload]
                service, region_name=region or "us-east-1", config=_CONFIG
            )
        return _clients[key]


def reset_clients() -> None:
    with _lock:
        _clients.clear()


def split_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/key' -> ('bucket', 'some/key')."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key
