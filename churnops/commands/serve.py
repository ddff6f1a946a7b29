"""`churnops serve`: the serving Lambda's handler behind the local API Gateway stand-in."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

from churnops.cli import add_contract_option
from churnops.errors import ChurnOpsError
from churnops.wiring import DEFAULT_MAX_BATCH_SIZE, ServingEnvironment


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the champion over HTTP (the Lambda handler behind a local API Gateway)",
        description=(
            "Serve POST /predict, GET /model, GET /health and GET /openapi.json with the same "
            "handler the serving Lambda runs, from proxy events built out of real HTTP requests."
        ),
    )
    parser.add_argument(
        "--registry", required=True, help="registry: a directory or s3://bucket/prefix"
    )
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--refresh-seconds",
        type=float,
        default=5.0,
        help="how often to check the champion pointer for a new champion (default 5)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"customers per request (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CHURNOPS_API_KEY"),
        help="require this value in the x-api-key header (default: $CHURNOPS_API_KEY, else none)",
    )
    add_contract_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from churnops.contract import get_contract
    from churnops.local.apigw import LocalApiGateway

    if not 0 <= args.port <= 65535:
        raise ChurnOpsError(f"--port {args.port} is not a TCP port")
    if args.max_batch_size < 1:
        raise ChurnOpsError("--max-batch-size must be at least 1")
    if args.refresh_seconds < 0:
        raise ChurnOpsError("--refresh-seconds cannot be negative")
    registry = args.registry
    if not registry.startswith("s3://") and not os.path.isdir(registry):
        raise ChurnOpsError(f"{registry}: no such registry directory")
    # The Lambda reads its settings from the environment that CDK sets; so does this process.
    environment = ServingEnvironment(
        registry_uri=registry,
        contract_name=get_contract(args.contract).name,
        refresh_seconds=args.refresh_seconds,
        max_batch_size=args.max_batch_size,
    )
    os.environ.update(environment.to_env())
    lambda_module = serving_handler_module()
    app = lambda_module.app()  # cold start: the champion loads before the first request
    try:
        gateway = LocalApiGateway(
            lambda_module.handler, host=args.host, port=args.port, api_key=args.api_key
        )
    except OSError as err:
        raise ChurnOpsError(f"cannot listen on {args.host}:{args.port}: {err.strerror}") from None
    status = app.champion.status()
    champion = (
        status["model_version"] or f"none yet ({status['last_refresh_error'] or 'no champion'})"
    )
    print(f"serving {app.contract.name} on {gateway.url} (champion: {champion})", flush=True)
    print(f"  curl -s {gateway.url}/openapi.json", flush=True)
    try:
        gateway.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
    return 0


def serving_handler_module() -> ModuleType:
    """`lambdas.serving.handler`, the module the Lambda image runs.

    `lambdas/` sits beside the `churnops` package in the source tree but is not part of the
    installed package, so from outside the repository root it is found next to `churnops`.
    """
    try:
        return importlib.import_module("lambdas.serving.handler")
    except ModuleNotFoundError as err:
        if err.name not in ("lambdas", "lambdas.serving", "lambdas.serving.handler"):
            raise
    root = Path(__file__).resolve().parents[2]
    if not (root / "lambdas" / "serving" / "handler.py").is_file():
        raise ChurnOpsError("lambdas/serving/handler.py not found: run from a ChurnOps checkout")
    sys.path.insert(0, str(root))
    return importlib.import_module("lambdas.serving.handler")
