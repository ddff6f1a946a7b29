"""Serving speed: model time per row and handler time per request, ONNX Runtime versus
scikit-learn, and the cold start of a fresh process.

    python bench/serving.py [--registry DIR] [--data FILE.csv] [--repeats N]

Without --registry a champion is trained first (on --data, by default the shared Telco file,
or synthetic customers when it is absent) into a temporary registry. One run measures:
- model time: ONNX Runtime `session.run` on ready per-column arrays versus the scikit-learn
  pipeline's `predict_proba` on a ready DataFrame, for 1 row and per row of 1,000;
- handler time: the Lambda handler end to end on an API Gateway proxy event (JSON parsing,
  validation, ONNX, factors, response, the log line and the metrics), for 1 and 1,000 customers;
- cold start: a fresh Python process, from importing the handler to its first prediction;
- a rollout's cost: the handler for 1 customer with a candidate in shadow (the candidate scores
  every request, is compared with the champion and gets its own metrics) against the champion
  alone, in two scratch registries holding the same model, measured in alternating rounds.

The last line is the summary the issues ask for:
    serving single_row_handler_p50_us=… p99_us=… onnx_speedup=… cold_start_s=…
        shadow_p99_over_champion=…
Targets on a 2-core machine: single-row handler p99 <= 1 ms, ONNX >= 100x scikit-learn per
single row, cold start <= 0.5 s, p99 with a candidate in shadow <= 2x the champion's alone.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `lambdas` is not an installed package

DEFAULT_DATA = REPO.parent / "shared" / "data" / "telco" / "telco_customer_churn.csv"

COLD_START_SCRIPT = """
import json, sys, time
started = time.perf_counter()
from lambdas.serving.handler import handler
response = handler(json.loads(sys.argv[1]), None)
elapsed = time.perf_counter() - started
heavy = [m for m in ("pandas", "sklearn", "scipy") if m in sys.modules]
print(json.dumps({"seconds": elapsed, "status": response["statusCode"], "heavy": heavy}))
"""


def percentiles(samples_s: list[float]) -> dict[str, float]:
    us = np.asarray(samples_s) * 1e6
    return {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99))}


def timed(fn: Any, repeats: int, warmup: int = 20, cpu: list[float] | None = None) -> list[float]:
    """Wall-clock seconds per call; with `cpu`, also this thread's CPU seconds per call (which
    leave out the time the process waited for a core on a busy machine)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.thread_time()
        fn()
        out.append(time.perf_counter() - started)
        if cpu is not None:
            cpu.append(time.thread_time() - started_cpu)
    return out


def train_champion(data: Path, registry_dir: Path) -> None:
    from churnops.contract import TELCO
    from churnops.dataset import read_customers
    from churnops.registry import Registry
    from churnops.training import TrainingOptions, register_result, train

    clean = TELCO.validate(read_customers(data, TELCO)).clean
    print(f"training a champion on {data} ({len(clean):,} rows) ...", flush=True)
    result = train(clean, TELCO, TrainingOptions(folds=3))
    summary = register_result(result, Registry.open(str(registry_dir)), actor="bench")
    if not summary["champion"]["promoted"]:
        raise SystemExit(f"the trained model was not promoted: {summary['champion']['reason']}")
    print(f"champion {summary['version']}: {result.family}", flush=True)


def proxy_event(body: Any) -> dict[str, Any]:
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
        "isBase64Encoded": False,
        "requestContext": {"requestId": "bench", "stage": "bench"},
    }


