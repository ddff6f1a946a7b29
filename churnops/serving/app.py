"""The serving API, independent of Lambda: an HTTP request in, a JSON response out.

`lambdas/serving/handler.py` turns an API Gateway REST proxy event into an `HttpRequest`, calls
`ServingApp.handle`, and turns the `HttpResponse` back into a proxy response; the local stand-in
(`churnops.local.apigw`) does the same from real HTTP. Every answer is JSON with a status the
OpenAPI document lists. Client input can only ever produce a 4xx; 503 means no champion yet.

Every scored customer is also counted into a live drift window against the serving champion's
reference statistics (`LiveDriftWindow`); the request that completes a window carries its report
in its telemetry, and the handler publishes it as `wiring.LIVE_DRIFT_METRIC`: the measurement whose
alarm starts a retrain (stacks/monitoring.py), because it comes from live traffic and never from
a retrain.

During a rollout (`churnops.registry`, `rollout.json`) the candidate scores every request beside
the champion. In shadow the champion answers; in canary the candidate answers the customers whose
bucket, a stable hash of (rollout id, customer id) in [0, 1), is below the rollout's share, so a
customer sees one model for the whole stage. Every prediction names the `model_version` that
answered. The two models' scores on the same customers are compared window by window
(`ScoreComparison`: decision disagreement rate, PSI of the score distributions), and the
request's per-version figures go into its telemetry for the handler's per-version metrics.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnops.contract import Contract, get_contract
from churnops.registry import Registry
from churnops.scoring import Decisions, Probabilities
from churnops.serving.champion import Candidate, ChampionWatcher
from churnops.serving.model import ServingModel
from churnops.serving.monitoring import PSI_DRIFT_THRESHOLD as PSI_DRIFT_THRESHOLD
from churnops.serving.monitoring import LiveDriftWindow, ScoreComparison, bucket
from churnops.serving.openapi import ROUTES, openapi_document
from churnops.serving.validation import CustomerBatch, RequestRejected, RequestValidator
from churnops.wiring import ROLE_CANDIDATE, ROLE_CHAMPION, STAGE_CANARY, ServingEnvironment

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # the route, without stage or base path: "/predict"
    headers: Mapping[str, str]  # lower-cased names
    body: bytes
    request_id: str = ""

    @classmethod
    def from_proxy_event(cls, event: Mapping[str, Any]) -> HttpRequest:
        """An API Gateway REST (v1) proxy event; resource `/{proxy+}` or one resource per route."""
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        for name, values in (event.get("multiValueHeaders") or {}).items():
            if values and name.lower() not in headers:
                headers[name.lower()] = str(values[-1])
        raw = event.get("body") or ""
        if event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                body = b"\x00invalid base64"  # surfaces as a 400 (not UTF-8), never a 5xx
        else:
            body = (
                bytes(raw)
                if isinstance(raw, bytes | bytearray)
                else str(raw).encode("utf-8", "surrogatepass")
            )
        resource = event.get("resource") or ""
        proxy = (event.get("pathParameters") or {}).get("proxy")
        if "{proxy+}" in resource and proxy is not None:
            path = resource.replace("{proxy+}", proxy)
        elif resource and "{" not in resource:
            path = resource
        else:
            path = event.get("path") or "/"
        context = event.get("requestContext") or {}
        return cls(
            method=str(event.get("httpMethod") or context.get("httpMethod") or "GET").upper(),
            path=path,
            headers=headers,
            body=body,
            request_id=str(context.get("requestId") or ""),
        )


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_proxy(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": JSON_TYPE, **self.headers},
            "body": json.dumps(self.body, separators=(",", ":"), allow_nan=False),
            "isBase64Encoded": False,
        }


@dataclass
class VersionTelemetry:
    """What one model version did in one request: the handler's per-version metrics."""

    role: str  # wiring.ROLE_CHAMPION or ROLE_CANDIDATE
    answered: int = 0  # customers whose prediction it gave
    scored: int = 0  # customers it scored (answered, or in shadow)
    churners: int = 0  # of those scored, decided as churners
    probability_sum: float = 0.0
    scoring_ms: float = 0.0
    errors: int = 0


