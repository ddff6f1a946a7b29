"""The AWS APIs every benchmark talks to: a moto server in the benchmark's own process, on a free
loopback port, with boto3 (through `churnops.aws`) pointed at it. One place, so the benchmarks
measure the same stand-in the same way."""

from __future__ import annotations

import os
import socket
from typing import Any


def start_moto_server() -> Any:
    """A started moto server; the caller stops it."""
    from moto.server import ThreadedMotoServer

    from churnops import aws

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    aws.reset_clients()  # clients made before this point would call another endpoint
    return server
