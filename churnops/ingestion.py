"""Ingest one uploaded customer file on Spark: parse and validate it in parallel splits, load it
atomically, account for every row.

The Glue job (`glue_jobs/ingest_customers.py`), the local twin and the tests all call
`ingest_object`. The driver moves no customer rows; it reads the header, plans, and commits:

1. Driver: sweep audit rows of runs that died, find the object, open its audit row in
   `ingestion_runs`, read the header (one ranged GET) and check it against the contract, cut the
   rest into byte-range splits (`churnops.csv_splits`), one per executor core or more.
2. Load (executors, one Spark task per split): parse the split and validate it with the contract
   (`Contract.validate`, the one validator); write the rejected rows with their reasons to a
   quarantine part and the clean typed rows to a curated Parquet part; write the clean rows into
   the run's staging table, with the ids of the rejected ones (`database.load_staging`: one
   transaction per split, so a retried task loads once). Only counts come back to the driver.
3. Driver: one transaction merges the staging table into the contract's table (upsert by id) and
   closes the audit row (`database.merge_staging`), after counting what the staging table holds.
   Meanwhile a second connection looks for ids the file repeats across splits; the merge
   commits only when there is none. Otherwise it is rolled back, every clean row whose id
   occurs on an earlier row of the file (as the contract rejects a repeat within a split) moves
   to quarantine, one split at a time (`_quarantine_repeats`), and the merge runs again.

A file-level problem (not a CSV, not UTF-8, empty, header only, missing, unexpected or duplicate
columns, a quoted line break) moves the object to `failed/` with `<name>.error.json` beside it,
marks the run failed and raises `FileRejected`; nothing reaches the database. Any other failure
after the audit row is opened marks it failed (unless the database says the run succeeded: a
commit whose acknowledgement was lost) and raises `IngestionFailed`; the file stays for a retry.
A run killed outright cannot close its row: the next run's sweep does.

Outputs, per file (names depend only on the object: its key, ETag and upload date, so a retry
overwrites its own earlier outputs):

    curated/<table>/ingest_date=<date>/<name>-<etag>/part-00000.parquet ...
    quarantine/<table>/ingest_date=<date>/<name>-<etag>/part-00000.csv ...   (rejected rows)

A quarantine part has the header's columns as read, `reject_reason`, and `rejected_line`: the
whole line, for a row that could not be cut into the header's columns.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

from churnops import database, gluejob, storage
from churnops.contract import REJECT_REASON, Contract, get_contract
from churnops.csv_splits import CsvLayout, Split, parse_lines, plan_splits, read_layout, read_split
from churnops.errors import ChurnOpsError
from churnops.wiring import (
    CURATED_PREFIX,
    FAILED_PREFIX,
    INCOMING_PREFIX,
    QUARANTINE_PREFIX,
    IngestArgs,
    failed_key,
)

log = logging.getLogger(__name__)

REJECTED_LINE = "rejected_line"
# Returned by each load task: its counts, or the file-level problem its split showed.
_LOAD_SCHEMA = "split long, rows_read long, rows_loaded long, rows_quarantined long, problem string"


class FileRejected(ChurnOpsError):
    """The file as a whole cannot be ingested; it was moved to failed/ with an error file."""


class IngestionFailed(ChurnOpsError):
    """The run failed after the file was read (database, S3); the file stays for a retry."""


@dataclass(frozen=True)
class IngestRequest:
    bucket: str
    key: str
    curated_bucket: str
    db_secret_arn: str
    contract: Contract
    db_name: str = ""  # the deployment's database; "" only where the secret names one
    staging_method: str = "auto"  # "auto", "load_data" or "insert", see database.load_staging
    split_bytes: int = 0  # 0: csv_splits.DEFAULT_SPLIT_BYTES
    # A run still `running` after this long died (the stack passes the Glue job's timeout).
    stale_run_minutes: int = 2880
    # The raw bucket's upload prefix: a rejected file keeps its path below it under failed/.
    incoming_prefix: str = INCOMING_PREFIX

    @classmethod
    def from_args(cls, args: IngestArgs) -> IngestRequest:
        """The request of the Glue job's arguments (glue_jobs/ingest_customers.py)."""
        return cls(
            bucket=args.source_bucket,
            key=args.source_key,
            curated_bucket=args.curated_bucket,
            db_secret_arn=args.db_secret_arn,
            db_name=args.db_name,
            contract=get_contract(args.contract_name),
            staging_method=args.staging_method,
            split_bytes=args.split_bytes,
            stale_run_minutes=args.stale_run_minutes,
            incoming_prefix=args.incoming_prefix,
        )


