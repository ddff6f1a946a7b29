"""Step 1: snapshot the training data from the database to S3 Parquet, slice by slice.

The snapshot freezes what this retrain run sees: every later step (drift, train, evaluate, batch
scoring) reads the same parts, so a customer updated by an ingestion in the middle of the run
cannot make the challenger and the champion see different data. Its URI, row count and content
hash go into the challenger's model card (`retrain.snapshot_uri`, `snapshot_rows`,
`snapshot_sha256`).

Layout (batch scoring reads it too; keep it):

    s3://<curated>/snapshots/<run id>/customers/           <- `uri`, the snapshot's root prefix
        split=train/part-00000.parquet                     customers the id hash trains on
        split=holdout/part-00000.parquet                   customers the id hash holds out
        split=train/part-00001.parquet ...                 one pair per slice of the table
        _manifest.json                                     written last: parts, counts, hash

Every customer is in exactly one `.parquet` object under the prefix; every part holds exactly the
contract's columns with the contract's types (`typed`'s dtypes, and pandas metadata so that
`pd.read_parquet` gives them back). The manifest is not Parquet, and its leading underscore is
the Hadoop convention for "metadata, not data", so Spark and suffix-filtering readers skip it. The
later steps read the manifest instead of listing the prefix: their roles may read objects under
`snapshots/` but not list the bucket.

The table is read in slices of `slice_rows` customers by primary-key ranges (keyset: `WHERE id >
last id of the previous slice ORDER BY id LIMIT slice_rows`), each streamed through a server-side
cursor into Arrow columns and written as its parts before the next slice is read, so memory is
bounded by one slice, not the table. Every slice is read inside ONE transaction started `WITH
CONSISTENT SNAPSHOT` at REPEATABLE READ: InnoDB serves every slice from the same read view, so a
customer updated, moved or inserted while the snapshot runs appears once, in the version it had
when the snapshot started. Key ranges rather than hash buckets (`WHERE CRC32(id) % N = i`): a
bucket predicate cannot use an index, so N buckets cost N full scans; a key range is one seek into
the clustered index, and all slices together read the table once.

The holdout is chosen by a stable hash of the customer id, not by a random draw: the same
customers are held out in every run, so a challenger is never scored on customers a previous
retrain trained the champion on. (A champion trained outside the flow, e.g. with `churnops
train`, may have seen some of them; that can only flatter the champion, which keeps the gate
conservative.) The snapshot applies it as it writes, so train and evaluate read only their split.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnops import aws, storage
from churnops.contract import Contract, Kind
from churnops.errors import ChurnOpsError, DatabaseUnavailableError
from churnops.wiring import (
    DEFAULT_SNAPSHOT_SLICE_ROWS,
    SNAPSHOT_CUSTOMERS_PREFIX,
    snapshot_run_prefix,
)

MANIFEST_FILE = "_manifest.json"
PART_SUFFIX = ".parquet"
TRAIN, HOLDOUT = "train", "holdout"
MANIFEST_FORMAT = 1
# Customers per slice. A slice lives in memory as Arrow columns (about 150 bytes a Telco customer)
# plus one fetch batch of Python tuples; 250,000 keeps the snapshot step well under 1 GB.
DEFAULT_SLICE_ROWS = DEFAULT_SNAPSHOT_SLICE_ROWS
# Rows per round trip of the server-side cursor: the only Python objects alive at once.
FETCH_ROWS = 10_000
# Row groups of 100k rows let Spark (batch scoring) split a part across cores.
ROW_GROUP_ROWS = 100_000
# Fixed 16-character key for the id hash that picks the holdout (changing it reshuffles who is
# held out).
_HOLDOUT_KEY = "churnops-holdout"
_ARROW_TYPES = {
    Kind.STRING: pa.string(),
    Kind.CATEGORY: pa.string(),
    Kind.INTEGER: pa.int64(),
    Kind.FLOAT: pa.float64(),
}


@dataclass(frozen=True)
class Snapshot:
    run_id: str
    uri: str
    rows: int
    sha256: str
    parts: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_run_id(moment: dt.datetime | None = None) -> str:
    moment = moment or dt.datetime.now(dt.UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def snapshot_uri(bucket: str, run_id: str) -> str:
    """The snapshot's root prefix (ends in "/"): every customer in one `.parquet` under it."""
    return snapshot_run_prefix(bucket, run_id) + SNAPSHOT_CUSTOMERS_PREFIX


