"""churnops.wiring: what the CDK app hands the code it deploys, defined once for both sides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from churnops.errors import ChurnOpsError
from churnops.wiring import (
    SCORE_COLUMNS,
    BatchScoreArgs,
    GateSettings,
    IngestArgs,
    RetrainEnvironment,
    RolloutSettings,
    ServingEnvironment,
    failed_key,
    registry_uri,
    rollout_alarm_names,
)

REPO = Path(__file__).resolve().parents[2]


def a_batch_score() -> BatchScoreArgs:
    return BatchScoreArgs(
        registry_uri="s3://registry/models",
        input_uri="s3://curated/snapshots/run-1/customers/",
        curated_bucket="curated",
        model_version="20240101T000000Z-abcdef",
        processing_date="2024-01-02",
        db_secret_arn="arn:aws:secretsmanager:eu-west-1:1:secret:db",
        db_name="churnops",
        contract_name="insurance",
    )


def an_ingest() -> IngestArgs:
    return IngestArgs(
        source_bucket="raw",
        source_key="uploads/2024/a.csv",
        curated_bucket="curated",
        db_secret_arn="arn:aws:secretsmanager:eu-west-1:1:secret:db",
        db_name="churnops",
        staging_method="insert",
        split_bytes=1 << 20,
        stale_run_minutes=45,
        incoming_prefix="uploads/",
    )


# ---- round trips: what CDK writes is what the runtime reads ---------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        GateSettings(margin=0.02, primary_metric="pr_auc", n_bootstrap=500),
        RetrainEnvironment(
            registry_uri="s3://registry/models",
            curated_bucket="curated",
            contract_name="insurance",
            gate=GateSettings(margin=0.01),
            db_secret_arn="arn",
            db_name="churnops",
            train_families=("logistic", "gradient_boosting"),
            train_folds=3,
            train_fit_rows=20_000,
            rollout=RolloutSettings(canary_share=0.3, shadow_bake_seconds=0, max_score_psi=0.4),
            rollout_alarm_names=rollout_alarm_names("x"),
            mlflow_tracking_uri="http://mlflow.internal:5000",
        ),
        ServingEnvironment(
            registry_uri="s3://registry/models", refresh_seconds=2.5, max_batch_size=10
        ),
    ],
)
def test_an_environment_reads_back_what_it_writes(settings) -> None:  # type: ignore[no-untyped-def]
    assert type(settings).from_env(settings.to_env()) == settings


@pytest.mark.parametrize("args", [a_batch_score(), an_ingest()])
def test_job_arguments_read_back_what_they_write(args) -> None:  # type: ignore[no-untyped-def]
    assert type(args).from_args(args.to_args()) == args
    # ... also as gluejob.resolve_args returns them: names without "--", defaults filled in
    resolved = {**type(args).optional_args(), **{k[2:]: v for k, v in args.to_args().items()}}
    assert type(args).from_args(resolved) == args


def test_run_arguments_and_default_arguments_split_the_job_arguments() -> None:
    args = a_batch_score()
    run, default = args.run_arguments(), args.default_arguments()
    assert {k[2:] for k in run} == {"model_version", "input_uri", "processing_date"}
    assert not run.keys() & default.keys()
    assert {**run, **default} == args.to_args()
    assert default["--contract_name"] == "insurance"
    assert set(BatchScoreArgs.required_args()) == {"registry_uri", "input_uri", "curated_bucket"}


def test_the_environment_names_are_the_ones_the_functions_have_always_read() -> None:
    env = RetrainEnvironment(registry_uri="r", curated_bucket="c").to_env()
    assert {"REGISTRY_URI", "CURATED_BUCKET", "CONTRACT_NAME", "GATE_MARGIN"} <= env.keys()
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "ChurnOps"
    assert "DB_SECRET_ARN" not in env  # empty: left unset, only the snapshot step has one
    # MLflow's own variable, and only when a server is configured: unset, mlflow is not imported
    assert "MLFLOW_TRACKING_URI" not in env
    assert RetrainEnvironment.env_names()["mlflow_tracking_uri"] == "MLFLOW_TRACKING_URI"
    # The rollout's comparison window is the one variable serving reads too
    assert env["ROLLOUT_COMPARISON_WINDOW"] == "1000"
    assert (
        ServingEnvironment.env_names()["rollout_comparison_window"] == "ROLLOUT_COMPARISON_WINDOW"
    )
    serving = ServingEnvironment.env_names()
    assert serving["refresh_seconds"] == "CHAMPION_REFRESH_SECONDS"
    assert serving["max_batch_size"] == "MAX_BATCH_SIZE"


# ---- bad values name the variable or argument ---------------------------------------------------
@pytest.mark.parametrize(
    ("read", "named"),
    [
        (lambda: ServingEnvironment.from_env({}), "REGISTRY_URI"),
        (
            lambda: ServingEnvironment.from_env({"REGISTRY_URI": "r", "MAX_BATCH_SIZE": "lots"}),
            "MAX_BATCH_SIZE",
        ),
        (
            lambda: ServingEnvironment.from_env({"REGISTRY_URI": "r", "LIVE_DRIFT_WINDOW": "0"}),
            "LIVE_DRIFT_WINDOW",
        ),
        (
            lambda: RetrainEnvironment.from_env(
                {"REGISTRY_URI": "r", "CURATED_BUCKET": "c", "GATE_N_BOOTSTRAP": "x"}
            ),
            "GATE_N_BOOTSTRAP",
        ),
        (
            lambda: RetrainEnvironment.from_env({"CURATED_BUCKET": "c"}),
            "REGISTRY_URI",
        ),
        (
            lambda: IngestArgs.from_args({**an_ingest().to_args(), "--split_bytes": "big"}),
            "--split_bytes",
        ),
        (
            lambda: IngestArgs.from_args({**an_ingest().to_args(), "--staging_method": "ftp"}),
            "--staging_method",
        ),
        (lambda: BatchScoreArgs.from_args({"registry_uri": "r"}), "--input_uri"),
        # SageMaker's canary takes at most half the traffic too; beyond it, it is the rollout.
        (
            lambda: RetrainEnvironment.from_env(
                {"REGISTRY_URI": "r", "CURATED_BUCKET": "c", "ROLLOUT_CANARY_SHARE": "0.6"}
            ),
            "ROLLOUT_CANARY_SHARE",
        ),
        # A standard-resolution alarm's period is 60 s or a multiple of it.
        (lambda: RolloutSettings(alarm_period_seconds=90), "ROLLOUT_ALARM_PERIOD_SECONDS"),
        (lambda: RolloutSettings(check_interval_seconds=0), "ROLLOUT_CHECK_INTERVAL_SECONDS"),
        (lambda: RolloutSettings(max_disagreement=1.5), "ROLLOUT_MAX_DISAGREEMENT"),
    ],
)
def test_a_bad_value_is_a_churnops_error_naming_it(read, named: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ChurnOpsError, match=named):
        read()


# ---- S3 keys -----------------------------------------------------------------------------------
def test_a_failed_file_keeps_its_subfolders_under_the_configured_incoming_prefix() -> None:
    assert failed_key("uploads/2024/a.csv", "uploads/") == "failed/2024/a.csv"
    assert failed_key("incoming/b/c.csv") == "failed/b/c.csv"
    # outside the incoming prefix the whole key is kept under failed/
    assert failed_key("elsewhere/d.csv", "uploads/") == "failed/elsewhere/d.csv"


def test_the_registry_lives_under_models_of_its_bucket() -> None:
    assert registry_uri("my-registry") == "s3://my-registry/models"


def test_a_score_row_is_probability_prediction_and_model_version() -> None:
    assert SCORE_COLUMNS == ("churn_probability", "churn_prediction", "model_version")


# ---- synth stays light --------------------------------------------------------------------------
def test_importing_the_stacks_loads_no_data_library() -> None:
    # A fresh interpreter: this test process has long since imported them all.
    code = (
        "import sys, stacks.churnops_stack, churnops.wiring\n"
        "heavy = {'pandas', 'numpy', 'pyarrow', 'pymysql'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
