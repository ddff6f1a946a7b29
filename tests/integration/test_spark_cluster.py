"""The two-node Spark cluster is what Glue with two workers is: the executor runs in another
process tree with a /tmp of its own, so a file the driver writes to its disk does not exist for
it, and data reaches it only through Spark. Runs in every test run (root and unshare needed:
skipped where missing, failed under CHURNOPS_REQUIRE_SERVICES=1); the driver is a subprocess,
since this process may already hold a local[*] SparkContext."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import need

pytestmark = [pytest.mark.spark, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]

DRIVER = textwrap.dedent(
    """
    import json, os, socket, sys, tempfile
    from churnops.spark import local_spark_session

    spark = local_spark_session("cluster-check")
    handle = tempfile.NamedTemporaryFile(dir="/tmp", prefix="driver-only-", delete=False)
    handle.write(b"on the driver's disk"); handle.close()
    marker = handle.name

    def look(_rows):
        import os
        yield {
            "sees_driver_file": os.path.exists(marker),
            "pid": os.getpid(),
            "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
            "python": sys.executable,
        }

    seen = spark.sparkContext.parallelize(range(2), 2).mapPartitions(look).collect()
    rows = spark.range(0, 1000, 1, numPartitions=4).selectExpr("sum(id) AS total").first()
    print(json.dumps({
        "master": spark.sparkContext.master,
        "driver_pid": os.getpid(),
        "executors": seen,
        "total": rows["total"],
    }))
    spark.stop()
    os.unlink(marker)
    """
)


def test_the_executor_does_not_see_the_drivers_disk() -> None:
    from churnops.local.spark_cluster import TwoNodeSparkCluster, missing_requirements

    problem = missing_requirements()
    need(problem is None, f"for the two-node Spark cluster, {problem}")
    with TwoNodeSparkCluster() as cluster:
        env = {
            **os.environ,
            "CHURNOPS_SPARK_MASTER": cluster.master_url,
            "AWS_ENDPOINT_URL": "http://127.0.0.1:1",  # what the executor must be handed
            "PYTHONPATH": str(REPO),
        }
        done = subprocess.run(
            [sys.executable, "-c", DRIVER],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["master"] == cluster.master_url
    assert report["total"] == sum(range(1000))
    for executor in report["executors"]:
        # THEN the executor is another process, on a disk without the driver's file, and it
        # was handed the Python and the AWS endpoint it does not inherit
        assert executor["pid"] != report["driver_pid"]
        assert executor["sees_driver_file"] is False
        assert executor["endpoint"] == "http://127.0.0.1:1"
        assert executor["python"] == sys.executable