def manifest_uri(uri: str) -> str:
    return uri + MANIFEST_FILE


# ---- the canonical form -------------------------------------------------------------------------
def typed(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The contract's columns with the contract's dtypes, sorted by id: one canonical form, so
    the content hash depends on the data only."""
    missing = [c for c in contract.column_names if c not in frame.columns]
    if missing:
        raise ChurnOpsError(
            f"table {contract.table} lacks contract column(s): {', '.join(missing)}"
        )
    out = pd.DataFrame(index=frame.index)
    for col in contract.columns:
        values = frame[col.name]
        if col.kind is Kind.INTEGER:
            out[col.name] = pd.to_numeric(values).astype("Int64")
        elif col.kind is Kind.FLOAT:
            out[col.name] = pd.to_numeric(values).astype("float64")
        else:
            out[col.name] = values.astype(object).where(values.notna(), None)
    return out.sort_values(contract.id_column, kind="mergesort").reset_index(drop=True)


@cache
def part_schema(contract: Contract) -> pa.Schema:
    """The Arrow schema of every part: what `typed` produces, as pandas writes it (string, int64,
    double, with the pandas metadata that restores `Int64` on read)."""
    examples = {Kind.INTEGER: 0, Kind.FLOAT: 0.0}
    example = typed(
        pd.DataFrame({c.name: [examples.get(c.kind, "x")] for c in contract.columns}), contract
    )
    schema = pa.Schema.from_pandas(example, preserve_index=False)
    expected = [_ARROW_TYPES[c.kind] for c in contract.columns]
    if schema.types != expected:  # pragma: no cover - a pandas/pyarrow upgrade changed mapping
        raise ChurnOpsError(f"typed() no longer maps to {expected}: {schema}")
    return schema


def _hashable(table: pa.Table, contract: Contract) -> pd.DataFrame:
    """`table` as a frame whose row hashes equal those of the `typed` frame of the same rows:
    text as Categorical (pandas hashes a Categorical exactly as its values, but hashes each
    distinct value once instead of once per row), integers as Int64, floats as float64."""
    columns: dict[str, Any] = {}
    for col in contract.columns:
        values = table.column(col.name)
        if col.kind in (Kind.STRING, Kind.CATEGORY):
            columns[col.name] = values.combine_chunks().dictionary_encode().to_pandas()
        elif col.kind is Kind.INTEGER:
            columns[col.name] = values.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        else:
            columns[col.name] = values.to_pandas()
    return pd.DataFrame(columns)


def row_hashes(frame: pd.DataFrame) -> npt.NDArray[np.uint64]:
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


class ContentHash:
    """sha256 over the rows' values (not the Parquet bytes, which vary with the writer), the same
    however the rows were sliced or ordered: one 64-bit hash per row (pandas' row hash of the
    canonical typed values), SORTED, then sha256 of those hashes and the column names. Sorting
    the row hashes makes the digest a function of the set of rows only; it costs 8 bytes a row
    until the end (80 MB at 10M customers)."""

    def __init__(self, columns: Iterable[str]) -> None:
        self.columns = list(columns)
        self._hashes: list[npt.NDArray[np.uint64]] = []
        self.rows = 0

    def add(self, hashes: npt.NDArray[np.uint64]) -> None:
        self._hashes.append(np.asarray(hashes, dtype=np.uint64))
        self.rows += len(hashes)

    def hexdigest(self) -> str:
        hashes = np.sort(np.concatenate(self._hashes or [np.empty(0, dtype=np.uint64)]))
        digest = hashlib.sha256(hashes.astype("<u8").tobytes())
        digest.update(",".join(self.columns).encode())
        return digest.hexdigest()


def content_hash(frame: pd.DataFrame) -> str:
    """The content hash of a frame in `typed` form (a whole table at once)."""
    total = ContentHash(frame.columns)
    total.add(row_hashes(frame))
    return total.hexdigest()


# ---- the holdout --------------------------------------------------------------------------------
def id_hash(ids: pd.Series[Any] | pa.Array | pa.ChunkedArray, key: str) -> npt.NDArray[np.uint64]:
    """A stable 64-bit hash per customer id under `key` (16 characters): the same id gets the
    same value in every run, part and order."""
    if isinstance(ids, pa.Array | pa.ChunkedArray):
        ids = ids.to_pandas()
    return pd.util.hash_pandas_object(ids.astype(str), index=False, hash_key=key).to_numpy(
        dtype=np.uint64
    )


def holdout_hash(ids: pd.Series[Any] | pa.Array | pa.ChunkedArray) -> npt.NDArray[np.uint64]:
    return id_hash(ids, _HOLDOUT_KEY)


def holdout_mask(
    ids: pd.Series[Any] | pa.Array | pa.ChunkedArray, share: float
) -> npt.NDArray[np.bool_]:
    """True for the customers held out for evaluation: a fixed ~`share` of ids, by id hash."""
    return (holdout_hash(ids) / np.float64(2**64)) < share


def labelled(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Rows whose target is one of the contract's labels (the table allows an unknown target)."""
    allowed = contract.column(contract.target_column).allowed or ()
    return frame[frame[contract.target_column].isin(allowed)].reset_index(drop=True)


def split(
    frame: pd.DataFrame, contract: Contract, holdout_share: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, holdout rows) among the labelled rows."""
    rows = labelled(frame, contract)
    held = holdout_mask(rows[contract.id_column], holdout_share)
    return rows[~held].reset_index(drop=True), rows[held].reset_index(drop=True)


# ---- taking it ----------------------------------------------------------------------------------
def read_slices(conn: Any, contract: Contract, slice_rows: int) -> Iterator[pa.Table]:
    """The contract's table in key order, `slice_rows` customers at a time, every slice from one
    consistent read view (see the module docstring). Each slice is fully fetched before it is
    yielded, so the caller may take its time with it (the connection is idle meanwhile).

    A database error while reading becomes DatabaseUnavailableError when the server went away
    (the state machine retries the step: on 10M customers the read takes minutes, long enough
    to meet a failover) and ChurnOpsError otherwise, as `churnops.database.connect` does."""
    import pymysql
    import pymysql.cursors

    from churnops.database import _unreachable, describe

    if slice_rows < 1:
        raise ChurnOpsError(f"slice_rows must be at least 1, got {slice_rows}")
    schema = part_schema(contract)
    key = f"`{contract.id_column}`"
    select = f"SELECT {', '.join(f'`{c}`' for c in contract.column_names)} FROM `{contract.table}`"
    first = f"{select} ORDER BY {key} LIMIT %s"
    after = f"{select} WHERE {key} > %s ORDER BY {key} LIMIT %s"
    try:
        # START TRANSACTION commits whatever the connection had open anyway; doing it first lets
        # the isolation level be set for the snapshot's transaction (it cannot change inside one).
        conn.commit()
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            # Explicit: a parameter group may default to READ COMMITTED, where every statement
            # gets a fresh read view and the slices would see different moments.
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT")
            try:
                last_id: str | None = None
                while True:
                    if last_id is None:
                        cur.execute(first, (slice_rows,))
                    else:
                        cur.execute(after, (last_id, slice_rows))
                    table = _fetch_table(cur, schema)
                    if table.num_rows == 0:
                        return
                    yield table
                    if table.num_rows < slice_rows:
                        return
                    last_id = table.column(contract.id_column)[-1].as_py()
            finally:
                # Read only, so nothing to keep: this ends the transaction and frees its read
                # view. On a connection already lost it fails too; the first error is the one.
                with contextlib.suppress(pymysql.MySQLError):
                    conn.rollback()
    except pymysql.MySQLError as err:
        kind = DatabaseUnavailableError if _unreachable(err) else ChurnOpsError
        raise kind(f"snapshot of table {contract.table} failed: {describe(err)}") from None


def _fetch_table(cur: Any, schema: pa.Schema) -> pa.Table:
    """Drain the cursor's result into Arrow columns, FETCH_ROWS tuples at a time."""
    chunks: list[list[pa.Array]] = [[] for _ in schema]
    while True:
        rows = cur.fetchmany(FETCH_ROWS)
        if not rows:
            break
        for values, field, out in zip(zip(*rows, strict=True), schema, chunks, strict=True):
            out.append(pa.array(values, type=field.type))
    if not chunks[0]:
        return schema.empty_table()
    return pa.Table.from_arrays(
        [pa.concat_arrays(out) for out in chunks], schema=schema
    ).combine_chunks()


def _label_counts(table: pa.Table, contract: Contract) -> tuple[dict[str, int], int]:
    """Rows per label of the contract's target, and rows whose target is no label."""
    allowed = list(contract.column(contract.target_column).allowed or ())
    counted = table.column(contract.target_column).value_counts().to_pylist()
    by_value = {c["values"]: int(c["counts"]) for c in counted}
    labels = {label: by_value.get(label, 0) for label in allowed}
    return labels, table.num_rows - sum(labels.values())


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=ROW_GROUP_ROWS)
    return buffer.getvalue()


