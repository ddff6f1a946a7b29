"""Batch scoring benchmark: the Glue job's mapInPandas scoring against a row-at-a-time Python UDF.

    python bench/batch_score.py --rows 1000000

1. Generates N synthetic Telco customers (`churnops.synthetic`), validated by the contract, and
   writes them as the retrain snapshot would (Parquet, 100k-row row groups).
2. Trains a model on a 20,000-row sample with the real training code (`--family`, default
   logistic: one-hot + quantile bins, the family training picks on Telco) and registers it as
   champion in a registry on a moto S3 server started in this process.
3. mapInPandas: times `glue_jobs/batch_score.score_dataframe` (the job's scoring stage: model
   broadcast once, ONNX Runtime per Arrow batch) over all N rows, forced with Spark's `noop`
   sink; then runs the whole job `main()` as Glue would (S3 download, scoring, Parquet written
   and uploaded, partition replaced) and reports that time too.
4. Row UDF: a Python UDF calling the scikit-learn pipeline once per row, on a SAMPLE of
   `--udf-rows` rows (default 2,000; at ~150 rows/s a million rows would take two hours), and its
   rate is scaled to rows per second. Both sides are warmed up first (Python workers, model load).

Last line: `batch_score rows=N mapinpandas_rows_per_s=X udf_rows_per_s=Y speedup=Z`, where X is
the scoring stage's rate over all N rows. Targets at 1,000,000 rows on 2 cores: speedup >= 100 and
X >= 150,000.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _moto_server() -> object:
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    return server


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

    from churnops import aws
    from churnops.contract import TELCO
    from churnops.model import model_frame
    from churnops.registry import Registry
    from churnops.spark import local_spark_session
    from churnops.synthetic import generate
    from churnops.training import TrainingOptions, train
    from glue_jobs import batch_score

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = _moto_server()
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

    spark = local_spark_session("churnops-bench-batch-score")
    spark.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory(prefix="churnops-bench-") as tmp:
        path = Path(tmp) / "customers.parquet"
        clean.to_parquet(path, index=False, row_group_size=100_000)
        buffer = io.BytesIO(path.read_bytes())
        s3.put_object(Bucket="bench-curated", Key="snapshots/bench/customers.parquet", Body=buffer)
        customers = spark.read.parquet(str(path))
        model = batch_score.load_model("s3://bench-registry/models", version)

        # Warm-up on every partition: each Python worker started, its imports done and the model
        # deserialised once (on Glue that happens once per executor too).
        warm = customers.sample(fraction=min(1.0, 5000 / len(clean)), seed=1)
        batch_score.score_dataframe(spark, warm, model, "2030-01-01").write.format("noop").mode(
            "overwrite"
        ).save()
        started = time.perf_counter()
        batch_score.score_dataframe(spark, customers, model, "2030-01-01").write.format(
            "noop"
        ).mode("overwrite").save()
        map_seconds = time.perf_counter() - started
        map_rate = len(clean) / map_seconds
        print(
            f"mapInPandas scoring stage: {len(clean):,} rows in {map_seconds:.2f}s "
            f"on {customers.rdd.getNumPartitions()} partition(s)"
        )

        started = time.perf_counter()
        job = batch_score.main(
            [
                "--registry_uri",
                "s3://bench-registry/models",
                "--input_uri",
                "s3://bench-curated/snapshots/bench/customers.parquet",
                "--curated_bucket",
                "bench-curated",
                "--processing_date",
                "2030-01-01",
            ],
            spark=spark,
        )
        job_seconds = time.perf_counter() - started
        print(
            f"whole job (S3 in, score, Parquet out, S3 upload, read back): {job['rows']:,} rows in "
            f"{job_seconds:.2f}s = {job['rows'] / job_seconds:,.0f} rows/s"
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
        udf_sample = customers.limit(args.udf_rows).cache()
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
    server.stop()  # type: ignore[attr-defined]
    print(
        f"batch_score rows={len(clean)} mapinpandas_rows_per_s={map_rate:.0f} "
        f"udf_rows_per_s={udf_rate:.1f} speedup={map_rate / udf_rate:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
