"""The serving API, independent of Lambda: an HTTP request in, a JSON response out.

`lambdas/serving/handler.py` turns an API Gateway REST proxy event into an `HttpRequest`, calls
`ServingApp.handle`, and turns the `HttpResponse` back into a proxy response; the local stand-in
(`churnops.local.apigw`) does the same from real HTTP. Every answer is JSON with a status the
OpenAPI document lists. Client input can only ever produce a 4xx; 503 means no champion yet.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from churnops.contract import Contract, get_contract
from churnops.registry import Registry
from churnops.serving.champion import ChampionWatcher
from churnops.serving.openapi import ROUTES, openapi_document
from churnops.serving.validation import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_BODY_BYTES,
    RequestRejected,
    RequestValidator,
)

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


@dataclass(frozen=True)
class ServingSettings:
    registry_uri: str
    contract_name: str = "telco"
    refresh_seconds: float = 30.0
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServingSettings:
        env = os.environ if environ is None else environ
        uri = env.get("REGISTRY_URI", "").strip()
        if not uri:
            raise ValueError(
                "REGISTRY_URI is not set: the serving function needs the model registry"
            )

        def number(name: str, default: float, cast: Callable[[str], Any]) -> Any:
            raw = env.get(name, "").strip()
            try:
                value = cast(raw) if raw else default
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number") from None
            if value < 0 or (cast is int and value == 0):
                raise ValueError(f"{name}={raw!r} is out of range")
            return value

        return cls(
            registry_uri=uri,
            contract_name=env.get("CONTRACT_NAME", "").strip() or "telco",
            refresh_seconds=number("CHAMPION_REFRESH_SECONDS", 30.0, float),
            max_batch_size=number("MAX_BATCH_SIZE", DEFAULT_MAX_BATCH_SIZE, int),
        )


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
        settings: ServingSettings,
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
        self._routes: dict[str, dict[str, Callable[[HttpRequest, Telemetry], HttpResponse]]] = {
            "/predict": {"POST": self._predict},
            "/model": {"GET": self._model},
            "/health": {"GET": self._health},
            "/openapi.json": {"GET": self._openapi},
        }
        assert {(m, p) for p, r in self._routes.items() for m in r} == set(ROUTES)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServingApp:
        return cls(ServingSettings.from_environ(environ))

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
        return HttpResponse(
            200,
            {"model_version": model.version, "count": len(predictions), "predictions": predictions},
        )

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
