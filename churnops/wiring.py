"""What the CDK app hands the code it deploys: one definition of every name that crosses from
deploy time to run time.

The stacks (`stacks/`) build environments, job arguments, bucket rules and grants from this
module; the handlers, Glue jobs and runtime modules parse through it. So an S3 prefix, an
environment variable or a job argument is spelled once, and a rename cannot leave one side
behind. It imports the standard library only (and `churnops.errors`), because every `cdk synth`
imports it and synth must not pull pandas, numpy, pyarrow or pymysql.

Runtime settings follow one pattern, a frozen dataclass per component:
- Lambda environments: `env_names()` (field -> variable), `to_env()` (CDK writes it) and
  `from_env()` (the handler reads it);
- Glue job arguments: `to_args()` (`--name` -> value), `from_args()` (the job reads what Glue
  resolved), `RUN_ARGS` (the arguments the state machine fills per run from JSONPath; the
  construct passes the others as the job's DefaultArguments).
Both parse through `_parse_fields`, which types each value by its field's annotation and names
the variable or argument when a value is bad.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from churnops.errors import ChurnOpsError

# ---- the S3 layout ------------------------------------------------------------------------------
# Raw bucket: uploads land under INCOMING_PREFIX (the stack may configure another); a file that
# cannot be read moves to FAILED_PREFIX, keeping its path below the incoming prefix.
INCOMING_PREFIX = "incoming/"
FAILED_PREFIX = "failed/"
# Curated bucket: ingested Parquet, rejected rows, retrain snapshots, batch scores.
CURATED_PREFIX = "curated/"
QUARANTINE_PREFIX = "quarantine/"
SNAPSHOTS_PREFIX = "snapshots/"
PREDICTIONS_PREFIX = "predictions/"
# Registry bucket: the model registry's root (REGISTRY_URI = s3://<bucket>/models).
REGISTRY_PREFIX = "models/"
# Under a snapshot run's prefix: the customers' parts (batch scoring reads them too).
SNAPSHOT_CUSTOMERS_PREFIX = "customers/"


def failed_key(key: str, incoming_prefix: str = INCOMING_PREFIX) -> str:
    """Where a file that could not be read goes: its path below the configured incoming prefix,
    under failed/ (uploads/2024/a.csv -> failed/2024/a.csv). A key outside the incoming prefix
    keeps its whole path under failed/."""
    rest = key[len(incoming_prefix) :] if key.startswith(incoming_prefix) else key
    return FAILED_PREFIX + rest


def registry_uri(bucket: str) -> str:
    """The registry's URI in `bucket` (a CDK token or a name)."""
    return f"s3://{bucket}/{REGISTRY_PREFIX.rstrip('/')}"


def snapshot_run_prefix(bucket: str, run_id: str) -> str:
    """s3://<curated>/snapshots/<run id>/: everything one retrain run writes (ends in "/")."""
    return f"s3://{bucket}/{SNAPSHOTS_PREFIX}{run_id}/"


def predictions_partition(output_prefix: str, processing_date: str) -> str:
    """The key prefix of one batch-scoring day: predictions/processing_date=<date>/."""
    return f"{output_prefix.strip('/')}/processing_date={processing_date}/"


# ---- the score schema ---------------------------------------------------------------------------
# A score row is the contract's id column followed by these, in this order: the batch job's
# Parquet parts, the `churn_scores` table and the API's predictions all derive from it. Types are
# portable names; each consumer maps them (Spark/Arrow, SQL, JSON Schema).
SCORE_SCHEMA: tuple[tuple[str, str], ...] = (
    ("churn_probability", "double"),  # in [0, 1]
    ("churn_prediction", "int"),  # 1 when churn_probability reaches the model's threshold
    ("model_version", "string"),
)
SCORE_COLUMNS = tuple(name for name, _ in SCORE_SCHEMA)


