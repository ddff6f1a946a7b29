"""Step 1: snapshot the training data from the database to S3 Parquet.

The snapshot freezes what this retrain run sees: every later step (drift, train, evaluate, batch
scoring) reads the same object, so a customer updated by an ingestion in the middle of the run
cannot make the challenger and the champion see different data. Its URI, row count and content
hash go into the challenger's model card (`retrain.snapshot_uri`, `snapshot_rows`,
`snapshot_sha256`).

The holdout is chosen by a stable hash of the customer id, not by a random draw: the same
customers are held out in every run, so a challenger is never scored on customers a previous
retrain trained the champion on. (A champion trained outside the flow, e.g. with `churnops
train`, may have seen some of them; that can only flatter the champion, which keeps the gate
conservative.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churnops import aws
from churnops.contract import Contract, Kind
from churnops.errors import ChurnOpsError

SNAPSHOT_PREFIX = "snapshots/"
SNAPSHOT_FILE = "customers.parquet"
# Fixed 16-character key for the id hash that picks the holdout (changing it reshuffles who is
# held out).
_HOLDOUT_KEY = "churnops-holdout"


@dataclass(frozen=True)
class Snapshot:
    run_id: str
    uri: str
    rows: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "uri": self.uri, "rows": self.rows, "sha256": self.sha256}


def new_run_id(moment: dt.datetime | None = None) -> str:
    moment = moment or dt.datetime.now(dt.UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def run_prefix(bucket: str, run_id: str) -> str:
    """Where a run's artefacts live: the snapshot, its drift report and the evaluation."""
    return f"s3://{bucket}/{SNAPSHOT_PREFIX}{run_id}/"


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


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 over the rows' values (not the Parquet bytes, which vary with the writer)."""
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(row_hashes.tobytes())
    digest.update(",".join(frame.columns).encode())
    return digest.hexdigest()


def holdout_mask(ids: pd.Series, share: float) -> np.ndarray:
    """True for the customers held out for evaluation: a fixed ~`share` of ids, by id hash."""
    hashed = pd.util.hash_pandas_object(
        ids.astype(str), index=False, hash_key=_HOLDOUT_KEY
    ).to_numpy()
    return (hashed / np.float64(2**64)) < share


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


def take_snapshot(
    conn: Any, contract: Contract, bucket: str, *, run_id: str | None = None
) -> Snapshot:
    from churnops.database import read_table

    run_id = run_id or new_run_id()
    frame = typed(read_table(conn, contract.table), contract)
    if frame.empty:
        raise ChurnOpsError(f"table {contract.table} is empty: nothing to retrain on")
    buffer = io.BytesIO()
    # Row groups of 100k rows let Spark (batch scoring) split the file across cores.
    frame.to_parquet(buffer, index=False, row_group_size=100_000)
    uri = run_prefix(bucket, run_id) + SNAPSHOT_FILE
    put_bytes(uri, buffer.getvalue())
    return Snapshot(run_id=run_id, uri=uri, rows=len(frame), sha256=content_hash(frame))


def load_snapshot(uri: str, contract: Contract) -> pd.DataFrame:
    frame = pd.read_parquet(io.BytesIO(get_bytes(uri)))
    return typed(frame, contract)


def put_bytes(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    bucket, key = aws.split_s3_uri(uri)
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)


def get_bytes(uri: str) -> bytes:
    bucket, key = aws.split_s3_uri(uri)
    try:
        return aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except aws.client("s3").exceptions.NoSuchKey:
        raise ChurnOpsError(f"no object at {uri}") from None
