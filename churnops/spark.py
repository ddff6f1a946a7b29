"""The Spark session the Glue jobs get outside AWS Glue: tests, the twin and the benchmarks.

On Glue the session exists already (GlueContext); here one is built that behaves the same way
where it matters: Arrow on for pandas exchange, UTC session time zone, few shuffle partitions.

Where it runs comes from `CHURNOPS_SPARK_MASTER` (default `local[*]`): `local[N]`, or a
standalone cluster's `spark://host:port`, such as the two-node cluster of
`churnops.local.spark_cluster` whose executor has a disk of its own, as on Glue with two
workers. Executors on a cluster are given what Glue's have: the driver's Python (with this
project importable), and the AWS endpoint, region and credentials of the driver's environment
(in the twin, moto's), which executors do not inherit from the driver process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

MASTER_ENV = "CHURNOPS_SPARK_MASTER"
# What an executor must see of the driver's environment to reach AWS (or moto) as the driver does.
_EXECUTOR_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def spark_master(cores: int | None = None) -> str:
    """The master the local session uses: CHURNOPS_SPARK_MASTER, else local[cores or *]."""
    configured = os.environ.get(MASTER_ENV, "").strip()
    if configured:
        return configured
    return f"local[{cores}]" if cores else "local[*]"


def local_spark_session(
    app_name: str = "churnops", cores: int | None = None, master: str | None = None
) -> Any:
    from pyspark.sql import SparkSession

    master = master or spark_master(cores)
    parallelism = cores or os.cpu_count() or 2
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(max(2, parallelism * 2)))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.warehouse.dir", os.path.join(os.getcwd(), ".spark-warehouse"))
        .config("spark.driver.extraJavaOptions", "-Dderby.system.home=/tmp/churnops-derby")
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
    )
    if master.startswith("spark://"):
        builder = builder.config("spark.executor.memory", "2g")
        if cores:
            builder = builder.config("spark.cores.max", str(cores))
        # The executor's Python imports churnops and glue_jobs from the project, as Glue's
        # executors do from the job's --extra-py-files.
        python_path = os.pathsep.join(
            [str(_PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        builder = builder.config("spark.executorEnv.PYTHONPATH", python_path)
    # Python workers get these in every mode (PySpark hands spark.executorEnv.* to each
    # worker), as they are when the session starts: tasks reach the same AWS (or moto) as the
    # driver even where the worker's process did not inherit the driver's environment.
    for name in _EXECUTOR_ENV:
        if os.environ.get(name):
            builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    return builder.getOrCreate()
