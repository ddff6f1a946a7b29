"""Ingest benchmark: the real ingest job against MariaDB's own bulk loader, on the same rows.

    python bench/ingest.py --rows 1000000

1. Writes N synthetic Telco customers (`churnops.synthetic`) to a CSV file.
2. Starts a private MariaDB and a moto server (S3, Secrets Manager) in this process.
3. Uploads the file to incoming/ and runs `glue_jobs/ingest_customers.py` exactly as Glue would
   (argument list), timing the whole job: secret, header, survey and load tasks (ranged reads,
   parse, contract validation, curated and quarantine parts, staging), merge, audit. It runs
   twice on empty tables, the same rows each time: on a Spark session with one executor core,
   then with two; the second run is the job's figure.
4. Loads the same CSV into a table with the same DDL using `LOAD DATA LOCAL INFILE`: the physical
   baseline, with no validation (non-strict mode, so the blank TotalCharges cells load as 0).

The last line is `ingest rows=N job_rows_per_s=X load_data_rows_per_s=Y ratio=Z scaling_2v1=S`
(ratio = job time / LOAD DATA time; scaling_2v1 = the job's rows/s with two executor cores over
one). Targets on 2 cores at 1,000,000 rows: ratio <= 3 (goal <= 2), scaling_2v1 >= 1.3.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

# bench/ is on sys.path when a benchmark runs as `python bench/<name>.py`
from local_aws import create_bench_database, start_moto_server

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--staging-method", default="auto", choices=("auto", "load_data", "insert"))
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log

    from churnops import aws, database
    from churnops.contract import TELCO
    from churnops.local.mariadb import PrivateMariaDB
    from churnops.synthetic import generate, write_csv

    work = Path(tempfile.mkdtemp(prefix="churnops-bench-ingest-"))
    csv_path = work / "customers.csv"
    started = time.perf_counter()
    write_csv(generate(args.rows, args.seed), csv_path)
    print(
        f"generated {args.rows} rows ({csv_path.stat().st_size / 1e6:.1f} MB) "
        f"in {time.perf_counter() - started:.1f}s",
        flush=True,
    )

    moto = start_moto_server()
    # Room for the table, the staging copy and the baseline's table at a million rows (~1.5 GB).
    server = PrivateMariaDB(work / "mariadb", buffer_pool="2G")
    try:
        server.start()
        secret_arn, _ = create_bench_database(server)
        s3 = aws.client("s3")
        for bucket in ("bench-raw", "bench-curated"):
            s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(csv_path), "bench-raw", "incoming/customers.csv")

        # ---- the job ------------------------------------------------------------------------
        spec = importlib.util.spec_from_file_location(
            "ingest_job", REPO / "glue_jobs" / "ingest_customers.py"
        )
        assert spec and spec.loader
        job = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(job)
        job_argv = ["--JOB_ID", "j_bench", "--JOB_RUN_ID", "jr_bench", "--JOB_NAME", "ingest"]
        job_argv += ["--source_bucket", "bench-raw", "--source_key", "incoming/customers.csv"]
        job_argv += ["--curated_bucket", "bench-curated", "--db_secret_arn", secret_arn]
        job_argv += ["--contract_name", "telco", "--staging_method", args.staging_method]
        seconds = {}
        for cores in (1, 2):
            seconds[cores] = _timed_job(job, job_argv, secret_arn, cores, args.rows)
        job_seconds = seconds[2]

        # ---- the baseline -------------------------------------------------------------------
        conn = database.connect(secret_arn, local_infile=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION sql_mode = ''")  # a bulk loader does not validate
                cur.execute("DROP TABLE IF EXISTS `load_data_baseline`")
                cur.execute(TELCO.ddl("load_data_baseline"))
                conn.commit()
                started = time.perf_counter()
                cur.execute(
                    "LOAD DATA LOCAL INFILE %s INTO TABLE `load_data_baseline` CHARACTER SET utf8mb4"
                    " FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"'"
                    " LINES TERMINATED BY '\\n' IGNORE 1 LINES",
                    (str(csv_path),),
                )
                conn.commit()
                load_seconds = time.perf_counter() - started
                loaded = cur.rowcount
        finally:
            conn.close()
        print(f"LOAD DATA LOCAL INFILE: {load_seconds:.2f}s for {loaded} rows", flush=True)
    finally:
        server.stop()
        moto.stop()
        shutil.rmtree(work, ignore_errors=True)

    job_rate = args.rows / job_seconds
    load_rate = args.rows / load_seconds
    print(
        f"ingest rows={args.rows} job_rows_per_s={job_rate:.0f} "
        f"load_data_rows_per_s={load_rate:.0f} ratio={job_seconds / load_seconds:.2f} "
        f"scaling_2v1={seconds[1] / job_seconds:.2f}"
    )
    return 0


def _timed_job(job, job_argv: list[str], secret_arn: str, cores: int, rows: int) -> float:
    """Run the job on a fresh Spark session with `cores` executor cores, into empty tables (so
    every run does the same work); its wall seconds, session start excluded."""
    from churnops import database
    from churnops.contract import TELCO
    from churnops.spark import local_spark_session

    conn = database.connect(secret_arn)
    try:
        with conn.cursor() as cur:
            for table in (TELCO.table, database.AUDIT_TABLE):
                cur.execute(f"DROP TABLE IF EXISTS `{table}`")
        conn.commit()
    finally:
        conn.close()
    spark = local_spark_session("bench-ingest", cores=cores)
    try:
        started = time.perf_counter()
        result = job.main(job_argv, spark=spark)
        seconds = time.perf_counter() - started
    finally:
        spark.stop()
    if result["rows_loaded"] + result["rows_quarantined"] != rows:
        raise SystemExit(f"the job read {result['rows_read']} rows, expected {rows}")
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in result["seconds"].items())
    print(
        f"job on {cores} core(s): {seconds:.2f}s for {result['rows_loaded']} loaded + "
        f"{result['rows_quarantined']} quarantined in {result['splits']} splits ({stages})",
        flush=True,
    )
    return seconds


if __name__ == "__main__":
    sys.exit(main())
