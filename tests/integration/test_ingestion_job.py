"""The ingest Glue job end to end against moto (S3, Secrets Manager), a private MariaDB and
Spark (`local[*]`, and the two-node cluster in `./dev test`'s second pass).

Every test runs the real entry script (`glue_jobs/ingest_customers.py`) with the argument list
Glue would pass (or `ingest_object` where it hooks into a load), then checks what the database
holds against the file itself, the audit table and the objects in S3.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from churnops import database
from churnops.contract import REJECT_REASON, TELCO
from churnops.ingestion import FileRejected, IngestionFailed, IngestRequest, ingest_object

REPO = Path(__file__).resolve().parents[2]
ID = TELCO.id_column
pytestmark = pytest.mark.glue_job


def _load_job():  # the script is run by path on Glue and in the twin; do the same here
    spec = importlib.util.spec_from_file_location(
        "ingest_customers_under_test", REPO / "glue_jobs" / "ingest_customers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JOB = _load_job()


# ---- fixtures and helpers ------------------------------------------------------------------------
def synthetic_raw(rows: int, seed: int) -> pd.DataFrame:
    """Telco-shaped customers as the raw strings a CSV holds."""
    from churnops.synthetic import generate, write_csv

    buffer = io.BytesIO()
    path = Path(f"/tmp/churnops-it-{uuid.uuid4().hex}.csv")
    try:
        write_csv(generate(rows, seed), path)
        buffer.write(path.read_bytes())
    finally:
        path.unlink(missing_ok=True)
    return pd.read_csv(io.BytesIO(buffer.getvalue()), dtype=str, keep_default_na=False)


def csv_bytes(raw: pd.DataFrame) -> bytes:
    return raw.to_csv(index=False).encode()


def upload(lake, name: str, data: bytes) -> str:
    from churnops.aws import client

    key = f"incoming/{name}"
    client("s3").put_object(Bucket=lake["raw"], Key=key, Body=data)
    return key


def glue_argv(lake, key: str, secret: str, **extra: str) -> list[str]:
    """What Glue hands the script: its reserved arguments, then DefaultArguments + run Arguments."""
    argv = ["/tmp/glue/ingest_customers.py", "--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1"]
    argv += ["--JOB_NAME", "ingest", "--job-bookmark-option", "job-bookmark-disable"]
    args = {
        "curated_bucket": lake["curated"],
        "db_secret_arn": secret,
        "contract_name": "telco",
        "source_bucket": lake["raw"],
        "source_key": key,
        **extra,
    }
    for name, value in args.items():
        argv += [f"--{name}", value]
    return argv


def ingest_request(lake, key: str, secret: str, **extra) -> IngestRequest:
    """The request the job builds for an upload, for tests that call `ingest_object` directly
    to hook into a load."""
    return IngestRequest(
        bucket=lake["raw"],
        key=key,
        curated_bucket=lake["curated"],
        db_secret_arn=secret,
        contract=TELCO,
        **extra,
    )


def base_loaded_newer_uploaded(
    lake, secret: str, *, rows: int, newer_rows: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """`rows` customers loaded by the job from base.csv, and newer.csv uploaded (not ingested):
    the same customers with other values plus `newer_rows - rows` new ones. Returns both files'
    rows and the newer file's key."""
    raw = synthetic_raw(rows, seed=seed)
    JOB.main(glue_argv(lake, upload(lake, "base.csv", csv_bytes(raw)), secret))
    newer = synthetic_raw(newer_rows, seed=seed + 1)
    newer.loc[: len(raw) - 1, ID] = raw[ID].to_numpy()  # the same customers, other values
    return raw, newer, upload(lake, "newer.csv", csv_bytes(newer))


def table(conn) -> pd.DataFrame:
    return database.read_table(conn, TELCO.table, order_by=ID)


def audit(conn, key: str | None = None) -> list[dict]:
    return database.runs(conn, key=key)


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    from churnops.aws import client

    listed = client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def s3_bytes(uri: str) -> bytes:
    from churnops.aws import client, split_s3_uri

    bucket, key = split_s3_uri(uri)
    return client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def s3_parts(uri: str) -> list[bytes]:
    """The objects under a prefix URI (a run's curated or quarantine parts), in key order."""
    from churnops.aws import split_s3_uri

    bucket, prefix = split_s3_uri(uri)
    return [s3_bytes(f"s3://{bucket}/{k}") for k in sorted(s3_keys(bucket, prefix))]


