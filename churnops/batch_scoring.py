"""Batch scoring: every customer of a snapshot scored with one registered model, in parallel
Spark tasks that each read, score, write and load their own share of the customers.

Why the work is shaped this way: on AWS Glue with two or more workers the driver and the
executors are different machines, so a file on the driver's disk does not exist for an executor,
and local Spark cannot read `s3://` at all (no hadoop-aws). So the driver plans and commits, and
moves no customer data:

1. plan (driver): list the snapshot's Parquet parts and read each part's footer (two ranged
   GETs) to make one task per row group;
2. score (executors, `mapInPandas` over one row per task): each task reads its row group with
   ranged GETs, scores it with the broadcast ONNX model (`churnops.scoring`), writes its own
   output part to S3 (the score schema of `churnops.wiring`) and
   upserts its scores into the database in bounded batches; only a line of counts per task
   comes back to the driver;
3. commit (driver): write the partition's manifest, one PUT that S3 makes visible at once, then
   delete the parts no manifest names any more.

Output layout, for `processing_date=D` under `<prefix>`:

    <prefix>/processing_date=D/_manifest.json            the commit: run id, model, part keys
    <prefix>/processing_date=D/run=<run id>/part-00000.parquet ...

Readers go through the manifest (`read_committed`): they see the old run's parts or the new
run's, never a mix and never nothing; a run that fails before its commit leaves the old
manifest, and so the old output, as it was. Parts of a failed run are invisible and removed by
the next successful run of that date.

Database: `churn_scores` keeps the latest score per customer. The upsert is idempotent by
(customer, processing date): a task retried by Spark writes the same rows again, and a re-run of
an older date never overwrites a newer date's score.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from churnops import aws, gluejob, storage
from churnops.errors import ChurnOpsError
from churnops.wiring import SCORE_SCHEMA, BatchScoreArgs, predictions_partition

if TYPE_CHECKING:
    from churnops.scoring import OnnxModel

log = logging.getLogger("churnops.glue.batch_score")

MANIFEST = "_manifest.json"
PART_SUFFIX = ".parquet"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Returned by each task to the driver: counts, never customers.
_TASK_RESULT_SCHEMA = "task long, output_key string, rows long, churners long, upserted long"


@dataclass(frozen=True)
class ScoringTask:
    """One row group of one snapshot part: the unit a Spark task reads, scores and writes."""

    index: int
    bucket: str
    key: str
    size: int
    row_group: int
    rows: int


# ---- the model --------------------------------------------------------------------------------
def load_model(registry_uri: str, version: str | None, contract_name: str) -> dict[str, Any]:
    """The model's ONNX bytes and what scoring needs from its card: small enough to broadcast.
    A model of another contract, or of another version of this contract, is refused."""
    from churnops.contract import get_contract
    from churnops.registry import Registry
    from churnops.wiring import MODEL_ONNX

    registry = Registry.open(registry_uri)
    if not version:
        version = registry.require_champion()["version"]
    card = registry.card(version)
    get_contract(contract_name).check_model_card(card)
    if "threshold" not in card:
        raise ChurnOpsError(f"model card of {version} has no threshold")
    return {
        "version": version,
        "contract": card["contract"],
        "threshold": float(card["threshold"]),
        "onnx": registry.read(version, MODEL_ONNX),
    }


# One scorer per Python worker process and model version (a version's bytes never change):
# building a session costs milliseconds, and Spark reuses Python workers between tasks.
_SCORERS: dict[str, OnnxModel] = {}


def scorer(model: dict[str, Any]) -> OnnxModel:
    """The broadcast model (`load_model`'s dict) as this worker's ONNX scorer."""
    found = _SCORERS.get(model["version"])
    if found is None:
        from churnops.contract import get_contract
        from churnops.scoring import OnnxModel

        found = _SCORERS[model["version"]] = OnnxModel(
            model["onnx"],
            get_contract(model["contract"]),
            version=model["version"],
            threshold=model["threshold"],
        )
    return found


# ---- 1. plan --------------------------------------------------------------------------------------
def snapshot_parts(input_uri: str) -> list[tuple[str, str, int]]:
    """(bucket, key, size) of every Parquet part of the input: the objects ending in .parquet
    under a prefix (a URI ending in "/"), or the one object named."""
    bucket, key = aws.split_s3_uri(input_uri)
    if key.endswith("/") or not key:
        parts = [
            (bucket, str(o["Key"]), int(o["Size"]))
            for o in storage.list_objects(bucket, key)
            if str(o["Key"]).endswith(PART_SUFFIX)
        ]
    else:
        meta = storage.head(bucket, key)
        parts = [] if meta is None else [(bucket, key, int(meta["ContentLength"]))]
    if not parts:
        raise ChurnOpsError(f"no Parquet input at {input_uri}")
    return parts


def plan_tasks(parts: Sequence[tuple[str, str, int]]) -> list[ScoringTask]:
    """One task per row group of every part, read from the parts' footers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks: list[ScoringTask] = []
    for bucket, key, size in parts:
        with io.BufferedReader(storage.S3RangeFile(bucket, key, size), 1 << 16) as handle:
            try:
                metadata = pq.ParquetFile(handle).metadata
            except (pa.ArrowException, OSError) as err:
                raise ChurnOpsError(
                    f"{storage.s3_uri(bucket, key)} is not a readable Parquet file: {err}"
                ) from None
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            if rows:
                tasks.append(ScoringTask(len(tasks), bucket, key, size, group, rows))
    return tasks


# ---- 2. score (runs on the executors) -----------------------------------------------------------
# The score schema's portable types as Arrow's.
_ARROW_TYPES = {"double": "float64", "int": "int32", "string": "string"}


def score_task(
    task: ScoringTask,
    model: dict[str, Any],
    request: BatchScoreArgs,
    processing_date: str,
    run_id: str,
) -> dict[str, Any]:
    """Read one row group, score it, write its output part, upsert its scores; the counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churnops.scoring import score

    onnx = scorer(model)
    contract = onnx.contract
    id_column = contract.id_column
    with io.BufferedReader(storage.S3RangeFile(task.bucket, task.key, task.size), 1 << 20) as f:
        parquet = pq.ParquetFile(f)
        missing = [
            c for c in (id_column, *contract.feature_names) if c not in parquet.schema_arrow.names
        ]
        if missing:
            raise ChurnOpsError(
                f"{storage.s3_uri(task.bucket, task.key)} lacks contract column(s): "
                + ", ".join(missing)
            )
        customers = parquet.read_row_group(
            task.row_group, columns=[id_column, *contract.feature_names]
        ).to_pandas()
    customers[id_column] = customers[id_column].astype(str)
    scores = score(customers, onnx, contract)
    schema = pa.schema(
        [(id_column, pa.string())]
        + [(name, pa.type_for_alias(_ARROW_TYPES[kind])) for name, kind in SCORE_SCHEMA]
    )
    output_key = (
        predictions_partition(request.output_prefix, processing_date)
        + f"run={run_id}/part-{task.index:05d}.parquet"
    )
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(scores, schema=schema, preserve_index=False), buffer)
    storage.put_bytes(
        request.curated_bucket, output_key, buffer.getvalue(), "application/vnd.apache.parquet"
    )
    upserted = 0
    if request.db_secret_arn:
        from churnops import database

        conn = database.connect(request.db_secret_arn, database=request.db_name or None)
        try:
            upserted = database.upsert_scores(
                conn, scores.assign(processing_date=processing_date), contract
            )
        finally:
            conn.close()
    return {
        "task": task.index,
        "output_key": output_key,
        "rows": len(scores),
        "churners": int(scores["churn_prediction"].sum()),
        "upserted": upserted,
    }


def score_tasks(
    spark: Any,
    tasks: Sequence[ScoringTask],
    model: dict[str, Any],
    request: BatchScoreArgs,
    processing_date: str,
    run_id: str,
) -> list[dict[str, Any]]:
    """Run every task on the executors, one Spark partition each; the tasks' counts."""
    import pandas as pd

    shared = spark.sparkContext.broadcast(
        {
            "tasks": [asdict(t) for t in tasks],
            "model": model,
            "request": asdict(request),
            "processing_date": processing_date,
            "run_id": run_id,
        }
    )

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        plan = shared.value
        request_ = BatchScoreArgs(**plan["request"])
        for batch in batches:
            for index in batch["id"]:
                done = score_task(
                    ScoringTask(**plan["tasks"][int(index)]),
                    plan["model"],
                    request_,
                    plan["processing_date"],
                    plan["run_id"],
                )
                yield pd.DataFrame([done])

    # spark.range with one slice per task puts exactly one task in each partition, so the
    # tasks spread over every executor core Spark has (and more workers mean more at once).
    ids = spark.range(0, len(tasks), 1, numPartitions=max(1, len(tasks)))
    rows = ids.mapInPandas(run, _TASK_RESULT_SCHEMA).collect()
    shared.unpersist()
    return sorted((row.asDict() for row in rows), key=lambda r: int(r["task"]))


# ---- 3. commit -------------------------------------------------------------------------------------
def commit(
    request: BatchScoreArgs, processing_date: str, run_id: str, manifest: dict[str, Any]
) -> list[str]:
    """Make the run's parts the partition's output (one PUT), then remove every other object
    under the partition: earlier runs' parts, and parts of runs that failed. Returns what was
    removed."""
    prefix = predictions_partition(request.output_prefix, processing_date)
    storage.put_bytes(
        request.curated_bucket,
        prefix + MANIFEST,
        json.dumps(manifest, indent=1).encode(),
        "application/json",
    )
    keep = {prefix + MANIFEST, *manifest["parts"]}
    stale = [
        str(o["Key"])
        for o in storage.list_objects(request.curated_bucket, prefix)
        if str(o["Key"]) not in keep
    ]
    storage.delete_objects(request.curated_bucket, stale)
    return stale


def committed_manifest(bucket: str, partition_prefix: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(storage.read_bytes(bucket, partition_prefix + MANIFEST)))
    except storage.ObjectNotFoundError:
        return None


def read_committed(bucket: str, output_prefix: str, processing_date: str) -> Any:
    """The committed scores of one processing date as a pandas frame (empty when none)."""
    import pandas as pd

    manifest = committed_manifest(bucket, predictions_partition(output_prefix, processing_date))
    if manifest is None:
        return pd.DataFrame()
    frames = [pd.read_parquet(io.BytesIO(storage.read_bytes(bucket, k))) for k in manifest["parts"]]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---- the job ----------------------------------------------------------------------------------------
def new_run_id(moment: dt.datetime | None = None) -> str:
    moment = moment or dt.datetime.now(dt.UTC)
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def run_batch_score(spark: Any, request: BatchScoreArgs) -> dict[str, Any]:
    """Score every customer of `request.input_uri` on `spark` (Glue's session, or a local one,
    when None, started once there are tasks); the job's summary."""
    processing_date = request.processing_date or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    if not _DATE.match(processing_date):
        raise ChurnOpsError(f"--processing_date {processing_date!r} is not YYYY-MM-DD")
    model = load_model(request.registry_uri, request.model_version or None, request.contract_name)
    tasks = plan_tasks(snapshot_parts(request.input_uri))
    run_id = new_run_id()
    results = (
        score_tasks(gluejob.spark_session(spark), tasks, model, request, processing_date, run_id)
        if tasks
        else []
    )
    rows = sum(int(r["rows"]) for r in results)
    manifest = {
        "run_id": run_id,
        "model_version": model["version"],
        "processing_date": processing_date,
        "input_uri": request.input_uri,
        "rows": rows,
        "parts": [str(r["output_key"]) for r in results],
        "committed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    removed = commit(request, processing_date, run_id, manifest)
    summary = {
        "model_version": model["version"],
        "processing_date": processing_date,
        "run_id": run_id,
        "rows": rows,
        "predicted_churners": sum(int(r["churners"]) for r in results),
        "output": storage.s3_uri(
            request.curated_bucket, predictions_partition(request.output_prefix, processing_date)
        ),
        "files": len(results),
        "tasks": len(tasks),
        "rows_upserted": sum(int(r["upserted"]) for r in results),
        "replaced_objects": len(removed),
    }
    log.info("batch scoring done: %s", json.dumps(summary))
    return summary
