"""Spark session settings shared by the Glue jobs run locally, the tests and the benchmarks.

On Glue the session exists already (GlueContext); locally we build one that behaves the same way
where it matters: Arrow on for pandas exchange, UTC session time zone, few shuffle partitions.
"""

from __future__ import annotations

import os
from typing import Any


def local_spark_session(app_name: str = "churnops", cores: int | None = None) -> Any:
    from pyspark.sql import SparkSession

    cores = cores or os.cpu_count() or 2
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)  # type: ignore[attr-defined]
    return (
        SparkSession.builder.master(f"local[{cores}]")
        .appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(max(2, cores * 2)))
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.warehouse.dir", os.path.join(os.getcwd(), ".spark-warehouse"))
        .config("spark.driver.extraJavaOptions", "-Dderby.system.home=/tmp/churnops-derby")
        .getOrCreate()
    )
