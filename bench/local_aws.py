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


def create_bench_database(server: Any) -> tuple[str, dict[str, Any]]:
    """Database `bench` and its user on a started PrivateMariaDB, with an RDS-shaped secret in
    Secrets Manager (as the stack's jobs read it); returns the secret's ARN and its value."""
    import json
    import secrets

    from churnops import aws

    password = secrets.token_urlsafe(16)
    server.create_database("bench")
    server.create_user("bench", password, "bench")
    value: dict[str, Any] = server.secret_value("bench", password, "bench")
    arn = aws.client("secretsmanager").create_secret(
        Name="bench/db", SecretString=json.dumps(value)
    )["ARN"]
    return str(arn), value
