"""`churnops demo`: the whole system end to end on the local twin, in one command.

Starts the twin, uploads customers (generated, or `--data FILE.csv`), waits for ingestion, runs
the retrain flow, shows the promotion decision, calls the REST API with a real HTTP client,
uploads a drifted batch and shows the drift report from a second retrain, follows the rollout a
challenger that passed is handed to (shadow, canary, full, or a rollback on an alarm) while
customers keep calling the API, stops the twin and prints a summary. On any failure it names the stage and the reason, and leaves nothing running.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from churnops.errors import ChurnOpsError

STAGES = (
    "start the twin",
    "prepare customers",
    "upload and ingest",
    "retrain",
    "call the API",
    "upload a drifted batch",
    "drift report",
    "roll out the challenger",
    "stop the twin",
)
# Prices up, a push on monthly contracts and an influx of new customers: the drifted batch is
# as large as the first one, so the latest data (the whole table) clearly moves away from the
# champion's reference on tenure and the charges, and not on the untouched features. A
# competitor's fibre offer also makes fibre customers churn far more (concept drift), which the
# champion cannot know: the retrain's challenger is really better, and goes out in a rollout.
DRIFT_SHIFT = "price_rise,contract_mix,new_customers,fiber_competitor"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline end to end on the local twin (about 2-5 minutes)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--data", help="CSV of customers to use instead of generated ones")
    parser.add_argument(
        "--rows", type=int, default=3000, help="customers to generate (default 3000)"
    )
    parser.add_argument(
        "--drift-rows", type=int, default=3000, help="customers in the drifted batch (default 3000)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed for generated data")
    parser.add_argument(
        "--state-dir",
        help="twin state directory (default: a temporary directory, removed afterwards)",
    )
    parser.set_defaults(func=run)


class Progress:
    """One line per stage with its number, outcome and time, on stderr."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.stage = ""

    def begin(self, stage: str) -> None:
        self.stage = stage
        self._stage_started = time.monotonic()
        number = STAGES.index(stage) + 1
        print(f"[{number}/{len(STAGES)}] {stage} ...", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        print(f"      {message}", file=self.stream, flush=True)

    def done(self, summary: str = "") -> None:
        elapsed = time.monotonic() - self._stage_started
        print(
            f"      ok ({elapsed:.1f}s){': ' + summary if summary else ''}",
            file=self.stream,
            flush=True,
        )

    @property
    def total(self) -> float:
        return time.monotonic() - self.started


def run(args: argparse.Namespace) -> int:
    from churnops.local.twin import Twin

    if args.rows < 200 and not args.data:
        raise ChurnOpsError("--rows must be at least 200 (training needs a holdout)")
    if args.data and not Path(args.data).is_file():
        raise ChurnOpsError(f"{args.data}: no such file")
    workdir = Path(tempfile.mkdtemp(prefix="churnops-demo-"))
    state_dir = Path(args.state_dir) if args.state_dir else workdir / "twin"
    twin = Twin(state_dir)
    progress = Progress()
    summary: dict[str, Any] = {}
    try:
        _run_stages(args, twin, workdir, progress, summary)
    except (ChurnOpsError, OSError, RuntimeError, ValueError, KeyError) as err:
        stage = progress.stage or "start"
        print(f"churnops demo: failed at stage '{stage}': {err}", file=sys.stderr, flush=True)
        _stop(twin, progress)
        return 1
    except KeyboardInterrupt:
        print("churnops demo: interrupted; stopping the twin", file=sys.stderr, flush=True)
        _stop(twin, progress)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary["total_seconds"] = round(progress.total, 1)
    print(json.dumps(summary, indent=2, default=str))
    _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    """A few human lines on stderr after the stages (the JSON on stdout is for scripts)."""
    ingest, retrain, api, drift = (
        summary["ingest"],
        summary["retrain"],
        summary["api"],
        summary["drift"],
    )
    decision = retrain.get("decision") or {}
    probabilities = ", ".join(f"{p['churn_probability']:.2f}" for p in api["predictions"])
    drifted = ", ".join(
        f"{name} (PSI {drift['psi'].get(name, 0):.2f})" for name in drift["drifted_features"]
    )
    lines = [
        "summary:",
        f"  ingested {ingest['rows_loaded']} customers, {ingest['rows_quarantined']} quarantined",
        f"  retrain: promote={decision.get('promote')}, champion {retrain['champion']['version']}",
        f"  API {api['url']}: churn probabilities {probabilities}",
        f"  drifted batch: {drifted or 'no feature drifted'}; second gate promote="
        f"{(drift.get('decision') or {}).get('promote')}",
        f"  rollout: {_rollout_line(summary.get('rollout'))}",
        f"  {summary['total_seconds']:.0f}s in total; the twin is stopped, nothing left running",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)


def _stop(twin: Any, progress: Progress) -> None:
    try:
        twin.down(progress=progress.note)
    except Exception as err:  # report, but the original failure is what matters
        print(f"churnops demo: stopping the twin also failed: {err}", file=sys.stderr, flush=True)


def _run_stages(
    args: argparse.Namespace, twin: Any, workdir: Path, progress: Progress, summary: dict[str, Any]
) -> None:
    progress.begin("start the twin")
    state = twin.up(progress=progress.note)
    progress.done(f"moto {state['moto_endpoint']}, API {state.get('api_url')}")

    progress.begin("prepare customers")
    data = (
        Path(args.data) if args.data else _generate(workdir / "customers.csv", args.rows, args.seed)
    )
    drifted = _generate(
        workdir / "customers-drifted.csv", args.drift_rows, args.seed + 1, shift=DRIFT_SHIFT
    )
    progress.done(f"{data.name}, drifted batch {drifted.name} (shift {DRIFT_SHIFT})")

    progress.begin("upload and ingest")
    ingest = summary["ingest"] = _ingested(twin, data)
    progress.done(f"{ingest['rows_loaded']} rows loaded, {ingest['rows_quarantined']} quarantined")

    progress.begin("retrain")
    retrain = _retrained(twin, "retrain flow")
    champion = _champion(twin)
    if champion is None:
        raise ChurnOpsError("the retrain flow finished without a champion")
    summary["retrain"] = {"decision": _decision(retrain.get("output")), "champion": champion}
    progress.done(f"champion {champion['version']}")

    progress.begin("call the API")
    base = state.get("api_url")
    _require(bool(base), "the template defines no serving function behind the API")
    customers = api_customers(data, 3)
    key = state.get("api_key")
    status, body = _predict_when_ready(base, customers, champion["version"], api_key=key)
    _require(status == 200, f"POST /predict answered {status}: {body}")
    summary["api"] = {
        "url": f"{base}/predict",
        "model_version": body.get("model_version"),
        "predictions": [
            {
                key: p.get(key)
                for key in ("customerID", "churn_probability", "churn_prediction", "factors")
                if key in p
            }
            for p in body.get("predictions", [])
        ],
    }
    health_status, _ = call_api(base, "GET", "/health", api_key=key)
    summary["api"]["health"] = health_status
    progress.done(
        f"{len(body.get('predictions', []))} customers scored by {body.get('model_version')}"
    )

    progress.begin("upload a drifted batch")
    drifted_ingest = summary["drifted_ingest"] = _ingested(twin, drifted)
    progress.done(f"{drifted_ingest['rows_loaded']} rows loaded")

    progress.begin("drift report")
    # Not waiting for the rollout here: the next stage follows it with customers calling.
    second = _retrained(twin, "second retrain flow", follow_rollout=False)
    report = _drift_report(twin, second.get("output"))
    if report is None:
        raise ChurnOpsError("the retrain flow produced no drift report")
    drifted_features = report.get("drifted_features") or []
    summary["drift"] = {
        "drifted_features": drifted_features,
        "psi": _psi_table(report),
        "decision": _decision(second.get("output")),
    }
    progress.done(f"drifted: {', '.join(drifted_features) or 'none'}")

    progress.begin("roll out the challenger")
    summary["rollout"] = _rolled_out(twin, second.get("output") or {}, data, progress, key)
    progress.done(_rollout_line(summary["rollout"]))

    progress.begin("stop the twin")
    stopped = twin.down(progress=progress.note)
    progress.done(f"daemon {stopped['daemon']} stopped")


def _rolled_out(
    twin: Any, retrain_output: dict[str, Any], data: Path, progress: Progress, api_key: str | None
) -> dict[str, Any] | None:
    """Follow the rollout the second retrain started, if its challenger passed the gate, while
    a client keeps calling POST /predict: each stage as the registry records it, then how it
    ended and which versions answered the customers meanwhile."""
    import threading

    handed = retrain_output.get("rollout_execution")
    if not handed:
        progress.note("the gate kept the champion: nothing to roll out")
        return None
    base = twin.status().get("api_url")
    # Different customers request after request, as live traffic is: the comparison windows
    # then hold hundreds of distinct customers, not one batch repeated.
    customers = api_customers(data, 1000)
    answered: dict[str, int] = {}
    stop = threading.Event()

    def call() -> None:  # the API's customers during the rollout (a canary answers some)
        offset = 0
        while not stop.wait(0.25):
            batch = customers[offset : offset + 20]
            offset = (offset + 20) % (len(customers) - 20)
            status, body = call_api(base, "POST", "/predict", {"customers": batch}, api_key=api_key)
            # Per customer: in canary one request is answered by both models.
            for prediction in body.get("predictions", []) if status == 200 else [{}]:
                version = str(prediction.get("model_version") or f"HTTP {status}")
                answered[version] = answered.get(version, 0) + 1

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    seen: set[tuple[str, str]] = set()
    try:
        while True:
            with twin.environment():
                record = twin.registry().rollout()
                status = _execution_status(handed["ExecutionArn"])
            if record is not None and (record["rollout_id"], record["stage"]) not in seen:
                seen.add((record["rollout_id"], record["stage"]))
                progress.note(_stage_line(record))
            if status != "RUNNING":
                break
            time.sleep(0.5)
        result: dict[str, Any] = twin.follow_rollout(handed["ExecutionArn"])
    finally:
        stop.set()
        caller.join(timeout=30)
    _require(result["execution"] == "SUCCEEDED", f"rollout {result['execution']}: {_why(result)}")
    return {
        "stage": result["stage"],
        "candidate": result["version"],
        "alarm": result["alarm"],
        "stages": [
            {key: step[key] for key in ("at", "stage", "alarm", "reason")}
            for step in result["stages"]
        ],
        "customers_answered_by": answered,
    }


def _stage_line(record: dict[str, Any]) -> str:
    """One line per stage the rollout enters, as the registry records it."""
    stage, candidate = record["stage"], record["version"]
    if stage == "shadow":
        return (
            f"shadow: {candidate} scores every request beside {record['champion_version']}, "
            "which answers"
        )
    if stage == "canary":
        return f"canary: {candidate} answers {record['canary_share']:.0%} of customers"
    return f"{stage}: {record['reason']}"


def _execution_status(execution_arn: str) -> str:
    from churnops.aws import client

    return str(client("stepfunctions").describe_execution(executionArn=execution_arn)["status"])


def _rollout_line(rollout: dict[str, Any] | None) -> str:
    if rollout is None:
        return "none (the gate kept the champion)"
    path = " -> ".join(step["stage"] for step in rollout["stages"]) or rollout["stage"]
    if rollout["stage"] == "aborted":
        return f"{path}: rolled back by {rollout['alarm'] or 'a person'}"
    return f"{path}: {rollout['candidate']} is champion"


def _why(result: dict[str, Any]) -> str:
    step = result.get("failed_step")
    if step:
        return f"step {step['step']} failed with {step['error']}: {step['cause'][:400]}"
    return f"{result.get('error')}: {result.get('cause')}"


def _ingested(twin: Any, path: Path) -> dict[str, Any]:
    """Upload a file to the twin's raw bucket, insist that its ingestion succeeded, and return
    what the summary shows of it."""
    result = twin.upload(path)
    _require(
        result["status"] == "succeeded", f"ingestion of {path.name} failed: {result.get('error')}"
    )
    keys = ("file", "status", "rows_read", "rows_loaded", "rows_quarantined", "quarantine_uri")
    return {key: result.get(key) for key in keys}


def _retrained(twin: Any, label: str, *, follow_rollout: bool = True) -> dict[str, Any]:
    """Run the retrain state machine and insist that the execution succeeded (and, when it is
    followed, the rollout it handed its challenger to)."""
    result: dict[str, Any] = twin.retrain(follow_rollout=follow_rollout)
    rollout = result.get("rollout")
    if rollout is not None:
        _require(
            rollout["execution"] == "SUCCEEDED",
            f"{label}'s rollout {rollout['execution']}: {_why(rollout)}",
        )
    _require(result["execution"] == "SUCCEEDED", f"{label} {result['execution']}: {_why(result)}")
    return result


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ChurnOpsError(message)


def _generate(path: Path, rows: int, seed: int, shift: str | None = None) -> Path:
    from churnops.synthetic import generate, write_csv

    write_csv(generate(rows, seed, shift=shift), path)
    return path


def _champion(twin: Any) -> dict[str, Any] | None:
    with twin.environment():
        pointer = twin.registry().champion()
    return dict(pointer) if pointer else None


def _first_dict(data: Any, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The first dict in a nested JSON structure (depth first, in order) that passes `test`."""
    if isinstance(data, dict):
        if test(data):
            return data
        children: Any = data.values()
    elif isinstance(data, list):
        children = data
    else:
        return None
    for child in children:
        found = _first_dict(child, test)
        if found is not None:
            return found
    return None


def _decision(output: Any) -> Any:
    """The promotion gate's verdict in the flow's output, reduced to what a reader needs."""
    # the evaluate step's gate verdict: the first dict whose `promote` is a yes/no
    verdict = _first_dict(output, lambda d: isinstance(d.get("promote"), bool))
    if verdict is None:
        return output
    keep = (
        "promote",
        "challenger_version",
        "champion_version",
        "primary_metric",
        "challenger_metric",
        "champion_metric",
        "difference",
        "reasons",
        "summary",
    )
    return {key: verdict[key] for key in keep if key in verdict}


def _drift_report(twin: Any, output: Any) -> dict[str, Any] | None:
    """The drift report of the latest run: in the flow's output, else in the registry."""
    from churnops.registry import DRIFT_REPORT

    report = _first_dict(output, lambda d: d.get("drifted_features") is not None)
    if report is not None and report.get("report_uri"):
        # the step returns a summary; the full report (PSI per feature) is in S3
        from churnops import aws, storage

        with twin.environment():
            body = storage.read_bytes(*aws.split_s3_uri(report["report_uri"]))
        return {**json.loads(body), **report}
    if report is not None:
        return report
    with twin.environment():
        registry = twin.registry()
        for card in reversed(registry.list_versions()):
            try:
                found: dict[str, Any] = json.loads(registry.read(card["version"], DRIFT_REPORT))
                return found
            except Exception:  # noqa: S112 - a version without a drift report: look further back
                continue
    return None


def _psi_table(report: dict[str, Any]) -> dict[str, float]:
    features = report.get("features") or {}
    table = {}
    for name, stats in features.items():
        if isinstance(stats, dict) and stats.get("psi") is not None:
            table[name] = round(float(stats["psi"]), 3)
    return dict(sorted(table.items(), key=lambda item: -item[1])[:8])


def _predict_when_ready(
    base: str,
    customers: list[dict[str, Any]],
    version: str,
    wait: float = 30.0,
    *,
    api_key: str | None = None,
) -> tuple[int, Any]:
    """POST /predict; the API picks a new champion up within its refresh interval, so a 503 right
    after the first promotion is retried for a short while."""
    deadline = time.monotonic() + wait
    call: Callable[[], tuple[int, Any]] = lambda: call_api(  # noqa: E731
        base, "POST", "/predict", {"customers": customers}, api_key=api_key
    )
    status, body = call()
    while (status == 503 or (status == 200 and body.get("model_version") != version)) and (
        time.monotonic() < deadline
    ):
        time.sleep(1.0)
        status, body = call()
    return status, body


def api_customers(
    path: str | Path, count: int, contract_name: str = "telco"
) -> list[dict[str, Any]]:
    """The first `count` valid customers of a CSV as API request objects (id + features)."""
    from churnops.contract import get_contract
    from churnops.dataset import read_customers

    contract = get_contract(contract_name)
    return contract.api_customers(
        contract.validate(read_customers(path, contract)).clean.head(count)
    )


def call_api(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 30.0,
    *,
    api_key: str | None = None,
) -> tuple[int, Any]:
    """One HTTP request with the standard library's client: (status, parsed JSON body).
    `api_key`: sent as x-api-key (the API's methods require a usage plan's key)."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - the twin's own loopback URL
        f"{base_url.rstrip('/')}{path}",
        data=data,
        method=method,
        headers={
            **({"Content-Type": "application/json"} if data is not None else {}),
            **({"x-api-key": api_key} if api_key else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            return err.code, json.loads(payload or b"null")
        except ValueError:
            return err.code, payload.decode(errors="replace")
