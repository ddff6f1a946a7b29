"""The database a connection goes to is the deployment's, not a guess.

CDK's generated secret for an RDS instance carries no `dbname` (the RDS attachment adds engine,
host, port and the instance identifier; AWS Secrets Manager's RDS secret structure makes
`dbname` optional), so the name comes from configuration, and a secret without it and no
configured name is refused by name rather than sent to a literal default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from churnops import database
from churnops.aws import client
from churnops.errors import ChurnOpsError

RDS_ATTACHED = {
    "engine": "mariadb",
    "host": "db.internal",
    "port": 3306,
    "username": "churnops_admin",
    "password": "pw-Zq81-never-shown",
    "dbInstanceIdentifier": "churnops-db",
}


def secret(aws_env, name: str, value: dict) -> str:  # type: ignore[no-untyped-def]
    return client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(value))["ARN"]


def test_the_configured_name_is_used_when_the_secret_has_none(aws_env) -> None:  # type: ignore[no-untyped-def]
    arn = secret(aws_env, "no-dbname", RDS_ATTACHED)
    assert database.read_secret(arn, "churn_analytics").database == "churn_analytics"


def test_the_configured_name_wins_over_the_secret(aws_env) -> None:  # type: ignore[no-untyped-def]
    arn = secret(aws_env, "with-dbname", {**RDS_ATTACHED, "dbname": "other"})
    assert database.read_secret(arn, "churn_analytics").database == "churn_analytics"
    assert database.read_secret(arn).database == "other"


def test_no_name_anywhere_is_refused_by_name(aws_env) -> None:  # type: ignore[no-untyped-def]
    arn = secret(aws_env, "nameless", RDS_ATTACHED)
    with pytest.raises(ChurnOpsError, match="DB_NAME") as caught:
        database.read_secret(arn)
    assert "pw-Zq81" not in str(caught.value)


def test_an_unreachable_database_is_an_error_the_retrain_retry_names() -> None:
    """pymysql's OperationalError never reaches Step Functions: connect() wraps it, as
    DatabaseUnavailableError when the server is out of reach (stacks/retrain.py retries it)."""
    from churnops.errors import DatabaseUnavailableError
    from tests.conftest import free_port

    closed = database.Credentials(
        host="127.0.0.1", port=free_port(), user="u", password="pw-never-shown", database="d"
    )
    with pytest.raises(DatabaseUnavailableError) as caught:
        database.connect(closed)
    assert type(caught.value).__name__ == "DatabaseUnavailableError"
    assert "pw-never-shown" not in str(caught.value)


def test_awswrangler_cannot_connect_with_the_stacks_secret(aws_env) -> None:  # type: ignore[no-untyped-def]
    """Why the jobs connect with `database.connect` and not `awswrangler.mysql.connect` (README,
    "Why each heavy dependency is here"): the stack deploys RDS for MariaDB by default, whose
    secret says `"engine": "mariadb"` (Secrets Manager's JSON structure for RDS credentials),
    and awswrangler accepts only MySQL engines. If a release accepts it, revisit the choice."""
    import awswrangler as wr

    cdk_json = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())
    assert cdk_json["context"]["churnops"]["database"]["engine"] == RDS_ATTACHED["engine"]
    arn = secret(aws_env, "as-deployed", {**RDS_ATTACHED, "dbname": "churn_analytics"})
    with pytest.raises(wr.exceptions.InvalidDatabaseType, match="mariadb"):
        wr.mysql.connect(secret_id=arn)
