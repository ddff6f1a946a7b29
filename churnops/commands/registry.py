"""`churnops registry list|show|promote|rollback|history` on a directory or s3:// registry, and
`churnops registry rollout status|start|advance|abort`: a candidate beside the champion."""

from __future__ import annotations

import argparse
import json
from typing import Any

from churnops.cli import add_contract_option
from churnops.wiring import ACTIVE_STAGES, DEFAULT_CANARY_SHARE

# Card entries too long for `show` by default (`--full` prints them).
BULKY = ("reference_stats", "factors", "candidates")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "registry", help="inspect the model registry, promote, roll back, roll out"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("--registry", required=True, help="directory or s3://bucket/prefix")
        add_contract_option(sub)
        return sub

    listing = action("list", "versions, oldest first (* marks the champion)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=run_list)

    show = action("show", "a version's model card (default: the champion)")
    show.add_argument("version", nargs="?", default=None)
    show.add_argument("--full", action="store_true", help="include reference stats and factors")
    show.set_defaults(func=run_show)

    promote = action("promote", "make a version champion (recorded in history)")
    promote.add_argument("version")
    promote.add_argument("--reason", default="manual promotion (churnops registry promote)")
    promote.add_argument("--actor", default=None, help="who decides (default: OS user)")
    promote.set_defaults(func=run_promote)

    rollback = action("rollback", "point the champion back at the previous version")
    rollback.add_argument(
        "--from-version",
        default=None,
        metavar="VERSION",
        help="roll back only if VERSION is the champion; run again, it changes nothing more "
        "(without it, a second rollback undoes the first)",
    )
    rollback.add_argument("--reason", default="manual rollback (churnops registry rollback)")
    rollback.add_argument("--actor", default=None, help="who decides (default: OS user)")
    rollback.set_defaults(func=run_rollback)

    history = action("history", "every promotion, rollback and rejection, oldest first")
    history.set_defaults(func=run_history)

    rollout = actions.add_parser(
        "rollout", help="a candidate beside the champion: shadow, canary, full, or abort"
    )
    steps = rollout.add_subparsers(dest="step", metavar="STEP", required=True)

    def step(name: str, help_text: str, reason: str) -> argparse.ArgumentParser:
        sub = steps.add_parser(name, help=help_text)
        sub.add_argument("--registry", required=True, help="directory or s3://bucket/prefix")
        add_contract_option(sub)
        if name != "status":
            sub.add_argument("--reason", default=f"{reason} (churnops registry rollout {name})")
            sub.add_argument("--actor", default=None, help="who decides (default: OS user)")
            sub.add_argument(
                "--decision-id",
                default=None,
                help="the deciding run's id: the same id again is recognised as a repeat",
            )
        return sub

    status = step("status", "the rollout and the champion, as JSON", "")
    status.set_defaults(func=run_rollout_status)

    start = step("start", "make a version the candidate, in shadow", "manual rollout")
    start.add_argument("version")
    start.add_argument(
        "--canary-share",
        type=float,
        default=DEFAULT_CANARY_SHARE,
        help=f"share of customers the candidate answers in canary (default: "
        f"{DEFAULT_CANARY_SHARE})",
    )
    start.set_defaults(func=run_rollout_start)

    advance = step("advance", "shadow -> canary -> full (full promotes)", "manual advance")
    advance.add_argument(
        "--from-stage",
        choices=sorted(ACTIVE_STAGES),
        default=None,
        help="advance only if the rollout is at this stage; run again, it changes nothing "
        "more (without it, a second advance goes on to the next stage)",
    )
    advance.add_argument("--rollout-id", default=None, help="only if this rollout is the one")
    advance.set_defaults(func=run_rollout_advance)

    abort = step("abort", "drop the candidate; the champion is untouched", "manual abort")
    abort.add_argument("--alarm", default=None, help="the alarm that called for it")
    abort.add_argument("--rollout-id", default=None, help="only if this rollout is the one")
    abort.set_defaults(func=run_rollout_abort)


def _open(args: argparse.Namespace) -> Any:
    from churnops.contract import get_contract
    from churnops.registry import Registry

    get_contract(args.contract)  # an unknown contract is an error before any I/O
    return Registry.open(args.registry)


def _actor(args: argparse.Namespace) -> str:
    from churnops.commands.train import default_actor

    return args.actor or default_actor()


def run_list(args: argparse.Namespace) -> int:
    registry = _open(args)
    pointer = registry.champion()
    champion = pointer["version"] if pointer else None
    rows = [
        {
            "version": card["version"],
            "champion": card["version"] == champion,
            "contract": card.get("contract"),
            "family": card.get("family"),
            "status": card.get("status"),
            "roc_auc": card.get("metrics", {}).get("roc_auc"),
            "created_at": card.get("created_at"),
        }
        for card in registry.list_versions()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no versions in {registry.uri}")
        return 0
    print(f"  {'version':<24} {'contract':<10} {'family':<18} {'status':<18} roc_auc")
    for row in rows:
        mark = "*" if row["champion"] else " "
        auc = f"{row['roc_auc']:.4f}" if isinstance(row["roc_auc"], float) else "-"
        print(
            f"{mark} {row['version']:<24} {row['contract']!s:<10} {row['family']!s:<18} "
            f"{row['status']!s:<18} {auc}"
        )
    return 0


def run_show(args: argparse.Namespace) -> int:
    registry = _open(args)
    version = args.version or registry.require_champion()["version"]
    card = registry.card(version)
    if not args.full:
        card = {k: v for k, v in card.items() if k not in BULKY}
    print(json.dumps(card, indent=2))
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from churnops.contract import get_contract

    registry = _open(args)
    get_contract(args.contract).check_model_card(registry.card(args.version))
    pointer = registry.promote(args.version, actor=_actor(args), reason=args.reason)
    print(json.dumps(pointer, indent=2))
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    registry = _open(args)
    pointer = registry.rollback(
        actor=_actor(args), reason=args.reason, from_version=args.from_version
    )
    print(json.dumps(pointer, indent=2))
    return 0


def run_history(args: argparse.Namespace) -> int:
    registry = _open(args)
    print(json.dumps(registry.history(), indent=2))
    return 0


def run_rollout_status(args: argparse.Namespace) -> int:
    registry = _open(args)
    pointer = registry.champion()
    record = registry.rollout()
    status = {
        "champion": pointer["version"] if pointer else None,
        "active": registry.active_rollout() is not None,
        "rollout": record,
    }
    print(json.dumps(status, indent=2))
    return 0


def run_rollout_start(args: argparse.Namespace) -> int:
    from churnops.contract import get_contract

    registry = _open(args)
    get_contract(args.contract).check_model_card(registry.card(args.version))
    record = registry.start_rollout(
        args.version,
        actor=_actor(args),
        reason=args.reason,
        canary_share=args.canary_share,
        decision_id=args.decision_id,
    )
    print(json.dumps(record, indent=2))
    return 0


def run_rollout_advance(args: argparse.Namespace) -> int:
    registry = _open(args)
    record = registry.advance_rollout(
        actor=_actor(args),
        reason=args.reason,
        from_stage=args.from_stage,
        rollout_id=args.rollout_id,
        decision_id=args.decision_id,
    )
    print(json.dumps(record, indent=2))
    return 0


def run_rollout_abort(args: argparse.Namespace) -> int:
    registry = _open(args)
    record = registry.abort_rollout(
        actor=_actor(args),
        reason=args.reason,
        alarm=args.alarm,
        rollout_id=args.rollout_id,
        decision_id=args.decision_id,
    )
    print(json.dumps(record, indent=2))
    return 0
