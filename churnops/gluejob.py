"""What every Glue entry script needs, identical on AWS Glue and on local Spark.

- `resolve_args`: awsglue's `getResolvedOptions` where `awsglue` imports, an argparse equivalent
  otherwise, plus optional arguments with defaults (which `getResolvedOptions` lacks). On Glue it
  also creates the job's GlueContext (`glue_context`), because every script resolves its
  arguments first and Glue's job metrics need that context.
- `spark_session`: GlueContext's session on Glue, `churnops.spark.local_spark_session()` locally.

Jobs read and write S3 objects through `churnops.storage` (local Spark has no hadoop-aws jar and
cannot read `s3://`; Glue runs the same functions).

Where we are is decided in one place, `_awsglue()`, and plainly: AWS Glue's runtime has the
`awsglue` package and local Spark (tests, the twin, benchmarks) does not. That single fact picks
getResolvedOptions over argparse and whether a GlueContext exists; nothing else branches on it,
and tests/unit/test_gluejob_context.py runs the Glue side as well, with a stand-in `awsglue`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from churnops.errors import ChurnOpsError


# ---- arguments ----------------------------------------------------------------------------------
def resolve_args(
    argv: Sequence[str] | None,
    required: Sequence[str],
    optional: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Resolve `--name value` job arguments into {name: value}.

    `argv` is what Glue passes (sys.argv: the script path, then `--name value` pairs, including
    Glue's own such as --JOB_ID); a list that starts with an option is accepted too. Unknown
    arguments are ignored, as `getResolvedOptions` does. Optional names take their default when
    absent.
    """
    args = list(sys.argv if argv is None else argv)
    if not args or args[0].startswith("--"):
        args = ["job", *args]
    optional = dict(optional or {})
    present = {a[2:].split("=", 1)[0] for a in args[1:] if a.startswith("--")}
    wanted = [*required, *(name for name in optional if name in present)]
    glue = _awsglue()
    if glue is None:
        resolved = _parse(args[1:], wanted)
    else:
        resolved = glue.utils.getResolvedOptions(args, wanted)
        glue_context()  # from the job's start, so metrics cover all of it
    return {**optional, **{k: v for k, v in resolved.items() if k in wanted}}


def _parse(args: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    parser = argparse.ArgumentParser(prog="glue-job", add_help=False, allow_abbrev=False)
    for name in names:
        parser.add_argument(f"--{name}", dest=name, required=True)
    try:
        parsed, _unknown = parser.parse_known_args(list(args))
    except SystemExit:
        missing = [n for n in names if not any(a.split("=", 1)[0] == f"--{n}" for a in args)]
        raise ChurnOpsError(
            "missing job argument(s): " + ", ".join(f"--{n}" for n in missing or names)
        ) from None
    return vars(parsed)


# ---- where we run, and Spark ----------------------------------------------------------------------
_glue_context: Any = None  # one GlueContext per job process


def _awsglue() -> Any:
    """The `awsglue` package (with `context` and `utils` loaded) on AWS Glue; None elsewhere."""
    try:
        # awsglue exists only inside AWS Glue (not on PyPI): nothing here can check it.
        import awsglue.context
        import awsglue.utils
    except ImportError:
        return None
    return awsglue


def glue_context() -> Any:
    """The job's GlueContext on AWS Glue, created on first call from the (one) SparkContext and
    the same object afterwards; None off Glue.

    Glue publishes a job's metrics (`--enable-metrics`, set in stacks/flows.py) only when the
    script initializes a GlueContext: AWS, "Confirm that the job script initializes a
    GlueContext" (docs.aws.amazon.com/glue/latest/dg/monitor-profile-glue-job-cloudwatch-
    metrics.html) and "If you use a custom script that uses only DataFrames ... metrics might not
    be written to CloudWatch" (repost.aws/knowledge-center/glue-job-metrics-cloudwatch)."""
    global _glue_context
    glue = _awsglue()
    if glue is None:
        return None
    if _glue_context is None:
        from pyspark.context import SparkContext

        _glue_context = glue.context.GlueContext(SparkContext.getOrCreate())
    return _glue_context


def spark_session(spark: Any = None) -> Any:
    """The given session, GlueContext's on Glue, or a local one."""
    if spark is not None:
        return spark
    context = glue_context()
    if context is None:
        from churnops.spark import local_spark_session

        return local_spark_session()
    return context.spark_session
