"""The customer database (RDS MySQL-compatible in AWS, a private MariaDB in the twin).

Credentials come only from a Secrets Manager secret in the RDS shape
(`{"username", "password", "host", "port", "dbname", "engine"}`). The password never appears in
a log line, an exception or a file: connection errors are rewritten to name host, port, database
and user only.

Loading a file is atomic: its rows and the run's audit row ("succeeded") are committed in ONE
transaction, so readers see all of the file's rows or none, a failure at any point leaves the
table as it was, and a retry completes the file exactly once because every write is keyed by the
contract's id column. Two strategies (`load_file`):

- "direct" (default): the transaction writes the rows straight into the table (`LOAD DATA LOCAL
  INFILE ... REPLACE`, or multi-row `INSERT ... ON DUPLICATE KEY UPDATE` when the server does not
  allow local infile). The rows are written once.
- "staged": the rows first go into a per-run TEMPORARY table (a lost connection takes it away,
  nothing to clean up), then the transaction merges it (`INSERT ... SELECT ... ON DUPLICATE KEY
  UPDATE`). The table is locked only during the merge, but every row is written twice.

Measured on 2 busy cores (bench/ingest.py): at 200k rows the whole job ran at 2.43x (direct) and
2.58x (staged) the time of a bare LOAD DATA; at 1M rows direct ran at 2.2x while staged took over
3x, so direct is the default. Consistent reads never wait for either (InnoDB MVCC); only another
writer of the same customers does, for the length of the load.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pymysql.converters import escape_string

from churnops import aws
from churnops.contract import Contract
from churnops.errors import ChurnOpsError, DatabaseUnavailableError
from churnops.wiring import SCORE_COLUMNS, SCORE_SCHEMA, STAGING_METHODS

log = logging.getLogger(__name__)

AUDIT_TABLE = "ingestion_runs"
SCORES_TABLE = "churn_scores"
# Rows per INSERT statement: about 3 MB of SQL for a Telco row, well under max_allowed_packet
# (RDS default 64 MiB) and large enough that per-statement overhead disappears.
BATCH_ROWS = 20_000

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
# How ids compare (Contract.sql_type): exactly, so that 'ab-1' and 'AB-1' are two customers.
ID_COLLATION = "utf8mb4_bin"
# Deadlock and lock wait timeout: the transaction was rolled back and may simply be retried.
RETRYABLE_MERGE_ERRORS = (1213, 1205)
MERGE_ATTEMPTS = 3

AUDIT_DDL = f"""CREATE TABLE IF NOT EXISTS `{AUDIT_TABLE}` (
  `run_id` VARCHAR(64) NOT NULL,
  `contract` VARCHAR(64) NOT NULL,
  `bucket` VARCHAR(255) NOT NULL,
  `object_key` VARCHAR(1024) NOT NULL,
  `etag` VARCHAR(128) NULL,
  `status` VARCHAR(16) NOT NULL,
  `rows_read` BIGINT NOT NULL DEFAULT 0,
  `rows_loaded` BIGINT NOT NULL DEFAULT 0,
  `rows_quarantined` BIGINT NOT NULL DEFAULT 0,
  `error` TEXT NULL,
  `curated_uri` VARCHAR(2048) NULL,
  `quarantine_uri` VARCHAR(2048) NULL,
  `started_at` DATETIME(6) NOT NULL,
  `finished_at` DATETIME(6) NULL,
  PRIMARY KEY (`run_id`),
  KEY `by_object` (`bucket`, `object_key`(255)),
  CONSTRAINT `rows_add_up` CHECK (`rows_read` = `rows_loaded` + `rows_quarantined`)
)"""

# The scores table: the contract's id column, the score schema (churnops.wiring.SCORE_SCHEMA),
# then the day the score was computed, which decides whether a row replaces the one stored.
PROCESSING_DATE = "processing_date"
SCORE_TABLE_COLUMNS = (*SCORE_COLUMNS, PROCESSING_DATE)
# The score schema's portable types as the table stores them: the only "int" is a 0/1 decision,
# the only "string" a registry version.
_SCORE_SQL_TYPES = {"double": "DOUBLE", "int": "TINYINT", "string": "VARCHAR(64)"}


def scores_ddl(contract: Contract) -> str:
    id_col = contract.column(contract.id_column)
    lines = [
        f"`{id_col.name}` {contract.sql_type(id_col)} NOT NULL",
        *(f"`{name}` {_SCORE_SQL_TYPES[kind]} NOT NULL" for name, kind in SCORE_SCHEMA),
        f"`{PROCESSING_DATE}` DATE NOT NULL",
        f"PRIMARY KEY (`{id_col.name}`)",
    ]
    return f"CREATE TABLE IF NOT EXISTS `{SCORES_TABLE}` (\n  " + ",\n  ".join(lines) + "\n)"


# ---- connecting ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    host: str
    port: int
    user: str
    password: str
    database: str

    def __repr__(self) -> str:  # dataclass repr would print the password
        return f"Credentials({self.user}@{self.host}:{self.port}/{self.database})"

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


def read_secret(secret_arn: str, database: str | None = None) -> Credentials:
    """Credentials from an RDS-shaped Secrets Manager secret, for `database`.

    The database name comes from the deployment (`database` here: the stack passes
    `database.database_name` as `DB_NAME` / `--db_name`), because the secret CDK generates for
    an RDS instance has no `dbname` (RDS's attachment adds engine, host, port and the instance
    identifier; `dbname` is optional in the RDS secret structure). A secret's own `dbname` is
    used only when no name is given; with neither, the connection is refused by name, never
    sent to a guessed database."""
    try:
        value = aws.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    except Exception as err:
        # The service's code and message say what went wrong (AccessDenied names the action and
        # the role); neither carries the secret's value. The chained exception is dropped anyway.
        error = getattr(err, "response", {}).get("Error", {})
        code = error.get("Code", type(err).__name__)
        detail = f"{code}: {error['Message']}" if error.get("Message") else code
        raise ChurnOpsError(f"cannot read database secret {secret_arn}: {detail}") from None
    try:
        data = json.loads(value)
        credentials = Credentials(
            host=str(data["host"]),
            port=int(data.get("port") or 3306),
            user=str(data["username"]),
            password=str(data["password"]),
            database=str(database or data.get("dbname") or ""),
        )
    except (ValueError, KeyError, TypeError) as err:
        # The message names the missing key at most, never a value.
        raise ChurnOpsError(
            f"database secret {secret_arn} is not in the RDS shape ({type(err).__name__}: "
            f"{err if isinstance(err, KeyError) else 'unreadable'})"
        ) from None
    if not credentials.database:
        raise ChurnOpsError(
            f"database secret {secret_arn} names no database (no 'dbname') and none was "
            "configured: set DB_NAME (functions) or --db_name (Glue jobs)"
        )
    return credentials


def connect(
    secret_arn: str | Credentials, *, database: str | None = None, local_infile: bool = False
) -> Any:
    """A pymysql connection (autocommit off, strict SQL mode, utf8mb4) to `database` (see
    `read_secret` for where the name comes from)."""
    import pymysql

    creds = secret_arn if isinstance(secret_arn, Credentials) else read_secret(secret_arn, database)
    try:
        conn = pymysql.connect(
            host=creds.host,
            port=creds.port,
            user=creds.user,
            password=creds.password,
            database=creds.database,
            charset="utf8mb4",
            autocommit=False,
            connect_timeout=10,
            local_infile=local_infile,
            # Strict mode turns silent truncation into an error; backslash escapes stay on,
            # which the literal rendering below relies on.
            init_command="SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
        )
    except pymysql.MySQLError as err:
        # pymysql's own classes never reach Step Functions (they are wrapped here), so the
        # transient ones become an error a Retry can name; the rest stay domain errors.
        kind = DatabaseUnavailableError if _unreachable(err) else ChurnOpsError
        raise kind(f"cannot connect to database {creds.where}: {describe(err)}") from None
    return conn


# MySQL client errors that mean "not reachable now": can't connect (2002, 2003), unknown host
# (2005), server gone or lost during the query (2006, 2013), and the server refusing new
# connections while busy or starting (1040 too many connections, 1053 shutdown in progress).
_UNREACHABLE_CODES = frozenset({1040, 1053, 2002, 2003, 2005, 2006, 2013})


def _unreachable(err: BaseException) -> bool:
    import pymysql

    code = err.args[0] if err.args and isinstance(err.args[0], int) else None
    if code is not None:
        return code in _UNREACHABLE_CODES
    return isinstance(err, pymysql.err.InterfaceError | pymysql.err.OperationalError)


def describe(err: BaseException) -> str:
    """A one-line description of a database error. MySQL error texts quote the user and host
    but never the password."""
    args = err.args
    if len(args) >= 2 and isinstance(args[0], int):
        return f"({args[0]}) {args[1]}"
    return f"{type(err).__name__}: {err}"


# ---- schema -------------------------------------------------------------------------------------
def ensure_schema(conn: Any, contract: Contract) -> None:
    """Create the contract's table, the audit table and the scores table when missing, and bring
    tables created by an earlier release up to the contract (`_migrate`)."""
    with conn.cursor() as cur:
        cur.execute(contract.ddl())
        cur.execute(AUDIT_DDL)
        cur.execute(scores_ddl(contract))
    conn.commit()
    _migrate(conn, contract)


def _migrate(conn: Any, contract: Contract) -> None:
    """`CREATE TABLE IF NOT EXISTS` leaves an older table as it was. Two things are checked:

    - every contract column exists (a table that lacks one is not migrated by guessing: the run
      fails saying which columns and what to do);
    - the id columns compare exactly (binary collation). Tables created before that rule keep
      the server's default, case-insensitive collation, under which 'ab-1' and 'AB-1' are one
      key. Such a column is changed in place: it can hold no two ids that differ only by case,
      so the stricter collation cannot collide."""
    id_col = contract.column(contract.id_column)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT TABLE_NAME, COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (%s, %s)",
            (contract.table, SCORES_TABLE),
        )
        found = cur.fetchall()
        present = {str(column) for table, column, _ in found if table == contract.table}
        missing = [c for c in contract.column_names if c not in present]
        if missing:
            raise ChurnOpsError(
                f"table {contract.table} was created for another version of the {contract.name} "
                f"contract and lacks column(s) {', '.join(missing)}: add them (see "
                f"`Contract.ddl`) or rename the table, then retry the file"
            )
        for table, column, collation in found:
            if column == id_col.name and collation and str(collation) != ID_COLLATION:
                log.warning(
                    "migrating %s.%s from collation %s to %s",
                    table,
                    column,
                    collation,
                    ID_COLLATION,
                )
                cur.execute(
                    f"ALTER TABLE `{table}` MODIFY `{id_col.name}` {contract.sql_type(id_col)}"
                    " NOT NULL"
                )
    conn.commit()


# ---- audit --------------------------------------------------------------------------------------
def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def start_run(
    conn: Any, *, run_id: str, contract: str, bucket: str, key: str, etag: str | None
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO `{AUDIT_TABLE}` (run_id, contract, bucket, object_key, etag, status,"
            " started_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (run_id, contract, bucket, key, etag, RUNNING, now()),
        )
    conn.commit()


def _finish_sql() -> str:
    """Close a run's audit row: only while it is `running`, so a row once closed is never
    overwritten (the parameters end with the run id)."""
    return (
        f"UPDATE `{AUDIT_TABLE}` SET status = %s, rows_read = %s, rows_loaded = %s,"
        " rows_quarantined = %s, error = %s, curated_uri = %s, quarantine_uri = %s,"
        f" finished_at = %s WHERE run_id = %s AND status = '{RUNNING}'"
    )


def fail_run(conn: Any, run_id: str, error: str) -> bool:
    """Mark a running run failed; nothing of a failed run is in the target, so all counts are
    zero. A run already closed keeps its row: when a commit's acknowledgement is lost, the run
    may have succeeded, and the database is the one that knows. Returns whether it was marked."""
    with conn.cursor() as cur:
        marked = cur.execute(
            _finish_sql(), (FAILED, 0, 0, 0, error[:60_000], None, None, now(), run_id)
        )
    conn.commit()
    return bool(marked)


def run_status(conn: Any, run_id: str) -> dict[str, Any] | None:
    """The run's audit row, read now (None when there is none)."""
    import pymysql.cursors

    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT * FROM `{AUDIT_TABLE}` WHERE run_id = %s", (run_id,))
        row = cur.fetchone()
    conn.commit()
    return dict(row) if row else None