def curated_table(uri: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(io.BytesIO(b)) for b in s3_parts(uri)])


def quarantined_rows(uri: str) -> pd.DataFrame:
    frames = [pd.read_csv(io.BytesIO(b), dtype=str, keep_default_na=False) for b in s3_parts(uri)]
    return pd.concat(frames, ignore_index=True)


def expected_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """The file's rows typed the way the table stores them (TotalCharges blank -> 0)."""
    frame = raw.copy()
    for name in TELCO.numeric_features:
        text = frame[name].str.strip()
        frame[name] = pd.to_numeric(text.where(text != "", "0"))
    return frame.sort_values(ID).reset_index(drop=True)


def assert_table_holds(conn, raw: pd.DataFrame) -> None:
    got = table(conn)
    want = expected_rows(raw)
    assert list(got[ID]) == list(want[ID])
    for name in TELCO.column_names:
        if name in TELCO.numeric_features:
            np.testing.assert_allclose(got[name].astype(float), want[name].astype(float))
        else:
            assert list(got[name]) == list(want[name]), name


# ---- a clean file --------------------------------------------------------------------------------
def test_clean_telco_file_loads_completely(lake, db, db_secret, telco_csv):
    # GIVEN the real Telco file uploaded to incoming/
    data = telco_csv.read_bytes()
    raw = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    key = upload(lake, "telco.csv", data)

    # WHEN the job runs with the arguments Glue would pass
    result = JOB.main(glue_argv(lake, key, db_secret))

    # THEN every customer is in the table with the file's values, nothing is quarantined
    assert result["status"] == "succeeded"
    assert result["rows_read"] == len(raw) == result["rows_loaded"]
    assert result["rows_quarantined"] == 0 and result["quarantine_uri"] is None
    assert_table_holds(db, raw)
    # AND the audit row says so
    (run,) = audit(db, key)
    assert run["status"] == "succeeded" and run["error"] is None
    assert (run["rows_read"], run["rows_loaded"], run["rows_quarantined"]) == (
        len(raw),
        len(raw),
        0,
    )
    assert run["etag"] and run["finished_at"] >= run["started_at"]
    # AND the curated Parquet holds the same typed rows, under an ingest-date partition
    assert "/ingest_date=" in result["curated_uri"]
    parquet = curated_table(result["curated_uri"])
    assert parquet.schema.field("tenure").type == pa.int64()
    assert parquet.schema.field("MonthlyCharges").type == pa.float64()
    curated = parquet.to_pandas()
    assert sorted(curated[ID]) == sorted(raw[ID])
    blank_total = raw["TotalCharges"].str.strip() == ""
    assert blank_total.any()  # the real file's first-month customers
    assert (curated.set_index(ID).loc[raw.loc[blank_total, ID], "TotalCharges"] == 0.0).all()
    # AND the file stays where it was uploaded (only file-level failures move it)
    assert key in s3_keys(lake["raw"], "incoming/")