@dataclass
class IngestResult:
    run_id: str
    status: str
    source: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_affected: int = 0  # the merge's count: 1 per insert, 2 per update, 0 if unchanged
    curated_uri: str | None = None
    quarantine_uri: str | None = None
    error: str | None = None
    splits: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def output_stem(key: str, etag: str | None) -> str:
    name = PurePosixPath(key).stem or "upload"
    tag = (etag or "").strip('"').split("-")[0][:12] or "noetag"
    return f"{name}-{tag}"


@dataclass(frozen=True)
class _Plan:
    """What every load task needs: small, shipped to the executors once (a broadcast)."""

    layout: CsvLayout
    splits: tuple[Split, ...]
    contract_name: str
    db_secret_arn: str
    db_name: str
    staging_method: str
    run_id: str
    curated_bucket: str
    curated_prefix: str
    quarantine_prefix: str


def ingest_object(
    request: IngestRequest,
    spark: Any = None,
    *,
    before_publish: Callable[[Any], None] | None = None,
) -> IngestResult:
    """Ingest s3://bucket/key; see the module docstring. Raises FileRejected or IngestionFailed
    (both ChurnOpsError) on failure, after recording it."""
    contract = request.contract
    run_id = new_run_id()
    source = storage.s3_uri(request.bucket, request.key)
    conn = database.connect(
        request.db_secret_arn, database=request.db_name or None, local_infile=True
    )
    try:
        database.ensure_schema(conn, contract)
        database.sweep_dead_runs(conn, stale_after_minutes=request.stale_run_minutes)
        key, meta = _locate(request.bucket, request.key)
        source = storage.s3_uri(request.bucket, key)
        etag = str(meta["ETag"]).strip('"') if meta else None
        database.start_run(
            conn, run_id=run_id, contract=contract.name, bucket=request.bucket, key=key, etag=etag
        )
        try:
            if meta is None:
                raise IngestionFailed(
                    f"{source}: no such object (moved or deleted before ingestion)"
                )
            return _ingest(request, conn, run_id, key, meta, spark, before_publish)
        except FileRejected:
            raise
        except Exception as err:
            message = (
                err
                if isinstance(err, IngestionFailed)
                else f"{source}: ingestion failed: {_describe(err)}"
            )
            settled = _record_failure(request, run_id, str(message))
            if settled is not None:
                return settled
            raise IngestionFailed(str(message)) from None
    finally:
        _close_quietly(conn)