def runs(conn: Any, *, key: str | None = None) -> list[dict[str, Any]]:
    """Audit rows, oldest first (optionally for one object key)."""
    import pymysql.cursors

    sql = f"SELECT * FROM `{AUDIT_TABLE}`"
    params: tuple[Any, ...] = ()
    if key is not None:
        sql += " WHERE object_key = %s"
        params = (key,)
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(sql + " ORDER BY started_at, run_id", params)
        rows = list(cur.fetchall())
    conn.commit()  # end the read snapshot so later reads see newer runs
    return rows


# ---- fast multi-row INSERTs --------------------------------------------------------------------
def _literals(values: pd.Series[Any] | npt.NDArray[Any]) -> npt.NDArray[np.object_]:
    """SQL literals for one column, rendered once per distinct value (customer columns repeat a
    few values over millions of rows; the id column is the exception and costs one escape each)."""
    codes, uniques = pd.factorize(pd.Series(values, copy=False), use_na_sentinel=True)
    rendered: npt.NDArray[np.object_] = np.empty(len(uniques) + 1, dtype=object)
    for i, value in enumerate(uniques):
        rendered[i] = _literal(value)
    rendered[-1] = "NULL"  # code -1: missing
    literals: npt.NDArray[np.object_] = rendered[codes]
    return literals


