"""The batch scoring Glue job, through its own entry point, on whatever Spark this run has:
`local[*]`, and (./dev test's second pass) a two-node cluster whose executor has no access to
the driver's disk, as on Glue with two workers.

It reads the snapshot's parts in its Spark tasks, writes output parts from them, commits a
date's output with one manifest PUT, and upserts scores idempotently by (customer, date)."""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from churnops import database
from churnops.batch_scoring import MANIFEST, read_committed
from churnops.contract import TELCO
from churnops.errors import ChurnOpsError
from tests.integration.conftest import DB_NAME

pytestmark = [pytest.mark.glue_job, pytest.mark.spark, pytest.mark.mariadb]
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Setup:
    registry_uri: str
    version: str
    curated: str
    snapshot_uri: str
    customers: pd.DataFrame


def _clean(rows: int, seed: int) -> pd.DataFrame:
    from churnops.synthetic import generate

    raw = generate(rows, seed=seed)
    return TELCO.validate(raw.astype(object).where(raw.notna(), "").astype(str)).clean


def _put_parquet(bucket: str, key: str, frame: pd.DataFrame, row_group_size: int) -> None:
    from churnops.aws import client

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, row_group_size=row_group_size)
    client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


@pytest.fixture(scope="module")
def setup(aws_env) -> Setup:  # type: ignore[no-untyped-def]
    from churnops.aws import client
    from churnops.registry import Registry
    from churnops.training import TrainingOptions, register_result, train

    s3 = client("s3")
    curated = f"curated-{uuid.uuid4().hex[:8]}"
    registry_bucket = f"registry-{uuid.uuid4().hex[:8]}"
    for bucket in (curated, registry_bucket):
        s3.create_bucket(Bucket=bucket)
    registry_uri = f"s3://{registry_bucket}/models"
    result = train(_clean(2000, 3), TELCO, TrainingOptions(families=("logistic",), folds=2))
    summary = register_result(result, Registry.open(registry_uri), actor="test")
    # A snapshot in three parts, two of them with several row groups: more tasks than parts.
    customers = _clean(2400, 8)
    snapshot = "snapshots/run-1/customers/"
    _put_parquet(curated, snapshot + "part-0.parquet", customers.iloc[:1000], 300)
    _put_parquet(curated, snapshot + "part-1.parquet", customers.iloc[1000:2000], 1000)
    _put_parquet(curated, snapshot + "split=holdout/part-2.parquet", customers.iloc[2000:], 150)
    return Setup(registry_uri, summary["version"], curated, f"s3://{curated}/{snapshot}", customers)


