"""Integration-tier fixtures: the database secret for the session's private MariaDB."""

from __future__ import annotations

import json
import secrets
import uuid

import pytest

DB_NAME = "churnops_it"
DB_USER = "churnops_app"


@pytest.fixture(scope="session")
def db_secret(aws_env, mariadb) -> str:  # type: ignore[no-untyped-def]
    """ARN of a Secrets Manager secret (RDS shape, in moto) for a user of the private MariaDB."""
    from churnops.aws import client

    password = secrets.token_urlsafe(18)
    mariadb.create_database(DB_NAME)
    mariadb.create_user(DB_USER, password, DB_NAME)
    value = mariadb.secret_value(DB_USER, password, DB_NAME)
    return client("secretsmanager").create_secret(
        Name=f"churnops-it/db-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(value)
    )["ARN"]