# ---- bad rows ------------------------------------------------------------------------------------
def spoil(
    raw: pd.DataFrame, share: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Break `share` of the rows, each in one of several ways, and repeat the first row's id at
    the end. Returns (the file's rows, the rows that must be rejected, the rows that must load)."""
    rng = np.random.default_rng(seed)
    frame = raw.copy()
    chosen = rng.choice(np.arange(1, len(frame)), size=int(len(frame) * share), replace=False)
    ways = [
        ("Contract", "Weekly"),  # not an allowed value
        ("tenure", "-3"),  # below the minimum
        ("MonthlyCharges", "lots"),  # not a number
        ("SeniorCitizen", "0.5"),  # not a whole number
        ("gender", ""),  # blank
        (ID, "X" * 80),  # too long
    ]
    for n, row in enumerate(chosen):
        column, value = ways[n % len(ways)]
        frame.iat[row, frame.columns.get_loc(column)] = value
    good = frame.drop(index=chosen)
    repeated = frame.iloc[[0]].copy()
    repeated["tenure"] = "7"  # the later row with a known id is the bad one
    bad = pd.concat([frame.iloc[chosen], repeated], ignore_index=True)
    return pd.concat([frame, repeated], ignore_index=True), bad, good


def as_rows(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame[TELCO.column_names].to_numpy().tolist()))


@pytest.mark.parametrize(
    ("staging_method", "split_bytes"), [("load_data", "0"), ("insert", "0"), ("load_data", "9000")]
)
def test_bad_rows_are_quarantined_and_the_rest_loaded(
    lake, db, db_secret, staging_method, split_bytes
):
    # GIVEN a file where about 5% of the rows break the contract in different ways
    raw = synthetic_raw(2000, seed=11)
    spoiled, bad, good = spoil(raw, 0.05, seed=3)
    key = upload(lake, "customers-5pct.csv", csv_bytes(spoiled))

    # WHEN the job runs
    result = JOB.main(
        glue_argv(lake, key, db_secret, staging_method=staging_method, split_bytes=split_bytes)
    )

    # THEN exactly the spoiled rows are quarantined, each with a reason naming its problem
    assert result["rows_read"] == len(spoiled)
    assert result["rows_quarantined"] == len(bad)
    assert result["rows_loaded"] == len(spoiled) - len(bad)
    quarantined = quarantined_rows(result["quarantine_uri"])
    assert as_rows(quarantined) == as_rows(bad)
    assert (quarantined[REJECT_REASON].str.len() > 0).all()
    reasons = " | ".join(quarantined[REJECT_REASON])
    for fragment in (
        "Contract has value 'Weekly'",
        "tenure is below",
        "MonthlyCharges has value",
        "SeniorCitizen must be a whole number",
        "gender is blank",
        "longer than",
        "repeats an earlier row",
    ):
        assert fragment in reasons
    # AND the table holds every other row (the first of the repeated ids included)
    assert_table_holds(db, good)
    (run,) = audit(db, key)
    assert run["rows_read"] == run["rows_loaded"] + run["rows_quarantined"]
    assert run["quarantine_uri"] == result["quarantine_uri"]


# ---- idempotence and updates ---------------------------------------------------------------------
def test_same_file_twice_leaves_the_table_unchanged(lake, db, db_secret):
    # GIVEN a file that was ingested once
    raw = synthetic_raw(500, seed=21)
    key = upload(lake, "batch.csv", csv_bytes(raw))
    first = JOB.main(glue_argv(lake, key, db_secret))
    before = table(db)

    # WHEN the same file is uploaded and ingested again
    upload(lake, "batch.csv", csv_bytes(raw))
    second = JOB.main(glue_argv(lake, key, db_secret))

    # THEN the table is exactly as it was: no duplicates, no changed rows
    assert second["status"] == "succeeded"
    pd.testing.assert_frame_equal(table(db), before)
    assert len(before) == len(raw) == first["rows_loaded"] == first["rows_affected"]
    assert second["rows_affected"] == 0  # the merge leaves identical rows alone
    # AND both runs are audited, and the retry overwrote its own outputs instead of adding copies
    assert [r["status"] for r in audit(db, key)] == ["succeeded", "succeeded"]
    assert first["curated_uri"] == second["curated_uri"]
    assert len(s3_keys(lake["curated"], "curated/")) == first["splits"] == 1


def test_a_changed_customer_is_updated_and_new_ones_added(lake, db, db_secret):
    # GIVEN a first file already in the table
    raw = synthetic_raw(400, seed=31)
    JOB.main(glue_argv(lake, upload(lake, "monday.csv", csv_bytes(raw)), db_secret))

    # WHEN a later file changes three customers and brings two new ones
    later = raw.iloc[:3].copy()
    later["Contract"] = np.where(later["Contract"] == "Two year", "One year", "Two year")
    later["MonthlyCharges"] = ["12.5", "99.99", "45"]
    newcomers = synthetic_raw(402, seed=32).iloc[-2:].copy()
    newcomers[ID] = ["NEW-0001", "NEW-0002"]
    key = upload(lake, "tuesday.csv", csv_bytes(pd.concat([later, newcomers])))
    result = JOB.main(glue_argv(lake, key, db_secret))

    # THEN the three customers carry the new values, the newcomers exist, nobody is duplicated
    assert result["rows_loaded"] == 5
    assert result["rows_affected"] == 3 * 2 + 2  # MySQL counts an update twice, an insert once
    merged = pd.concat([raw.iloc[3:], later, newcomers], ignore_index=True)
    assert_table_holds(db, merged)


def test_ids_that_differ_only_by_case_are_two_customers(lake, db, db_secret):
    # GIVEN a file whose ids differ only by letter case (validation treats them as distinct)
    raw = synthetic_raw(2, seed=41)
    raw[ID] = ["7590-vhveg", "7590-VHVEG"]
    key = upload(lake, "case.csv", csv_bytes(raw))

    # WHEN it is ingested into a database whose default collation ignores case (as RDS's does)
    with db.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        (name,) = cur.fetchone()
        cur.execute(f"ALTER DATABASE `{name}` COLLATE utf8mb4_general_ci")
    try:
        result = JOB.main(glue_argv(lake, key, db_secret))
    finally:
        with db.cursor() as cur:
            cur.execute(f"ALTER DATABASE `{name}` COLLATE utf8mb4_bin")

    # THEN both customers are kept: the id column compares exactly, nobody is overwritten
    assert result["rows_loaded"] == 2
    assert sorted(table(db)[ID]) == ["7590-VHVEG", "7590-vhveg"]


# ---- file-level problems -------------------------------------------------------------------------
def _file_problems() -> dict[str, tuple[bytes, str]]:
    header = ",".join(TELCO.column_names)
    row = "0001-AAAAA,Female,0,Yes,No,1,No,No phone service,DSL,No,Yes,No,No,No,No,Month-to-month,Yes,Electronic check,29.85,29.85,No"
    renamed = header.replace("tenure", "tenure_months")
    no_churn = ",".join(TELCO.column_names[:-1])
    dup = header + ",gender"
    return {
        "not a CSV (an image)": (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
            "not UTF-8",
        ),
        "not a CSV (a database file)": (
            b"SQLite format 3\x00" + bytes(range(128)) * 4,
            "binary data",
        ),
        "wrong columns": (f"{renamed}\n{row}\n".encode(), "unexpected column(s): tenure_months"),
        "missing column": (
            f"{no_churn}\n{row.rsplit(',', 1)[0]}\n".encode(),
            "missing column(s): Churn",
        ),
        "empty": (b"", "the file is empty"),
        "wrong encoding": (
            f"{header}\n{row}\n".replace("Female", "F\xe9male").encode("latin-1"),
            "not UTF-8",
        ),
        "header only": (f"{header}\n".encode(), "header but no rows"),
        "duplicate header names": (
            f"{dup}\n{row},Male\n".encode(),
            "duplicate column name(s): gender",
        ),
    }


FILE_PROBLEMS = _file_problems()


@pytest.mark.parametrize("problem", list(FILE_PROBLEMS))
def test_a_broken_file_moves_to_failed_with_a_readable_error(lake, db, db_secret, problem):
    # GIVEN a table with customers in it, and a broken upload
    raw = synthetic_raw(50, seed=41)
    JOB.main(glue_argv(lake, upload(lake, "good.csv", csv_bytes(raw)), db_secret))
    before = table(db)
    data, expected = FILE_PROBLEMS[problem]
    key = upload(lake, "broken.csv", data)

    # WHEN the job runs on it, THEN the job fails (so the state machine alerts) with the reason
    with pytest.raises(FileRejected, match=re.escape(expected)):
        JOB.main(glue_argv(lake, key, db_secret))

    # AND the object moved to failed/ with an error file beside it
    assert key not in s3_keys(lake["raw"], "incoming/")
    assert s3_bytes(f"s3://{lake['raw']}/failed/broken.csv") == data
    error = json.loads(s3_bytes(f"s3://{lake['raw']}/failed/broken.csv.error.json"))
    assert expected in error["error"] and error["source"].endswith(key)
    # AND the audit row says why, and the table is untouched
    (run,) = audit(db, key)
    assert run["status"] == "failed" and expected in run["error"]
    assert run["rows_loaded"] == run["rows_read"] == 0
    pd.testing.assert_frame_equal(table(db), before)


# ---- the database going away ---------------------------------------------------------------------
def test_database_lost_before_the_rows_are_published_leaves_the_table_and_a_retry_loads_once(
    lake, db, db_secret, mariadb, caplog
):
    # GIVEN a table with customers, and a newer file that changes some and adds others
    raw, newer, key = base_loaded_newer_uploaded(lake, db_secret, rows=300, newer_rows=400, seed=51)
    before = table(db)
    request = ingest_request(lake, key, db_secret, split_bytes=4096)
    seen = {}

    def kill_connection(conn) -> None:
        # The file's rows are in the run's staging table, written by the Spark tasks; the
        # table has none of them yet. Now the server drops the driver's connection.
        with conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{database.staging_table(run_id())}`")
            seen["inside"] = cur.fetchone()[0]
        seen["outside"] = len(table(db))
        with mariadb.root_connection() as admin, admin.cursor() as cur:
            cur.execute("KILL CONNECTION %s", (conn.thread_id(),))

    def run_id() -> str:
        return next(r for r in audit(db, key) if r["status"] == "running")["run_id"]

    # WHEN the connection dies after the rows are written, before they are published
    with pytest.raises(IngestionFailed, match="ingestion failed"):
        ingest_object(request, before_publish=kill_connection)

    # THEN the table is exactly as it was, the run is marked failed, the file is still there
    assert seen == {"inside": len(newer), "outside": len(raw)}
    pd.testing.assert_frame_equal(table(db), before)
    (failed,) = audit(db, key)
    assert failed["status"] == "failed" and "ingestion failed" in failed["error"]
    assert key in s3_keys(lake["raw"], "incoming/")
    # AND no staging table survives on the server
    with mariadb.root_connection() as admin, admin.cursor() as cur:
        cur.execute("SHOW TABLES FROM churnops_it LIKE 'ingest\\_staging%'")
        assert cur.fetchall() == ()

    # WHEN the job is retried
    retry = JOB.main(glue_argv(lake, key, db_secret))

    # THEN the file is loaded exactly once
    assert retry["status"] == "succeeded" and retry["rows_loaded"] == len(newer)
    assert_table_holds(db, newer)
    assert [r["status"] for r in audit(db, key)] == ["failed", "succeeded"]
    # AND the password never reached a log line
    password = json.loads(_secret_string(db_secret))["password"]
    assert password not in caplog.text


def _secret_string(arn: str) -> str:
    from churnops.aws import client

    return client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]


def test_wrong_credentials_fail_without_showing_the_password(aws_env, mariadb, lake):
    from churnops.aws import client
    from churnops.errors import ChurnOpsError

    # GIVEN a secret whose password is wrong
    value = mariadb.secret_value("churnops_app", "not-the-password-Zq81", "churnops_it")
    arn = client("secretsmanager").create_secret(
        Name=f"wrong-{uuid.uuid4().hex[:6]}", SecretString=json.dumps(value)
    )["ARN"]
    key = upload(lake, "any.csv", csv_bytes(synthetic_raw(5, seed=1)))
    # WHEN the job runs, THEN it fails naming user and host, never the password
    with pytest.raises(ChurnOpsError) as caught:
        JOB.main(glue_argv(lake, key, arn))
    assert "cannot connect to database churnops_app@127.0.0.1" in str(caught.value)
    assert "not-the-password-Zq81" not in str(caught.value)
    assert "not-the-password-Zq81" not in repr(database.read_secret(arn))


# ---- scores --------------------------------------------------------------------------------------
def test_upsert_scores_keeps_the_latest_score_per_customer(db):
    # GIVEN scores for three customers, then a newer scoring of two of them
    first = pd.DataFrame(
        {
            ID: ["A-1", "B-2", "C-3"],
            "churn_probability": [0.1, 0.5, 0.9],
            "churn_prediction": [0, 1, 1],
            "model_version": "v1",
            "processing_date": "2026-11-01",
        }
    )
    second = pd.DataFrame(
        {
            ID: ["B-2", "C-3"],
            "churn_probability": [0.2, 0.95],
            "churn_prediction": [0, 1],
            "model_version": "v2",
            "processing_date": "2026-11-02",
        }
    )
    # WHEN both are upserted
    assert database.upsert_scores(db, first, TELCO) == 3
    assert database.upsert_scores(db, second, TELCO) == 2
    # THEN each customer has exactly its latest score
    got = database.read_table(db, database.SCORES_TABLE, order_by=ID)
    assert list(got[ID]) == ["A-1", "B-2", "C-3"]
    assert list(got["model_version"]) == ["v1", "v2", "v2"]
    np.testing.assert_allclose(got["churn_probability"], [0.1, 0.2, 0.95])
    assert [str(d) for d in got["processing_date"]] == ["2026-11-01", "2026-11-02", "2026-11-02"]


# ---- NULLs through both staging methods ----------------------------------------------------------
def load_through_staging(conn, contract, clean: pd.DataFrame, run_id: str, method: str):
    """What a one-split ingestion does with its clean rows: stage them, then merge."""
    staging = database.create_staging(conn, contract, run_id)
    offsets = clean.assign(**{database.SOURCE_OFFSET: range(len(clean))})
    database.load_staging(conn, contract, staging, offsets, span=(0, len(clean)), method=method)
    return database.merge_staging(
        conn, contract, run_id=run_id, rows_loaded=len(clean), rows_quarantined=0
    )


@pytest.mark.parametrize("method", ["load_data", "insert"])
def test_nullable_values_load_as_null_with_either_method(db_secret, method, request):
    from churnops.contract import Column, Contract, Kind

    # GIVEN a contract with nullable columns, and clean rows where some values are missing
    contract = Contract(
        name="nullable",
        description="test contract with optional fields",
        id_column="member_id",
        target_column="left",
        positive_label="yes",
        table="nullable_members",
        columns=(
            Column("member_id", Kind.STRING),
            Column("nickname", Kind.STRING, nullable=True),
            Column("visits", Kind.INTEGER, nullable=True, minimum=0),
            Column("spend", Kind.FLOAT, nullable=True),
            Column("left", Kind.CATEGORY, allowed=("yes", "no")),
        ),
    )
    raw = pd.DataFrame(
        {
            "member_id": ["m1", "m2", "m3"],
            "nickname": ['Al, "the" Great', "", "Zoë"],
            "visits": ["3", "", "0"],
            "spend": ["", "12.5", "0"],
            "left": ["yes", "no", "no"],
        }
    )
    clean = contract.validate(raw).clean
    db = database.connect(db_secret, local_infile=True)
    request.addfinalizer(db.close)
    with db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{contract.table}`")
    database.ensure_schema(db, contract)
    run_id = f"null-{method}"
    database.start_run(db, run_id=run_id, contract="nullable", bucket="b", key="k", etag=None)

    # WHEN they are loaded
    outcome = load_through_staging(db, contract, clean, run_id, method)

    # THEN missing values are NULL and present ones exact (quotes, commas, non-ASCII included)
    assert outcome.rows_loaded == 3
    got = database.read_table(db, contract.table, order_by="member_id")
    assert got["nickname"].tolist() == ['Al, "the" Great', None, "Zoë"]
    assert got["visits"].isna().tolist() == [False, True, False]
    assert got["visits"].dropna().astype(int).tolist() == [3, 0]
    assert got["spend"].isna().tolist() == [True, False, False]
    assert got["spend"].dropna().astype(float).tolist() == [12.5, 0.0]


def test_a_merge_blocked_by_another_writer_is_retried(lake, db, db_secret, caplog):
    import threading

    # GIVEN customers in the table, and another session holding a lock on one of them
    raw = synthetic_raw(60, seed=61)
    JOB.main(glue_argv(lake, upload(lake, "first.csv", csv_bytes(raw)), db_secret))
    changed = raw.copy()
    changed["MonthlyCharges"] = "42.5"
    key = upload(lake, "second.csv", csv_bytes(changed))
    blocker = database.connect(db_secret)
    # The hook runs before the merge touches the table, so the other writer's lock comes first.
    request = ingest_request(lake, key, db_secret)

    def lock_then_release(conn) -> None:
        # The job's session gives up on a lock after 1s; the other writer releases it after 1.5s.
        with conn.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
        with blocker.cursor() as cur:
            cur.execute("START TRANSACTION")
            cur.execute(
                f"SELECT * FROM `{TELCO.table}` WHERE `{ID}` = %s FOR UPDATE", (raw[ID][0],)
            )
        threading.Timer(1.5, blocker.rollback).start()

    # WHEN the job's merge runs into the lock
    result = ingest_object(request, before_publish=lock_then_release)
    blocker.close()

    # THEN the first attempt timed out, the retry went through, and every row is updated
    assert "Lock wait timeout" in caplog.text and "retrying" in caplog.text
    assert result.status == "succeeded"
    assert_table_holds(db, changed)
    assert [r["status"] for r in audit(db, key)] == ["succeeded"]


def test_a_database_crash_mid_load_leaves_the_table_and_a_retry_loads_once(
    lake, tmp_path, aws_env, need_service
):
    """The server itself dies (SIGKILL) with the file's rows written but not committed, and comes
    back (crash recovery, or a failover): InnoDB rolls the load back; the job marks the run failed
    on a new connection; the retry loads the file once."""
    import secrets as secrets_module

    from churnops.aws import client
    from churnops.local.mariadb import PrivateMariaDB, available

    need_service(available(), "MariaDB server binaries (/usr/sbin/mariadbd)")
    # GIVEN a server of this test's own (it is going to be killed) holding customers
    server = PrivateMariaDB(tmp_path / "crash-db").start()
    try:
        password = secrets_module.token_urlsafe(12)
        server.create_database("crashdb")
        server.create_user("loader", password, "crashdb")
        secret = client("secretsmanager").create_secret(
            Name=f"crash-{uuid.uuid4().hex[:6]}",
            SecretString=json.dumps(server.secret_value("loader", password, "crashdb")),
        )["ARN"]
        raw, newer, key = base_loaded_newer_uploaded(
            lake, secret, rows=200, newer_rows=250, seed=71
        )
        request = ingest_request(lake, key, secret)

        def crash_and_recover(conn) -> None:
            server.kill()
            server.start()

        # WHEN the server crashes after the rows are written, before they are published
        with pytest.raises(IngestionFailed, match="ingestion failed"):
            ingest_object(request, before_publish=crash_and_recover)

        # THEN after recovery the table is as it was and the run is marked failed
        conn = database.connect(secret)
        try:
            assert_table_holds(conn, raw)
            (failed,) = audit(conn, key)
            assert failed["status"] == "failed"
            # WHEN the job is retried, THEN the file is loaded exactly once
            JOB.main(glue_argv(lake, key, secret))
            assert_table_holds(conn, newer)
            assert [r["status"] for r in audit(conn, key)] == ["failed", "succeeded"]
        finally:
            conn.close()
    finally:
        server.stop()


def test_auto_method_falls_back_to_inserts_when_local_infile_is_not_allowed(db_secret, db, mariadb):
    # GIVEN a connection that did not ask for local infile, and one that did
    plain = database.connect(db_secret)
    infile = database.connect(db_secret, local_infile=True)
    try:
        assert not database.local_infile_allowed(plain)
        assert database.local_infile_allowed(infile)
        # WHEN the server turns local infile off (an RDS parameter group may)
        with mariadb.root_connection() as admin, admin.cursor() as cur:
            cur.execute("SET GLOBAL local_infile = 0")
        try:
            assert not database.local_infile_allowed(infile)
            # THEN "auto" still loads a file, through multi-row INSERTs
            raw = synthetic_raw(30, seed=81)
            clean = TELCO.validate(raw).clean
            database.ensure_schema(infile, TELCO)
            database.start_run(
                infile, run_id="auto-fallback", contract="telco", bucket="b", key="k", etag=None
            )
            outcome = load_through_staging(infile, TELCO, clean, "auto-fallback", "auto")
            assert outcome.rows_loaded == 30
            assert_table_holds(db, raw)
        finally:
            with mariadb.root_connection() as admin, admin.cursor() as cur:
                cur.execute("SET GLOBAL local_infile = 1")
    finally:
        plain.close()
        infile.close()