def run_job(setup: Setup, spark, date: str, **extra: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    from glue_jobs import batch_score

    argv = [
        "--registry_uri",
        setup.registry_uri,
        "--input_uri",
        extra.pop("input_uri", setup.snapshot_uri),
        "--curated_bucket",
        setup.curated,
        "--processing_date",
        date,
    ]
    for name, value in extra.items():
        argv += [f"--{name}", value]
    return batch_score.main(argv, spark=spark)


@pytest.fixture(autouse=True)
def _glue_jobs_importable(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(REPO))  # glue_jobs/ is scripts, not an installed package


def test_every_customer_is_scored_by_tasks_that_read_and_write_their_own_parts(setup, spark):  # type: ignore[no-untyped-def]
    from churnops.spark import spark_master

    # GIVEN the Spark this run was given (local[*], or in the second pass the two-node cluster)
    assert spark.sparkContext.master == spark_master()
    # WHEN the job scores a snapshot of three parts (4 + 1 + 3 row groups)
    result = run_job(setup, spark, "2031-01-01")
    # THEN one task per row group read, scored and wrote its own output part
    assert result["tasks"] == 8 and result["files"] == 8
    assert result["rows"] == len(setup.customers)
    assert result["model_version"] == setup.version
    scored = read_committed(setup.curated, "predictions", "2031-01-01")
    assert sorted(scored[TELCO.id_column]) == sorted(setup.customers[TELCO.id_column])
    assert set(scored["model_version"]) == {setup.version}
    assert scored["churn_probability"].between(0, 1).all()
    assert int(scored["churn_prediction"].sum()) == result["predicted_churners"]


def test_a_rerun_replaces_the_date_and_a_failed_run_leaves_it(setup, spark):  # type: ignore[no-untyped-def]
    from churnops import storage
    from churnops.aws import client

    prefix = "predictions/processing_date=2031-02-01/"
    # GIVEN a committed output for the date
    first = run_job(setup, spark, "2031-02-01")
    first_parts = json.loads(storage.read_bytes(setup.curated, prefix + MANIFEST))["parts"]
    # WHEN the same date is scored again
    second = run_job(setup, spark, "2031-02-01")
    # THEN the manifest names the new run's parts alone and the old parts are gone
    manifest = json.loads(storage.read_bytes(setup.curated, prefix + MANIFEST))
    assert manifest["run_id"] == second["run_id"] != first["run_id"]
    assert second["replaced_objects"] == len(first_parts)
    listed = {o["Key"] for o in storage.list_objects(setup.curated, prefix)}
    assert listed == {prefix + MANIFEST, *manifest["parts"]}

    # GIVEN an input whose second part is not Parquet at all (the plan fails on the driver)
    broken = "snapshots/run-broken/customers/"
    _put_parquet(setup.curated, broken + "part-0.parquet", setup.customers.iloc[:500], 500)
    client("s3").put_object(Bucket=setup.curated, Key=broken + "part-1.parquet", Body=b"no")
    # WHEN a run for the date fails
    with pytest.raises(ChurnOpsError, match=r"part-1\.parquet is not a readable Parquet file"):
        run_job(setup, spark, "2031-02-01", input_uri=f"s3://{setup.curated}/{broken}")
    # THEN readers still get the whole previous output, nothing of the failed run
    assert json.loads(storage.read_bytes(setup.curated, prefix + MANIFEST)) == manifest
    kept = read_committed(setup.curated, "predictions", "2031-02-01")
    assert len(kept) == len(setup.customers)


def test_a_task_failure_after_other_parts_were_written_leaves_the_old_output(setup, spark):  # type: ignore[no-untyped-def]
    """A part that plans fine but fails inside its task (a column missing): the tasks that ran
    wrote parts, yet no manifest names them."""
    from churnops import storage

    prefix = "predictions/processing_date=2031-03-01/"
    run_job(setup, spark, "2031-03-01")
    manifest = json.loads(storage.read_bytes(setup.curated, prefix + MANIFEST))
    lacking = "snapshots/run-lacking/customers/"
    _put_parquet(setup.curated, lacking + "part-0.parquet", setup.customers.iloc[:400], 100)
    _put_parquet(
        setup.curated,
        lacking + "part-1.parquet",
        setup.customers.iloc[400:500].drop(columns=["tenure"]),
        100,
    )
    with pytest.raises(Exception, match="tenure"):
        run_job(setup, spark, "2031-03-01", input_uri=f"s3://{setup.curated}/{lacking}")
    assert json.loads(storage.read_bytes(setup.curated, prefix + MANIFEST)) == manifest
    assert len(read_committed(setup.curated, "predictions", "2031-03-01")) == len(setup.customers)


def test_scores_are_upserted_idempotently_by_customer_and_date(setup, spark, db_secret):  # type: ignore[no-untyped-def]
    conn = database.connect(db_secret)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{database.SCORES_TABLE}`")
        conn.commit()
        # WHEN a date is scored, scored again (a retry), then an OLDER date is scored
        db = {"db_secret_arn": db_secret, "db_name": DB_NAME}
        newer = run_job(setup, spark, "2031-04-02", **db)
        again = run_job(setup, spark, "2031-04-02", **db)
        run_job(setup, spark, "2031-04-01", **db)
        table = database.read_table(conn, database.SCORES_TABLE)
    finally:
        conn.close()
    # THEN every customer has one row, of the newer date: the retry and the older run changed
    # nothing
    assert newer["rows_upserted"] == again["rows_upserted"] == len(setup.customers)
    assert len(table) == len(setup.customers)
    assert {str(d) for d in table["processing_date"]} == {"2031-04-02"}


def test_a_model_of_another_contract_version_is_refused(setup, spark):  # type: ignore[no-untyped-def]
    from churnops.errors import ContractMismatchError
    from churnops.registry import Registry

    registry = Registry.open(setup.registry_uri)
    card = registry.card(setup.version)
    files = {name: registry.read(setup.version, name) for name in ("model.onnx",)}
    stale = registry.register(files, {**card, "schema_hash": "0" * 16})
    with pytest.raises(ContractMismatchError):
        run_job(setup, spark, "2031-05-01", model_version=stale)
