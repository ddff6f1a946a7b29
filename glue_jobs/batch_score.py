"""Glue job: score every customer of a snapshot with the champion, in bulk.

Arguments (`--name value`, interface 4):
  --registry_uri     the model registry (s3://bucket/models or a local directory)
  --input_uri        Parquet of customers in the contract's columns (the retrain snapshot)
  --curated_bucket   bucket whose `predictions/` receives the scores
  --model_version    optional; default: the current champion
  --processing_date  optional, YYYY-MM-DD; default: today (UTC)
  --db_secret_arn    optional; when set, the latest score per customer is upserted into
                     `churn_scores` (the RDS secret, read through Secrets Manager)
  --contract         optional contract name (default telco)
  --output_prefix    optional (default predictions)

The model is broadcast once (ONNX bytes, with the pickled scikit-learn pipeline as the fallback
where onnxruntime is not installed) and scored with `mapInPandas`: each Arrow batch becomes
per-column numpy arrays fed to one ONNX Runtime session per Python worker, so the per-row cost is
a few microseconds instead of a Python call and a one-row DataFrame per customer.

Output: `<id>, churn_probability, churn_prediction, model_version, processing_date` as Parquet
under `s3://<curated>/<prefix>/processing_date=<date>/`. A re-run for the same date replaces that
partition's files (new files are uploaded first, then the old ones are deleted).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

from churnops.errors import ChurnOpsError

log = logging.getLogger("churnops.glue.batch_score")

REQUIRED = ["registry_uri", "input_uri", "curated_bucket"]
OPTIONAL = {
    "model_version": "",
    "processing_date": "",
    "db_secret_arn": "",
    "db_name": "",  # the stack always passes it: CDK's instance secret has no dbname
    "contract": "telco",
    "output_prefix": "predictions",
}
ARGUMENTS = (*REQUIRED, *OPTIONAL)
SCORE_FIELDS = ("churn_probability", "churn_prediction", "model_version", "processing_date")
ARROW_BATCH_ROWS = 50_000
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# One scorer per Python worker process and model version (a version's bytes never change):
# building an ONNX Runtime session costs milliseconds, and Python workers are reused.
_SCORERS: dict[int, Any] = {}


class Scorer:
    """Probabilities for a clean pandas frame: ONNX Runtime when available, else scikit-learn."""

    def __init__(self, model: dict[str, Any]) -> None:
        from churnops.contract import get_contract

        self.contract = get_contract(model["contract"])
        self.session = None
        self.pipeline = None
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            # Spark runs one task per core; one ORT thread per task avoids oversubscription.
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(
                model["onnx"], options, providers=["CPUExecutionProvider"]
            )
        except ImportError:
            import io

            import joblib

            if model.get("joblib") is None:
                raise
            self.pipeline = joblib.load(io.BytesIO(model["joblib"]))

    def probability(self, frame: Any) -> Any:
        # churnops.features, not churnops.model: scoring with ONNX needs no scikit-learn (the
        # Glue job's wheels leave it out); only the fallback below imports it.
        from churnops.features import model_frame

        features = model_frame(frame, self.contract)
        if self.session is not None:
            from churnops.onnx_export import onnx_probability

            return onnx_probability(self.session, features, self.contract)
        from churnops.model import positive_probability

        return positive_probability(self.pipeline, features)


def load_model(registry_uri: str, version: str | None) -> dict[str, Any]:
    """The model's bytes and what scoring needs from its card (small enough to broadcast)."""
    from churnops.registry import MODEL_JOBLIB, MODEL_ONNX, Registry

    registry = Registry.open(registry_uri)
    if not version:
        version = registry.require_champion()["version"]
    card = registry.card(version)
    if "threshold" not in card:
        raise ChurnOpsError(f"model card of {version} has no threshold")
    return {
        "version": version,
        "contract": card["contract"],
        "threshold": float(card["threshold"]),
        "onnx": registry.read(version, MODEL_ONNX),
        # The fallback pipeline only where the ONNX runtime cannot be imported (saves broadcast).
        "joblib": None if _has_onnxruntime() else registry.read(version, MODEL_JOBLIB),
    }


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def output_schema(id_column: str) -> str:
    """What the Python side returns; the constant columns are added on the JVM side."""
    return f"`{id_column}` string, churn_probability double, churn_prediction int"