# ---- the model registry -------------------------------------------------------------------------
# Files of a registry version (s3://<bucket>/models/<version>/...) and the champion pointer.
CHAMPION_KEY = "champion.json"
CARD = "model_card.json"
MODEL_ONNX = "model.onnx"
MODEL_JOBLIB = "model.joblib"
METRICS = "metrics.json"
DRIFT_REPORT = "drift_report.json"
# A version's status in its card. NEVER_CHAMPION statuses can never be promoted.
STATUS_CANDIDATE = "candidate"
STATUS_ELIGIBLE = "champion-eligible"
STATUS_NO_SKILL = "no_skill"
STATUS_BELOW_FLOOR = "below_floor"
NEVER_CHAMPION = frozenset({STATUS_NO_SKILL, STATUS_BELOW_FLOOR})
# The rollout pointer: a candidate served beside the champion, stage by stage. In `shadow` the
# candidate scores every request and the champion answers; in `canary` the candidate answers the
# customers whose stable bucket is below the rollout's share; `full` promotes it (the champion
# pointer moves) and ends the rollout; `aborted` drops it. Only the first two are served.
ROLLOUT_KEY = "rollout.json"
STAGE_SHADOW = "shadow"
STAGE_CANARY = "canary"
STAGE_FULL = "full"
STAGE_ABORTED = "aborted"
ROLLOUT_STAGES = (STAGE_SHADOW, STAGE_CANARY, STAGE_FULL)  # the order `advance` follows
ACTIVE_STAGES = frozenset({STAGE_SHADOW, STAGE_CANARY})
DEFAULT_CANARY_SHARE = 0.1

# ---- EventBridge --------------------------------------------------------------------------------
# What the promote step publishes when the champion pointer moves (the monitoring rule matches it).
EVENT_SOURCE = "churnops.registry"
EVENT_PROMOTED = "ChampionPromoted"
# What the rollout state machine's check publishes when a rollout ends without promotion (an
# alarm on the candidate, or a person's abort); the monitoring rule forwards it to the alerts.
EVENT_ROLLED_BACK = "RolloutRolledBack"
DEFAULT_EVENT_BUS = "default"

# ---- CloudWatch metrics -------------------------------------------------------------------------
# POWERTOOLS_METRICS_NAMESPACE of every function; the alarms read the metrics there.
METRICS_NAMESPACE = "ChurnOps"
# Powertools adds the dimension `service` (the function's POWERTOOLS_SERVICE_NAME) to every
# datapoint, and an alarm only sees a metric under its exact dimensions.
SERVING_SERVICE_NAME = "serving"
RETRAIN_SERVICE_NAME = "churnops-retrain"
# Largest feature PSI of one window of live customers (serving), and of a retrain's snapshot
# against the champion's reference (the drift step). Only the live one starts a retrain.
LIVE_DRIFT_METRIC = "LiveMaxFeaturePSI"
SNAPSHOT_DRIFT_METRIC = "SnapshotMaxFeaturePSI"
# Per model version (serving): every datapoint carries the dimensions (service, ModelVersion,
# Role) and, as a second dimension set, (service, Role), so an alarm can watch "the candidate"
# without naming a version. Role is champion or candidate (a rollout's).
MODEL_VERSION_DIMENSION = "ModelVersion"
ROLE_DIMENSION = "Role"
ROLE_CHAMPION = "champion"
ROLE_CANDIDATE = "candidate"
# Milliseconds of a request, per version that answered at least one of its customers.
VERSION_LATENCY_METRIC = "VersionLatency"
# Milliseconds the version spent scoring the request (a shadow candidate's cost included).
VERSION_SCORING_METRIC = "VersionScoringLatency"
# Scoring failures of the version (a failing candidate never fails the request: the champion
# answers its customers and the failure is counted here).
VERSION_ERRORS_METRIC = "VersionErrors"
VERSION_PREDICTIONS_METRIC = "VersionPredictions"  # customers scored
VERSION_MEAN_SCORE_METRIC = "VersionMeanChurnProbability"
VERSION_CHURN_SHARE_METRIC = "VersionChurnShare"  # share of customers decided as churners
# The candidate against the champion on the same customers (shadow and canary), per closed
# comparison window: the share of customers whose decisions differ, and the PSI of the
# candidate's score distribution against the champion's (the live drift bins and PSI).
SHADOW_DISAGREEMENT_METRIC = "ShadowDecisionDisagreement"
SHADOW_SCORE_PSI_METRIC = "ShadowScorePSI"

# ---- the API ------------------------------------------------------------------------------------
# {"customers": [...]} is a batch; any other object is one customer (API Gateway's request model
# and the function's validator both say so).
BATCH_KEY = "customers"

# ---- the database -------------------------------------------------------------------------------
# How ingest tasks send rows to the run's staging table (churnops.database.load_staging).
STAGING_METHODS = ("auto", "load_data", "insert")


# ---- typed parsing, shared by every settings dataclass --------------------------------------------
_Settings = TypeVar("_Settings", bound="_Dataclass")
_Env = TypeVar("_Env", bound="_EnvSettings")