def _literal(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "NULL"
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, datetime | pd.Timestamp):
        return "'" + value.strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
    if hasattr(value, "isoformat"):  # datetime.date
        return "'" + str(value.isoformat()) + "'"
    return "'" + escape_string(str(value)) + "'"


def row_tuples(frame: pd.DataFrame, columns: Sequence[str]) -> npt.NDArray[np.object_]:
    """One 'v1,v2,...' string per row (no parentheses): literals per column, joined by Arrow's
    element-wise join, which is several times faster than adding numpy object arrays."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(frame) == 0:
        return np.empty(0, dtype=object)
    parts = [pa.array(_literals(frame[name]), type=pa.string()) for name in columns]
    joined = pc.binary_join_element_wise(*parts, ",") if len(parts) > 1 else parts[0]
    rows: npt.NDArray[np.object_] = joined.to_numpy(zero_copy_only=False)
    return rows


def insert_batches(
    cursor: Any,
    table: str,
    columns: Sequence[str],
    frame: pd.DataFrame,
    batch_rows: int = BATCH_ROWS,
    update_columns: Sequence[str] = (),
) -> int:
    """INSERT the frame in multi-row statements; returns the affected-row count.

    With `update_columns`, an existing key is updated (ON DUPLICATE KEY UPDATE)."""
    head = f"INSERT INTO `{table}` ({', '.join(f'`{c}`' for c in columns)}) VALUES "
    tail = ""
    if update_columns:
        tail = " ON DUPLICATE KEY UPDATE " + ", ".join(
            f"`{c}` = VALUES(`{c}`)" for c in update_columns
        )
    rows = row_tuples(frame, columns)
    affected = 0
    for start in range(0, len(rows), batch_rows):
        affected += cursor.execute(
            head + "(" + "),(".join(rows[start : start + batch_rows]) + ")" + tail
        )
    return affected


# ---- the atomic file load ----------------------------------------------------------------------
# A file is loaded in two steps so that executors can write in parallel and readers still see
# the file all at once:
# 1. every Spark task writes its split's clean rows into the run's staging table (a real table:
#    the tasks have their own connections), each split in its own transaction that first deletes
#    whatever an earlier attempt of the same split left (`load_staging`), so a retried task loads
#    once;
# 2. the driver merges the staging table into the target and closes the audit row in ONE
#    transaction (`merge_staging`), then drops the staging table. A failure at any point leaves
#    the target as it was; a run that died leaves its staging table to `sweep_dead_runs`.
STAGING_PREFIX = "ingest_staging_"
# The staging table's key: the byte offset of the row's line in the uploaded object. Unique per
# row, ordered as the file, and it names each split's rows as one key range.
SOURCE_OFFSET = "_source_offset"
REJECTED = "_rejected"


@dataclass(frozen=True)
class LoadOutcome:
    rows_read: int
    rows_loaded: int  # counted in the staging table, not taken from the tasks
    rows_quarantined: int
    # The merge's affected-row count, MySQL semantics: 1 per inserted row, 2 per updated row,
    # 0 per row that was already identical (so a re-run of the same file reports 0).
    rows_affected: int


def staging_table(run_id: str) -> str:
    return STAGING_PREFIX + "".join(ch if ch.isalnum() else "_" for ch in run_id)[:48]


def create_staging(conn: Any, contract: Contract, run_id: str) -> str:
    """The run's (empty) staging table: the contract's columns plus the row's SOURCE_OFFSET (its
    key: each task appends its rows in key order, the cheapest write InnoDB has, and a retried
    task replaces exactly its own key range) and a REJECTED flag.

    It holds the clean rows to merge and, flagged REJECTED, the ids of the rows the contract
    rejected: a repeat counts from an id's first row in the file, whatever that row's fate
    (`repeated_rows`). Every column may be NULL (a rejected row's only value is its id)."""
    staging = staging_table(run_id)
    columns = [f"`{c.name}` {contract.sql_type(c)} NULL" for c in contract.columns]
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{staging}`")
        cur.execute(
            f"CREATE TABLE `{staging}` (\n  "
            + ",\n  ".join(columns)
            + f",\n  `{SOURCE_OFFSET}` BIGINT NOT NULL,"
            f"\n  `{REJECTED}` TINYINT NOT NULL DEFAULT 0,"
            f"\n  PRIMARY KEY (`{SOURCE_OFFSET}`)\n)"
        )
    conn.commit()
    return staging


def repeated_rows(conn: Any, contract: Contract, run_id: str) -> list[int]:
    """Source offsets of the clean staged rows whose id occurs on an earlier row of the file
    (in another split: a split's own repeats were rejected by the contract already).

    One grouping pass puts the repeated ids, with the offset of their first row, in a temporary
    table keyed by id (usually empty); only when there are some, the staging table is joined to
    it."""
    staging = staging_table(run_id)
    id_col = contract.column(contract.id_column)
    name = id_col.name
    repeats = f"repeats_{staging}"[:64]
    with conn.cursor() as cur:
        # Group in memory: past tmp_table_size (16 MiB by default) the server moves a grouping
        # to an on-disk table, which at a million ids takes seconds instead of a fraction of one.
        cur.execute("SET SESSION max_heap_table_size = %s, tmp_table_size = %s", (1 << 30, 1 << 30))
        cur.execute(
            f"CREATE TEMPORARY TABLE `{repeats}` (`{name}` {contract.sql_type(id_col)} NOT NULL"
            f" PRIMARY KEY, first_offset BIGINT NOT NULL) SELECT `{name}`,"
            f" MIN(`{SOURCE_OFFSET}`) AS first_offset FROM `{staging}` GROUP BY `{name}`"
            " HAVING COUNT(*) > 1"
        )
        found: list[int] = []
        try:
            if cur.rowcount:
                cur.execute(
                    f"SELECT s.`{SOURCE_OFFSET}` FROM `{staging}` AS s JOIN `{repeats}` AS r"
                    f" ON s.`{name}` = r.`{name}` AND s.`{SOURCE_OFFSET}` > r.first_offset"
                    f" WHERE s.`{REJECTED}` = 0 ORDER BY s.`{SOURCE_OFFSET}`"
                )
                found = [int(row[0]) for row in cur.fetchall()]
        finally:
            cur.execute(f"DROP TEMPORARY TABLE IF EXISTS `{repeats}`")
    conn.commit()
    return found


def unstage(conn: Any, run_id: str, offsets: Sequence[int]) -> None:
    """Take rows out of the staging table (repeats moved to quarantine), in one transaction."""
    staging = staging_table(run_id)
    try:
        with conn.cursor() as cur:
            for start in range(0, len(offsets), 1000):
                chunk = list(offsets[start : start + 1000])
                marks = ", ".join(["%s"] * len(chunk))
                cur.execute(f"DELETE FROM `{staging}` WHERE `{SOURCE_OFFSET}` IN ({marks})", chunk)
        conn.commit()
    except Exception:
        _rollback_quietly(conn)
        raise


def drop_staging(conn: Any, run_id: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{staging_table(run_id)}`")
    conn.commit()


def load_staging(
    conn: Any,
    contract: Contract,
    staging: str,
    clean: pd.DataFrame,
    *,
    rejected_ids: pd.DataFrame | None = None,
    span: tuple[int, int],
    method: str = "auto",
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Write one split's clean rows (with their SOURCE_OFFSET), and the ids of its rejected rows
    (the id column and SOURCE_OFFSET), into the staging table, replacing what an earlier attempt
    of the split wrote (its rows lie in `span`, [start, end) of the object). Returns the clean
    rows written; raises when the server took fewer or warned."""
    if method not in STAGING_METHODS:
        raise ValueError(f"unknown load method {method!r}")
    columns = [*contract.column_names, SOURCE_OFFSET]
    try:
        with conn.cursor() as cur:
            # Read committed: the delete locks only its own rows, never the gaps where the
            # other tasks are inserting theirs at the same time.
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            if method == "auto":
                method = "load_data" if local_infile_allowed(conn) else "insert"
            cur.execute("START TRANSACTION")
            cur.execute(
                f"DELETE FROM `{staging}` WHERE `{SOURCE_OFFSET}` >= %s AND `{SOURCE_OFFSET}` < %s",
                span,
            )
            if method == "load_data":
                written = _load_data_local(cur, staging, columns, clean)
            else:
                written = insert_batches(cur, staging, columns, clean, batch_rows)
            _refuse_warnings(cur, f"loading {len(clean)} rows into {staging}")
            if written != len(clean):
                raise ChurnOpsError(
                    f"loading into {staging}: the server wrote {written} rows, expected {len(clean)}"
                )
            if rejected_ids is not None and len(rejected_ids):
                marked = rejected_ids.assign(**{REJECTED: 1})
                insert_batches(
                    cur, staging, [contract.id_column, SOURCE_OFFSET, REJECTED], marked, batch_rows
                )
        conn.commit()
    except Exception:
        _rollback_quietly(conn)
        raise
    return written


def merge_staging(
    conn: Any,
    contract: Contract,
    *,
    run_id: str,
    rows_loaded: int,
    rows_quarantined: int,
    curated_uri: str | None = None,
    quarantine_uri: str | None = None,
    before_publish: Callable[[Any], None] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> LoadOutcome:
    """Merge the run's staging table into the target (upsert by id) and close the audit row as
    succeeded, in one transaction; then drop the staging table.

    The staging table must hold exactly `rows_loaded` rows (the tasks' count): what the database
    holds is counted, not what the tasks said. `before_publish(conn)` runs when every row is in
    the staging table and none in the target (failure tests kill the connection there);
    `before_commit()` runs inside the transaction, last: if it raises, nothing is committed."""
    staging = staging_table(run_id)
    columns = contract.column_names
    updatable = [c for c in columns if c != contract.id_column]
    cols = ", ".join(f"`{c}`" for c in columns)
    updates = ", ".join(f"`{c}` = s.`{c}`" for c in updatable)
    merge = (
        f"INSERT INTO `{contract.table}` ({cols}) SELECT {cols} FROM `{staging}` AS s"
        f" WHERE s.`{REJECTED}` = 0 ON DUPLICATE KEY UPDATE {updates}"
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{staging}` WHERE `{REJECTED}` = 0")
            staged = int(cur.fetchone()[0])
            if staged != rows_loaded:
                raise ChurnOpsError(
                    f"the staging table {staging} holds {staged} rows, the tasks loaded "
                    f"{rows_loaded}"
                )
            finish = (
                SUCCEEDED,
                staged + rows_quarantined,
                staged,
                rows_quarantined,
                None,
                curated_uri,
                quarantine_uri,
                now(),
                run_id,
            )

            if before_publish is not None:
                before_publish(conn)

            def publish() -> int:
                affected = int(cur.execute(merge))
                _refuse_warnings(cur, f"merging {staging} into {contract.table}")
                return affected

            affected = _in_transaction(conn, cur, publish, finish, run_id, before_commit)
            cur.execute(f"DROP TABLE IF EXISTS `{staging}`")
        conn.commit()
    except Exception:
        _rollback_quietly(conn)
        raise
    return LoadOutcome(
        rows_read=staged + rows_quarantined,
        rows_loaded=staged,
        rows_quarantined=rows_quarantined,
        rows_affected=affected,
    )


def _in_transaction(
    conn: Any,
    cur: Any,
    publish: Callable[[], int],
    finish: tuple[Any, ...],
    run_id: str,
    before_commit: Callable[[], None] | None = None,
) -> int:
    """Run `publish` and close the audit row in one transaction; retry on deadlock or lock wait
    timeout (two files touching the same customers, or EventBridge delivering an upload twice):
    InnoDB rolled the transaction back, and everything it needs is still here."""
    for attempt in range(1, MERGE_ATTEMPTS + 1):
        try:
            cur.execute("START TRANSACTION")
            affected = publish()
            if cur.execute(_finish_sql(), finish) != 1:
                raise ChurnOpsError(f"run {run_id} is no longer running (closed by a sweeper?)")
            if before_commit is not None:
                before_commit()
            conn.commit()
            return affected
        except Exception as err:
            if _error_code(err) not in RETRYABLE_MERGE_ERRORS or attempt == MERGE_ATTEMPTS:
                raise
            conn.rollback()
            log.warning("publishing run %s: %s; retrying", run_id, describe(err))
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _refuse_warnings(cur: Any, what: str) -> None:
    """Fail on any warning of the last statement. `LOAD DATA LOCAL` turns data errors into
    warnings even in strict mode (the client already sent the file, so the server cannot stop
    it; MySQL manual, "LOAD DATA Statement", Duplicate-Key and Error Handling), and a skipped
    or truncated row would otherwise load silently."""
    cur.execute("SHOW WARNINGS LIMIT 3")
    warnings = [row for row in cur.fetchall() if str(row[0]).lower() != "note"]
    if warnings:
        shown = "; ".join(f"({code}) {message}" for _level, code, message in warnings)
        raise ChurnOpsError(f"{what}: the server warned: {shown}")


def local_infile_allowed(conn: Any) -> bool:
    """Both sides allow LOAD DATA LOCAL INFILE: this client asked for it and the server's
    local_infile is ON (RDS: the parameter group's local_infile)."""
    from pymysql.constants import CLIENT

    if not conn.client_flag & CLIENT.LOCAL_FILES:
        return False
    with conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.local_infile")
        row = cur.fetchone()
    return bool(row and int(row[0]))


def _load_data_local(cur: Any, table: str, columns: Sequence[str], frame: pd.DataFrame) -> int:
    """Write the frame as CSV with pyarrow (strings quoted, quotes doubled) and LOAD it; the
    server's count of rows written.

    A blank never survives validation (it becomes NULL or the contract's blank value), so in a
    column that holds NULLs an empty field stands for NULL; only those columns pay for the
    NULLIF conversion. The CSV is a temporary file on this machine's disk (an executor's own,
    in a Glue job): the client streams it to the server."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    if len(frame) == 0:
        return 0
    table_data = pa.Table.from_pandas(frame[list(columns)], preserve_index=False)
    with_nulls = {name for name in columns if table_data.column(name).null_count}
    targets = [f"@v{i}" if name in with_nulls else f"`{name}`" for i, name in enumerate(columns)]
    assign = ", ".join(
        f"`{name}` = NULLIF(@v{i}, '')" for i, name in enumerate(columns) if name in with_nulls
    )
    with tempfile.NamedTemporaryFile(prefix="churnops-stage-", suffix=".csv") as handle:
        pa_csv.write_csv(
            table_data,
            handle.name,
            pa_csv.WriteOptions(include_header=False, quoting_style="needed"),
        )
        cur.execute(
            "LOAD DATA LOCAL INFILE %s"
            f" INTO TABLE `{table}` CHARACTER SET utf8mb4"
            " FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY ''"
            f" LINES TERMINATED BY '\\n' ({', '.join(targets)})"
            + (f" SET {assign}" if assign else ""),
            (handle.name,),
        )
        return int(cur.rowcount)


# ---- runs that died ----------------------------------------------------------------------------
def sweep_dead_runs(conn: Any, *, stale_after_minutes: int) -> list[str]:
    """Close the audit rows of runs still `running` after `stale_after_minutes` (no run lives
    that long: the stack passes the Glue job's timeout) and drop the staging tables of runs that
    are not running. A killed job cannot close its own row; the next ingestion does."""
    import pymysql.cursors

    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(
            f"SELECT run_id FROM `{AUDIT_TABLE}` WHERE status = %s"
            " AND started_at < NOW(6) - INTERVAL %s MINUTE",
            (RUNNING, stale_after_minutes),
        )
        dead = [str(row["run_id"]) for row in cur.fetchall()]
        for run_id in dead:
            fail_run(
                conn,
                run_id,
                "the run stopped without closing its audit row (its job was stopped, killed or "
                f"timed out); closed after {stale_after_minutes} minutes",
            )
        conn.commit()
        # Tables first, running runs second: a run opens its audit row before it creates its
        # staging table, so every table listed belongs to a row the second read sees; read the
        # other way round, a run starting in between would lose its table.
        cur.execute("SHOW TABLES LIKE %s", (STAGING_PREFIX.replace("_", "\\_") + "%",))
        tables = [str(next(iter(row.values()))) for row in cur.fetchall()]
        cur.execute(f"SELECT run_id FROM `{AUDIT_TABLE}` WHERE status = %s", (RUNNING,))
        live = {staging_table(str(row["run_id"])) for row in cur.fetchall()}
        for name in tables:
            if name not in live:
                cur.execute(f"DROP TABLE IF EXISTS `{name}`")
    conn.commit()
    if dead:
        log.warning("closed %d audit row(s) of runs that died: %s", len(dead), ", ".join(dead))
    return dead


def _error_code(err: BaseException) -> int | None:
    args = getattr(err, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _rollback_quietly(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception as err:  # the connection may be gone; the server rolls back
        log.debug("rollback after failure did not reach the server: %s", describe(err))


# ---- scores (batch scoring writes the latest score per customer) -------------------------------
def upsert_scores(conn: Any, frame: pd.DataFrame, contract: Contract | None = None) -> int:
    """Upsert the latest score per customer into `churn_scores` in one transaction (a batch
    scoring task's share: bounded by the task's row group).

    `frame` has the contract's id column and SCORE_TABLE_COLUMNS. Returns the number of rows
    sent."""
    from churnops.contract import TELCO

    contract = contract or TELCO
    id_column = contract.id_column
    missing = [c for c in (id_column, *SCORE_TABLE_COLUMNS) if c not in frame.columns]
    if missing:
        raise ChurnOpsError(f"scores frame lacks column(s): {', '.join(missing)}")
    columns = [id_column, *SCORE_TABLE_COLUMNS]
    head = f"INSERT INTO `{SCORES_TABLE}` ({', '.join(f'`{c}`' for c in columns)}) VALUES "
    # Idempotent by (customer, processing date): the same rows again change nothing, and scores
    # of an older date never replace a newer date's. MySQL assigns left to right, so the date
    # itself is compared in every IF and assigned last.
    newer = f"VALUES(`{PROCESSING_DATE}`) >= `{PROCESSING_DATE}`"
    tail = " ON DUPLICATE KEY UPDATE " + ", ".join(
        f"`{c}` = IF({newer}, VALUES(`{c}`), `{c}`)" for c in SCORE_TABLE_COLUMNS
    )
    rows = row_tuples(frame, columns)
    try:
        with conn.cursor() as cur:
            cur.execute(scores_ddl(contract))
            cur.execute("START TRANSACTION")
            for start in range(0, len(rows), BATCH_ROWS):
                batch = "),(".join(rows[start : start + BATCH_ROWS])
                cur.execute(head + "(" + batch + ")" + tail)
        conn.commit()
    except Exception:
        _rollback_quietly(conn)
        raise
    return len(rows)


def read_table(conn: Any, table: str, order_by: str | None = None) -> pd.DataFrame:
    """A whole table as a DataFrame (tests, the twin's summaries)."""
    sql = f"SELECT * FROM `{table}`" + (f" ORDER BY `{order_by}`" if order_by else "")
    with conn.cursor() as cur:
        cur.execute(sql)
        names = [d[0] for d in cur.description]
        data = cur.fetchall()
    conn.commit()
    return pd.DataFrame(list(data), columns=names)
