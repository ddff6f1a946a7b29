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
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from churnops.contract import Contract, get_contract
from churnops.registry import Registry
from churnops.serving.champion import ChampionWatcher
from churnops.serving.model import ServingModel
from churnops.serving.openapi import ROUTES, openapi_document
from churnops.serving.validation import RequestRejected, RequestValidator
from churnops.wiring import DEFAULT_LIVE_DRIFT_WINDOW, ServingEnvironment

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"

PSI_DRIFT_THRESHOLD = 0.2
# The bins and the PSI of churnops/drift.py, which the serving image does not carry (it copies
# only the serving modules): the reference statistics' key for missing values, and the floor on
# a bin's share. tests/unit/test_live_drift.py holds a window's PSI equal to drift_report's.
_MISSING = "__missing__"
_EPS = 1e-4


def _psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    total = 0.0
    for reference_share, share in zip(expected, actual, strict=True):
        e, a = max(reference_share, _EPS), max(share, _EPS)
        total += (a - e) * math.log(a / e)
    return total


class LiveDriftWindow:
    """PSI of the customers a server scores against the reference of the model that scores them.

    Each scored customer's values are counted into the reference's own bins as requests arrive
    (a bisect per number, a dict lookup per category: a few microseconds for a one-customer
    request, and nothing about a customer is kept but the counts). When `window` customers have
    been counted, the window's PSI per feature is computed as churnops.drift.drift_report would
    compute it on those customers, returned, and counting starts again. One window per model
    version: a new champion brings a new reference."""

    def __init__(
        self,
        reference_stats: Mapping[str, Any],
        contract: Contract,
        *,
        window: int = DEFAULT_LIVE_DRIFT_WINDOW,
        threshold: float = PSI_DRIFT_THRESHOLD,
    ) -> None:
        if window < 1:
            raise ValueError("a live drift window holds at least one customer")
        self.window = window
        self.threshold = threshold
        reference = reference_stats.get("features") or {}
        # Per feature: its name, how a value finds its bin, the bin of a missing value, and the
        # reference's shares in the same bin order.
        self._numeric: list[tuple[str, list[float], int, list[float]]] = []
        self._category: list[tuple[str, dict[str, int], int, list[float]]] = []
        for col in contract.feature_columns:
            ref = reference.get(col.name)
            if ref is None:
                continue
            if ref["kind"] == "numeric":
                edges = [float(e) for e in ref["edges"]]
                shares = [float(x) for x in ref["shares"]]  # bins, then missing
                self._numeric.append((col.name, edges, len(edges) + 1, shares))
            else:
                keys = list(ref["shares"])
                index = {key: i for i, key in enumerate(keys)}
                shares = [float(ref["shares"][key]) for key in keys]
                self._category.append((col.name, index, index[_MISSING], shares))
        self._lock = threading.Lock()  # the local server scores requests on several threads
        self._reset()

    def _reset(self) -> None:
        self._rows = 0
        self._numeric_counts = [[0] * len(f[3]) for f in self._numeric]
        self._category_counts = [[0] * len(f[3]) for f in self._category]

    def observe(self, columns: Mapping[str, Sequence[Any]], rows: int) -> dict[str, Any] | None:
        """Count `rows` scored customers (feature -> values, as the validator gives them: NaN
        for a missing number, None for a missing category). Returns the window's report when
        these customers complete it, else None."""
        with self._lock:
            for (name, edges, missing, _), counts in zip(
                self._numeric, self._numeric_counts, strict=True
            ):
                for x in columns[name]:
                    counts[missing if x is None or x != x else bisect_right(edges, x)] += 1
            for (name, index, missing, _), counts in zip(
                self._category, self._category_counts, strict=True
            ):
                for value in columns[name]:
                    # A value the reference never saw has no bin, as in drift_report.
                    j = missing if value is None else index.get(value)
                    if j is not None:
                        counts[j] += 1
            self._rows += rows
            if self._rows < self.window:
                return None
            report = self._report()
            self._reset()
            return report

    def _report(self) -> dict[str, Any]:
        rows = self._rows
        psi: dict[str, float] = {}
        for (name, *_, expected), counts in zip(
            [*self._numeric, *self._category],
            [*self._numeric_counts, *self._category_counts],
            strict=True,
        ):
            psi[name] = round(_psi(expected, [c / rows for c in counts]), 6)
        drifted = sorted(
            (name for name, value in psi.items() if value > self.threshold),
            key=lambda name: -psi[name],
        )
        return {
            "rows": rows,
            "threshold": self.threshold,
            "psi": psi,
            "drifted_features": drifted,
            "max_psi": max(psi.values(), default=0.0),
        }


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
class Telemetry:
    """What the handler logs and measures about one request; never customer fields but the id."""

    route: str
    status: int = 200
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
    """Routes requests to the champion; one instance per Lambda container or local server."""

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
        model = self.champion.current()
        if model is None:
            return self._no_champion()
        predictions = model.predict(customers)
        telemetry.model_version = model.version
        telemetry.churners = sum(p["churn_prediction"] for p in predictions)
        telemetry.probability_sum = sum(p["churn_probability"] for p in predictions)
        telemetry.live_drift = self._measure_live_drift(model, customers.columns, len(customers))
        return HttpResponse(
            200,
            {"model_version": model.version, "count": len(predictions), "predictions": predictions},
        )

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
