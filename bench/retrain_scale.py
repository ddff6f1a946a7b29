"""Retrain scale benchmark: the largest customer table the retrain flow's Lambda steps handle.

    python bench/retrain_scale.py --rows 1000000

1. Starts a private MariaDB and a moto server (S3, Secrets Manager, CloudWatch) in this process,
   and loads N synthetic Telco customers (`churnops.synthetic`, validated by the contract, 1M per
   batch, ids made unique across batches) with the ingestion's own loader
   (`churnops.database`: staging table, then one merge).
2. Registers a champion (logistic, trained on a 20,000-customer sample) so that drift compares
   and evaluate scores two models, as in every retrain but the first.
3. Runs each step of the flow -- snapshot, drift, train, evaluate -- in a CHILD PROCESS of its
   own, as its Lambda function would (`lambdas.retrain.handlers`, environment built the way
   stacks/retrain.py builds it, deployed settings: every model family, 5 folds, 1,000
   resamples), each child getting the state the earlier steps returned. Per step: wall seconds
   from process start to exit (imports included, as in a cold start) and the child's peak
   resident set, which is what Lambda's memory limit is measured against (tracemalloc would miss
   Arrow's and numpy's buffers). The peak is the child's own `VmHWM` (/proc/self/status), read as
   it exits: `ru_maxrss` from `wait4` is no good here, because Linux carries the high-water mark
   of the process that forked the child across `execve`, so every child would report at least
   this process's own size (moto's S3 objects included).

Last line: `retrain_scale rows=N snapshot_s=.. snapshot_rss_mb=.. drift_s=.. drift_rss_mb=..
train_s=.. train_rss_mb=.. evaluate_s=.. evaluate_rss_mb=.. fits_lambda=yes|no`, where
fits_lambda says whether every step stayed within the deployed function's memory (3008 MB,
`retrain.function_memory_mb` in cdk.json) and timeout (900 s). A Lambda of 3008 MB has about 1.7
vCPUs; this machine's 2 cores are shared, so the seconds are an estimate, the memory is not.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ is on sys.path when a benchmark runs as `python bench/<name>.py`
from local_aws import start_moto_server

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = ("snapshot", "drift", "train", "evaluate")
LAMBDA_MEMORY_MB = 3008
LAMBDA_TIMEOUT_S = 900
BATCH_ROWS = 1_000_000
DATABASE = "churnops"


def _customers(start: int, rows: int, seed: int) -> Any:
    """`rows` clean customers whose ids continue from `start` (the generator numbers every batch
    from 1, so the serial part of the id is replaced by a global one)."""
    import numpy as np
    import pandas as pd

    from churnops.contract import TELCO
    from churnops.synthetic import generate

    raw = generate(rows, seed=seed)
    letters = raw[TELCO.id_column].str.split("-", n=1).str[1]
    serial = pd.Series(np.arange(start + 1, start + rows + 1)).astype(str).str.zfill(8)
    raw[TELCO.id_column] = (serial + "-" + letters).to_numpy()
    clean = TELCO.validate(raw.astype(object).where(raw.notna(), "").astype(str)).clean
    assert len(clean) == rows, "synthetic customers failed the contract"
    return clean


def _load(conn: Any, rows: int, seed: int) -> Any:
    """Load the table batch by batch; returns the first batch (the champion's training data)."""
    from churnops import database
    from churnops.contract import TELCO

    database.ensure_schema(conn, TELCO)
    first = None
    for start in range(0, rows, BATCH_ROWS):
        size = min(BATCH_ROWS, rows - start)
        batch = _customers(start, size, seed + start // BATCH_ROWS)
        run_id = f"bench-load-{start // BATCH_ROWS}"
        database.start_run(
            conn, run_id=run_id, contract=TELCO.name, bucket="bench", key=run_id, etag=None
        )
        staging = database.create_staging(conn, TELCO, run_id)
        offsets = {database.SOURCE_OFFSET: range(len(batch))}
        database.load_staging(conn, TELCO, staging, batch.assign(**offsets), span=(0, len(batch)))
        database.merge_staging(conn, TELCO, run_id=run_id, rows_loaded=size, rows_quarantined=0)
        if first is None:
            first = batch.sample(min(20_000, size), random_state=seed)
        print(f"  loaded {start + size:,} customers", flush=True)
    return first


def _register_champion(sample: Any, registry_uri: str) -> str:
    from churnops.contract import TELCO
    from churnops.registry import Registry
    from churnops.training import TrainingOptions, train

    result = train(sample, TELCO, TrainingOptions(families=("logistic",), folds=3))
    registry = Registry.open(registry_uri)
    version = registry.register(result.files, result.card)
    registry.promote(version, actor="bench", reason="benchmark champion")
    return version


def _function_environment(args: argparse.Namespace, secret_arn: str) -> dict[str, str]:
    """What stacks/retrain.py gives every task function (the snapshot's database settings
    included), with the deployed defaults of cdk.json."""
    from churnops.wiring import GateSettings

    return {
        "REGISTRY_URI": "s3://bench-registry/models",
        "CURATED_BUCKET": "bench-curated",
        "CONTRACT_NAME": "telco",
        "POWERTOOLS_SERVICE_NAME": "churnops-retrain",
        "POWERTOOLS_METRICS_NAMESPACE": "ChurnOps",
        "EVENT_BUS_NAME": "default",
        "TRAIN_FAMILIES": args.families,
        "TRAIN_FOLDS": str(args.folds),
        "DB_SECRET_ARN": secret_arn,
        "DB_NAME": DATABASE,
        **GateSettings().to_env(),
        **({"SNAPSHOT_SLICE_ROWS": str(args.slice_rows)} if args.slice_rows else {}),
        **({"TRAIN_FIT_ROWS": str(args.fit_rows)} if args.fit_rows else {}),
        **({"EVALUATE_HOLDOUT_ROWS": str(args.holdout_rows)} if args.holdout_rows else {}),
    }


def _run_step(step: str, state: dict[str, Any], env: dict[str, str], work: Path) -> dict[str, Any]:
    """One step in a child process of its own; its result, wall seconds and peak RSS."""
    state_file, result_file = work / f"{step}.state.json", work / f"{step}.result.json"
    state_file.write_text(json.dumps(state))
    command = [sys.executable, __file__, "--run-step", step, "--state", str(state_file)]
    command += ["--result", str(result_file)]
    started = time.perf_counter()
    child = subprocess.Popen(command, env={**os.environ, **env})
    child.wait()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"step {step} failed with exit code {child.returncode}")
    reported = json.loads(result_file.read_text())
    return {
        "result": reported["result"],
        "seconds": seconds,
        "rss_mb": reported["peak_rss_kb"] / 1024,
    }


def _peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM), in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status (Linux only)")


