"""The local twin end to end, driven as `churnops demo` drives it: the CDK app's synthesized
template provisioned into moto, uploads through S3 -> EventBridge -> the ingest state machine ->
the Glue script on local Spark -> MariaDB, the retrain flow, the API over HTTP, drift, and the
twin's own lifecycle (starting twice, stopping, a killed daemon).

Slow (a few minutes): one twin for the module, shared by the stages in order."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.mariadb, pytest.mark.cdk]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def twin(services, tmp_path_factory):
    from churnops.local.twin import Twin

    twin = Twin(tmp_path_factory.mktemp("twin") / "state")
    twin.up()
    yield twin
    twin.down()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def _generate(path: Path, rows: int, seed: int, shift: str | None = None):
    """Write synthetic customers to `path`; return the file's cells as strings (to edit)."""
    import pandas as pd

    from churnops.synthetic import generate, write_csv

    write_csv(generate(rows, seed, shift=shift), path)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _customer_count(twin) -> tuple[int, int]:
    """(rows, distinct ids) in the customers table."""
    from churnops import database
    from churnops.contract import get_contract

    contract = get_contract("telco")
    with twin.environment() as state:
        layout = state["layout"]
        conn = database.connect(layout["db_secret_arn"], database=layout["database_name"])
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW TABLES LIKE %s", (contract.table,))
                if cur.fetchone() is None:  # nothing ingested yet: the job creates the table
                    return 0, 0
                cur.execute(
                    f"SELECT COUNT(*), COUNT(DISTINCT `{contract.id_column}`) FROM `{contract.table}`"
                )
                rows, distinct = cur.fetchone()
            conn.commit()
        finally:
            conn.close()
    return int(rows), int(distinct)