def shadow_registries(source: Any, version: str, tmp: Path) -> tuple[str, str]:
    """Two scratch registries holding `version`'s files: in one it is the champion alone; in the
    other it is the champion and, registered again as another version, a candidate in shadow.
    (The source registry is never changed: a benchmark starts no rollout in it.)"""
    from churnops.registry import Registry
    from churnops.wiring import CARD

    card = source.card(version)
    files = {name: source.read(version, name) for name in card["files"] if name != CARD}
    card = {k: v for k, v in card.items() if k not in ("version", "files", "created_at")}
    uris = []
    for name in ("champion-only", "shadow"):
        registry = Registry.open(str(tmp / name))
        champion = registry.register(files, card)
        registry.promote(champion, actor="bench", reason="benchmark champion")
        if name == "shadow":
            candidate = registry.register(files, card)
            registry.start_rollout(candidate, actor="bench", reason="benchmark candidate")
        uris.append(registry.uri)
    return uris[0], uris[1]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="churnops-bench-serving-"))
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", help="a registry with a champion (default: train one)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV to train on")
    parser.add_argument("--repeats", type=int, default=3000, help="single-row repetitions")
    args = parser.parse_args()

    data: Path = args.data
    if not data.is_file():
        from churnops.synthetic import generate, write_csv

        data = tmp / "synthetic.csv"
        write_csv(generate(6000, seed=5), data)
    registry_uri = args.registry
    if not registry_uri:
        registry_uri = str(tmp / "registry")
        train_champion(data, Path(registry_uri))

    import joblib

    from churnops.contract import TELCO
    from churnops.dataset import read_customers
    from churnops.model import model_frame
    from churnops.registry import MODEL_JOBLIB, Registry
    from churnops.serving.app import ServingApp
    from churnops.serving.validation import RequestValidator
    from churnops.wiring import ServingEnvironment
    from lambdas.serving import handler as lambda_module

    registry = Registry.open(registry_uri)
    version = registry.require_champion()["version"]
    sklearn_model = joblib.load(io.BytesIO(registry.read(version, MODEL_JOBLIB)))
    app = ServingApp(ServingEnvironment(registry_uri=registry_uri, max_batch_size=1000))
    app.warm_up()
    model = app.champion.current()
    assert model is not None, "no champion loaded"
    print(f"champion {version} ({model.card.get('family')}), registry {registry_uri}")

    clean = TELCO.validate(read_customers(data, TELCO)).clean
    rows = clean.sample(1000, random_state=1, replace=len(clean) < 1000).reset_index(drop=True)
    rows[TELCO.id_column] = [f"B{i:05d}" for i in range(len(rows))]
    customers = TELCO.api_customers(rows)
    validator = RequestValidator(TELCO, max_batch_size=1000)
    one = validator.customers(customers[0])
    thousand = validator.customers({"customers": customers})
    frame_one = model_frame(rows.iloc[:1], TELCO)
    frame_all = model_frame(rows, TELCO)

    # The same customers through both runtimes must agree before their speeds are compared.
    parity = float(
        np.max(np.abs(model.probabilities(thousand) - sklearn_model.predict_proba(frame_all)[:, 1]))
    )
    n = args.repeats
    onnx_one = percentiles(timed(lambda: model.probabilities(one), n))
    sk_one = percentiles(timed(lambda: sklearn_model.predict_proba(frame_one), max(50, n // 20), 5))
    onnx_batch = percentiles(timed(lambda: model.probabilities(thousand), 50, 5))
    sk_batch = percentiles(timed(lambda: sklearn_model.predict_proba(frame_all), 20, 3))
    frame_build = percentiles(
        timed(lambda: model_frame(rows.iloc[:1].copy(), TELCO), max(50, n // 20), 5)
    )

    handler = lambda_module.make_handler(lambda: app)
    event_one = proxy_event(customers[0])
    event_batch = proxy_event({"customers": customers})
    # Logs and metrics are written as in Lambda, to a sink instead of the terminal.
    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the whole measurement
    lambda_module.logger.registered_handler.setStream(sink)
    with contextlib.redirect_stdout(sink):
        handler_one_cpu: list[float] = []
        handler_one = percentiles(timed(lambda: handler(event_one), n, 200, handler_one_cpu))
        handler_batch = percentiles(timed(lambda: handler(event_batch), 30, 3))
        assert handler(event_one)["statusCode"] == 200
        assert handler(event_batch)["statusCode"] == 200

        # A candidate in shadow against the champion alone: the same model files, the same
        # request, rounds taken in turn so that a busy moment of the machine hits both.
        solo_uri, shadow_uri = shadow_registries(registry, version, tmp)
        handlers = {}
        for label, uri in (("champion", solo_uri), ("shadow", shadow_uri)):
            served = ServingApp(ServingEnvironment(registry_uri=uri, max_batch_size=1000))
            served.warm_up()
            assert (served.champion.served().candidate is not None) == (label == "shadow")
            handlers[label] = lambda_module.make_handler(lambda served=served: served)
            assert handlers[label](event_one)["statusCode"] == 200
        rollout_samples: dict[str, list[float]] = {"champion": [], "shadow": []}
        rollout_cpu: dict[str, list[float]] = {"champion": [], "shadow": []}
        rounds = 10
        for _ in range(rounds):
            for label, serve in handlers.items():
                rollout_samples[label] += timed(
                    lambda serve=serve: serve(event_one), n // rounds, 50, rollout_cpu[label]
                )

    env = {**os.environ, "REGISTRY_URI": registry_uri, "PYTHONPATH": str(REPO)}
    cold, wall = [], []
    for _ in range(5):
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", COLD_START_SCRIPT, json.dumps(event_one)],
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        )
        wall.append(time.perf_counter() - started)
        outcome = json.loads(result.stdout.strip().splitlines()[-1])
        assert outcome["status"] == 200, outcome
        if outcome["heavy"]:
            print(f"WARNING: the handler imported {outcome['heavy']}")
        cold.append(outcome["seconds"])
    cold_start = statistics.median(cold)

    speedup = sk_one["p50"] / onnx_one["p50"]
    solo, shadow = percentiles(rollout_samples["champion"]), percentiles(rollout_samples["shadow"])
    shadow_ratio = shadow["p99"] / solo["p99"]
    solo_cpu, shadow_cpu = (percentiles(rollout_cpu[k]) for k in ("champion", "shadow"))
    print()
    cores = os.cpu_count()
    print(f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())} on {cores} cores")
    print(f"{'measure':<44}{'p50 us':>12}{'p99 us':>12}")
    for label, figures in (
        ("model, 1 row, ONNX Runtime", onnx_one),
        ("model, 1 row, scikit-learn", sk_one),
        ("model, per row of 1,000, ONNX Runtime", {k: v / 1000 for k, v in onnx_batch.items()}),
        ("model, per row of 1,000, scikit-learn", {k: v / 1000 for k, v in sk_batch.items()}),
        ("one-row DataFrame for scikit-learn (not served)", frame_build),
        ("handler, 1 customer", handler_one),
        ("handler, 1 customer, CPU time only", percentiles(handler_one_cpu)),
        ("handler, 1,000 customers (whole request)", handler_batch),
        ("handler, per customer of 1,000", {k: v / 1000 for k, v in handler_batch.items()}),
        ("handler, 1 customer, champion alone (rounds)", solo),
        ("handler, 1 customer, candidate in shadow", shadow),
        ("  the same, champion alone, CPU time only", solo_cpu),
        ("  the same, candidate in shadow, CPU time only", shadow_cpu),
    ):
        print(f"{label:<44}{figures['p50']:>12,.1f}{figures['p99']:>12,.1f}")
    batch_speedup = sk_batch["p50"] / onnx_batch["p50"]
    print(f"largest probability difference, ONNX vs scikit-learn, 1,000 customers: {parity:.1e}")
    print(
        f"ONNX speed-up over scikit-learn: {speedup:,.0f}x for 1 row, {batch_speedup:,.1f}x per row of 1,000"
    )
    print(
        "cold start (fresh process, import to first prediction): "
        f"{', '.join(f'{c:.3f}' for c in cold)} s; whole process with interpreter start-up "
        f"and exit: median {statistics.median(wall):.3f} s"
    )
    print(
        f"a candidate in shadow: p99 {shadow['p99']:,.0f} us against {solo['p99']:,.0f} us for "
        f"the champion alone ({shadow_ratio:.2f}x; target <= 2x); p50 "
        f"{shadow['p50'] / solo['p50']:.2f}x, CPU time p99 {shadow_cpu['p99'] / solo_cpu['p99']:.2f}x"
    )
    print(
        f"serving single_row_handler_p50_us={handler_one['p50']:.0f} "
        f"p99_us={handler_one['p99']:.0f} onnx_speedup={speedup:.0f} cold_start_s={cold_start:.2f} "
        f"shadow_p99_over_champion={shadow_ratio:.2f}"
    )


if __name__ == "__main__":
    main()
