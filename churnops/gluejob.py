"""What every Glue entry script needs, identical on AWS Glue and on local Spark.

- `resolve_args`: awsglue's `getResolvedOptions` where `awsglue` imports, an argparse equivalent
  otherwise, plus optional arguments with defaults (which `getResolvedOptions` lacks). On Glue it
  also creates the job's GlueContext (`glue_context`), because every script resolves its
  arguments first and Glue's job metrics need that context.
- `spark_session`: GlueContext's session on Glue, `churnops.spark.local_spark_session()` locally.
- The S3 adapter: this machine's Spark has no hadoop-aws jar and cannot read `s3://`, so jobs
  move objects with boto3 (through `churnops.aws`, which honours AWS_ENDPOINT_URL and so reaches
  moto in the twin). Glue runs the same functions.

Where we are is decided in one place, `_awsglue()`, and plainly: AWS Glue's runtime has the
`awsglue` package and local Spark (tests, the twin, benchmarks) does not. That single fact picks
getResolvedOptions over argparse and whether a GlueContext exists; nothing else branches on it,
and tests/unit/test_gluejob_context.py runs the Glue side as well, with a stand-in `awsglue`.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from churnops import aws
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
        import awsglue.context  # type: ignore[import-not-found]
        import awsglue.utils  # type: ignore[import-not-found]
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


# ---- the S3 adapter -----------------------------------------------------------------------------
def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def head(bucket: str, key: str) -> dict[str, Any] | None:
    """The object's metadata, or None when it does not exist."""
    s3 = aws.client("s3")
    try:
        return dict(s3.head_object(Bucket=bucket, Key=key))
    except s3.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def read_bytes(bucket: str, key: str) -> bytes:
    body = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    try:
        return bytes(body.read())
    finally:
        body.close()


def read_range(bucket: str, key: str, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of the object, with one ranged GET."""
    if stop <= start:
        return b""
    body = aws.client("s3").get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}")[
        "Body"
    ]
    try:
        return bytes(body.read())
    finally:
        body.close()


def put_bytes(bucket: str, key: str, data: bytes, content_type: str) -> str:
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    return s3_uri(bucket, key)


def list_objects(bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under `prefix` (Key, Size, ...), in key order."""
    found: list[dict[str, Any]] = []
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        found += page.get("Contents", [])
    return sorted(found, key=lambda o: str(o["Key"]))


def delete_objects(bucket: str, keys: Sequence[str]) -> None:
    s3 = aws.client("s3")
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
        chunk = keys[start : start + 1000]
        s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        )


class S3RangeFile(io.RawIOBase):
    """A read-only, seekable file over one S3 object, read with ranged GETs as it is read.

    What lets a Spark task on any node read its own part of an object (a Parquet row group, a
    byte range of a CSV) with boto3 alone: local Spark has no s3a, and on Glue the same code
    runs unchanged. Wrap it in `io.BufferedReader` for small reads (Parquet footers)."""

    def __init__(self, bucket: str, key: str, size: int | None = None) -> None:
        super().__init__()
        self.bucket, self.key = bucket, key
        if size is None:
            meta = head(bucket, key)
            if meta is None:
                raise ChurnOpsError(f"no object at {s3_uri(bucket, key)}")
            size = int(meta["ContentLength"])
        self.size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self.size or len(view) == 0:
            return 0
        stop = min(self.size, self._position + len(view))
        data = read_range(self.bucket, self.key, self._position, stop)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


def move(bucket: str, key: str, new_key: str) -> str:
    """Copy then delete: S3 has no rename. A crash in between leaves a copy, never a loss."""
    s3 = aws.client("s3")
    s3.copy_object(Bucket=bucket, Key=new_key, CopySource={"Bucket": bucket, "Key": key})
    s3.delete_object(Bucket=bucket, Key=key)
    return s3_uri(bucket, new_key)