def take_snapshot(
    conn: Any,
    contract: Contract,
    bucket: str,
    *,
    holdout_share: float,
    slice_rows: int = DEFAULT_SLICE_ROWS,
    run_id: str | None = None,
) -> Snapshot:
    """Write the table's slices as parts under `snapshot_uri(bucket, run_id)`, then the manifest.
    A run that fails part-way leaves parts without a manifest, under a run id nothing refers to
    (a retry gets a new one); the bucket's lifecycle rule expires them with the snapshots."""
    if not 0 < holdout_share < 1:
        raise ChurnOpsError(f"holdout share must be between 0 and 1, got {holdout_share}")
    run_id = run_id or new_run_id()
    uri = snapshot_uri(bucket, run_id)
    total = ContentHash(contract.column_names)
    parts: list[dict[str, Any]] = []
    for index, table in enumerate(read_slices(conn, contract, slice_rows)):
        total.add(row_hashes(_hashable(table, contract)))
        held = holdout_mask(table.column(contract.id_column), holdout_share)
        for name, mask in ((TRAIN, ~held), (HOLDOUT, held)):
            part = table.filter(pa.array(mask))
            if part.num_rows == 0:
                continue
            key = f"split={name}/part-{index:05d}{PART_SUFFIX}"
            put_bytes(uri + key, _parquet_bytes(part), "application/vnd.apache.parquet")
            labels, unlabelled = _label_counts(part, contract)
            parts.append(
                {
                    "key": key,
                    "split": name,
                    "rows": part.num_rows,
                    "labels": labels,
                    "unlabelled": unlabelled,
                }
            )
    if total.rows == 0:
        raise ChurnOpsError(f"table {contract.table} is empty: nothing to retrain on")
    sha256 = total.hexdigest()
    manifest = {
        "format": MANIFEST_FORMAT,
        "run_id": run_id,
        "contract": contract.name,
        "schema_hash": contract.schema_hash,
        "table": contract.table,
        "columns": contract.column_names,
        "rows": total.rows,
        "sha256": sha256,
        "holdout_share": holdout_share,
        "slice_rows": slice_rows,
        "parts": parts,
    }
    put_bytes(
        manifest_uri(uri),
        json.dumps(manifest, indent=2, sort_keys=True).encode(),
        content_type="application/json",
    )
    return Snapshot(run_id=run_id, uri=uri, rows=total.rows, sha256=sha256, parts=len(parts))