def _ingest(
    request: IngestRequest,
    conn: Any,
    run_id: str,
    key: str,
    meta: dict[str, Any],
    spark: Any,
    before_publish: Callable[[Any], None] | None,
) -> IngestResult:
    contract = request.contract
    timer = _Timer()
    etag = str(meta["ETag"]).strip('"')
    try:
        with timer("header"):
            layout = read_layout(request.bucket, key, int(meta["ContentLength"]))
        problems = contract.check_header(layout.header)
        if problems:
            raise ChurnOpsError(f"{layout.source}: {problems.describe()}")
    except ChurnOpsError as err:
        _reject_file(request, conn, key, etag, run_id, str(err))
    spark = gluejob.spark_session(spark)
    splits = plan_splits(layout, request.split_bytes, spark.sparkContext.defaultParallelism)
    ingest_date = meta["LastModified"].astimezone(UTC).strftime("%Y-%m-%d")
    outputs = f"{contract.table}/ingest_date={ingest_date}/{output_stem(key, etag)}/"
    plan = _Plan(
        layout=layout,
        splits=tuple(splits),
        contract_name=contract.name,
        db_secret_arn=request.db_secret_arn,
        db_name=request.db_name,
        staging_method=request.staging_method,
        run_id=run_id,
        curated_bucket=request.curated_bucket,
        curated_prefix=CURATED_PREFIX + outputs,
        quarantine_prefix=QUARANTINE_PREFIX + outputs,
    )
    database.create_staging(conn, contract, run_id)
    with timer("load"):
        loaded = _load(spark, plan)
    rows = sum(int(r["rows_read"]) for r in loaded)
    problem = next((str(r["problem"]) for r in loaded if r["problem"]), None)
    if problem is None and rows == 0:
        problem = f"{layout.source}: the file has a header but no rows"
    if problem is not None:
        database.drop_staging(conn, run_id)
        _discard_outputs(plan)
        _reject_file(request, conn, key, etag, run_id, problem)
    rows_loaded = sum(int(r["rows_loaded"]) for r in loaded)
    rows_quarantined = sum(int(r["rows_quarantined"]) for r in loaded)
    curated_uri = storage.s3_uri(request.curated_bucket, plan.curated_prefix)

    def quarantine_uri(quarantined: int) -> str | None:
        return (
            storage.s3_uri(request.curated_bucket, plan.quarantine_prefix) if quarantined else None
        )

    def merge(repeats: int, before_commit: Callable[[], None] | None) -> database.LoadOutcome:
        return database.merge_staging(
            conn,
            contract,
            run_id=run_id,
            rows_loaded=rows_loaded - repeats,
            rows_quarantined=rows_quarantined + repeats,
            curated_uri=curated_uri,
            quarantine_uri=quarantine_uri(rows_quarantined + repeats),
            before_publish=before_publish,
            before_commit=before_commit,
        )

    # Ids repeated across splits are rare, and looking for them costs a pass over the staging
    # table: it runs on a connection of its own while the merge runs, and the merge commits only
    # when none was found. When some were, the merge is rolled back, the repeats move to
    # quarantine, and the merge runs again.
    with timer("merge"), ThreadPoolExecutor(1, thread_name_prefix="repeats") as pool:
        looking = pool.submit(_repeated_rows, request, contract, run_id)

        def no_repeats() -> None:
            found = looking.result()
            if found:
                raise _RepeatsFound(found)

        try:
            outcome = merge(0, no_repeats)
        except _RepeatsFound as repeats:
            moved = _quarantine_repeats(conn, plan, contract, repeats.offsets)
            outcome = merge(moved, None)
    result = IngestResult(
        run_id=run_id,
        status=database.SUCCEEDED,
        source=layout.source,
        rows_read=outcome.rows_read,
        rows_loaded=outcome.rows_loaded,
        rows_quarantined=outcome.rows_quarantined,
        rows_affected=outcome.rows_affected,
        curated_uri=curated_uri,
        quarantine_uri=quarantine_uri(outcome.rows_quarantined),
        splits=len(splits),
        seconds=timer.seconds,
    )
    log.info(
        "ingested %s in %d splits: %d read, %d loaded, %d quarantined",
        layout.source,
        len(splits),
        result.rows_read,
        result.rows_loaded,
        result.rows_quarantined,
    )
    return result


# ---- 2. load -------------------------------------------------------------------------------------
def load_split(plan: _Plan, split: Split) -> dict[str, Any]:
    """Parse, validate, write the parts of, and stage one split; its counts, or the file-level
    problem it found (returned, not raised: the driver rejects the file; Spark must not retry)."""
    import pandas as pd

    contract = get_contract(plan.contract_name)
    id_column = contract.id_column
    try:
        offset, chunk = read_split(plan.layout, split)
        parsed = parse_lines(
            chunk, offset, plan.layout.header, plan.layout.source, distinct_columns=[id_column]
        )
    except ChurnOpsError as err:
        return {
            "split": split.index,
            "rows_read": 0,
            "rows_loaded": 0,
            "rows_quarantined": 0,
            "problem": str(err),
        }
    del chunk
    raw = parsed.raw
    checked = contract.validate(raw)
    assert checked.accepted is not None
    clean = checked.clean
    clean[database.SOURCE_OFFSET] = parsed.offsets[checked.accepted]
    # The ids of rejected rows are staged too: a later row repeating one is a repeat. An id
    # blank or longer than the column cannot be any clean row's.
    rejected_ids = pd.DataFrame(
        {
            id_column: raw[id_column].str.strip().to_numpy()[~checked.accepted],
            database.SOURCE_OFFSET: parsed.offsets[~checked.accepted],
        }
    )
    max_id = contract.column(id_column).max_length
    rejected_ids = rejected_ids[rejected_ids[id_column].str.len().between(1, max_id)]
    rejected = checked.rejected
    if parsed.malformed_offsets:
        malformed = pd.DataFrame(
            {REJECT_REASON: parsed.malformed_reasons, REJECTED_LINE: parsed.malformed_lines}
        )
        rejected = pd.concat([rejected, malformed], ignore_index=True)
    part = f"part-{split.index:05d}"

    def put_parts() -> None:
        if len(rejected):
            _put_quarantine(plan, f"{plan.quarantine_prefix}{part}.csv", rejected)
        if len(clean):
            import pyarrow as pa

            curated = clean.drop(columns=[database.SOURCE_OFFSET])
            _put_curated(
                plan,
                f"{plan.curated_prefix}{part}.parquet",
                pa.Table.from_pandas(curated, preserve_index=False),
            )

    # The parts are written while the database takes the rows (the server works in its own
    # process, and both waits release the GIL).
    with ThreadPoolExecutor(1, thread_name_prefix="parts") as pool:
        parts = pool.submit(put_parts)
        conn = database.connect(
            plan.db_secret_arn, database=plan.db_name or None, local_infile=True
        )
        try:
            loaded = database.load_staging(
                conn,
                contract,
                database.staging_table(plan.run_id),
                clean,
                rejected_ids=rejected_ids,
                span=(split.start, split.end),
                method=plan.staging_method,
            )
        finally:
            _close_quietly(conn)
        parts.result()
    return {
        "split": split.index,
        "rows_read": len(raw) + len(parsed.malformed_offsets),
        "rows_loaded": loaded,
        "rows_quarantined": len(rejected),
        "problem": None,
    }


