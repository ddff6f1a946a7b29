"""Database load benchmark: the ingest job's staging loads against awswrangler's `mysql.to_sql`.

    python bench/database_load.py --rows 200000

The project's design names awswrangler for the database; the ingest job does not use it. This
measures why, on the same validated rows and the same table definition:

1. Starts a private MariaDB and a moto server (Secrets Manager) in this process, with an
   RDS-shaped secret.
2. Validates N synthetic Telco customers with the contract (the typed frame a Spark task loads).
3. Loads them three ways, each into an empty table, each connection opened from the secret:
   - `database.load_staging(method="load_data")`: what a task does when the server allows
     LOAD DATA LOCAL INFILE (RDS: the parameter group's `local_infile`, which the stack sets);
   - `database.load_staging(method="insert")`: the fallback, multi-row INSERTs;
   - `awswrangler.mysql.to_sql` over `awswrangler.mysql.connect(secret_id=...)`, the
     library's own path (parameterised INSERTs of `--chunksize` rows).
4. Counts what each table holds (never what the loader says it did).

`awswrangler.mysql.connect` cannot open the connection the job needs: it takes no `local_infile`,
no `init_command` (strict SQL mode) and no `autocommit`, and it refuses the stack's own secret:
RDS for MariaDB (the stack's default engine) stores `"engine": "mariadb"` in its secret (Secrets
Manager's JSON structure for RDS credentials) and awswrangler 3.17 accepts only `mysql` and
`aurora-mysql`. So its path is measured over a copy of the secret that says `mysql`.

The last line is `database_load rows=N load_data_rows_per_s=X insert_rows_per_s=Y
awswrangler_rows_per_s=Z load_data_over_awswrangler=R`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# bench/ is on sys.path when a benchmark runs as `python bench/<name>.py`
from local_aws import create_bench_database, start_moto_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunksize", type=int, default=1_000, help="awswrangler's rows a batch")
    args = parser.parse_args(argv)

    import logging

    import pandas as pd

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from churnops import aws, database
    from churnops.contract import TELCO
    from churnops.local.mariadb import PrivateMariaDB
    from churnops.synthetic import generate, write_csv

    work = Path(tempfile.mkdtemp(prefix="churnops-bench-dbload-"))
    csv_path = work / "customers.csv"
    write_csv(generate(args.rows, args.seed), csv_path)
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    clean = TELCO.validate(raw).clean
    # A task's rows carry their byte offset in the file (the staging table's key); here, the row
    # number: keys in order, as a task appends them.
    offsets = {database.SOURCE_OFFSET: range(len(clean))}
    print(f"validated {len(clean)} of {len(raw)} rows", flush=True)

    moto = start_moto_server()
    server = PrivateMariaDB(work / "mariadb", buffer_pool="1G")
    rates: dict[str, float] = {}
    try:
        server.start()
        secret_arn, secret_value = create_bench_database(server)

        def staged(method: str) -> Callable[[], str]:
            def load() -> str:
                conn = database.connect(secret_arn, local_infile=True)
                try:
                    table = database.create_staging(conn, TELCO, f"bench_{method}")
                    database.load_staging(
                        conn,
                        TELCO,
                        table,
                        clean.assign(**offsets),
                        span=(0, len(clean)),
                        method=method,
                    )
                finally:
                    conn.close()
                return table

            return load

        import awswrangler as wr

        try:
            wr.mysql.connect(secret_id=secret_arn, dbname="bench").close()
        except wr.exceptions.InvalidDatabaseType as refused:
            print(f"awswrangler refuses the RDS for MariaDB secret: {refused}", flush=True)
        as_mysql = {**secret_value, "engine": "mysql"}
        mysql_secret_arn = aws.client("secretsmanager").create_secret(
            Name="bench/db-as-mysql", SecretString=json.dumps(as_mysql)
        )["ARN"]

        def wrangled() -> str:
            conn = wr.mysql.connect(secret_id=mysql_secret_arn, dbname="bench")
            try:
                with conn.cursor() as cur:
                    cur.execute("DROP TABLE IF EXISTS `bench_awswrangler`")
                    cur.execute(TELCO.ddl("bench_awswrangler"))
                conn.commit()
                wr.mysql.to_sql(
                    clean,
                    conn,
                    table="bench_awswrangler",
                    schema="bench",
                    mode="append",
                    use_column_names=True,
                    chunksize=args.chunksize,
                )
            finally:
                conn.close()
            return "bench_awswrangler"

        for name, load in (
            ("load_data", staged("load_data")),
            ("insert", staged("insert")),
            ("awswrangler", wrangled),
        ):
            started = time.perf_counter()
            table = load()
            seconds = time.perf_counter() - started
            held = _count(database, secret_arn, table)
            if held != len(clean):
                raise SystemExit(f"{name}: the table holds {held} rows, not {len(clean)}")
            rates[name] = held / seconds
            print(f"{name}: {seconds:.2f}s for {held} rows", flush=True)
    finally:
        server.stop()
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"database_load rows={len(clean)} load_data_rows_per_s={rates['load_data']:.0f} "
        f"insert_rows_per_s={rates['insert']:.0f} awswrangler_rows_per_s={rates['awswrangler']:.0f} "
        f"load_data_over_awswrangler={rates['load_data'] / rates['awswrangler']:.1f}"
    )
    return 0


def _count(database: object, secret_arn: str, table: str) -> int:
    conn = database.connect(secret_arn)  # type: ignore[attr-defined]
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
