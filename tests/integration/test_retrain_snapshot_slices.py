"""The retrain snapshot at scale, against a private MariaDB and moto S3: the table is read in
slices from one consistent read view, every slice written as its own Parquet parts in the layout
batch scoring reads; the hash and row count do not depend on the slicing; drift, train and
evaluate read the parts one at a time and only the rows they need (a stratified, deterministic
sample bounded by fit_rows; the holdout, capped)."""

from __future__ import annotations

import io
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from churnops.contract import TELCO
from churnops.retrain import sampling
from churnops.retrain import snapshot as snap

ROWS = 3000
HOLDOUT_SHARE = 0.25
ID = TELCO.id_column
TARGET = TELCO.target_column


# ---- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def customers() -> pd.DataFrame:
    """Clean synthetic customers, some of whose outcome is not known yet (the table allows an
    unknown target: the one nullable Telco column)."""
    from churnops.synthetic import generate

    raw = generate(ROWS, seed=21)
    clean = TELCO.validate(raw.astype(object).where(raw.notna(), "").astype(str)).clean
    clean.loc[clean.index[7::61], TARGET] = None
    return clean


@pytest.fixture(scope="module")
def db_secret_arn(aws_env, mariadb) -> str:  # type: ignore[no-untyped-def]
    """A database of this module's own (its customer table is rewritten by the tests)."""
    from churnops.aws import client

    name, user, password = "churnops_slices", "slices_app", secrets.token_urlsafe(16)
    mariadb.create_database(name)
    mariadb.create_user(user, password, name)
    return client("secretsmanager").create_secret(
        Name=f"churnops-it/slices-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps(mariadb.secret_value(user, password, name)),
    )["ARN"]


@pytest.fixture
def connect(db_secret_arn: str) -> Iterator[Callable[[], Any]]:
    """Connections to the module's database, closed after the test."""
    from churnops import database

    opened: list[Any] = []

    def open_one() -> Any:
        conn = database.connect(db_secret_arn)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        conn.close()


@pytest.fixture
def bucket(aws_env) -> str:  # type: ignore[no-untyped-def]
    from churnops.aws import client

    name = f"curated-{uuid.uuid4().hex[:10]}"
    client("s3").create_bucket(Bucket=name)
    return name


def load(conn: Any, frame: pd.DataFrame) -> None:
    """Replace the customer table's rows with `frame`."""
    from churnops import database

    database.ensure_schema(conn, TELCO)
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM `{TELCO.table}`")
        database.insert_batches(cur, TELCO.table, TELCO.column_names, frame, 1000)
    conn.commit()


def table_now(conn: Any) -> pd.DataFrame:
    from churnops import database

    return snap.typed(database.read_table(conn, TELCO.table), TELCO)


def parquet_objects(uri: str) -> dict[str, bytes]:
    """Every .parquet object found recursively under a prefix, as batch scoring lists them."""
    from churnops.aws import client, split_s3_uri

    bucket, prefix = split_s3_uri(uri)
    s3 = client("s3")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".parquet"):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                found[item["Key"]] = body
    return found