def _put_quarantine(plan: _Plan, key: str, rejected: Any) -> None:
    columns = [*plan.layout.header, REJECT_REASON, REJECTED_LINE]
    body = rejected.reindex(columns=columns).to_csv(index=False).encode("utf-8")
    storage.put_bytes(plan.curated_bucket, key, body, "text/csv")


def _put_curated(plan: _Plan, key: str, table: Any) -> None:
    """A curated part: the clean rows of one split as a Parquet object (a pyarrow Table)."""
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.put_bytes(plan.curated_bucket, key, sink.getvalue(), "application/vnd.apache.parquet")


def _load(spark: Any, plan: _Plan) -> list[dict[str, Any]]:
    """Run every split's task; their counts, in split order."""
    import pandas as pd

    shared = spark.sparkContext.broadcast(plan)

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        plan_ = shared.value
        for batch in batches:
            for index in batch["id"]:
                yield pd.DataFrame([load_split(plan_, plan_.splits[int(index)])])

    rows = _tasks(spark, len(plan.splits)).mapInPandas(run, _LOAD_SCHEMA).collect()
    shared.unpersist()
    return sorted((row.asDict() for row in rows), key=lambda r: int(r["split"]))


def _tasks(spark: Any, count: int) -> Any:
    """One row per task in its own partition: the tasks spread over every executor core."""
    return spark.range(0, count, 1, numPartitions=max(1, count))


# ---- 3. repeats across splits (driver) -------------------------------------------------------------
class _RepeatsFound(Exception):
    def __init__(self, offsets: list[int]) -> None:
        super().__init__(f"{len(offsets)} rows repeat an earlier row's id")
        self.offsets = offsets


def _repeated_rows(request: IngestRequest, contract: Contract, run_id: str) -> list[int]:
    conn = database.connect(request.db_secret_arn, database=request.db_name or None)
    try:
        return database.repeated_rows(conn, contract, run_id)
    finally:
        _close_quietly(conn)


def _quarantine_repeats(conn: Any, plan: _Plan, contract: Contract, offsets: list[int]) -> int:
    """Move every staged row whose id occurs on an earlier row of the file to quarantine, as the
    contract does for a repeat within one split: its line, read again from the object, goes to
    a quarantine part of its split with the reason; it leaves that split's curated part and the
    staging table. One split at a time, so the driver holds at most one split. The count."""
    import bisect

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    starts = [split.start for split in plan.splits]
    by_split: dict[int, list[int]] = {}
    for offset in offsets:
        by_split.setdefault(bisect.bisect_right(starts, offset) - 1, []).append(offset)
    id_column = contract.id_column
    for index, repeated in sorted(by_split.items()):
        split = plan.splits[index]
        start, chunk = read_split(plan.layout, split)
        parsed = parse_lines(
            chunk, start, plan.layout.header, plan.layout.source, distinct_columns=[id_column]
        )
        rows = parsed.raw[np.isin(parsed.offsets, np.asarray(repeated, dtype=np.int64))].copy()
        rows[REJECT_REASON] = contract.repeated_id_reason
        _put_quarantine(plan, f"{plan.quarantine_prefix}part-{index:05d}-repeats.csv", rows)
        # A split's curated part holds each id once (the contract rejects repeats within it).
        key = f"{plan.curated_prefix}part-{index:05d}.parquet"
        curated = pq.read_table(io.BytesIO(storage.read_bytes(plan.curated_bucket, key)))
        gone = pa.array(rows[id_column].str.strip().tolist(), type=pa.string())
        kept = curated.filter(pc.invert(pc.is_in(curated[id_column], value_set=gone)))
        if kept.num_rows:
            _put_curated(plan, key, kept)
        else:
            storage.delete_objects(plan.curated_bucket, [key])
    database.unstage(conn, plan.run_id, offsets)
    log.info("%d rows repeat an id of an earlier row in another split: quarantined", len(offsets))
    return len(offsets)