@dataclass
class Telemetry:
    """What the handler logs and measures about one request; never customer fields but the id."""

    route: str
    status: int = 200
    # The version that answered (in a canary batch answered by both, the champion's).
    model_version: str | None = None
    batch_size: int = 0
    churners: int = 0
    probability_sum: float = 0.0
    customer_ids: list[str] = field(default_factory=list)
    problem_fields: list[str] = field(default_factory=list)  # field names only, never values
    error: str | None = None
    # The live drift window this request completed, if it did: rows, PSI per feature, max_psi
    # and the model version whose reference it was measured against. The handler publishes
    # max_psi as ChurnOps/LiveMaxFeaturePSI, the metric of the drift alarm that starts a retrain.
    live_drift: dict[str, Any] | None = None
    # Per model version that scored this request (the champion, a rollout's candidate).
    versions: dict[str, VersionTelemetry] = field(default_factory=dict)
    # During a rollout: its id, stage and candidate; this request's decision disagreements
    # between candidate and champion; the comparison window it closed, if it did.
    rollout: dict[str, Any] | None = None
    disagreements: int = 0
    comparison: dict[str, Any] | None = None


def _error(status: int, error: str, message: str, **headers: str) -> HttpResponse:
    return HttpResponse(status, {"error": error, "message": message}, headers)


def _media_type_problem(content_type: str | None) -> str | None:
    if not content_type:
        return "the request has no Content-Type; send Content-Type: application/json"
    media, _, params = content_type.partition(";")
    if media.strip().lower() != JSON_TYPE:
        return f"Content-Type {media.strip()[:60]!r} is not supported; send application/json"
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return f"charset {value.strip()[:30]!r} is not supported; send UTF-8"
    return None


