"""Files of growing size through the running twin: the ingest job's time, and its driver's peak
memory, which must stay flat as the files grow.

    python bench/ingest_twin.py --rows 1000000 10000000

1. Starts a twin of its own (`churnops.local.twin.Twin`, state in a temporary directory): moto,
   a private MariaDB, the synthesized stacks, local Spark (`CHURNOPS_SPARK_MASTER` as set).
2. For each size N: writes N synthetic Telco customers to a CSV (generated a million at a time,
   ids unique), uploads it to the raw bucket as a user would, and follows the ingest flow the
   upload starts (EventBridge -> Step Functions -> the Glue script on Spark -> MariaDB).
3. Reports per file: seconds from the end of the upload to the end of the execution, the rows the
   database holds for the file's customers (counted there, not taken from the job), and the peak
   resident memory during the ingestion (VmHWM, reset after the upload by writing 5 to
   /proc/PID/clear_refs) of the twin daemon -- the Glue job's driver, which in the twin also
   serves moto -- and of the Spark JVM (in `local[*]` it also runs the executors' JVM side; the
   executors' Python workers are separate processes and are not counted).

The last line is for the largest file:
`ingest_twin rows=N seconds=S rows_per_s=R driver_peak_mb=D jvm_peak_mb=J`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

BATCH = 1_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    from churnops.local.processes import group_members
    from churnops.local.twin import Twin

    work = Path(tempfile.mkdtemp(prefix="churnops-bench-twin-"))
    twin = Twin(work / "state")
    results = []
    try:
        started = time.perf_counter()
        twin.up()
        print(f"twin up in {time.perf_counter() - started:.0f}s", flush=True)
        daemon = twin.daemon_pid()
        assert daemon is not None
        for index, rows in enumerate(args.rows):
            path = work / f"customers-{rows}.csv"
            prefix = f"T{index}-"
            _write(path, rows, args.seed + index, prefix)
            print(f"{path.name}: {rows:,} rows, {path.stat().st_size / 1e6:.0f} MB", flush=True)
            jvms = [p for p in group_members(daemon) if p != daemon and _is_java(p)]
            upload = twin.upload(path, wait=False)
            for pid in (daemon, *jvms):
                _reset_peak(pid)
            started = time.perf_counter()
            outcome = twin.ingest_outcome(upload["key"], upload["etag"], timeout=3 * 3600)
            seconds = time.perf_counter() - started
            held = _rows_held(twin, prefix)
            driver_mb = _peak_mb(daemon)
            # the JVM starts with the twin's first Glue run: then its peak is its whole life's
            jvms = [p for p in group_members(daemon) if p != daemon and _is_java(p)]
            jvm_mb = max((_peak_mb(p) for p in jvms), default=0.0)
            print(
                f"  {outcome['execution']} {outcome['status']} in {seconds:.0f}s: "
                f"{outcome['rows_loaded']:,} loaded, {outcome['rows_quarantined']:,} quarantined; "
                f"the table holds {held:,} of the file's customers; peak memory: driver "
                f"{driver_mb:.0f} MB, Spark JVM {jvm_mb:.0f} MB",
                flush=True,
            )
            if outcome["status"] != "succeeded" or held != rows:
                raise SystemExit(f"{path.name}: expected {rows} customers loaded, found {held}")
            path.unlink()
            results.append((rows, seconds, driver_mb, jvm_mb))
    finally:
        twin.down()
        shutil.rmtree(work, ignore_errors=True)

    rows, seconds, driver_mb, jvm_mb = max(results)
    print(
        f"ingest_twin rows={rows} seconds={seconds:.0f} rows_per_s={rows / seconds:.0f} "
        f"driver_peak_mb={driver_mb:.0f} jvm_peak_mb={jvm_mb:.0f}"
    )
    return 0


def _write(path: Path, rows: int, seed: int, prefix: str) -> None:
    """N customers, a million at a time (written as `churnops data generate` writes them), ids
    made unique with `prefix` and a running number."""
    from churnops.synthetic import generate, write_csv

    part = path.with_suffix(".part")
    with path.open("wb") as out:
        for start in range(0, rows, BATCH):
            frame = generate(min(BATCH, rows - start), seed + start // BATCH)
            frame["customerID"] = [f"{prefix}{start + n:08d}" for n in range(len(frame))]
            write_csv(frame, part)
            with part.open("rb") as chunk:
                if start:
                    chunk.readline()  # the header, once
                shutil.copyfileobj(chunk, out)
    part.unlink()


def _rows_held(twin, prefix: str) -> int:  # type: ignore[no-untyped-def]
    from churnops import database
    from churnops.contract import TELCO

    with twin.environment() as state:
        layout = state["layout"]
        conn = database.connect(layout["db_secret_arn"], database=layout["database_name"])
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT COUNT(*) FROM `{TELCO.table}` WHERE `{TELCO.id_column}` LIKE %s",
                (prefix + "%",),
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def _is_java(pid: int) -> bool:
    try:
        return b"java" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")[0]
    except OSError:
        return False


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
