"""`churnops local up|down|status|upload FILE|retrain|rollout`: drive the local twin step by
step."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "local",
        help="the local twin: moto + MariaDB + local Spark + the API stand-in, offline",
        description=(
            "Run the whole system on this machine from the CDK app's synthesized template: "
            "uploads trigger the ingest flow, the retrain flow runs on demand, the API answers "
            "on loopback."
        ),
    )
    parser.add_argument(
        "--state-dir", default=".twin", help="where the twin keeps its state (default .twin)"
    )
    parser.add_argument(
        "--cdk-out",
        help="provision from this synthesized cloud assembly instead of synthesizing the app",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start the twin in the background (harmless if running)")
    up.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for readiness")
    up.set_defaults(func=run_up)
    down = actions.add_parser("down", help="stop everything the twin started")
    down.set_defaults(func=run_down)
    status = actions.add_parser("status", help="what runs where (JSON)")
    status.set_defaults(func=run_status)
    upload = actions.add_parser(
        "upload", help="upload a CSV to the raw bucket and report its ingestion (JSON)"
    )
    upload.add_argument("file", help="CSV file of customers")
    upload.add_argument("--key", help="object key (default: <watched prefix><file name>)")
    upload.add_argument("--no-wait", action="store_true", help="do not wait for ingestion")
    upload.add_argument("--timeout", type=float, default=300.0)
    upload.set_defaults(func=run_upload)
    retrain = actions.add_parser(
        "retrain", help="start the retrain flow as its schedule would and print the decision"
    )
    retrain.add_argument("--timeout", type=float, default=600.0)
    retrain.add_argument(
        "--no-follow",
        action="store_true",
        help="do not wait for the rollout a passed challenger is handed to",
    )
    retrain.set_defaults(func=run_retrain)
    rollout = actions.add_parser(
        "rollout",
        help="the rollout the retrain flow started: status (JSON), or advance / abort it now",
    )
    rollout.add_argument("decision", choices=("status", "advance", "abort"))
    rollout.add_argument("--reason", default=None, help="why (recorded in the registry history)")
    rollout.add_argument("--actor", default=None, help="who decides (default: OS user)")
    rollout.set_defaults(func=run_rollout)


def _twin(args: argparse.Namespace) -> Any:
    from churnops.local.twin import Twin

    return Twin(args.state_dir, cdk_out=args.cdk_out)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def run_up(args: argparse.Namespace) -> int:
    state = _twin(args).up(timeout=args.timeout, progress=_progress)
    _print(_summary(state))
    return 0


def run_down(args: argparse.Namespace) -> int:
    stopped = _twin(args).down(progress=_progress)
    _print({"stopped": stopped})
    return 0


def run_status(args: argparse.Namespace) -> int:
    state = _twin(args).status()
    _print(_summary(state) if state.get("status") == "ready" else state)
    return 0 if state.get("status") in ("ready", "stopped") else 1


def run_upload(args: argparse.Namespace) -> int:
    outcome = _twin(args).upload(
        args.file, key=args.key, wait=not args.no_wait, timeout=args.timeout
    )
    _print(outcome)
    return 0 if args.no_wait or outcome.get("status") == "succeeded" else 1


def run_retrain(args: argparse.Namespace) -> int:
    result = _twin(args).retrain(timeout=args.timeout, follow_rollout=not args.no_follow)
    _print(result)
    rollout = result.get("rollout") or {"execution": "SUCCEEDED"}
    return 0 if result["execution"] == rollout["execution"] == "SUCCEEDED" else 1


def run_rollout(args: argparse.Namespace) -> int:
    from churnops.commands.train import default_actor

    twin = _twin(args)
    if args.decision == "status":
        _print(twin.rollout_status())
        return 0
    reason = args.reason or f"manual {args.decision} (churnops local rollout {args.decision})"
    _print(twin.decide_rollout(args.decision, actor=args.actor or default_actor(), reason=reason))
    return 0


def _summary(state: dict[str, Any]) -> dict[str, Any]:
    """What runs where, and how to reach it with standard clients."""
    from churnops.local.flows import incoming_prefix
    from churnops.local.twin import TWIN_CREDENTIALS

    layout = state.get("layout") or {}
    operator = " ".join(
        f"{name}={TWIN_CREDENTIALS[name]}"
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    )
    endpoint = state.get("moto_endpoint")
    return {
        "status": state.get("status"),
        "pid": state.get("pid"),
        "aws_endpoint": endpoint,
        "api_url": state.get("api_url"),
        # the value of the template's API key, generated by the twin: send it as x-api-key
        "api_key": state.get("api_key"),
        "mariadb": f"{state.get('mariadb_host')}:{state.get('mariadb_port')}",
        "raw_bucket": layout.get("raw_bucket"),
        "watched_prefix": layout.get("watched_prefix"),
        "ingest_state_machine": layout.get("ingest_state_machine"),
        "retrain_state_machine": layout.get("retrain_state_machine"),
        "rollout_state_machine": layout.get("rollout_state_machine"),
        "registry": layout.get("registry_uri"),
        "try": {
            # as the twin's operator: the twin checks IAM, and an IAM user's key takes no token
            "upload": f"env -u AWS_SESSION_TOKEN {operator} "
            f"aws --endpoint-url {endpoint} s3 cp customers.csv "
            f"s3://{layout.get('raw_bucket')}/{incoming_prefix(layout)}",
            # the API requires its key, as the deployed one does
            "api": f"curl -s -H 'x-api-key: {state.get('api_key')}' {state.get('api_url')}/health",
        },
    }