class _Dataclass:
    """The settings mixins below are subclassed by dataclasses only: this annotation says so to
    the type checker (it is the attribute `dataclasses.fields` reads) and sets nothing."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]


def _parse_fields(
    cls: type[_Settings], lookup: Callable[[str], str | None], label: Callable[[str], str]
) -> dict[str, Any]:
    """The init values of dataclass `cls` from raw strings: `lookup(field)` gives a field's value,
    None or "" when absent (the field then takes its default), `label(field)` names it in an
    error (GATE_MARGIN, --split_bytes). Raises ChurnOpsError for a missing or malformed value."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        raw = lookup(f.name)
        raw = None if raw is None else raw.strip()
        if not raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ChurnOpsError(f"{label(f.name)} is not set")
            continue
        values[f.name] = _typed(raw, hints[f.name], label(f.name))
    return values


def _typed(raw: str, kind: Any, name: str) -> Any:
    if kind is str:
        return raw
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind is bool:
        lowered = raw.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise ChurnOpsError(f"{name}={raw!r} is not true or false")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ChurnOpsError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 30, as a person would write it; it parses back to 30.0
    return str(value)


def _at_least(settings: Any, name: str, minimum: float) -> None:
    value = getattr(settings, name)
    if value < minimum:
        raise ChurnOpsError(f"{settings.label(name)}={value!r} must be at least {minimum}")


class _EnvSettings(_Dataclass):
    """A Lambda environment as a dataclass: one variable per field, `ENV_PREFIX` + the field's
    name in upper case unless the field's metadata names it (`_env`). A field holding another
    _EnvSettings contributes that one's variables."""

    ENV_PREFIX: ClassVar[str] = ""

    @classmethod
    def label(cls, name: str) -> str:
        return cls.env_names()[name]

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> environment variable name (the stacks use this; nothing restates it)."""
        return {
            f.name: f.metadata.get("env") or cls.ENV_PREFIX + f.name.upper()
            for f in fields(cls)
            if not _nested(cls, f.name)
        }

    def to_env(self) -> dict[str, str]:
        """The variables to set. An empty value is left out: unset and empty read the same."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _EnvSettings):
                env.update(value.to_env())
            elif _text(value):
                env[self.env_names()[f.name]] = _text(value)
        return env

    @classmethod
    def from_env(cls: type[_Env], environ: Mapping[str, str] | None = None) -> _Env:
        """From `environ` (default: the process environment). An unset or empty variable takes
        the field's default."""
        environ = os.environ if environ is None else environ
        names = cls.env_names()
        nested = {
            f.name: kind.from_env(environ) for f in fields(cls) if (kind := _nested(cls, f.name))
        }
        flat = _parse_fields(
            cls, lambda name: None if name in nested else environ.get(names[name]), cls.label
        )
        return cls(**flat, **nested)


def _env(name: str) -> dict[str, str]:
    """Field metadata: the variable's name when it is not the field's (Powertools' own names)."""
    return {"env": name}


def _nested(cls: type, name: str) -> type[_EnvSettings] | None:
    kind = typing.get_type_hints(cls)[name]
    return kind if isinstance(kind, type) and issubclass(kind, _EnvSettings) else None