def _discard_outputs(plan: _Plan) -> None:
    """Remove the parts the tasks wrote for a file that is then rejected as a whole."""
    for prefix in (plan.curated_prefix, plan.quarantine_prefix):
        keys = [str(o["Key"]) for o in storage.list_objects(plan.curated_bucket, prefix)]
        storage.delete_objects(plan.curated_bucket, keys)


# ---- the driver's helpers ------------------------------------------------------------------------
def _locate(bucket: str, key: str) -> tuple[str, dict[str, Any] | None]:
    """Find the object. S3 event notifications URL-encode keys ('my file.csv' arrives as
    'my+file.csv'); try the key as given first, then decoded."""
    meta = storage.head(bucket, key)
    if meta is None:
        decoded = unquote_plus(key)
        if decoded != key:
            decoded_meta = storage.head(bucket, decoded)
            if decoded_meta is not None:
                return decoded, decoded_meta
    return key, meta


def _reject_file(
    request: IngestRequest, conn: Any, key: str, etag: str | None, run_id: str, reason: str
) -> None:
    """Close the run as failed, move the object to failed/ with the reason beside it (error file
    first: if the move is interrupted, the file is still in incoming/ and a retry does it
    again), and raise FileRejected."""
    database.fail_run(conn, run_id, reason)
    target = failed_key(key, request.incoming_prefix)
    error = {
        "source": storage.s3_uri(request.bucket, key),
        "moved_to": storage.s3_uri(request.bucket, target),
        "etag": etag,
        "contract": request.contract.name,
        "run_id": run_id,
        "error": reason,
        "failed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        storage.put_bytes(
            request.bucket,
            target + ".error.json",
            json.dumps(error, indent=2).encode(),
            "application/json",
        )
        storage.move(request.bucket, key, target)
    except Exception as move_err:
        raise IngestionFailed(
            f"{reason}; and moving the file to {FAILED_PREFIX} failed: {_describe(move_err)}"
        ) from None
    raise FileRejected(reason)


def _record_failure(request: IngestRequest, run_id: str, message: str) -> IngestResult | None:
    """Mark the run failed on a fresh connection (the load's own may be the thing that broke)
    and drop its staging table. When the database says the run succeeded (the merge committed
    but its acknowledgement was lost), that is the outcome: returned, nothing overwritten."""
    try:
        conn = database.connect(request.db_secret_arn, database=request.db_name or None)
    except ChurnOpsError as err:
        log.error("could not mark run %s failed (the next run's sweep will): %s", run_id, err)
        return None
    try:
        marked = database.fail_run(conn, run_id, message)
        database.drop_staging(conn, run_id)
        if not marked:
            row = database.run_status(conn, run_id)
            if row and row["status"] == database.SUCCEEDED:
                log.warning("run %s: %s; but its commit landed: succeeded", run_id, message)
                return IngestResult(
                    run_id=run_id,
                    status=database.SUCCEEDED,
                    source=storage.s3_uri(str(row["bucket"]), str(row["object_key"])),
                    rows_read=int(row["rows_read"]),
                    rows_loaded=int(row["rows_loaded"]),
                    rows_quarantined=int(row["rows_quarantined"]),
                    curated_uri=row["curated_uri"],
                    quarantine_uri=row["quarantine_uri"],
                )
    except Exception as err:
        log.error("could not mark run %s failed: %s", run_id, _describe(err))
    finally:
        _close_quietly(conn)
    return None


def _describe(err: BaseException) -> str:
    if isinstance(err, ChurnOpsError):
        return str(err)
    code = (
        getattr(err, "response", {}).get("Error", {}).get("Code")
        if hasattr(err, "response")
        else None
    )
    if code:  # botocore ClientError: the service's error code and message
        return f"{code}: {err}"
    return database.describe(err)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception as err:  # already closed or the server went away
        log.debug("closing the database connection: %s", _describe(err))


class _Timer:
    """Wall-clock seconds per stage, reported in the result (the benchmark prints them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str) -> _Stage:
        return _Stage(self, stage)


class _Stage:
    def __init__(self, timer: _Timer, stage: str) -> None:
        self.timer, self.stage = timer, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        self.timer.seconds[self.stage] = round(self.timer.seconds.get(self.stage, 0.0) + elapsed, 3)