class ServingApp:
    """Routes requests to the champion (and a rollout's candidate); one instance per Lambda
    container or local server."""

    def __init__(
        self,
        settings: ServingEnvironment,
        *,
        contract: Contract | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.contract = contract or get_contract(settings.contract_name)
        self.validator = RequestValidator(
            self.contract,
            max_batch_size=settings.max_batch_size,
            max_body_bytes=settings.max_body_bytes,
        )
        self.champion = ChampionWatcher(
            Registry.open(settings.registry_uri),
            self.contract,
            refresh_seconds=settings.refresh_seconds,
            clock=clock,
        )
        self.openapi = openapi_document(self.contract, max_batch_size=settings.max_batch_size)
        # (model version, its window); None for a model whose card has no reference statistics.
        self._live_drift: tuple[str, LiveDriftWindow | None] | None = None
        # ((rollout, champion, candidate), its window): the candidate against the champion.
        self._comparison: tuple[tuple[str, str, str], ScoreComparison] | None = None
        self._routes: dict[str, dict[str, Callable[[HttpRequest, Telemetry], HttpResponse]]] = {
            "/predict": {"POST": self._predict},
            "/model": {"GET": self._model},
            "/health": {"GET": self._health},
            "/openapi.json": {"GET": self._openapi},
        }
        assert {(m, p) for p, r in self._routes.items() for m in r} == set(ROUTES)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServingApp:
        return cls(ServingEnvironment.from_env(environ))

    def warm_up(self) -> None:
        """Load the champion now (cold start), rather than on the first request."""
        self.champion.current()

    def handle(self, request: HttpRequest) -> tuple[HttpResponse, Telemetry]:
        path = request.path.rstrip("/") or "/"
        methods = self._routes.get(path)
        # Only known routes are logged by path: an unknown one is whatever the client typed.
        telemetry = Telemetry(route=f"{request.method[:10]} {path if methods else '(no route)'}")
        if methods is None:
            listed = ", ".join(f"{m} {p}" for m, p in ROUTES)
            response = _error(404, "not_found", f"no route {path[:100]}; the routes are: {listed}")
        elif request.method not in methods:
            allowed = ", ".join(methods)
            response = _error(
                405,
                "method_not_allowed",
                f"{request.method[:10]} is not allowed on {path}; use {allowed}",
                Allow=allowed,
            )
        else:
            try:
                response = methods[request.method](request, telemetry)
            except RequestRejected as rejected:
                response = HttpResponse(rejected.status, rejected.body())
                loggable = self.validator.loggable_fields
                telemetry.problem_fields = sorted(
                    {
                        p.field if p.field in loggable else "(unknown field)"
                        for p in rejected.problems
                    }
                )
            except Exception as err:  # a bug, not the client's fault: say so, never a traceback
                log.exception("unhandled error serving %s", telemetry.route)
                telemetry.error = type(err).__name__
                response = _error(
                    500,
                    "internal_error",
                    f"the server failed on this request (request id {request.request_id or '-'})",
                )
        telemetry.status = response.status
        return response, telemetry

    # ---- routes -------------------------------------------------------------------------------
    def _no_champion(self) -> HttpResponse:
        why = self.champion.last_error or "train and promote a model first"
        return _error(
            503,
            "no_champion",
            f"no champion model is loaded from {self.settings.registry_uri}: {why}",
            **{"Retry-After": str(max(1, int(self.settings.refresh_seconds)))},
        )

    def _predict(self, request: HttpRequest, telemetry: Telemetry) -> HttpResponse:
        problem = _media_type_problem(request.headers.get("content-type"))
        if problem:
            return _error(415, "unsupported_media_type", problem)
        customers = self.validator.parse(request.body)
        telemetry.batch_size = len(customers)
        telemetry.customer_ids = customers.ids
        served = self.champion.served()
        model = served.champion
        if model is None:
            return self._no_champion()
        scores = self._score(model, ROLE_CHAMPION, customers, telemetry)
        if served.unservable is not None:
            # Counted as a failure of the candidate on every request (the champion answers):
            # what its error alarm must see to roll the rollout back.
            record = served.unservable
            telemetry.versions[record["version"]] = VersionTelemetry(ROLE_CANDIDATE, errors=1)
            telemetry.rollout = {
                "rollout_id": record["rollout_id"],
                "stage": record["stage"],
                "candidate_version": record["version"],
                "candidate_error": "unservable",
            }
        candidate = served.candidate
        if candidate is None:
            predictions = model.predict(customers, scores)
            telemetry.versions[model.version].answered = len(customers)
            answered_by = model.version
        else:
            predictions, answered_by = self._rollout_predictions(
                model, scores, candidate, customers, telemetry
            )
        telemetry.model_version = answered_by
        telemetry.churners = sum(p["churn_prediction"] for p in predictions)
        telemetry.probability_sum = sum(p["churn_probability"] for p in predictions)
        telemetry.live_drift = self._measure_live_drift(model, customers.columns, len(customers))
        return HttpResponse(
            200,
            {"model_version": answered_by, "count": len(predictions), "predictions": predictions},
        )

    def _score(
        self, model: ServingModel, role: str, customers: CustomerBatch, telemetry: Telemetry
    ) -> tuple[Probabilities, Decisions]:
        """`model.score(customers)`, timed and counted for the version's metrics (a failure
        too, before it is raised)."""
        version = telemetry.versions[model.version] = VersionTelemetry(role)
        started = time.perf_counter()
        try:
            probabilities, decisions = model.score(customers)
        except Exception:
            version.errors += 1
            raise
        finally:
            version.scoring_ms = (time.perf_counter() - started) * 1000
        version.scored = len(customers)
        version.churners = int(decisions.sum())
        version.probability_sum = float(probabilities.sum())
        return probabilities, decisions

    def _rollout_predictions(
        self,
        champion: ServingModel,
        champion_scores: tuple[Probabilities, Decisions],
        candidate: Candidate,
        customers: CustomerBatch,
        telemetry: Telemetry,
    ) -> tuple[list[dict[str, Any]], str]:
        """A request during a rollout: the candidate scores every customer beside the champion
        and the two are compared; in shadow the champion answers everyone, in canary the
        candidate answers the customers whose bucket is below the share. A candidate that fails
        is counted and the champion answers (a rollout must never cost a customer an answer).
        Returns the predictions and the version named as the response's (the only one that
        answered, or the champion when both did)."""
        rollout: dict[str, Any] = {
            "rollout_id": candidate.rollout_id,
            "stage": candidate.stage,
            "candidate_version": candidate.model.version,
        }
        telemetry.rollout = rollout
        try:
            candidate_scores = self._score(candidate.model, ROLE_CANDIDATE, customers, telemetry)
        except Exception as err:
            log.exception("candidate %s failed; the champion answers", candidate.model.version)
            rollout["candidate_error"] = type(err).__name__
            telemetry.versions[champion.version].answered = len(customers)
            return champion.predict(customers, champion_scores), champion.version
        telemetry.disagreements = int(np.count_nonzero(champion_scores[1] != candidate_scores[1]))
        telemetry.comparison = self._compare(
            champion, candidate, champion_scores[0], candidate_scores[0], telemetry.disagreements
        )
        routed = (
            [bucket(candidate.rollout_id, i) < candidate.canary_share for i in customers.ids]
            if candidate.stage == STAGE_CANARY
            else [False] * len(customers)
        )
        to_candidate = sum(routed)
        telemetry.versions[candidate.model.version].answered = to_candidate
        telemetry.versions[champion.version].answered = len(customers) - to_candidate
        if to_candidate == 0:
            return champion.predict(customers, champion_scores), champion.version
        if to_candidate == len(customers):
            return candidate.model.predict(customers, candidate_scores), candidate.model.version
        # A canary batch answered by both: each part by its model, in the request's order.
        predictions: list[dict[str, Any]] = [{} for _ in routed]
        for model, scores, wanted in (
            (champion, champion_scores, False),
            (candidate.model, candidate_scores, True),
        ):
            rows = [i for i, to in enumerate(routed) if to is wanted]
            part = model.predict(customers.take(rows), (scores[0][rows], scores[1][rows]))
            for i, prediction in zip(rows, part, strict=True):
                predictions[i] = prediction
        return predictions, champion.version

    def _compare(
        self,
        champion: ServingModel,
        candidate: Candidate,
        champion_probabilities: Probabilities,
        candidate_probabilities: Probabilities,
        disagreements: int,
    ) -> dict[str, Any] | None:
        """Add this request's customers to the candidate-against-champion window; the window's
        report when they complete it."""
        key = (candidate.rollout_id, champion.version, candidate.model.version)
        current = self._comparison
        if current is None or current[0] != key:
            # Another rollout, champion or candidate: the old pairs compare other models.
            current = self._comparison = (
                key,
                ScoreComparison(window=self.settings.rollout_comparison_window),
            )
        report = current[1].observe(
            champion_probabilities.tolist(), candidate_probabilities.tolist(), disagreements
        )
        if report is None:
            return None
        report.update(
            rollout_id=candidate.rollout_id,
            stage=candidate.stage,
            champion_version=champion.version,
            candidate_version=candidate.model.version,
        )
        log.info(
            "rollout %s: %s customers compared, candidate %s disagrees on %.2f%%, score PSI %.4f",
            candidate.rollout_id,
            report["rows"],
            candidate.model.version,
            100 * report["disagreement_rate"],
            report["score_psi"],
        )
        return report

    def _measure_live_drift(
        self, model: ServingModel, columns: Mapping[str, list[Any]], rows: int
    ) -> dict[str, Any] | None:
        """Count the scored customers into the live window of `model`; the window's report when
        they complete it. This, not the retrain's snapshot drift, is what can start a retrain."""
        current = self._live_drift
        if current is None or current[0] != model.version:
            # A new champion brings a new reference: the old window's counts compare against
            # a model no longer serving, so they are dropped.
            reference = model.card.get("reference_stats")
            window = (
                LiveDriftWindow(reference, self.contract, window=self.settings.live_drift_window)
                if reference
                else None
            )
            current = self._live_drift = (model.version, window)
        window = current[1]
        if window is None:
            return None
        report = window.observe(columns, rows)
        if report is None:
            return None
        report["model_version"] = model.version
        log.info(
            "live drift window: %s customers, max PSI %.4f against %s, drifted %s",
            report["rows"],
            report["max_psi"],
            model.version,
            report["drifted_features"] or "none",
        )
        return report

    def _model(self, request: HttpRequest, telemetry: Telemetry) -> HttpResponse:
        model = self.champion.current()
        if model is None:
            return self._no_champion()
        telemetry.model_version = model.version
        return HttpResponse(200, model.describe())

    def _health(self, request: HttpRequest, telemetry: Telemetry) -> HttpResponse:
        self.champion.current()
        status = self.champion.status()
        telemetry.model_version = status["model_version"]
        return HttpResponse(
            200,
            {
                "status": "ok",
                "contract": self.contract.name,
                "schema_hash": self.contract.schema_hash,
                **status,
            },
        )

    def _openapi(self, request: HttpRequest, telemetry: Telemetry) -> HttpResponse:
        return HttpResponse(200, self.openapi)
