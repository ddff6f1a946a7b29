"""`churnops data generate`: synthetic customers in the Telco contract's shape."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from churnops.cli import add_contract_option
from churnops.errors import ChurnOpsError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("data", help="synthetic data")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    generate = actions.add_parser(
        "generate", help="write synthetic customers with a known churn mechanism"
    )
    generate.add_argument("--rows", type=int, required=True, help="number of customers")
    generate.add_argument("--seed", type=int, default=0, help="random seed (same seed, same file)")
    generate.add_argument("--out", required=True, help="CSV file to write")
    generate.add_argument(
        "--shift",
        default=None,
        help="move input distributions for drift tests: preset names joined by commas "
        "(price_rise, contract_mix, fiber_growth, new_customers, payment_mix) "
        "or field=value pairs (e.g. monthly_charge_factor=1.2)",
    )
    add_contract_option(generate)
    generate.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from churnops.contract import get_contract
    from churnops.synthetic import generate, write_csv

    contract = get_contract(args.contract)
    if args.rows < 1:
        raise ChurnOpsError(f"--rows must be at least 1, got {args.rows}")
    out = Path(args.out)
    if out.is_dir():
        raise ChurnOpsError(f"{out}: is a directory, expected a file name")
    if not out.parent.is_dir():
        raise ChurnOpsError(f"{out.parent}: no such directory")
    customers = generate(args.rows, args.seed, shift=args.shift, contract=contract)
    write_csv(customers, out)
    churn_rate = float((customers[contract.target_column] == contract.positive_label).mean())
    print(
        json.dumps(
            {
                "rows": len(customers),
                "seed": args.seed,
                "shift": args.shift,
                "out": str(out),
                "churn_rate": round(churn_rate, 4),
            }
        )
    )
    return 0