def _processes_of(twin) -> list[str]:
    """Live processes that belong to this twin: its daemon, its MariaDB, its Spark JVM."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and str(twin.state_dir) in cmdline:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


# ---- the command line without a running twin -------------------------------------------------
def test_cli_on_a_stopped_twin_answers_in_one_line(tmp_path):
    import subprocess
    import sys

    def churnops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "churnops", "local", "--state-dir", str(tmp_path), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    status = churnops("status")
    assert status.returncode == 0
    assert json.loads(status.stdout)["status"] == "stopped"
    (tmp_path / "c.csv").write_text("customerID\n1\n")
    upload = churnops("upload", str(tmp_path / "c.csv"))
    assert upload.returncode == 2
    assert upload.stderr.strip().count("\n") == 0, upload.stderr  # one line, no traceback
    assert "not running" in upload.stderr and "churnops local up" in upload.stderr
    down = churnops("down")
    assert down.returncode == 0


# ---- start -----------------------------------------------------------------------------------
def test_up_provisions_the_synthesized_system(twin):
    state = twin.status()
    assert state["status"] == "ready"
    layout = state["layout"]
    # everything the commands need was found in the template, not in a list kept by hand
    for role in (
        "raw_bucket",
        "ingest_state_machine",
        "retrain_state_machine",
        "registry_uri",
        "db_secret_arn",
    ):
        assert layout[role], f"{role} not found in the synthesized template"
    assert layout["watched_prefix"] == "incoming/"
    assert state["api_url"].startswith("http://127.0.0.1:")
    assert state["moto_endpoint"].startswith("http://127.0.0.1:")
    # every role of the template exists, and the twin authorizes calls: a key nobody owns is
    # refused as AWS refuses it, so every stage below passed as its own role
    assert state["iam_enforced"] is True
    assert len(layout["iam_roles"]) >= 10
    import boto3
    from botocore.exceptions import ClientError

    stranger = boto3.client(
        "sqs",
        endpoint_url=state["moto_endpoint"],
        region_name="us-east-1",
        aws_access_key_id="AKIANOBODYOWNSTHIS00",
        aws_secret_access_key="nobody",
    )
    with pytest.raises(ClientError) as refused:
        stranger.list_queues()
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_the_twins_api_is_the_templates_api_gateway(twin):
    """The key the template's usage plan holds (generated by the twin, printed by `churnops local
    status`) is required; undefined routes and methods are API Gateway's 403; a body the stack's
    model refuses is the template's BAD_REQUEST_BODY response. AWS references: the docstring of
    churnops/local/apigw.py."""
    import subprocess
    import sys

    from churnops.commands.demo import call_api

    state = twin.status()
    key = state["api_key"]
    assert len(key) == 40 and key.isalnum()
    printed = subprocess.run(
        [sys.executable, "-m", "churnops", "local", "--state-dir", str(twin.state_dir), "status"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(printed.stdout)["api_key"] == key
    base = state["api_url"]
    assert call_api(base, "GET", "/health") == (403, {"message": "Forbidden"})
    assert call_api(base, "GET", "/health", api_key="not-the-key")[0] == 403
    assert call_api(base, "GET", "/health", api_key=key)[0] == 200
    for method, path in (("TRACE", "/predict"), ("GET", "/predict"), ("GET", "/nowhere")):
        assert call_api(base, method, path, api_key=key) == (
            403,
            {"message": "Missing Authentication Token"},
        ), (method, path)
    status, body = call_api(base, "POST", "/predict", {"customerID": "x"}, api_key=key)
    assert (status, body["error"]) == (400, "invalid_request"), body
    assert "required property" in body["message"]


def test_starting_twice_is_harmless(twin):
    before = twin.status()["pid"]
    again = twin.up()
    assert again["pid"] == before
    assert len([p for p in _processes_of(twin) if "churnops.local.daemon" in p]) == 1


# ---- ingestion (also run on the two-node cluster: ./dev test's glue_job pass) -------------------
@pytest.mark.glue_job
def test_clean_upload_loads_every_row(twin, data_dir):
    # GIVEN 2,000 valid customers
    path = data_dir / "customers.csv"
    _generate(path, 2000, seed=11)
    # WHEN the file is uploaded to the raw bucket
    outcome = twin.upload(path)
    # THEN the ingest flow loads all of them, once
    assert outcome["execution"] == "SUCCEEDED", outcome
    assert outcome["status"] == "succeeded", outcome
    assert (outcome["rows_read"], outcome["rows_loaded"], outcome["rows_quarantined"]) == (
        2000,
        2000,
        0,
    )
    assert outcome["audit_runs"] == 1
    assert _customer_count(twin) == (2000, 2000)


@pytest.mark.glue_job
def test_bad_rows_are_quarantined_with_reasons(twin, data_dir):
    from churnops.aws import client, split_s3_uri

    path = data_dir / "some-bad.csv"
    frame = _generate(path, 300, seed=12)
    bad_ids = list(frame["customerID"].iloc[:7])
    frame.loc[:2, "gender"] = "Robot"  # not an allowed value
    frame.loc[3:6, "tenure"] = "-4"  # below the contract's minimum
    frame.to_csv(path, index=False)
    rows_before = _customer_count(twin)[0]

    outcome = twin.upload(path)

    assert outcome["status"] == "succeeded", outcome
    assert (outcome["rows_loaded"], outcome["rows_quarantined"]) == (293, 7)
    assert _customer_count(twin)[0] == rows_before + 293
    with twin.environment():
        bucket, prefix = split_s3_uri(outcome["quarantine_uri"])
        listed = client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
        assert listed.get("KeyCount", 0) >= 1, "quarantine output missing"
        body = b"".join(
            client("s3").get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            for obj in listed["Contents"]
        )
    assert all(customer_id.encode() in body for customer_id in bad_ids)


@pytest.mark.glue_job
def test_unreadable_file_fails_and_moves_to_failed(twin, data_dir):
    path = data_dir / "not-customers.csv"
    path.write_text("name,colour\nalice,blue\n")
    rows_before = _customer_count(twin)

    # uploaded into a subfolder: the failed copy keeps it
    outcome = twin.upload(path, key="incoming/shop-7/not-customers.csv")

    assert outcome["execution"] == "FAILED", outcome  # the flow alerts and fails
    assert outcome["status"] == "failed", outcome
    assert outcome["rows_loaded"] == 0
    assert outcome["failed_file"] and outcome["failed_file"].endswith(
        "failed/shop-7/not-customers.csv"
    )
    assert outcome["error"], "a failed file must say why"
    assert _customer_count(twin) == rows_before


# ---- retrain and serving ---------------------------------------------------------------------
def test_retrain_promotes_the_first_champion(twin):
    result = twin.retrain()
    assert result["execution"] == "SUCCEEDED", result
    with twin.environment():
        registry = twin.registry()
        champion = registry.champion()
        history = registry.history()
    assert champion is not None and champion["version"]
    assert any(entry.get("version") == champion["version"] for entry in history)


def test_api_scores_customers_with_the_champion(twin, data_dir):
    from churnops.commands.demo import api_customers, call_api

    state = twin.status()
    base, key = state["api_url"], state["api_key"]
    with twin.environment():
        champion = twin.registry().champion()["version"]
    customers = api_customers(data_dir / "customers.csv", 3)
    deadline = time.monotonic() + 30
    status, body = call_api(base, "POST", "/predict", {"customers": customers}, api_key=key)
    while status == 503 and time.monotonic() < deadline:  # refresh interval after promotion
        time.sleep(1)
        status, body = call_api(base, "POST", "/predict", {"customers": customers}, api_key=key)
    assert status == 200, body
    assert body["model_version"] == champion
    assert [p["customerID"] for p in body["predictions"]] == [c["customerID"] for c in customers]
    for prediction in body["predictions"]:
        assert 0.0 <= prediction["churn_probability"] <= 1.0
        assert prediction["churn_prediction"] in (0, 1)
    bad = dict(customers[0], tenure="long")
    status, body = call_api(base, "POST", "/predict", bad, api_key=key)
    assert status == 400
    assert "tenure" in json.dumps(body)


# ---- many files at once ----------------------------------------------------------------------
@pytest.mark.glue_job
def test_twenty_files_at_once_each_end_in_exactly_one_state(twin, data_dir):
    from churnops.aws import client

    rows_before, _ = _customer_count(twin)
    files = []
    for index in range(20):
        path = data_dir / f"batch-{index:02d}.csv"
        frame = _generate(path, 40, seed=1000 + index)
        # ids unique across the batch files (the generator numbers customers from 1 per file)
        frame["customerID"] = [f"B{index:02d}-{n:04d}" for n in range(len(frame))]
        if index == 7:
            frame.loc[:4, "Contract"] = "Forever"  # 5 bad rows
        frame.to_csv(path, index=False)
        if index == 13:
            path.write_text("this is not a customer file\n")
        files.append(path)
    with twin.environment() as state:
        raw = state["layout"]["raw_bucket"]
        prefix = state["layout"]["watched_prefix"]
        errors: list[BaseException] = []

        def put(path: Path) -> None:
            try:
                client("s3").put_object(
                    Bucket=raw, Key=f"{prefix}{path.name}", Body=path.read_bytes()
                )
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=put, args=(p,)) for p in files]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        executions = {
            path.name: twin.wait_execution(twin.ingest_execution(f"{prefix}{path.name}"), 600)
            for path in files
        }
    audit = {row["object_key"]: row for row in twin.audit() if "batch-" in row["object_key"]}
    # every file: exactly one audit row, in exactly one final state
    assert sorted(audit) == sorted(f"{prefix}{p.name}" for p in files)
    per_key = [r["object_key"] for r in twin.audit() if "batch-" in r["object_key"]]
    assert len(per_key) == len(set(per_key)) == 20, "a file was ingested more than once"
    states = {key.rsplit("/", 1)[-1]: row["status"] for key, row in audit.items()}
    assert states.pop("batch-13.csv") == "failed"
    assert set(states.values()) == {"succeeded"}, states
    assert executions.pop("batch-13.csv")["status"] == "FAILED"  # rejected: the flow alerts
    assert {e["status"] for e in executions.values()} == {"SUCCEEDED"}
    # the audit table accounts for every row, and the table holds each loaded row once
    loaded = sum(int(r["rows_loaded"]) for r in audit.values())
    quarantined = sum(int(r["rows_quarantined"]) for r in audit.values())
    assert (loaded, quarantined) == (19 * 40 - 5, 5)
    assert all(
        int(r["rows_read"]) == int(r["rows_loaded"]) + int(r["rows_quarantined"])
        for r in audit.values()
    )
    rows_after, distinct_after = _customer_count(twin)
    assert rows_after == rows_before + loaded
    assert distinct_after == rows_after


# ---- drift -----------------------------------------------------------------------------------
def test_drifted_batch_shows_in_the_drift_report(twin, data_dir):
    from churnops.commands.demo import _drift_report

    path = data_dir / "drifted.csv"
    # the drift step compares the whole table with the champion's reference, so the drifted
    # batch must be a large share of it: 4,000 rows against about 3,000 already loaded
    frame = _generate(path, 4000, seed=21, shift="price_rise,new_customers")
    frame["customerID"] = [f"D-{n:05d}" for n in range(len(frame))]
    frame.to_csv(path, index=False)
    assert twin.upload(path)["status"] == "succeeded"
    result = twin.retrain()
    assert result["execution"] == "SUCCEEDED", result
    report = _drift_report(twin, result.get("output"))
    assert report is not None
    assert {"MonthlyCharges", "tenure"} <= set(report["drifted_features"])
    for untouched in ("gender", "Partner", "PaymentMethod", "InternetService"):
        assert untouched not in report["drifted_features"]
        assert report["features"][untouched]["psi"] < 0.1


# ---- a load killed in a running twin ---------------------------------------------------------
@pytest.mark.glue_job
def test_a_load_killed_mid_merge_leaves_the_twins_table_as_it_was(twin, data_dir):
    from churnops import database
    from churnops.contract import get_contract

    contract = get_contract("telco")
    # GIVEN a running twin with customers, and a file of 60,000 new ones
    path = data_dir / "killed.csv"
    frame = _generate(path, 60_000, seed=41)
    frame["customerID"] = [f"K-{n:06d}" for n in range(len(frame))]
    frame.to_csv(path, index=False)
    rows_before = _customer_count(twin)
    with twin.environment() as state:
        layout = state["layout"]
        watcher = database.connect(layout["db_secret_arn"], database=layout["database_name"])
    merge = f"INSERT INTO `{contract.table}`%ingest\\_staging%"
    killed: list[str] = []
    stop = threading.Event()

    def kill_the_merge() -> None:
        # The merge is the one statement that writes the file's rows into the table: kill its
        # connection while it runs, as a failover or a crash of the job's driver would.
        while not stop.is_set() and not killed:
            with watcher.cursor() as cur:
                cur.execute(
                    "SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE INFO LIKE %s",
                    (merge,),
                )
                for thread_id, info in cur.fetchall():
                    cur.execute("KILL CONNECTION %s", (thread_id,))
                    killed.append(str(info)[:60])
            watcher.commit()
            time.sleep(0.002)

    # WHEN the file is uploaded and its load is killed in the middle of the merge
    thread = threading.Thread(target=kill_the_merge)
    thread.start()
    try:
        outcome = twin.upload(path)
    finally:
        stop.set()
        thread.join()

    # THEN the flow failed, the run is closed as failed, and the twin's table holds what it held
    # before: none of the file's customers, no staging table left behind
    assert killed, "the merge was never seen running"
    assert (outcome["execution"], outcome["status"]) == ("FAILED", "failed"), outcome
    assert _customer_count(twin) == rows_before

    def held() -> tuple[int, int]:
        with watcher.cursor() as cur:
            cur.execute(
                f"SELECT COUNT(*) FROM `{contract.table}` WHERE `{contract.id_column}` LIKE 'K-%'"
            )
            (customers,) = cur.fetchone()
            cur.execute("SHOW TABLES LIKE 'ingest\\_staging\\_%'")
            staging = len(cur.fetchall())
        watcher.commit()
        return int(customers), staging

    assert held() == (0, 0)

    # WHEN the file is uploaded again, THEN it loads, once
    again = twin.upload(path)
    assert (again["execution"], again["status"]) == ("SUCCEEDED", "succeeded"), again
    assert held() == (60_000, 0)
    assert _customer_count(twin) == (rows_before[0] + 60_000, rows_before[1] + 60_000)
    watcher.close()


# ---- stopping ----------------------------------------------------------------------------------
def test_down_leaves_no_process_and_no_state(twin):
    from churnops.local.processes import group_members

    stopped = twin.down()
    assert stopped["daemon"]
    assert _processes_of(twin) == []
    assert group_members(stopped["daemon"]) == []  # the Spark JVM went with the daemon
    assert twin.status()["status"] == "stopped"
    assert not twin.state_file.exists()
    twin.up()  # for the fixture's own down, and to prove a restart works
    assert twin.status()["status"] == "ready"


def test_killed_daemon_mid_run_is_cleaned_up_by_the_next_up(twin, data_dir):
    # GIVEN an ingestion in progress
    path = data_dir / "interrupted.csv"
    _generate(path, 500, seed=31)
    twin.upload(path, wait=False)
    old_pid = twin.status()["pid"]
    # WHEN the daemon is killed outright
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while twin.daemon_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert twin.status()["status"] == "dead"
    # THEN the next `up` cleans up what it left and starts afresh
    state = twin.up()
    assert state["status"] == "ready" and state["pid"] != old_pid
    from churnops.local.processes import group_members

    assert group_members(old_pid) == [], "the killed daemon's children (Spark JVM) survived"
    assert len([p for p in _processes_of(twin) if "mariadbd" in p]) == 1


# ---- the demo itself ---------------------------------------------------------------------------
def test_demo_runs_end_to_end_and_leaves_nothing_running(services, tmp_path):
    import subprocess
    import sys

    state_dir = tmp_path / "demo-twin"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "churnops",
            "demo",
            "--rows",
            "3000",
            "--drift-rows",
            "3000",
            "--state-dir",
            str(state_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["ingest"]["rows_loaded"] == 3000
    assert summary["retrain"]["champion"]["version"]
    assert len(summary["api"]["predictions"]) == 3
    assert summary["drift"]["drifted_features"]
    # The drifted batch's concept drift makes the second challenger really better: it goes
    # through every stage of its rollout while customers call the API (seeded: repeatable)
    rollout = summary["rollout"]
    assert rollout is not None, summary["drift"]["decision"]
    assert [step["stage"] for step in rollout["stages"]] == ["shadow", "canary", "full"], rollout
    assert rollout["stage"] == "full" and rollout["alarm"] is None
    assert set(rollout["customers_answered_by"]) <= {
        summary["retrain"]["champion"]["version"],
        rollout["candidate"],
    }
    assert "shadow -> canary -> full" in result.stderr
    from churnops.local.twin import Twin

    assert _processes_of(Twin(state_dir)) == []
