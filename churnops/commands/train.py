"""`churnops train`: train candidates, evaluate on a holdout, register a version (JSON summary)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from churnops.cli import add_contract_option
from churnops.errors import ChurnOpsError


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("train", help="train, evaluate and register a model version")
    parser.add_argument("--data", required=True, help="CSV file of customers with the target")
    parser.add_argument(
        "--registry", required=True, help="registry directory or s3://bucket/prefix"
    )
    add_contract_option(parser)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--offer-cost",
        type=float,
        default=None,
        help="cost of one retention offer (with --churn-cost: cost-based threshold)",
    )
    parser.add_argument(
        "--churn-cost", type=float, default=None, help="value lost when a customer churns unflagged"
    )
    parser.add_argument(
        "--quality-floor",
        type=float,
        default=0.6,
        help="ROC-AUC interval lower bound a version must exceed to be champion",
    )
    parser.add_argument(
        "--families",
        default="",
        help="candidate families, comma-separated (default: every family of churnops.model)",
    )
    parser.add_argument("--holdout-share", type=float, default=0.2)
    parser.add_argument(
        "--tune-rows",
        type=int,
        default=50_000,
        help="compare candidates on at most this many rows (stratified sample)",
    )
    parser.add_argument(
        "--fit-rows",
        type=int,
        default=200_000,
        help="fit the final model on at most this many rows",
    )
    parser.add_argument(
        "--no-refit", action="store_true", help="register the model fitted without the holdout rows"
    )
    parser.add_argument("--jobs", type=int, default=1, help="parallel cross-validation fits")
    parser.add_argument("--actor", default=None, help="who is training (default: OS user)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from churnops.contract import get_contract
    from churnops.dataset import read_customers
    from churnops.evaluation import CostPolicy
    from churnops.model import FAMILIES
    from churnops.registry import Registry
    from churnops.training import TrainingOptions, register_result, train

    contract = get_contract(args.contract)
    if not 0.05 <= args.holdout_share <= 0.5:
        raise ChurnOpsError("--holdout-share must be between 0.05 and 0.5")
    if args.tune_rows < 100 or args.fit_rows < 100 or args.jobs < 1:
        raise ChurnOpsError("--tune-rows and --fit-rows must be at least 100, --jobs at least 1")
    options = TrainingOptions(
        seed=args.seed,
        holdout_share=args.holdout_share,
        cost_policy=CostPolicy(args.offer_cost, args.churn_cost),
        quality_floor=args.quality_floor,
        tune_rows=args.tune_rows,
        fit_rows=args.fit_rows,
        families=tuple(f.strip() for f in args.families.split(",") if f.strip()) or FAMILIES,
        refit_full=not args.no_refit,
        n_jobs=args.jobs,
    )
    registry = Registry.open(args.registry)
    result_of_validation = contract.validate(read_customers(args.data, contract))
    clean, rejected = result_of_validation.clean, result_of_validation.rejected
    if clean.empty:
        first = rejected.iloc[0]["reject_reason"] if len(rejected) else "no rows"
        raise ChurnOpsError(
            f"{args.data}: no valid rows ({len(rejected)} rejected; first: {first})"
        )
    result = train(clean, contract, options)
    summary = register_result(result, registry, actor=args.actor or default_actor())
    summary["data"] = {"file": args.data, "rows_clean": len(clean), "rows_rejected": len(rejected)}
    print(json.dumps(summary, indent=2, sort_keys=False))
    print(
        f"version {summary['version']}: {summary['status']}; {summary['champion']['reason']}",
        file=sys.stderr,
    )
    return 0
