"""The Glue side of churnops.gluejob, run here with a stand-in `awsglue` package.

AWS Glue publishes a job's metrics (`--enable-metrics`) only when the script initializes a
GlueContext ("Confirm that the job script initializes a GlueContext",
docs.aws.amazon.com/glue/latest/dg/monitor-profile-glue-job-cloudwatch-metrics.html; "If you use a
custom script that uses only DataFrames ... metrics might not be written to CloudWatch",
repost.aws/knowledge-center/glue-job-metrics-cloudwatch). Both scripts resolve their arguments
first, so on Glue `resolve_args` creates the one GlueContext; off Glue nothing changes.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from churnops import gluejob


class FakeGlueContext:
    created: list[FakeGlueContext] = []

    def __init__(self, spark_context: Any) -> None:
        self.spark_context = spark_context
        self.spark_session = ("session of", spark_context)
        FakeGlueContext.created.append(self)


@pytest.fixture
def on_glue(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`awsglue.context` and `awsglue.utils` importable, SparkContext.getOrCreate a marker."""
    from pyspark.context import SparkContext

    resolved: dict[str, Any] = {}

    def get_resolved_options(args: list[str], names: list[str]) -> dict[str, str]:
        resolved["args"], resolved["names"] = list(args), list(names)
        return {name: args[args.index(f"--{name}") + 1] for name in names}

    package = types.ModuleType("awsglue")
    context = types.ModuleType("awsglue.context")
    utils = types.ModuleType("awsglue.utils")
    context.GlueContext = FakeGlueContext  # type: ignore[attr-defined]
    utils.getResolvedOptions = get_resolved_options  # type: ignore[attr-defined]
    package.context, package.utils = context, utils  # type: ignore[attr-defined]
    for name, module in (
        ("awsglue", package),
        ("awsglue.context", context),
        ("awsglue.utils", utils),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(SparkContext, "getOrCreate", classmethod(lambda cls: "the SparkContext"))
    monkeypatch.setattr(gluejob, "_glue_context", None, raising=False)
    FakeGlueContext.created = []
    return resolved


def test_on_glue_resolving_the_arguments_creates_the_glue_context(on_glue: dict[str, Any]) -> None:
    # GIVEN the job's argv as Glue passes it
    argv = ["script.py", "--JOB_ID", "j_1", "--source_bucket", "raw", "--source_key", "k.csv"]
    # WHEN the script resolves its arguments (the first thing both scripts do)
    args = gluejob.resolve_args(argv, ["source_bucket", "source_key"], {"contract_name": "telco"})
    # THEN awsglue resolved them, and the job now has its GlueContext on the one SparkContext
    assert on_glue["names"] == ["source_bucket", "source_key"]
    assert args == {"source_bucket": "raw", "source_key": "k.csv", "contract_name": "telco"}
    assert len(FakeGlueContext.created) == 1
    assert FakeGlueContext.created[0].spark_context == "the SparkContext"


def test_on_glue_the_spark_session_is_the_glue_contexts_and_made_once(
    on_glue: dict[str, Any],
) -> None:
    gluejob.resolve_args(["--source_bucket", "raw"], ["source_bucket"])
    session = gluejob.spark_session()
    assert session == ("session of", "the SparkContext")
    assert gluejob.glue_context() is FakeGlueContext.created[0]
    assert len(FakeGlueContext.created) == 1


def test_an_explicit_session_wins_even_on_glue(on_glue: dict[str, Any]) -> None:
    assert gluejob.spark_session("given") == "given"
    assert FakeGlueContext.created == []


def test_off_glue_there_is_no_glue_context_and_argparse_resolves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN no awsglue (None in sys.modules makes its import fail, as on local Spark)
    monkeypatch.setitem(sys.modules, "awsglue", None)
    monkeypatch.setattr(gluejob, "_glue_context", None, raising=False)
    # THEN the same functions take the local path
    assert gluejob.glue_context() is None
    assert gluejob.resolve_args(["--source_bucket", "raw"], ["source_bucket"]) == {
        "source_bucket": "raw"
    }