class S3Calls:
    """Runs `action` inside boto3 at a chosen S3 call (botocore's own event hooks: nothing of ours
    is replaced), and counts the calls."""

    def __init__(self, operation: str, action: Callable[[dict[str, Any]], None] | None = None):
        from churnops.aws import client

        self.events = client("s3").meta.events
        self.name = f"before-parameter-build.s3.{operation}"
        self.params: list[dict[str, Any]] = []
        self.action = action

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        self.params.append(params)
        if self.action is not None:
            self.action(params)

    def __enter__(self) -> S3Calls:
        self.events.register(self.name, self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.events.unregister(self.name, self)


# ---- layout and slicing -------------------------------------------------------------------------
def test_the_snapshot_is_sliced_into_parts_in_the_layout_batch_scoring_reads(
    connect, bucket, customers
) -> None:  # type: ignore[no-untyped-def]
    # GIVEN the customer table
    conn = connect()
    load(conn, customers)
    # WHEN it is snapshotted with a slice size far below the table's
    taken = snap.take_snapshot(
        conn, TELCO, bucket, holdout_share=HOLDOUT_SHARE, slice_rows=400, run_id="layout"
    )
    # THEN the result names the root prefix, and the table is in several parts under it
    assert taken.uri == f"s3://{bucket}/snapshots/layout/customers/"
    assert taken.rows == len(customers)
    objects = parquet_objects(taken.uri)
    assert len(objects) == taken.parts == 2 * -(-len(customers) // 400)
    assert {k.rsplit("/", 2)[-2] for k in objects} == {"split=train", "split=holdout"}
    # ... every customer exactly once across the .parquet objects found under it
    frames = {key: pd.read_parquet(io.BytesIO(body)) for key, body in objects.items()}
    ids = pd.concat([f[ID] for f in frames.values()])
    assert ids.is_unique and set(ids) == set(customers[ID])
    # ... each part holds exactly the contract's columns with the contract's types
    expected = snap.typed(customers, TELCO)
    for key, body in objects.items():
        schema = pq.read_schema(io.BytesIO(body))
        assert schema.names == TELCO.column_names, key
        assert schema.types == snap.part_schema(TELCO).types, key
        assert (frames[key].dtypes == expected.dtypes).all(), key
        assert len(frames[key]) <= 400
    # ... with the holdout split by the stable id hash, values unchanged
    for key, frame in frames.items():
        held = snap.holdout_mask(frame[ID], HOLDOUT_SHARE)
        assert held.all() if "split=holdout/" in key else not held.any(), key
    merged = snap.typed(pd.concat(frames.values(), ignore_index=True), TELCO)
    pd.testing.assert_frame_equal(merged, expected)
    # ... and the manifest (the only other object) says what was written
    stored = snap.StoredSnapshot.open(taken.uri, holdout_share=0.5)
    assert stored.holdout_share == HOLDOUT_SHARE and stored.rows == taken.rows
    assert sorted(p.uri for p in stored.parts) == sorted(f"s3://{bucket}/{k}" for k in objects)


def test_hash_and_row_count_do_not_depend_on_the_slice_count(connect, bucket, customers) -> None:  # type: ignore[no-untyped-def]
    # GIVEN the customer table
    conn = connect()
    load(conn, customers)
    # WHEN it is snapshotted in one slice and in four
    one = snap.take_snapshot(
        conn, TELCO, bucket, holdout_share=HOLDOUT_SHARE, slice_rows=len(customers)
    )
    four = snap.take_snapshot(
        conn, TELCO, bucket, holdout_share=HOLDOUT_SHARE, slice_rows=-(-len(customers) // 4)
    )
    # THEN the content hash and rows agree, with each other and with the whole table hashed at once
    assert (one.parts, four.parts) == (2, 8)
    assert one.sha256 == four.sha256 == snap.content_hash(table_now(conn))
    assert one.rows == four.rows == len(customers)
    # ... and one changed value changes the hash
    with conn.cursor() as cur:
        cur.execute(
            f"UPDATE `{TELCO.table}` SET MonthlyCharges = MonthlyCharges + 1 WHERE `{ID}` = %s",
            (customers[ID].iloc[len(customers) // 2],),
        )
    conn.commit()
    changed = snap.take_snapshot(conn, TELCO, bucket, holdout_share=HOLDOUT_SHARE, slice_rows=700)
    assert changed.sha256 != one.sha256 and changed.rows == one.rows


def test_slices_are_read_one_at_a_time(connect, bucket, customers, mariadb) -> None:  # type: ignore[no-untyped-def]
    """Memory is bounded by a slice: when the first part is uploaded, the server has sent one
    slice of rows, not the table."""
    conn = connect()
    load(conn, customers)

    def rows_sent() -> int:
        with mariadb.root_connection() as root, root.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Rows_sent'")
            return int(cur.fetchone()[1])

    seen: list[int] = []
    before = rows_sent()
    with S3Calls("PutObject", lambda params: seen.append(rows_sent() - before)):
        taken = snap.take_snapshot(conn, TELCO, bucket, holdout_share=HOLDOUT_SHARE, slice_rows=500)
    assert taken.parts == 12
    # (each SHOW STATUS sends a row of its own, hence the small allowance)
    assert 500 <= seen[0] <= 505
    assert seen[-1] >= len(customers)  # the manifest goes up last, after every slice


# ---- the consistent read ------------------------------------------------------------------------
def test_a_customer_changed_during_the_snapshot_is_in_it_once_as_it_was(
    connect, bucket, customers
) -> None:  # type: ignore[no-untyped-def]
    # GIVEN the customer table, and its content hash as it stands
    conn = connect()
    load(conn, customers)
    before = table_now(conn)
    ordered = before[ID].tolist()
    early, late, doomed = ordered[10], ordered[-10], ordered[-20]
    moved_to = ordered[-1] + "-moved"  # sorts after every id: in a slice not read yet

    arrived = before[before[ID] == ordered[5]].assign(**{ID: ordered[-1] + "-new"})
    done: list[bool] = []

    def ingest_meanwhile(params: dict[str, Any]) -> None:
        # An ingestion commits while the snapshot is between its first and second slice: a
        # customer not read yet changes, one already read moves to a key range not read yet
        # (without one consistent read it would be in the snapshot twice), one not read yet is
        # deleted and a new one arrives.
        if done:
            return
        from churnops import database

        other = connect()
        with other.cursor() as cur:
            cur.execute(
                f"UPDATE `{TELCO.table}` SET MonthlyCharges = 999.5, tenure = 71 WHERE `{ID}` = %s",
                (late,),
            )
            cur.execute(
                f"UPDATE `{TELCO.table}` SET `{ID}` = %s WHERE `{ID}` = %s", (moved_to, early)
            )
            cur.execute(f"DELETE FROM `{TELCO.table}` WHERE `{ID}` = %s", (doomed,))
            database.insert_batches(cur, TELCO.table, TELCO.column_names, arrived)
        other.commit()
        done.append(True)

    # WHEN the snapshot runs in slices while that happens
    with S3Calls("PutObject", ingest_meanwhile):
        taken = snap.take_snapshot(conn, TELCO, bucket, holdout_share=HOLDOUT_SHARE, slice_rows=600)
    after = table_now(conn)
    # (the changes did commit)
    assert {moved_to, arrived[ID].iloc[0]} <= set(after[ID])
    assert not {early, doomed} & set(after[ID])
    # THEN the snapshot is the table as it was when the snapshot started: every customer once,
    # in the version it had then
    assert taken.rows == len(before)
    assert taken.sha256 == snap.content_hash(before) != snap.content_hash(after)
    frames = [pd.read_parquet(io.BytesIO(b)) for b in parquet_objects(taken.uri).values()]
    read = snap.typed(pd.concat(frames, ignore_index=True), TELCO)
    assert read[ID].is_unique and moved_to not in set(read[ID])
    pd.testing.assert_frame_equal(read, before)


# ---- reading: part by part, only what each step needs -------------------------------------------
@pytest.fixture
def two_slicings(connect, bucket, customers) -> tuple[snap.StoredSnapshot, snap.StoredSnapshot]:  # type: ignore[no-untyped-def]
    """The same table snapshotted in many small slices and in one."""
    conn = connect()
    load(conn, customers)
    stored = []
    for slice_rows in (350, len(customers)):
        taken = snap.take_snapshot(
            conn, TELCO, bucket, holdout_share=HOLDOUT_SHARE, slice_rows=slice_rows
        )
        stored.append(snap.StoredSnapshot.open(taken.uri, holdout_share=HOLDOUT_SHARE))
    return stored[0], stored[1]


def test_parts_are_fetched_one_per_frame_as_the_reader_asks(two_slicings) -> None:  # type: ignore[no-untyped-def]
    """A reader holds one part: it fetches the next part only when the next frame is asked for."""
    sliced, _ = two_slicings
    training_parts = [p for p in sliced.parts if p.split == snap.TRAIN]
    with S3Calls("GetObject") as fetched:
        frames = sliced.frames(TELCO, snap.TRAIN)
        assert fetched.params == []  # nothing is read before the first frame is asked for
        for count, (frame, part) in enumerate(zip(frames, training_parts, strict=True), 1):
            assert len(fetched.params) == count
            assert part.uri.endswith("/" + fetched.params[-1]["Key"])
            assert len(frame) == part.rows
    assert count == len(training_parts) == 9


def test_training_sample_is_stratified_bounded_and_the_same_however_sliced(
    two_slicings, customers
) -> None:  # type: ignore[no-untyped-def]
    sliced, whole = two_slicings
    training, _ = snap.split(snap.typed(customers, TELCO), TELCO, HOLDOUT_SHARE)
    y = TELCO.target_vector(training)
    # WHEN a sample of 700 is drawn from a training split of about 2,200 customers
    sample = sampling.training_sample(sliced, TELCO, 700)
    # THEN it has exactly 700 labelled training customers, each class in its share to the row
    assert sample.rows == 700 and sample.available == len(training)
    assert set(sample.frame[ID]) <= set(training[ID])
    assert TELCO.target_vector(sample.frame).sum() == round(700 * y.sum() / len(y))
    # ... chosen by the id hash: the same rows and order from a snapshot sliced otherwise, or
    # drawn again
    pd.testing.assert_frame_equal(sample.frame, sampling.training_sample(whole, TELCO, 700).frame)
    pd.testing.assert_frame_equal(sample.frame, sampling.training_sample(sliced, TELCO, 700).frame)
    # ... and when fit_rows covers the split, it is the whole training split as before slicing
    everyone = sampling.training_sample(sliced, TELCO, 10_000)
    pd.testing.assert_frame_equal(everyone.frame, training)


def test_the_holdout_is_capped_to_the_customers_with_the_smallest_holdout_hash(
    two_slicings, customers
) -> None:  # type: ignore[no-untyped-def]
    sliced, whole = two_slicings
    _, holdout = snap.split(snap.typed(customers, TELCO), TELCO, HOLDOUT_SHARE)
    capped = sampling.evaluation_holdout(sliced, TELCO, 250)
    assert capped.rows == 250 and capped.available == len(holdout)
    smallest = holdout.iloc[np.argsort(snap.holdout_hash(holdout[ID]))[:250]]
    assert set(capped.frame[ID]) == set(smallest[ID])
    pd.testing.assert_frame_equal(
        capped.frame, sampling.evaluation_holdout(whole, TELCO, 250).frame
    )
    # Under the cap: exactly the holdout the flow evaluated on before slicing.
    pd.testing.assert_frame_equal(sampling.evaluation_holdout(sliced, TELCO, 10_000).frame, holdout)


def test_a_snapshot_from_before_slicing_is_still_read_and_split(bucket, customers) -> None:  # type: ignore[no-untyped-def]
    """Cards of earlier versions name one Parquet object; the steps still read it."""
    from churnops.aws import client

    buffer = io.BytesIO()
    snap.typed(customers, TELCO).to_parquet(buffer, index=False, row_group_size=1000)
    client("s3").put_object(
        Bucket=bucket, Key="snapshots/old/customers.parquet", Body=buffer.getvalue()
    )
    old = snap.StoredSnapshot.open(
        f"s3://{bucket}/snapshots/old/customers.parquet", holdout_share=HOLDOUT_SHARE
    )
    training, holdout = snap.split(snap.typed(customers, TELCO), TELCO, HOLDOUT_SHARE)
    assert sampling.class_counts(old, TELCO, snap.TRAIN) == (
        int(TELCO.target_vector(training).sum()),
        int(len(training) - TELCO.target_vector(training).sum()),
    )
    pd.testing.assert_frame_equal(sampling.training_sample(old, TELCO, 10_000).frame, training)
    pd.testing.assert_frame_equal(sampling.evaluation_holdout(old, TELCO, 10_000).frame, holdout)


def test_the_steps_read_their_split_part_by_part_within_their_bounds(
    connect, bucket, customers, db_secret_arn
) -> None:  # type: ignore[no-untyped-def]
    from churnops.drift import drift_report
    from churnops.registry import Registry
    from churnops.retrain import flow
    from churnops.training import TrainingOptions, train
    from churnops.wiring import GateSettings

    # GIVEN the customer table and a champion with reference statistics
    load(connect(), customers)
    registry = Registry.open(f"s3://{bucket}/models")
    champion = train(customers.iloc[:1500], TELCO, TrainingOptions(families=("logistic",), folds=3))
    registry.promote(registry.register(champion.files, champion.card), actor="test", reason="test")
    env = flow.RetrainEnv(
        registry_uri=registry.uri,
        curated_bucket=bucket,
        contract=TELCO,
        gate=GateSettings(n_bootstrap=200, holdout_share=HOLDOUT_SHARE),
        db_secret_arn=db_secret_arn,
        training_families=("logistic",),
        training_folds=3,
        snapshot_slice_rows=400,
        training_fit_rows=900,
        evaluation_holdout_rows=300,
    )
    # WHEN the flow's steps run one after the other, as the state machine runs them
    state: dict[str, Any] = {"trigger": "test"}
    state["snapshot"] = {"Payload": flow.snapshot_step(env, state)}
    fetched: dict[str, list[str]] = {}
    for name, step in (
        ("drift", flow.drift_step),
        ("train", flow.train_step),
        ("evaluate", flow.evaluate_step),
    ):
        with S3Calls("GetObject") as calls:
            state[name] = {"Payload": step(env, state)}
        fetched[name] = [c["Key"] for c in calls.params if c["Key"].endswith(".parquet")]
    # THEN each step fetched each part of what it needs once: drift every part (the features
    # only), train the training parts, evaluate the holdout parts
    taken = state["snapshot"]["Payload"]
    parts = {
        p.uri.split("/", 3)[3]: p.split
        for p in snap.StoredSnapshot.open(taken["uri"], holdout_share=0.5).parts
    }
    assert taken["parts"] == len(parts) == 16
    assert sorted(fetched["drift"]) == sorted(parts)
    for name, split_name in (("train", snap.TRAIN), ("evaluate", snap.HOLDOUT)):
        assert sorted(fetched[name]) == sorted(k for k, s in parts.items() if s == split_name), name
    # ... within their bounds
    trained = state["train"]["Payload"]
    assert trained["training_rows"] == 900 < trained["training_rows_available"]
    card = registry.card(trained["version"])
    assert card["rows"] == 900 and card["retrain"]["training_sample_rows"] == 900
    verdict = state["evaluate"]["Payload"]
    assert verdict["holdout_rows"] == 300 < verdict["holdout_rows_available"]
    # ... and drift, counted part by part, reports what the whole table at once would
    report = json.loads(snap.get_bytes(state["drift"]["Payload"]["report_uri"]))
    whole = drift_report(champion.card["reference_stats"], snap.typed(customers, TELCO), TELCO)
    assert report["features"] == json.loads(json.dumps(whole["features"]))
    assert report["rows"] == len(customers)


def test_a_connection_lost_between_slices_fails_as_retryable_and_leaves_no_manifest(
    connect, bucket, customers, mariadb
) -> None:  # type: ignore[no-untyped-def]
    """On 10M customers the read takes minutes: a failover in the middle must surface as the
    error the state machine retries, and leave nothing a later step would take for a snapshot."""
    from churnops.errors import DatabaseUnavailableError

    conn = connect()
    load(conn, customers)
    thread_id = conn.thread_id()
    killed: list[int] = []

    def kill_once(params: dict[str, Any]) -> None:
        # The first slice is read and being written when the server drops the connection.
        if not killed:
            with mariadb.root_connection() as root, root.cursor() as cur:
                cur.execute(f"KILL {thread_id}")
            killed.append(thread_id)

    with (
        S3Calls("PutObject", kill_once),
        pytest.raises(DatabaseUnavailableError, match="snapshot of table customers failed"),
    ):
        snap.take_snapshot(
            conn, TELCO, bucket, holdout_share=HOLDOUT_SHARE, slice_rows=500, run_id="lost"
        )
    with pytest.raises(Exception, match="did not finish"):
        snap.StoredSnapshot.open(snap.snapshot_uri(bucket, "lost"), holdout_share=HOLDOUT_SHARE)