# ---- reading it ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotPart:
    uri: str
    split: str | None  # None: a single-object snapshot from before slicing, split on read
    rows: int | None
    labels: dict[str, int]


@dataclass(frozen=True)
class StoredSnapshot:
    """A snapshot as the later steps read it: part by part, never the whole table at once."""

    uri: str
    holdout_share: float
    parts: tuple[SnapshotPart, ...]
    rows: int | None = None
    schema_hash: str | None = None  # of the contract the parts were written under

    @classmethod
    def open(cls, uri: str, *, holdout_share: float) -> StoredSnapshot:
        """A snapshot root prefix (its manifest says what is in it), or one Parquet object as
        snapshots were written before slicing (`holdout_share` then splits it on read)."""
        if not uri.endswith("/"):
            return cls(uri, holdout_share, (SnapshotPart(uri, None, None, {}),))
        try:
            manifest = json.loads(get_bytes(manifest_uri(uri)))
        except ChurnOpsError:
            raise ChurnOpsError(
                f"no snapshot manifest at {manifest_uri(uri)}: the snapshot did not finish"
            ) from None
        parts = tuple(
            SnapshotPart(uri + p["key"], p["split"], int(p["rows"]), dict(p["labels"]))
            for p in manifest["parts"]
        )
        return cls(
            uri,
            float(manifest["holdout_share"]),
            parts,
            int(manifest["rows"]),
            str(manifest["schema_hash"]),
        )

    def label_counts(self, split_name: str) -> dict[str, int] | None:
        """Rows per label in a split, from the manifest; None when the parts do not say."""
        if any(p.split is None for p in self.parts):
            return None
        totals: dict[str, int] = {}
        for part in (p for p in self.parts if p.split == split_name):
            for label, count in part.labels.items():
                totals[label] = totals.get(label, 0) + count
        return totals

    def frames(
        self, contract: Contract, split_name: str | None = None, columns: Iterable[str] = ()
    ) -> Iterator[pd.DataFrame]:
        """One frame per row group of each part in turn (at most ROW_GROUP_ROWS rows): the rows
        of `split_name` (every row when None), the contract's `columns` (all when empty). A part
        is fetched when its first frame is asked for, and dropped before the next is fetched."""
        if self.schema_hash is not None and self.schema_hash != contract.schema_hash:
            raise ChurnOpsError(
                f"snapshot {self.uri} was written under another schema than contract "
                f"{contract.name}'s ({self.schema_hash[:12]} != {contract.schema_hash[:12]})"
            )
        wanted = list(columns) or contract.column_names
        unknown = [c for c in wanted if c not in contract.column_names]
        if unknown:
            raise ChurnOpsError(f"not a column of contract {contract.name}: {', '.join(unknown)}")
        for part in self.parts:
            if split_name is not None and part.split not in (None, split_name):
                continue
            needs_split = split_name is not None and part.split is None
            read = [*wanted, contract.id_column] if needs_split else wanted
            source = pq.ParquetFile(io.BytesIO(get_bytes(part.uri)))
            missing = [c for c in read if c not in source.schema_arrow.names]
            if missing:
                raise ChurnOpsError(f"{part.uri} lacks contract column(s): {', '.join(missing)}")
            for group in range(source.num_row_groups):
                table = source.read_row_group(group, columns=list(dict.fromkeys(read)))
                if needs_split:
                    held = holdout_mask(table.column(contract.id_column), self.holdout_share)
                    table = table.filter(pa.array(held if split_name == HOLDOUT else ~held))
                yield table.select(wanted).to_pandas()


def put_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    bucket, key = aws.split_s3_uri(uri)
    storage.put_bytes(bucket, key, data, content_type)


def get_bytes(uri: str) -> bytes:
    """The object at `uri`; `ObjectNotFoundError` (a ChurnOpsError) when there is none."""
    bucket, key = aws.split_s3_uri(uri)
    return storage.read_bytes(bucket, key)