def score_dataframe(spark: Any, customers: Any, model: dict[str, Any], processing_date: str) -> Any:
    """The scored Spark DataFrame (lazy): one row per customer, the output columns only."""
    from churnops.contract import Kind, get_contract

    contract = get_contract(model["contract"])
    id_column = contract.id_column
    missing = [c for c in (id_column, *contract.feature_names) if c not in customers.columns]
    if missing:
        raise ChurnOpsError(f"input lacks contract column(s): {', '.join(missing)}")
    # Bigger Arrow batches than Spark's 10,000-row default: per-batch costs (ONNX Runtime call,
    # pandas frame) amortise over more rows; 50,000 rows of ~20 columns stay a few MB.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_ROWS))
    shared = spark.sparkContext.broadcast(model)
    threshold = model["threshold"]
    version = model["version"]

    # Categories cross from the JVM to Python as one-byte codes into the contract's allowed
    # values instead of strings: Arrow-encoding millions of short strings costs more than scoring
    # them. Code -1 (a missing value) decodes to "", as `model_frame` treats a missing category.
    from pyspark.sql import functions as F

    categories = {
        c.name: list(c.allowed) for c in contract.feature_columns if c.kind is Kind.CATEGORY
    }
    selected = [F.col(id_column)]
    for name in contract.feature_names:
        if name not in categories:
            selected.append(F.col(name))
            continue
        code = F.when(F.col(name) == categories[name][0], 0)
        for index, value in enumerate(categories[name][1:], start=1):
            code = code.when(F.col(name) == value, index)
        selected.append(code.otherwise(-1).cast("byte").alias(name))

    def score_batches(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np
        import pandas as pd

        scorer = _SCORERS.get(version)
        if scorer is None:
            scorer = _SCORERS[version] = Scorer(shared.value)
        decode = {
            name: np.array([*values, ""], dtype=object) for name, values in categories.items()
        }
        for batch in batches:
            if batch.empty:
                continue
            for name, labels in decode.items():
                batch[name] = labels[batch[name].to_numpy()]  # -1 picks the trailing ""
            proba = np.asarray(scorer.probability(batch), dtype=np.float64)
            yield pd.DataFrame(
                {
                    id_column: batch[id_column].astype(str).to_numpy(),
                    "churn_probability": proba,
                    "churn_prediction": (proba >= threshold).astype(np.int32),
                }
            )

    scored = customers.select(*selected).mapInPandas(score_batches, output_schema(id_column))
    return scored.withColumn("model_version", F.lit(version)).withColumn(
        "processing_date", F.lit(processing_date)
    )


def _read_input(spark: Any, uri: str, workdir: Any) -> Any:
    """A Spark DataFrame of the input Parquet (downloaded with boto3 when on s3://)."""
    from pathlib import Path

    from churnops import aws, gluejob

    if not uri.startswith("s3://"):
        return spark.read.parquet(uri)
    bucket, key = aws.split_s3_uri(uri)
    if gluejob.head(bucket, key) is None:
        raise ChurnOpsError(f"no input object at {uri}")
    local = gluejob.download_file(bucket, key, Path(workdir) / "input.parquet")
    return spark.read.parquet(str(local))


def _replace_partition(bucket: str, prefix: str, local_dir: Any) -> list[str]:
    """Upload the new part files, then delete whatever else was in the partition."""
    from churnops import aws, gluejob

    keys = gluejob.upload_tree(local_dir, bucket, prefix)
    s3 = aws.client("s3")
    stale = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        stale += [o["Key"] for o in page.get("Contents", []) if o["Key"] not in set(keys)]
    for start in range(0, len(stale), 1000):
        s3.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": k} for k in stale[start : start + 1000]], "Quiet": True},
        )
    return keys


def main(argv: list[str] | None = None, spark: Any = None) -> dict[str, Any]:
    from churnops import gluejob

    args = gluejob.resolve_args(argv, required=REQUIRED, optional=OPTIONAL)
    processing_date = args["processing_date"] or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    if not _DATE.match(processing_date):
        raise ChurnOpsError(f"--processing_date {processing_date!r} is not YYYY-MM-DD")
    spark = gluejob.spark_session(spark)
    model = load_model(args["registry_uri"], args["model_version"] or None)
    if model["contract"] != args["contract"]:
        raise ChurnOpsError(
            f"model {model['version']} follows contract {model['contract']}, "
            f"the job was asked to score {args['contract']}"
        )
    prefix = f"{args['output_prefix'].strip('/')}/processing_date={processing_date}"
    with gluejob.scratch_dir("churnops-batch-score-") as workdir:
        customers = _read_input(spark, args["input_uri"], workdir)
        scored = score_dataframe(spark, customers, model, processing_date)
        # processing_date is the partition (the directory), not a column of the files.
        local_out = workdir / "scored"
        scored.drop("processing_date").write.mode("overwrite").parquet(str(local_out))
        keys = _replace_partition(args["curated_bucket"], prefix, local_out)
        frame = spark.read.parquet(str(local_out)).toPandas()
    rows = len(frame)
    upserted = 0
    if args["db_secret_arn"]:
        from churnops import database
        from churnops.contract import get_contract

        frame["processing_date"] = processing_date
        conn = database.connect(args["db_secret_arn"], database=args["db_name"] or None)
        try:
            upserted = database.upsert_scores(conn, frame, get_contract(args["contract"]))
        finally:
            conn.close()
    result = {
        "model_version": model["version"],
        "processing_date": processing_date,
        "rows": rows,
        "predicted_churners": int(frame["churn_prediction"].sum()) if rows else 0,
        "output": gluejob.s3_uri(args["curated_bucket"], prefix + "/"),
        "files": len(keys),
        "rows_upserted": upserted,
    }
    log.info("batch scoring done: %s", json.dumps(result))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
