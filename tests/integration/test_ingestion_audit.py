"""Every way an ingestion run ends closes its audit row, and the database's own answers decide:
a failing task, a run that died (swept), a lost commit acknowledgement, warnings from a bulk
load, and tables created by an earlier release (migrated, or refused saying what to do)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from churnops import database
from churnops.contract import TELCO
from churnops.errors import ChurnOpsError
from churnops.ingestion import IngestionFailed

from .test_ingestion_job import (
    JOB,
    assert_table_holds,
    audit,
    csv_bytes,
    glue_argv,
    synthetic_raw,
    table,
    upload,
)

pytestmark = pytest.mark.glue_job
ID = TELCO.id_column


@pytest.fixture
def loader(db, db_secret):
    """A connection as the load tasks open theirs (local infile allowed)."""
    conn = database.connect(db_secret, local_infile=True)
    yield conn
    conn.close()


def staging_tables(conn) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'ingest\\_staging\\_%'")
        found = [row[0] for row in cur.fetchall()]
    conn.commit()
    return found


def test_a_task_that_fails_closes_the_run_and_leaves_the_table(lake, db, db_secret):
    # GIVEN customers in the table, and a run whose tasks cannot write their curated parts
    raw = synthetic_raw(80, seed=201)
    JOB.main(glue_argv(lake, upload(lake, "first.csv", csv_bytes(raw)), db_secret))
    before = table(db)
    key = upload(lake, "second.csv", csv_bytes(synthetic_raw(120, seed=202)))
    argv = glue_argv(lake, key, db_secret, split_bytes="4096")
    argv[argv.index("--curated_bucket") + 1] = "no-such-bucket-anywhere"

    # WHEN the job runs, THEN it fails naming what S3 said
    with pytest.raises(IngestionFailed, match="NoSuchBucket"):
        JOB.main(argv)

    # AND the audit row is closed as failed with the reason, the table is as it was, the file
    # is still in incoming/ for a retry, and no staging table is left
    (run,) = audit(db, key)
    assert run["status"] == "failed" and "NoSuchBucket" in run["error"]
    pd.testing.assert_frame_equal(table(db), before)
    assert staging_tables(db) == []


def test_a_run_that_died_is_closed_by_the_next_run(lake, db, db_secret):
    # GIVEN a run that was killed two hours ago: its audit row says running, its staging table
    # is still there
    database.ensure_schema(db, TELCO)
    database.start_run(db, run_id="dead-run", contract="telco", bucket="b", key="k", etag=None)
    with db.cursor() as cur:
        cur.execute(
            f"UPDATE `{database.AUDIT_TABLE}` SET started_at = %s WHERE run_id = 'dead-run'",
            (database.now() - dt.timedelta(hours=2),),
        )
    db.commit()
    database.create_staging(db, TELCO, "dead-run")

    # WHEN the next file is ingested by a job whose runs last at most an hour
    raw = synthetic_raw(30, seed=203)
    key = upload(lake, "next.csv", csv_bytes(raw))
    result = JOB.main(glue_argv(lake, key, db_secret, stale_run_minutes="60"))

    # THEN the dead run is closed as failed saying what happened, its staging table is gone,
    # and the new run succeeded
    dead = database.run_status(db, "dead-run")
    assert dead["status"] == "failed"
    assert "stopped without closing its audit row" in dead["error"]
    assert result["status"] == "succeeded"
    assert staging_tables(db) == []


def test_a_recent_running_run_is_left_alone(lake, db, db_secret):
    database.ensure_schema(db, TELCO)
    database.start_run(db, run_id="live-run", contract="telco", bucket="b", key="k", etag=None)
    database.create_staging(db, TELCO, "live-run")
    key = upload(lake, "meanwhile.csv", csv_bytes(synthetic_raw(10, seed=204)))
    JOB.main(glue_argv(lake, key, db_secret, stale_run_minutes="60"))
    assert database.run_status(db, "live-run")["status"] == "running"
    assert staging_tables(db) == [database.staging_table("live-run")]
    database.fail_run(db, "live-run", "test over")
    database.drop_staging(db, "live-run")


def test_a_run_the_database_says_succeeded_is_never_marked_failed(db):
    # GIVEN a run whose merge committed (its acknowledgement may have been lost on the way)
    database.ensure_schema(db, TELCO)
    clean = TELCO.validate(synthetic_raw(5, seed=205)).clean
    database.start_run(db, run_id="landed", contract="telco", bucket="b", key="k", etag=None)
    staging = database.create_staging(db, TELCO, "landed")
    database.load_staging(
        db, TELCO, staging, clean.assign(**{database.SOURCE_OFFSET: range(5)}), span=(0, 5)
    )
    database.merge_staging(db, TELCO, run_id="landed", rows_loaded=5, rows_quarantined=0)

    # WHEN the job, unsure, tries to mark it failed
    marked = database.fail_run(db, "landed", "the commit's acknowledgement was lost")

    # THEN the database's answer stands: succeeded, with its counts
    assert marked is False
    row = database.run_status(db, "landed")
    assert (row["status"], row["rows_loaded"], row["error"]) == ("succeeded", 5, None)


@pytest.mark.parametrize("method", ["load_data", "insert"])
def test_a_split_loaded_twice_is_staged_once(loader, method):
    db = loader
    database.ensure_schema(db, TELCO)
    clean = TELCO.validate(synthetic_raw(50, seed=206)).clean
    rows = clean.assign(**{database.SOURCE_OFFSET: range(100, 150)})
    staging = database.create_staging(db, TELCO, f"twice-{method}")
    other = rows.iloc[:1].assign(**{database.SOURCE_OFFSET: [999], ID: ["OTHER-SPLIT"]})
    database.load_staging(db, TELCO, staging, other, span=(999, 1000), method=method)
    for _attempt in range(2):  # Spark retries a task whose first attempt had written its rows
        written = database.load_staging(db, TELCO, staging, rows, span=(100, 150), method=method)
        assert written == 50
    with db.cursor() as cur:
        cur.execute(f"SELECT COUNT(*), COUNT(DISTINCT `{ID}`) FROM `{staging}`")
        assert cur.fetchone() == (51, 51)  # the other split's row is untouched
    db.commit()
    database.drop_staging(db, f"twice-{method}")


def test_a_bulk_load_that_warns_fails_instead_of_loading_less(loader):
    db = loader
    # GIVEN rows the table cannot hold as they are (an id longer than its column): LOAD DATA
    # LOCAL truncates with a warning instead of failing, even in strict mode
    database.ensure_schema(db, TELCO)
    clean = TELCO.validate(synthetic_raw(3, seed=207)).clean
    clean.loc[1, ID] = "X" * 200
    staging = database.create_staging(db, TELCO, "warned")

    # WHEN they are loaded, THEN the load fails naming the warning, and nothing is staged
    with pytest.raises(ChurnOpsError, match=r"the server warned: .*\((1265|1406)\)"):
        database.load_staging(
            db,
            TELCO,
            staging,
            clean.assign(**{database.SOURCE_OFFSET: range(3)}),
            span=(0, 3),
            method="load_data",
        )
    with db.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{staging}`")
        assert cur.fetchone() == (0,)
    db.commit()
    database.drop_staging(db, "warned")


def test_an_older_table_with_case_insensitive_ids_is_migrated(lake, db, db_secret):
    # GIVEN a customers table created before ids compared exactly (the server's default,
    # case-insensitive collation), holding one customer
    old_ddl = TELCO.ddl().replace("COLLATE utf8mb4_bin", "COLLATE utf8mb4_general_ci")
    with db.cursor() as cur:
        cur.execute(old_ddl)
    db.commit()
    raw = synthetic_raw(2, seed=208)
    raw[ID] = ["7590-vhveg", "7590-VHVEG"]
    key = upload(lake, "case.csv", csv_bytes(raw))

    # WHEN a file with ids that differ only by case is ingested
    result = JOB.main(glue_argv(lake, key, db_secret))

    # THEN the table was migrated first, and both customers are kept
    assert result["rows_loaded"] == 2
    assert_table_holds(db, raw)
    with db.cursor() as cur:
        cur.execute(
            "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA ="
            " DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = %s",
            (TELCO.table, ID),
        )
        assert cur.fetchone() == (database.ID_COLLATION,)
    db.commit()


def test_an_older_table_missing_a_column_is_refused_saying_what_to_do(lake, db, db_secret):
    old_ddl = TELCO.ddl().replace("  `PaperlessBilling`", "  `Paperless`")
    with db.cursor() as cur:
        cur.execute(old_ddl)
    db.commit()
    key = upload(lake, "any.csv", csv_bytes(synthetic_raw(3, seed=209)))
    with pytest.raises(ChurnOpsError, match="lacks column\\(s\\) PaperlessBilling: add them"):
        JOB.main(glue_argv(lake, key, db_secret))
