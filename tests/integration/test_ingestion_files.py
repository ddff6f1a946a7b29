"""Awkward files through the ingest job, checked against the file itself: what the database holds
for the file's customers, and every data line either loaded or in quarantine with its reason,
whatever the split size (one split, or many small ones so that cuts fall mid-line and repeated
ids land in different splits)."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from churnops import database
from churnops.contract import REJECT_REASON, TELCO
from churnops.ingestion import REJECTED_LINE, FileRejected

from .test_ingestion_job import (
    JOB,
    assert_table_holds,
    audit,
    csv_bytes,
    curated_table,
    glue_argv,
    quarantined_rows,
    s3_bytes,
    s3_keys,
    spoil,
    synthetic_raw,
    table,
    upload,
)

pytestmark = pytest.mark.glue_job
ID = TELCO.id_column
SPLITS = ["0", "2048", "7777"]  # one split; many, cut mid-line


def data_lines(data: bytes) -> int:
    return len([line for line in data.splitlines()[1:] if line.strip()])


def assert_every_line_accounted(db, data: bytes, result: dict) -> None:
    """Rows the table holds plus rows in the quarantine objects = the file's data lines, counted
    from the database and S3, not from the job's report."""
    held = len(table(db))
    kept = len(quarantined_rows(result["quarantine_uri"])) if result["quarantine_uri"] else 0
    assert held + kept == data_lines(data)


@pytest.mark.parametrize("split_bytes", SPLITS)
def test_a_trailing_delimiter_on_every_row_is_read_as_the_same_row(
    lake, db, db_secret, split_bytes
):
    # GIVEN a spreadsheet export: every data row ends with a delimiter the header does not have
    raw = synthetic_raw(40, seed=101)
    text = raw.to_csv(index=False, lineterminator="\r\n")
    header, *rows = text.splitlines()
    data = ("\r\n".join([header, *(row + "," for row in rows)]) + "\r\n").encode()
    key = upload(lake, "export.csv", data)

    # WHEN it is ingested
    result = JOB.main(glue_argv(lake, key, db_secret, split_bytes=split_bytes))

    # THEN every row loads with its own values in its own columns; nothing is quarantined
    assert result["status"] == "succeeded" and result["quarantine_uri"] is None
    assert_table_holds(db, raw)
    assert_every_line_accounted(db, data, result)


@pytest.mark.parametrize("split_bytes", SPLITS)
def test_rows_with_the_wrong_field_count_are_quarantined_and_the_rest_loads(
    lake, db, db_secret, split_bytes
):
    # GIVEN a file where one row has a surplus field and one lacks a field
    raw = synthetic_raw(200, seed=102)
    lines = csv_bytes(raw).decode().splitlines()
    surplus, short = lines[18] + ",surplus", lines[51].rsplit(",", 1)[0]
    lines[18], lines[51] = surplus, short
    data = ("\n".join(lines) + "\n").encode()
    key = upload(lake, "ragged.csv", data)

    # WHEN it is ingested
    result = JOB.main(glue_argv(lake, key, db_secret, split_bytes=split_bytes))

    # THEN those two rows are quarantined with their reason and their whole line; no other row
    # is touched, shifted or lost
    assert result["status"] == "succeeded"
    kept = quarantined_rows(result["quarantine_uri"]).sort_values(REJECTED_LINE)
    width = len(TELCO.column_names)
    assert kept[REJECTED_LINE].tolist() == sorted([surplus, short])
    assert sorted(kept[REJECT_REASON]) == sorted(
        [
            f"the row has {width + 1} fields, the header has {width}",
            f"the row has {width - 1} fields, the header has {width}",
        ]
    )
    assert_table_holds(db, raw.drop(index=[17, 50]))
    assert_every_line_accounted(db, data, result)


@pytest.mark.parametrize("split_bytes", SPLITS)
def test_the_split_size_changes_nothing_that_loads(lake, db, db_secret, split_bytes):
    # GIVEN a file with rows that break the contract, an id repeated far from its first row,
    # and quoted fields holding delimiters and quotes
    raw = synthetic_raw(1500, seed=103)
    raw.loc[5, ID] = 'Q,"5"'
    spoiled, bad, good = spoil(raw, 0.03, seed=4)
    repeat = spoiled.iloc[[700]].copy()  # the same customer again, 800 rows later
    # a valid row whose id was first seen on a row the contract rejected: still a repeat
    after_bad = good.iloc[[3]].copy()
    after_bad[ID] = bad[bad["Contract"] == "Weekly"][ID].iloc[0]
    spoiled = pd.concat([spoiled, repeat, after_bad], ignore_index=True)
    bad = pd.concat([bad, repeat, after_bad], ignore_index=True)
    data = csv_bytes(spoiled)
    assert b'"Q,""5"""' in data
    key = upload(lake, "mixed.csv", data)

    # WHEN it is ingested
    result = JOB.main(glue_argv(lake, key, db_secret, split_bytes=split_bytes))

    # THEN the table holds exactly the good rows (each repeated id's first row), and the
    # quarantine exactly the bad ones
    assert_table_holds(db, good)
    kept = quarantined_rows(result["quarantine_uri"])
    assert sorted(kept[ID]) == sorted(bad[ID])
    assert_every_line_accounted(db, data, result)
    data_bytes = len(data) - data.index(b"\n") - 1  # the splits cut the lines after the header
    assert result["splits"] == (1 if split_bytes == "0" else -(-data_bytes // int(split_bytes)))
    # AND the curated parts hold exactly what the table holds; with many splits, the repeats
    # were found across them
    curated = curated_table(result["curated_uri"]).to_pandas()
    assert sorted(curated[ID]) == sorted(table(db)[ID])
    repeats = [k for k in s3_keys(lake["curated"], "quarantine/") if k.endswith("-repeats.csv")]
    assert bool(repeats) == (split_bytes != "0")


def test_a_quoted_line_break_rejects_the_file_saying_so(lake, db, db_secret):
    # GIVEN a file whose one field holds a line break inside quotes
    raw = synthetic_raw(30, seed=104)
    raw.loc[12, "PaymentMethod"] = "Mailed\ncheck"
    data = csv_bytes(raw)
    key = upload(lake, "multiline.csv", data)

    # WHEN it is ingested, THEN the file is rejected saying why and where; nothing loads
    with pytest.raises(FileRejected, match="quoted field holds a line break"):
        JOB.main(glue_argv(lake, key, db_secret, split_bytes="1024"))
    error = json.loads(s3_bytes(f"s3://{lake['raw']}/failed/multiline.csv.error.json"))
    assert "one record per line" in error["error"]
    assert len(table(db)) == 0
    (run,) = audit(db, key)
    assert run["status"] == "failed"


def test_the_curated_parts_hold_the_loaded_rows_typed(lake, db, db_secret):
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = synthetic_raw(900, seed=105)
    key = upload(lake, "typed.csv", csv_bytes(raw))
    result = JOB.main(glue_argv(lake, key, db_secret, split_bytes="30000"))
    assert result["splits"] > 1
    parts = [
        pq.read_table(io.BytesIO(s3_bytes(f"s3://{lake['curated']}/{k}")))
        for k in s3_keys(lake["curated"], "curated/")
    ]
    assert len(parts) == result["splits"]
    curated = pa.concat_tables(parts)
    assert curated.schema.field("tenure").type == pa.int64()
    assert database.SOURCE_OFFSET not in curated.schema.names
    assert sorted(curated.column(ID).to_pylist()) == sorted(table(db)[ID])
