"""Batch scoring benchmark: the Glue job's mapInPandas scoring against a row-at-a-time Python UDF.

    python bench/batch_score.py --rows 1000000

1. Generates N synthetic Telco customers (`churnops.synthetic`), validated by the contract, and
   writes them as the retrain snapshot does: Parquet parts in S3 (a moto server in this
   process), 100k-row row groups. Nothing is read from the driver's disk.
2. Trains a model on a 20,000-row sample with the real training code (`--family`, default
   logistic: one-hot + quantile bins, the family training picks on Telco) and registers it as
   champion in a registry in the same S3.
3. mapInPandas: times the job's task stage (`churnops.batch_scoring.score_tasks`: one Spark
   task per row group reads it with ranged GETs, scores it with the broadcast ONNX model and
   writes its output part) over all N rows, on 2 cores.
4. Row UDF: a Python UDF calling the scikit-learn pipeline once per row, on a SAMPLE of
   `--udf-rows` rows (default 2,000; at ~150 rows/s a million rows would take two hours), and its
   rate is scaled to rows per second. Both sides are warmed up first (Python workers, model load).
5. Growth with executors: the whole job (plan, tasks, commit) on a session with one executor
   core, then on one with two, same rows; `scaling_2v1` is the second rate over the first.
   `CHURNOPS_SPARK_MASTER` picks the cluster (cores are then `spark.cores.max`).

Last line: `batch_score rows=N mapinpandas_rows_per_s=X udf_rows_per_s=Y speedup=Z
scaling_2v1=S`, where X is the task stage's rate over all N rows. Targets at 1,000,000 rows on
2 cores: X >= 150,000, speedup >= 100, scaling_2v1 >= 1.5 (goal 1.8).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
from pathlib import Path

# bench/ is on sys.path when a benchmark runs as `python bench/<name>.py`
from local_aws import start_moto_server

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--udf-rows", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--family", default="logistic")
    args = parser.parse_args(argv)

    import logging

    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    from churnops import aws, batch_scoring
    from churnops.contract import TELCO
    from churnops.model import model_frame
    from churnops.registry import Registry
    from churnops.spark import local_spark_session
    from churnops.synthetic import generate
    from churnops.training import TrainingOptions, train
    from churnops.wiring import BatchScoreArgs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = start_moto_server()
    aws.reset_clients()
    s3 = aws.client("s3")
    for bucket in ("bench-registry", "bench-curated"):
        s3.create_bucket(Bucket=bucket)

    started = time.perf_counter()
    raw = generate(args.rows, seed=args.seed)
    clean = TELCO.validate(raw.astype(object).where(raw.notna(), "").astype(str)).clean
    print(
        f"generated and validated {len(clean):,} customers in {time.perf_counter() - started:.1f}s"
    )

    started = time.perf_counter()
    sample = clean.sample(min(20_000, len(clean)), random_state=args.seed)
    result = train(sample, TELCO, TrainingOptions(families=(args.family,), folds=3))
    registry = Registry.open("s3://bench-registry/models")
    version = registry.register(result.files, result.card)
    registry.promote(version, actor="bench", reason="benchmark champion")
    print(
        f"trained {result.family} on {len(sample):,} rows in {time.perf_counter() - started:.1f}s"
    )

    # The snapshot as the retrain writes it: Parquet parts under a prefix, in S3 (moto), never
    # on the driver's disk; 100k-row row groups, so the job plans one task per row group.
    parts = 4
    bounds = [len(clean) * i // parts for i in range(parts + 1)]
    for index in range(parts):
        buffer = io.BytesIO()
        clean.iloc[bounds[index] : bounds[index + 1]].to_parquet(
            buffer, index=False, row_group_size=100_000
        )
        s3.put_object(
            Bucket="bench-curated",
            Key=f"snapshots/bench/customers/part-{index}.parquet",
            Body=buffer.getvalue(),
        )
    warm_buffer = io.BytesIO()
    clean.head(4000).to_parquet(warm_buffer, index=False, row_group_size=1000)
    s3.put_object(
        Bucket="bench-curated",
        Key="snapshots/warm/customers/part-0.parquet",
        Body=warm_buffer.getvalue(),
    )
    request = BatchScoreArgs(
        registry_uri="s3://bench-registry/models",
        input_uri="s3://bench-curated/snapshots/bench/customers/",
        curated_bucket="bench-curated",
        processing_date="2030-01-01",
    )
    warm_request = dataclasses.replace(
        request, input_uri="s3://bench-curated/snapshots/warm/customers/"
    )
    model = batch_scoring.load_model(request.registry_uri, version, "telco")
    tasks = batch_scoring.plan_tasks(batch_scoring.snapshot_parts(request.input_uri))
    warm_tasks = batch_scoring.plan_tasks(batch_scoring.snapshot_parts(warm_request.input_uri))

    def job_rate(cores: int) -> tuple[float, int]:
        """The whole job (plan, tasks reading, scoring and writing their parts in S3, commit)
        on a session with `cores` executor cores, after a warm-up; rows/s and the rows."""
        spark = local_spark_session(f"churnops-bench-{cores}-cores", cores=cores)
        spark.sparkContext.setLogLevel("ERROR")
        batch_scoring.run_batch_score(spark, warm_request)
        started = time.perf_counter()
        job = batch_scoring.run_batch_score(spark, request)
        seconds = time.perf_counter() - started
        spark.stop()
        print(
            f"whole job on {cores} core(s): {job['rows']:,} rows, {job['tasks']} tasks in "
            f"{seconds:.2f}s = {job['rows'] / seconds:,.0f} rows/s"
        )
        return job["rows"] / seconds, job["rows"]

    spark = local_spark_session("churnops-bench-batch-score", cores=2)
    spark.sparkContext.setLogLevel("ERROR")
    # Warm-up: each Python worker started, its imports done and the model deserialised once
    # (on Glue that happens once per executor too).
    batch_scoring.score_tasks(spark, warm_tasks, model, warm_request, "2030-01-01", "warm")
    started = time.perf_counter()
    batch_scoring.score_tasks(spark, tasks, model, request, "2030-01-01", "bench")
    map_seconds = time.perf_counter() - started
    map_rate = len(clean) / map_seconds
    print(
        f"mapInPandas stage (tasks read their row groups from S3, score, write their parts): "
        f"{len(clean):,} rows in {map_seconds:.2f}s over {len(tasks)} tasks"
    )

    import joblib

    from churnops.registry import MODEL_JOBLIB

    pipeline_bytes = registry.read(version, MODEL_JOBLIB)
    shared = spark.sparkContext.broadcast(pipeline_bytes)
    features = TELCO.feature_names
    cache: dict[str, object] = {}

    def score_one(*values: object) -> float:
        # What a row-at-a-time UDF does: one Python call, one one-row frame, one predict.
        model = cache.get("model")
        if model is None:
            model = cache["model"] = joblib.load(io.BytesIO(shared.value))
        frame = model_frame(pd.DataFrame([values], columns=features), TELCO)
        return float(model.predict_proba(frame)[0, 1])

    udf = F.udf(score_one, DoubleType())
    udf_sample = spark.createDataFrame(clean.head(args.udf_rows)[features]).cache()
    udf_rows = udf_sample.count()
    udf_sample.limit(20).select(udf(*features)).write.format("noop").mode("overwrite").save()
    started = time.perf_counter()
    udf_sample.select(udf(*features)).write.format("noop").mode("overwrite").save()
    udf_seconds = time.perf_counter() - started
    udf_rate = udf_rows / udf_seconds
    print(
        f"row UDF: {udf_rows:,} sampled rows in {udf_seconds:.2f}s, scaled to rows/s "
        f"(a full {len(clean):,}-row run would take ~{len(clean) / udf_rate / 60:,.0f} min)"
    )
    spark.stop()

    # Growth with executors: the same job, same rows, one executor core against two.
    one_core, _ = job_rate(1)
    two_cores, _ = job_rate(2)
    server.stop()  # type: ignore[attr-defined]
    print(
        f"batch_score rows={len(clean)} mapinpandas_rows_per_s={map_rate:.0f} "
        f"udf_rows_per_s={udf_rate:.1f} speedup={map_rate / udf_rate:.0f} "
        f"scaling_2v1={two_cores / one_core:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
