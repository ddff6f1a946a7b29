"""Glue job argument resolution: the same answers on Glue and off it (awsglue is absent here)."""

from __future__ import annotations

import pytest

from churnops.errors import ChurnOpsError
from churnops.gluejob import resolve_args

REQUIRED = ("source_bucket", "source_key")
OPTIONAL = {"contract_name": "telco", "staging_method": "auto"}


def test_arguments_as_glue_passes_them_with_its_own_reserved_ones():
    # GIVEN sys.argv as Glue builds it: the script, its reserved arguments, then ours
    argv = [
        "/tmp/ingest_customers.py",
        "--JOB_ID", "j_1",
        "--JOB_RUN_ID", "jr_1",
        "--job-bookmark-option", "job-bookmark-disable",
        "--source_bucket", "raw",
        "--source_key", "incoming/a b.csv",
        "--contract_name", "insurance",
    ]  # fmt: skip
    # WHEN resolved
    args = resolve_args(argv, REQUIRED, OPTIONAL)
    # THEN ours are there, Glue's are ignored, a missing optional takes its default
    assert args == {
        "source_bucket": "raw",
        "source_key": "incoming/a b.csv",
        "contract_name": "insurance",
        "staging_method": "auto",
    }


def test_a_list_without_the_script_name_and_equals_form_work_too():
    args = resolve_args(["--source_bucket=raw", "--source_key", "k.csv"], REQUIRED, OPTIONAL)
    assert args["source_bucket"] == "raw" and args["source_key"] == "k.csv"
    assert args["contract_name"] == "telco"


def test_a_missing_required_argument_is_named():
    with pytest.raises(ChurnOpsError, match="--source_key"):
        resolve_args(["--source_bucket", "raw"], REQUIRED, OPTIONAL)


def test_a_value_that_looks_like_a_number_stays_a_string():
    args = resolve_args(["--source_bucket", "007", "--source_key", "1e3"], REQUIRED)
    assert args == {"source_bucket": "007", "source_key": "1e3"}