class _JobArgs(_Dataclass):
    """Glue job arguments as a dataclass: `--<field>` each. `RUN_ARGS` are the fields the state
    machine passes with each run (from JSONPath); the construct passes the others as the job's
    DefaultArguments, so it builds one instance with the run fields set to JSONPath strings."""

    RUN_ARGS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def label(cls, name: str) -> str:
        return f"--{name}"

    def to_args(self) -> dict[str, str]:
        """The arguments as Glue takes them: {"--name": "value"}. An empty value is left out: the
        job reads absent and empty alike (the field's default)."""
        return {
            f"--{f.name}": _text(getattr(self, f.name))
            for f in fields(self)
            if _text(getattr(self, f.name))
        }

    def default_arguments(self) -> dict[str, str]:
        """The job's DefaultArguments: every argument not filled per run."""
        return {k: v for k, v in self.to_args().items() if k[2:] not in self.RUN_ARGS}

    def run_arguments(self) -> dict[str, str]:
        """One run's arguments (the construct sets these fields to JSONPath strings)."""
        return {k: v for k, v in self.to_args().items() if k[2:] in self.RUN_ARGS}

    @classmethod
    def required_args(cls) -> tuple[str, ...]:
        """Names (without --) that have no default, for `gluejob.resolve_args`."""
        return tuple(
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        )

    @classmethod
    def optional_args(cls) -> dict[str, str]:
        """Name (without --) -> default as text, for `gluejob.resolve_args`."""
        return {f.name: _text(f.default) for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def from_args(cls: type[_Settings], args: Mapping[str, str]) -> _Settings:
        """From resolved arguments: {name: value} as `gluejob.resolve_args` returns them, or
        {"--name": value} as `to_args` writes them."""
        bare = {k.removeprefix("--"): v for k, v in args.items()}
        return cls(**_parse_fields(cls, bare.get, lambda name: f"--{name}"))


# ---- the retrain gate ---------------------------------------------------------------------------
# Metrics the gate can use as primary (churnops.retrain.evaluate.PRIMARY_METRICS implements each).
PRIMARY_METRIC_NAMES = ("roc_auc", "pr_auc")


@dataclass(frozen=True)
class GateSettings(_EnvSettings):
    """What counts as "really better" (environment GATE_<FIELD>; tests build it directly)."""

    ENV_PREFIX: ClassVar[str] = "GATE_"

    # The metric the challenger must win on; a key of evaluate.PRIMARY_METRICS.
    primary_metric: str = "roc_auc"
    # Minimum improvement of the primary metric (point estimate) over the champion.
    margin: float = 0.005
    # The challenger's own interval lower bound must clear this (skill beyond chance is checked
    # separately, against the metric's no-skill value).
    quality_floor: float = 0.6
    # Guards: how much worse than the champion the challenger may be.
    brier_tolerance: float = 0.005
    recall_tolerance: float = 0.05
    # A slice counts as large from this share of the holdout; a loss on it is "clear" when the
    # challenger is worse by more than `slice_tolerance` and the paired interval lies below zero.
    slice_min_share: float = 0.15
    slice_tolerance: float = 0.01
    # Bootstrap: resamples, two-sided confidence and seed (a fixed seed makes decisions repeatable).
    n_bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 20240601
    # Share of customers held out from training (chosen by a stable hash of the id).
    holdout_share: float = 0.25

    def __post_init__(self) -> None:
        if self.primary_metric not in PRIMARY_METRIC_NAMES:
            known = ", ".join(PRIMARY_METRIC_NAMES)
            raise ChurnOpsError(f"unknown primary metric '{self.primary_metric}' (known: {known})")
        if not 0 < self.confidence < 1:
            raise ChurnOpsError(f"confidence must be between 0 and 1, got {self.confidence}")
        if not 0 < self.holdout_share < 1:
            raise ChurnOpsError(f"holdout share must be between 0 and 1, got {self.holdout_share}")
        if self.n_bootstrap < 100:
            raise ChurnOpsError(f"n_bootstrap must be at least 100, got {self.n_bootstrap}")


# ---- the rollout of a challenger that passed the gate --------------------------------------------
# The candidate's alarms, one per signal the rollout state machine reads at every check: any of
# them in ALARM rolls the rollout back. Their names end with these (stacks/retrain.py prefixes
# the deployment's name), and the functions get the full names in ROLLOUT_ALARM_NAMES.
ROLLOUT_ALARM_SIGNALS = ("errors", "latency", "disagreement", "score-psi")
# Customers per comparison window of a rollout's candidate with the champion: at 1,000 the PSI of
# two models that agree stays near 0.01, and a disagreement rate of 5% is measured to about 0.7%.
DEFAULT_ROLLOUT_COMPARISON_WINDOW = 1000


@dataclass(frozen=True)
class RolloutSettings(_EnvSettings):
    """How a challenger that passed the gate reaches customers (cdk.json `rollout`; environment
    ROLLOUT_<FIELD> of the retrain functions): shadow for a bake, canary at a share for a bake,
    then full (promotion), checking the candidate's alarms every `check_interval_seconds`.
    The thresholds are the alarms' (CDK builds them); the functions read the rest."""

    ENV_PREFIX: ClassVar[str] = "ROLLOUT_"

    canary_share: float = DEFAULT_CANARY_SHARE
    # A bake of 0 passes through the stage at the first check with every alarm OK.
    shadow_bake_seconds: int = 3600
    canary_bake_seconds: int = 3600
    check_interval_seconds: int = 60
    # Customers per comparison of the candidate with the champion (serving's window).
    comparison_window: int = DEFAULT_ROLLOUT_COMPARISON_WINDOW
    # Alarms: one period (CloudWatch: 60 s or a multiple for standard-resolution metrics).
    alarm_period_seconds: int = 60
    max_candidate_errors: int = 1  # candidate scoring failures per period that roll back
    max_candidate_p99_ms: float = 1000.0  # p99 of requests the candidate answered
    # Share of customers whose decision differs from the champion's. A retrain that is really
    # better moves some decisions near the threshold (13-16% measured on the demo's concept
    # drift, each model at its own cost-optimal threshold); a broken or inverted model, half.
    max_disagreement: float = 0.25
    max_score_psi: float = 0.25  # PSI of candidate scores against the champion's

    def __post_init__(self) -> None:
        if not 0 < self.canary_share <= 0.5:
            # SageMaker's canary stage is at most half the traffic too: beyond it, it is the rollout.
            raise ChurnOpsError(
                f"{self.label('canary_share')}={self.canary_share} must be in (0, 0.5]"
            )
        _at_least(self, "shadow_bake_seconds", 0)
        _at_least(self, "canary_bake_seconds", 0)
        _at_least(self, "check_interval_seconds", 1)
        _at_least(self, "comparison_window", 1)
        if self.alarm_period_seconds < 60 or self.alarm_period_seconds % 60:
            raise ChurnOpsError(
                f"{self.label('alarm_period_seconds')}={self.alarm_period_seconds} must be a "
                "multiple of 60 (CloudWatch alarms on standard-resolution metrics)"
            )
        _at_least(self, "max_candidate_errors", 1)
        _at_least(self, "max_candidate_p99_ms", 1)
        if not 0 < self.max_disagreement < 1:
            raise ChurnOpsError(f"{self.label('max_disagreement')} must be in (0, 1)")
        _at_least(self, "max_score_psi", 0.001)


def rollout_alarm_names(name_prefix: str) -> tuple[str, ...]:
    """The candidate's alarm names of a deployment named `name_prefix`."""
    return tuple(f"{name_prefix}-candidate-{signal}" for signal in ROLLOUT_ALARM_SIGNALS)


# ---- Lambda: the retrain steps ------------------------------------------------------------------
# Customers per slice of the snapshot: one slice is in memory at once (churnops.retrain.snapshot).
DEFAULT_SNAPSHOT_SLICE_ROWS = 250_000
# Most holdout customers both models are compared on. 100,000 puts the standard error of a
# ROC-AUC near 0.002, well inside the gate's margin, and keeps the scoring of two models and
# 1,000 resamples within a few minutes; above it the holdout is capped to the customers with the
# smallest holdout hash (the same ones every run).
DEFAULT_EVALUATION_HOLDOUT_ROWS = 100_000


@dataclass(frozen=True)
class RetrainEnvironment(_EnvSettings):
    """The environment of every retrain step function (churnops.retrain.flow.RetrainEnv is the
    runtime object built from it)."""

    registry_uri: str
    curated_bucket: str
    contract_name: str = "telco"
    gate: GateSettings = field(default_factory=GateSettings)
    # Only the snapshot step reads the database; "" elsewhere.
    db_secret_arn: str = ""
    db_name: str = ""  # CDK's instance secret has no dbname: the stack passes it
    event_bus_name: str = DEFAULT_EVENT_BUS
    # Training: families to try (empty: every family churnops.model knows) and CV folds.
    train_families: tuple[str, ...] = ()
    train_folds: int = 5
    snapshot_slice_rows: int = DEFAULT_SNAPSHOT_SLICE_ROWS
    # Most training customers the model is fitted on (0: TrainingOptions' fit_rows): the train
    # step reads a stratified sample of this size, never the whole split.
    train_fit_rows: int = 0
    evaluate_holdout_rows: int = DEFAULT_EVALUATION_HOLDOUT_ROWS
    # The rollout of a challenger that passed the gate, and the candidate's alarms it reads.
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    rollout_alarm_names: tuple[str, ...] = ()
    # MLflow's own variable: set, the train step logs each run and registry decisions move the
    # model aliases (churnops.tracking); empty, mlflow is never imported.
    mlflow_tracking_uri: str = field(default="", metadata=_env("MLFLOW_TRACKING_URI"))
    powertools_service_name: str = field(
        default=RETRAIN_SERVICE_NAME, metadata=_env("POWERTOOLS_SERVICE_NAME")
    )
    metrics_namespace: str = field(
        default=METRICS_NAMESPACE, metadata=_env("POWERTOOLS_METRICS_NAMESPACE")
    )

    def __post_init__(self) -> None:
        _at_least(self, "train_folds", 2)
        _at_least(self, "snapshot_slice_rows", 1)
        _at_least(self, "train_fit_rows", 0)
        _at_least(self, "evaluate_holdout_rows", 1)


# ---- Lambda: serving ----------------------------------------------------------------------------
# Customers per request, and bytes per body: Lambda's synchronous payload limit is 6 MB.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024
# Customers per live drift window. PSI of a sample from an unchanged population is about
# (bins - 1) / rows per feature: 0.01 for 1,000 customers, far below the 0.2 drift line, while a
# busy container still closes a window every few minutes.
DEFAULT_LIVE_DRIFT_WINDOW = 1000


@dataclass(frozen=True)
class ServingEnvironment(_EnvSettings):
    """The environment of the serving function (and of the local server)."""

    registry_uri: str
    contract_name: str = "telco"
    # How often the champion pointer is checked; 0: on every request.
    refresh_seconds: float = field(default=30.0, metadata=_env("CHAMPION_REFRESH_SECONDS"))
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    live_drift_window: int = DEFAULT_LIVE_DRIFT_WINDOW  # customers per live drift measurement
    # Customers per comparison of a rollout's candidate with the champion.
    rollout_comparison_window: int = DEFAULT_ROLLOUT_COMPARISON_WINDOW
    powertools_service_name: str = field(
        default=SERVING_SERVICE_NAME, metadata=_env("POWERTOOLS_SERVICE_NAME")
    )
    metrics_namespace: str = field(
        default=METRICS_NAMESPACE, metadata=_env("POWERTOOLS_METRICS_NAMESPACE")
    )

    def __post_init__(self) -> None:
        _at_least(self, "refresh_seconds", 0)
        _at_least(self, "max_batch_size", 1)
        _at_least(self, "max_body_bytes", 1)
        _at_least(self, "live_drift_window", 1)
        _at_least(self, "rollout_comparison_window", 1)


# ---- Glue: ingestion ----------------------------------------------------------------------------
@dataclass(frozen=True)
class IngestArgs(_JobArgs):
    """Arguments of glue_jobs/ingest_customers.py: ingest one uploaded customer file."""

    source_bucket: str  # the raw bucket
    source_key: str  # as in the EventBridge "Object Created" event (<incoming prefix>...csv)
    curated_bucket: str  # receives curated/ Parquet and quarantine/ rows
    db_secret_arn: str  # Secrets Manager secret (RDS shape) with the database credentials
    db_name: str = ""  # the stack always passes it: CDK's instance secret has no dbname
    contract_name: str = "telco"
    # auto = LOAD DATA LOCAL INFILE when the server allows it, else multi-row INSERTs.
    staging_method: str = "auto"
    # Bytes of the file per Spark task; 0: a multiple of the executor cores (csv_splits).
    split_bytes: int = 0
    # A run still `running` after this long died (the stack passes the job's timeout; 2880 is
    # Glue's longest).
    stale_run_minutes: int = 2880
    # Uploads are ingested under this prefix; a rejected file keeps its path below it under
    # failed/.
    incoming_prefix: str = INCOMING_PREFIX

    RUN_ARGS: ClassVar[tuple[str, ...]] = ("source_bucket", "source_key")

    def __post_init__(self) -> None:
        if self.staging_method not in STAGING_METHODS:
            raise ChurnOpsError(
                f"--staging_method={self.staging_method!r} is not one of "
                + ", ".join(STAGING_METHODS)
            )
        _at_least(self, "split_bytes", 0)
        _at_least(self, "stale_run_minutes", 1)


# ---- Glue: batch scoring ------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchScoreArgs(_JobArgs):
    """Arguments of glue_jobs/batch_score.py: score a snapshot with a registry model."""

    registry_uri: str  # the model registry (s3://bucket/models)
    input_uri: str  # a snapshot prefix ending in "/" (every .parquet under it) or one object
    curated_bucket: str  # receives <output_prefix>/processing_date=<date>/
    model_version: str = ""  # "": the current champion
    processing_date: str = ""  # YYYY-MM-DD; "": today (UTC)
    db_secret_arn: str = ""  # "": scores go to S3 only; else upserted into churn_scores
    db_name: str = ""  # the deployment's database (CDK's instance secret has no dbname)
    contract_name: str = "telco"
    output_prefix: str = PREDICTIONS_PREFIX.rstrip("/")

    RUN_ARGS: ClassVar[tuple[str, ...]] = ("model_version", "input_uri", "processing_date")
