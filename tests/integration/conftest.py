"""Integration-tier fixtures: the database secret for the session's private MariaDB, and the
buckets and emptied database each ingest test starts from."""

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


# ---- the ingest job's world: buckets and an emptied database, per test --------------------------
@pytest.fixture
def lake(aws_env):
    """Fresh raw and curated buckets per test."""
    from churnops.aws import client

    s3 = client("s3")
    names = {"raw": f"raw-{uuid.uuid4().hex[:10]}", "curated": f"curated-{uuid.uuid4().hex[:10]}"}
    for name in names.values():
        s3.create_bucket(Bucket=name)
    return names


@pytest.fixture
def db(db_secret):
    """A connection to an empty customer database (tables dropped before each test)."""
    from churnops import database
    from churnops.contract import TELCO

    conn = database.connect(db_secret)
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'ingest\\_staging\\_%'")
        staging = [row[0] for row in cur.fetchall()]
        for table in (TELCO.table, database.AUDIT_TABLE, database.SCORES_TABLE, *staging):
            cur.execute(f"DROP TABLE IF EXISTS `{table}`")
    conn.commit()
    yield conn
    conn.close()
