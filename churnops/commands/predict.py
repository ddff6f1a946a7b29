"""`churnops predict`: score a CSV of customers with the registry's champion."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from churnops.cli import add_contract_option
from churnops.errors import ChurnOpsError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("predict", help="score customers with the champion model")
    parser.add_argument(
        "--registry", required=True, help="registry directory or s3://bucket/prefix"
    )
    parser.add_argument("--input", required=True, help="CSV file of customers")
    parser.add_argument("--output", required=True, help="CSV file to write the scores to")
    parser.add_argument("--version", default=None, help="score with this version, not the champion")
    add_contract_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from churnops.contract import REJECT_REASON, get_contract
    from churnops.dataset import read_customers
    from churnops.registry import Registry
    from churnops.scoring import load_model, score

    contract = get_contract(args.contract)
    output = Path(args.output)
    if output.is_dir() or not output.parent.is_dir():
        raise ChurnOpsError(f"{output}: cannot write there (no such directory, or a directory)")
    loaded = load_model(Registry.open(args.registry), contract, args.version)
    validation = contract.validate(
        read_customers(args.input, contract, target_required=False), target_required=False
    )
    rejected_path = output.with_name(output.name + ".rejected.csv")
    if len(validation.rejected):
        # Nothing is lost: rows that cannot be scored go beside the output, with the reason.
        validation.rejected.to_csv(rejected_path, index=False)
        print(
            f"{len(validation.rejected)} row(s) not scored, reasons in {rejected_path} "
            f"(first: {validation.rejected.iloc[0][REJECT_REASON]})",
            file=sys.stderr,
        )
    if validation.clean.empty:
        raise ChurnOpsError(f"{args.input}: no valid rows to score")
    scores = score(validation.clean, loaded, contract)
    scores.to_csv(output, index=False, float_format="%.8f")
    print(
        f"scored {len(scores)} customer(s) with model {loaded.version} -> {output}", file=sys.stderr
    )
    return 0