def _child(step: str, state_path: str, result_path: str) -> int:
    """Inside the child: exactly what the step's Lambda handler does."""
    import logging

    from lambdas.retrain import handlers

    logging.basicConfig(level=logging.WARNING)
    state = json.loads(Path(state_path).read_text())
    result = getattr(handlers, step)(state, None)
    Path(result_path).write_text(json.dumps({"result": result, "peak_rss_kb": _peak_rss_kb()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--families", default="", help="TRAIN_FAMILIES (default: all, deployed)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--slice-rows", type=int, default=0, help="SNAPSHOT_SLICE_ROWS")
    parser.add_argument("--fit-rows", type=int, default=0, help="TRAIN_FIT_ROWS")
    parser.add_argument("--holdout-rows", type=int, default=0, help="EVALUATE_HOLDOUT_ROWS")
    parser.add_argument("--buffer-pool", default="2G", help="MariaDB's InnoDB buffer pool")
    parser.add_argument("--run-step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_step:
        return _child(args.run_step, args.state, args.result)

    import logging

    from churnops import aws, database
    from churnops.local.mariadb import PrivateMariaDB

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    work = Path(tempfile.mkdtemp(prefix="churnops-bench-retrain-"))
    server = start_moto_server()
    aws.reset_clients()
    for bucket in ("bench-registry", "bench-curated"):
        aws.client("s3").create_bucket(Bucket=bucket)
    mariadb = PrivateMariaDB(work / "mariadb", buffer_pool=args.buffer_pool).start()
    try:
        password = secrets.token_urlsafe(16)
        mariadb.create_database(DATABASE)
        mariadb.create_user("bench", password, DATABASE)
        secret_arn = aws.client("secretsmanager").create_secret(
            Name="bench/retrain-db",
            SecretString=json.dumps(mariadb.secret_value("bench", password, DATABASE)),
        )["ARN"]
        started = time.perf_counter()
        conn = database.connect(secret_arn, local_infile=True)
        try:
            sample = _load(conn, args.rows, args.seed)
        finally:
            conn.close()
        print(f"loaded {args.rows:,} customers in {time.perf_counter() - started:.0f}s")
        champion = _register_champion(sample, "s3://bench-registry/models")
        del sample
        print(f"champion {champion} registered")

        env = _function_environment(args, secret_arn)
        state: dict[str, Any] = {"trigger": "bench"}
        measured: dict[str, dict[str, Any]] = {}
        for step in STEPS:
            measured[step] = _run_step(step, state, env, work)
            state[step] = {"Payload": measured[step]["result"], "StatusCode": 200}
            result = measured[step]["result"]
            shown = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
            print(
                f"{step:>8}: {measured[step]['seconds']:7.1f}s  peak RSS "
                f"{measured[step]['rss_mb']:7.0f} MB  {json.dumps(shown, default=str)[:300]}",
                flush=True,
            )
    finally:
        mariadb.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    fits = all(
        m["rss_mb"] <= LAMBDA_MEMORY_MB and m["seconds"] <= LAMBDA_TIMEOUT_S
        for m in measured.values()
    )
    figures = " ".join(
        f"{step}_s={measured[step]['seconds']:.1f} {step}_rss_mb={measured[step]['rss_mb']:.0f}"
        for step in STEPS
    )
    print(f"retrain_scale rows={args.rows} {figures} fits_lambda={'yes' if fits else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
