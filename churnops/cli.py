"""The `churnops` command line. Each subcommand lives in `churnops/commands/<name>.py` and
exposes `register(subparsers)`; heavy libraries are imported inside the command functions so
`churnops --help` stays instant.

A `ChurnOpsError` becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from churnops import __version__
from churnops.errors import ChurnOpsError

COMMAND_MODULES = (
    "churnops.commands.data",
    "churnops.commands.train",
    "churnops.commands.predict",
    "churnops.commands.registry",
    "churnops.commands.serve",
    "churnops.commands.local",
    "churnops.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="churnops", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"churnops {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # a command not written yet
                continue
            raise
        module.register(subparsers)
    return parser


def add_contract_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--contract", default="telco", help="data contract name (default: telco)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except ChurnOpsError as err:
        print(f"churnops {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"churnops {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        # The S3 adapter lets AWS errors other than "not found" through as botocore raised them
        # (Step Functions retries them by name); at the command line they are one line too.
        problem = _aws_problem(err)
        if problem is None:
            raise
        print(f"churnops {args.command}: error: {problem}", file=sys.stderr)
        return 2
    return int(result or 0)


def _aws_problem(err: BaseException) -> str | None:
    """An AWS call's failure as the service reported it (error code and message, which name the
    resource but never a credential); None for any other exception."""
    if not type(err).__module__.startswith("botocore"):
        return None
    response = getattr(err, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        error = response["Error"]
        operation = getattr(err, "operation_name", "") or "AWS call"
        return f"{operation}: {error.get('Code', type(err).__name__)}: {error.get('Message', '')}"
    return f"{type(err).__name__}: {err}"


if __name__ == "__main__":
    sys.exit(main())
