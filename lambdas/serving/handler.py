"""Serving Lambda behind API Gateway (REST, proxy integration).

Adapter only: proxy event -> `churnops.serving.app.HttpRequest` -> `ServingApp.handle` -> proxy
response, plus one structured log line and a few metrics per request. Routes, validation, the
champion and its refresh all live in `churnops.serving`.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit

from churnops.serving.app import HttpRequest, ServingApp, Telemetry, VersionTelemetry
from churnops.wiring import (
    LIVE_DRIFT_METRIC,
    METRICS_NAMESPACE,
    MODEL_VERSION_DIMENSION,
    ROLE_DIMENSION,
    SERVING_SERVICE_NAME,
    SHADOW_DISAGREEMENT_METRIC,
    SHADOW_SCORE_PSI_METRIC,
    VERSION_CHURN_SHARE_METRIC,
    VERSION_ERRORS_METRIC,
    VERSION_LATENCY_METRIC,
    VERSION_MEAN_SCORE_METRIC,
    VERSION_PREDICTIONS_METRIC,
    VERSION_SCORING_METRIC,
    ServingEnvironment,
)

# Built at import, before the app (and so the whole environment) is read at the cold start.
_ENV_NAMES = ServingEnvironment.env_names()
logger = Logger(service=os.environ.get(_ENV_NAMES["powertools_service_name"], SERVING_SERVICE_NAME))
metrics = Metrics(namespace=os.environ.get(_ENV_NAMES["metrics_namespace"], METRICS_NAMESPACE))

_LOGGED_IDS = 20  # a batch's log line names its first customers, not all thousand

_app: ServingApp | None = None


def app() -> ServingApp:
    """The container's one app, built from the environment (and the champion loaded) on first
    use: the Lambda cold start."""
    global _app
    if _app is None:
        # The churnops package's own log lines (champion loaded or refused) in the same JSON
        # shape. Done here, not at import, so importing this module changes no logging setup.
        copy_config_to_registered_loggers(source_logger=logger, include={"churnops"})
        _app = ServingApp.from_environ()
        _app.warm_up()
        # What the cold start built lives as long as the container: keeping it out of the
        # garbage collector's generations keeps the occasional full collection short.
        gc.freeze()
    return _app


def make_handler(get_app: Callable[[], ServingApp]) -> Callable[..., dict[str, Any]]:
    """The proxy-event handler over the app `get_app` returns (the environment's, or a test's)."""
    cold = True

    def handle(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        nonlocal cold
        started = time.perf_counter()
        request = HttpRequest.from_proxy_event(event)
        response, telemetry = get_app().handle(request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        _record(telemetry, elapsed_ms, request.request_id, cold_start=cold)
        cold = False
        return response.to_proxy()

    return handle


handler = make_handler(app)


def _record(telemetry: Telemetry, elapsed_ms: float, request_id: str, *, cold_start: bool) -> None:
    # Customer data never reaches the logs: ids only, and for bad requests the field names.
    logger.info(
        "request served",
        extra={
            "route": telemetry.route,
            "status": telemetry.status,
            "latency_ms": round(elapsed_ms, 3),
            "batch_size": telemetry.batch_size,
            "model_version": telemetry.model_version,
            "rollout": telemetry.rollout
            and {**telemetry.rollout, "disagreements": telemetry.disagreements},
            "predicted_churners": telemetry.churners,
            "customer_ids": telemetry.customer_ids[:_LOGGED_IDS],
            "problem_fields": telemetry.problem_fields or None,
            "error": telemetry.error,
            "request_id": request_id,
            "cold_start": cold_start,
        },
    )
    if telemetry.status >= 500:
        metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)
    elif telemetry.status >= 400:
        metrics.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=1)
    if telemetry.status == 503:
        metrics.add_metric(name="NoChampion", unit=MetricUnit.Count, value=1)
    if telemetry.batch_size and telemetry.status == 200:
        size = telemetry.batch_size
        metrics.add_metric(name="PredictLatency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
        # BatchSize: its Sum is the number of predictions, its average the typical request.
        metrics.add_metric(name="BatchSize", unit=MetricUnit.Count, value=size)
        metrics.add_metric(
            name="PredictedChurners", unit=MetricUnit.Count, value=telemetry.churners
        )
        metrics.add_metric(
            name="MeanChurnProbability",
            unit=MetricUnit.NoUnit,
            value=telemetry.probability_sum / size,
        )
        metrics.add_metadata(key="model_version", value=telemetry.model_version or "")
    if telemetry.live_drift is not None:
        # One datapoint per closed window of live customers: the metric whose alarm starts a
        # retrain (stacks/monitoring.py). The retrain's own drift report never feeds it.
        metrics.add_metric(
            name=LIVE_DRIFT_METRIC, unit=MetricUnit.NoUnit, value=telemetry.live_drift["max_psi"]
        )
    if metrics.metric_set:
        metrics.flush_metrics()
    for version, figures in telemetry.versions.items():
        _record_version(telemetry, version, figures, elapsed_ms)


def _record_version(
    telemetry: Telemetry, version: str, figures: VersionTelemetry, elapsed_ms: float
) -> None:
    """One EMF record per model version that scored the request, under the dimensions
    (service, ModelVersion, Role) and (service, Role): the rollout's alarms can watch a role."""
    metrics.add_dimension(name=MODEL_VERSION_DIMENSION, value=version)
    metrics.add_dimension(name=ROLE_DIMENSION, value=figures.role)
    service = {"service": metrics.service} if metrics.service else {}
    metrics.add_dimensions(**service, **{ROLE_DIMENSION: figures.role})
    if figures.answered:
        metrics.add_metric(
            name=VERSION_LATENCY_METRIC, unit=MetricUnit.Milliseconds, value=elapsed_ms
        )
    metrics.add_metric(
        name=VERSION_SCORING_METRIC, unit=MetricUnit.Milliseconds, value=figures.scoring_ms
    )
    metrics.add_metric(name=VERSION_ERRORS_METRIC, unit=MetricUnit.Count, value=figures.errors)
    if figures.scored:
        metrics.add_metric(
            name=VERSION_PREDICTIONS_METRIC, unit=MetricUnit.Count, value=figures.scored
        )
        metrics.add_metric(
            name=VERSION_MEAN_SCORE_METRIC,
            unit=MetricUnit.NoUnit,
            value=figures.probability_sum / figures.scored,
        )
        metrics.add_metric(
            name=VERSION_CHURN_SHARE_METRIC,
            unit=MetricUnit.NoUnit,
            value=figures.churners / figures.scored,
        )
    comparison = telemetry.comparison
    if comparison is not None and comparison["candidate_version"] == version:
        # One datapoint per closed window: the candidate against the champion, same customers.
        metrics.add_metric(
            name=SHADOW_DISAGREEMENT_METRIC,
            unit=MetricUnit.NoUnit,
            value=comparison["disagreement_rate"],
        )
        metrics.add_metric(
            name=SHADOW_SCORE_PSI_METRIC, unit=MetricUnit.NoUnit, value=comparison["score_psi"]
        )
        metrics.add_metadata(key="champion_version", value=comparison["champion_version"])
        metrics.add_metadata(key="compared_customers", value=comparison["rows"])
    if telemetry.rollout is not None:
        metrics.add_metadata(key="rollout_id", value=telemetry.rollout["rollout_id"])
        metrics.add_metadata(key="rollout_stage", value=telemetry.rollout["stage"])
    metrics.flush_metrics()
