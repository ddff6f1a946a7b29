"""A local stand-in for API Gateway REST with a Lambda proxy integration.

It turns real HTTP requests into the v1 proxy events API Gateway sends (multi-value headers and
query strings, `{proxy+}` path parameters, a request context with stage, path, method and
request id, base64 bodies for binary media types) and calls the same handler function the Lambda
runs, then writes its proxy response back (base64 bodies decoded). So curl, a browser or any HTTP
client talks to the real handler code, and the handler has no local-only code paths.

What API Gateway itself does before the function is reached is imitated where a client would
notice: an API key header when the usage plan requires one (403 otherwise), the 10 MB payload
limit (413), and a 502 when the function fails or returns something that is not a proxy
response. Used by `churnops serve` and by the local twin.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger(__name__)

ProxyHandler = Callable[[dict[str, Any], Any], Any]

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # REST API payload quota
API_KEY_HEADER = "x-api-key"
_DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body beyond this is not even read


@dataclass(frozen=True)
class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str = "churnops-serving-local"
    memory_limit_in_mb: int = 1769
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:000000000000:function:churnops-serving-local"
    )
    aws_request_id: str = ""
    log_group_name: str = "/aws/lambda/churnops-serving-local"
    log_stream_name: str = "local"
    function_version: str = "$LATEST"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 29_000  # API Gateway's integration timeout


def _is_binary(content_type: str | None, binary_media_types: Iterable[str]) -> bool:
    if not content_type:
        return False
    media = content_type.split(";")[0].strip().lower()
    for pattern in binary_media_types:
        pattern = pattern.lower()
        if pattern == "*/*" or pattern == media:
            return True
        if pattern.endswith("/*") and media.startswith(pattern[:-1]):
            return True
    return False


def build_proxy_event(
    *,
    method: str,
    raw_path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    stage: str,
    resource: str = "/{proxy+}",
    source_ip: str = "127.0.0.1",
    binary_media_types: Iterable[str] = (),
    api_key: str | None = None,
) -> dict[str, Any]:
    """The REST API (v1) proxy event API Gateway would send for this request."""
    parts = urlsplit(raw_path)
    path = unquote(parts.path) or "/"
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value  # API Gateway keeps the last value in `headers`
        multi.setdefault(name, []).append(value)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query_single: dict[str, str] = {}
    query_multi: dict[str, list[str]] = {}
    for name, value in query:
        query_single[name] = value
        query_multi.setdefault(name, []).append(value)
    content_type = next((v for k, v in headers if k.lower() == "content-type"), None)
    # API Gateway base64-encodes bodies of binary media types; text that is not UTF-8 cannot be
    # put in a JSON event as text either, so it is encoded the same way.
    encode = _is_binary(content_type, binary_media_types)
    if not encode:
        try:
            text: str | None = body.decode("utf-8")
        except UnicodeDecodeError:
            encode = True
    if encode:
        text = base64.b64encode(body).decode("ascii")
    if not body:
        text = None
    path_parameters = None
    if "{proxy+}" in resource:
        prefix = resource.split("{proxy+}")[0]
        if path.startswith(prefix) and len(path) > len(prefix):
            path_parameters = {"proxy": path[len(prefix) :]}
    now = time.time()
    user_agent = next((v for k, v in headers if k.lower() == "user-agent"), None)
    return {
        "resource": resource if path_parameters or "{" not in resource else path,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": uuid.uuid4().hex[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{stage}{path}",
            "accountId": "000000000000",
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": source_ip, "userAgent": user_agent, "apiKey": api_key},
            "domainName": "localhost",
            "apiId": "local",
        },
        "body": text,
        "isBase64Encoded": encode,
    }


class LocalApiGateway:
    """Serves `handler` over HTTP on loopback like an API Gateway REST API stage would.

    `api_key`: when set, requests must carry it in `x-api-key` (API Gateway answers 403
    otherwise). `resource`: the API's resource template; `/{proxy+}` sends every path to the
    handler, as the deployed API's greedy resource does.
    """

    def __init__(
        self,
        handler: ProxyHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        stage: str = "local",
        api_key: str | None = None,
        resource: str = "/{proxy+}",
        binary_media_types: Iterable[str] = (),
        max_body_bytes: int = API_GATEWAY_MAX_BODY,
    ) -> None:
        self.handler = handler
        self.stage = stage
        self.api_key = api_key
        self.resource = resource
        self.binary_media_types = tuple(binary_media_types)
        self.max_body_bytes = max_body_bytes
        self._server = ThreadingHTTPServer((host, port), self._request_handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def start(self) -> LocalApiGateway:
        """Serve in a background thread (tests, the twin)."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (`churnops serve`)."""
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalApiGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- one request ----------------------------------------------------------------------
    def invoke(
        self,
        method: str,
        raw_path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """What API Gateway answers for one request: (status, headers, body)."""
        lowered = {k.lower(): v for k, v in headers}
        presented = lowered.get(API_KEY_HEADER)
        if self.api_key is not None and presented != self.api_key:
            return _gateway_error(403, "Forbidden")
        event = build_proxy_event(
            method=method,
            raw_path=raw_path,
            headers=headers,
            body=body,
            stage=self.stage,
            resource=self.resource,
            source_ip=source_ip,
            binary_media_types=self.binary_media_types,
            api_key=presented if self.api_key is not None else None,
        )
        context = LambdaContext(aws_request_id=event["requestContext"]["requestId"])
        try:
            result = self.handler(event, context)
        except Exception:
            # The Lambda failed: API Gateway reports a 502 and the error stays in the logs.
            log.exception("handler raised")
            return _gateway_error(502, "Internal server error")
        try:
            return _proxy_response(result)
        except (TypeError, ValueError, KeyError) as err:
            log.error("handler returned a malformed proxy response: %s", err)
            return _gateway_error(502, "Internal server error")

    def _request_handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "churnops-local-apigw"

            def _serve(self) -> None:
                length_header = self.headers.get("Content-Length")
                try:
                    length = int(length_header) if length_header else 0
                except ValueError:
                    self._write(*_gateway_error(400, "Invalid Content-Length"), close=True)
                    return
                if length < 0:
                    self._write(*_gateway_error(400, "Invalid Content-Length"), close=True)
                    return
                if length > gateway.max_body_bytes:
                    # Read and drop the body (a client still sending would otherwise see a broken
                    # pipe instead of the answer), then answer and close.
                    remaining = min(length, _DRAIN_LIMIT)
                    while remaining > 0:
                        chunk = self.rfile.read(min(remaining, 1 << 20))
                        if not chunk:
                            break
                        remaining -= len(chunk)
                    self._write(*_gateway_error(413, "Request Too Long"), close=True)
                    return
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._read_chunked()
                    if body is None:
                        return
                else:
                    body = self.rfile.read(length) if length else b""
                status, headers, payload = gateway.invoke(
                    self.command,
                    self.path,
                    list(self.headers.items()),
                    body,
                    self.client_address[0],
                )
                self._write(status, headers, payload)

            def _read_chunked(self) -> bytes | None:
                """A chunked body, whole; None when it was refused (answered already)."""
                parts: list[bytes] = []
                size = 0
                while True:
                    line = self.rfile.readline(1024)
                    try:
                        chunk = int(line.split(b";")[0].strip(), 16)
                    except ValueError:
                        self._write(*_gateway_error(400, "Invalid chunked body"), close=True)
                        return None
                    if chunk == 0:
                        while self.rfile.readline(1024).strip():  # trailers
                            pass
                        return b"".join(parts)
                    size += chunk
                    if size > gateway.max_body_bytes:
                        self._write(*_gateway_error(413, "Request Too Long"), close=True)
                        return None
                    parts.append(self.rfile.read(chunk))
                    self.rfile.readline(1024)  # the CRLF after each chunk

            def _write(
                self,
                status: int,
                headers: list[tuple[str, str]],
                payload: bytes,
                close: bool = False,
            ) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s - %s", self.address_string(), format % args)

        return _Handler


def _gateway_error(status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"message": message}).encode()
    return status, [("Content-Type", "application/json")], body


def _proxy_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    if not isinstance(result, dict):
        raise TypeError(f"expected a dict, got {type(result).__name__}")
    status = int(result["statusCode"])
    if not 100 <= status <= 599:
        raise ValueError(f"status {status}")
    headers: list[tuple[str, str]] = [
        (str(k), str(v)) for k, v in (result.get("headers") or {}).items()
    ]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), str(v)) for v in values)
    body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        payload = base64.b64decode(body)
    else:
        payload = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode()
    return status, headers, payload
