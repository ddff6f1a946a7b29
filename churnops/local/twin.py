"""The local twin seen from outside: start, stop and inspect the background daemon, and drive it
the way a user would (boto3 uploads, a state machine start, HTTP calls).

The daemon (`churnops/local/daemon.py`) owns the moto server, the private MariaDB and the API
stand-in; this module only talks to it through `state.json` in the state directory and through
the endpoints it publishes there. The twin is ephemeral: `down` discards its data, and `up` after
a crash cleans up whatever the dead daemon left (its MariaDB, a stale state file) before starting
afresh, so no run ever sees half of an earlier one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from churnops.errors import ChurnOpsError

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_NAME = "ChurnOps"
DAEMON_MODULE = "churnops.local.daemon"
# Credentials moto accepts; they are not secrets and never leave loopback.
TWIN_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "twin",
    "AWS_SECRET_ACCESS_KEY": "twin",
    "AWS_SESSION_TOKEN": "twin",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# What the synthesized template depends on: a change to any of these means synthesize again.
_SYNTH_INPUTS = ("app.py", "cdk.json", "stacks", "glue_jobs", "containers", "churnops")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


# -- synthesis --------------------------------------------------------------------------------
def synth_fingerprint(repo_root: Path = REPO_ROOT) -> str:
    """The sources' bytes and the clone's location: an assembly synthesized with --no-staging
    names each asset by the absolute path of its source, so a second clone with the same bytes
    (or a clone since deleted) must not reuse another clone's assembly."""
    digest = hashlib.sha256(str(repo_root.resolve()).encode())
    for name in _SYNTH_INPUTS:
        path = repo_root / name
        files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                digest.update(str(file.relative_to(repo_root)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def synth_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "churnops" / "synth"


def synthesize(repo_root: Path = REPO_ROOT, progress: Progress = _quiet) -> Path:
    """The CDK app's cloud assembly (cdk.out) for the current sources, synthesized once per
    fingerprint with the CDK CLI and cached; returns the assembly directory."""
    fingerprint = synth_fingerprint(repo_root)
    out = synth_cache_root() / fingerprint
    if (out / f"{STACK_NAME}.template.json").is_file():
        progress(f"template: cached synthesis {fingerprint}")
        return out
    cdk = repo_root / "node_modules" / ".bin" / "cdk"
    if not (repo_root / "app.py").is_file():
        raise ChurnOpsError(f"no CDK app at {repo_root / 'app.py'}: nothing to provision")
    if not cdk.is_file():
        raise ChurnOpsError(f"CDK CLI not found at {cdk}: run the set-up script (npm ci)")
    progress("template: synthesizing the CDK app (first run after a change, ~1 min)")
    tmp = out.with_name(f"{fingerprint}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    result = subprocess.run(  # noqa: S603 - the project's own CDK CLI, fixed arguments
        # --no-staging: the assembly names each asset's source instead of copying it (the twin
        # runs the sources; copies of the build contexts would only fill the cache)
        [str(cdk), "synth", "--quiet", "--no-staging", "--output", str(tmp)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not (tmp / f"{STACK_NAME}.template.json").is_file():
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-4:])
        shutil.rmtree(tmp, ignore_errors=True)
        raise ChurnOpsError(f"cdk synth failed (exit {result.returncode}): {tail}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if (out / f"{STACK_NAME}.template.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)  # another process synthesized it meanwhile
        return out
    shutil.rmtree(out, ignore_errors=True)  # an incomplete directory from a crash
    try:
        tmp.rename(out)
    except OSError:  # lost a race with another process: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
        return out
    # keep the few most recent assemblies (switching branches back and forth stays fast)
    older = sorted(
        (p for p in out.parent.iterdir() if p.is_dir() and p != out and ".tmp-" not in p.name),
        key=lambda p: p.stat().st_mtime,
    )
    for stale in older[:-4]:
        shutil.rmtree(stale, ignore_errors=True)
    return out


# -- process helpers -------------------------------------------------------------------------
def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\x00") if part]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is not running
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


class Twin:
    """One twin, identified by its state directory (default `.twin/` in the current directory)."""

    def __init__(
        self,
        state_dir: str | Path = ".twin",
        repo_root: Path = REPO_ROOT,
        cdk_out: str | Path | None = None,
    ) -> None:
        """`cdk_out`: an already synthesized cloud assembly to provision from (default: synthesize
        the repository's CDK app, cached by a fingerprint of its sources)."""
        self.state_dir = Path(state_dir).resolve()
        self.repo_root = Path(repo_root).resolve()
        self.cdk_out = Path(cdk_out).resolve() if cdk_out else None

    # -- state ---------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "daemon.log"

    @property
    def mariadb_dir(self) -> Path:
        return self.state_dir / "mariadb"

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"status": "corrupt"}

    def daemon_pid(self) -> int | None:
        """The daemon's pid if it is alive AND is our daemon for this state dir."""
        state = self.read_state() or {}
        pid = state.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return None
        cmdline = _cmdline(pid)
        if DAEMON_MODULE not in cmdline or str(self.state_dir) not in cmdline:
            return None  # a recycled pid
        return pid

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise up/down on one state dir (two `up`s at once start one daemon)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, *, timeout: float = 240.0, progress: Progress = _quiet) -> dict[str, Any]:
        with self._lock():
            if self.daemon_pid() is not None:
                state = self._wait_ready(timeout, progress)
                progress("twin: already running")
                return state
            self._clean_stale(progress)
            cdk_out = self.cdk_out or synthesize(self.repo_root, progress)
            progress("twin: starting moto, MariaDB and the API stand-in")
            self.state_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "ab") as log:
                process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
                    [
                        sys.executable,
                        "-m",
                        DAEMON_MODULE,
                        "--state-dir",
                        str(self.state_dir),
                        "--cdk-out",
                        str(cdk_out),
                        "--repo-root",
                        str(self.repo_root),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.repo_root,
                    start_new_session=True,  # survives this command; Ctrl-C here is not its
                )
            try:
                return self._wait_ready(timeout, progress, process)
            except BaseException:
                self._stop_locked(progress=_quiet)
                if process.poll() is None:  # died before it published its pid: stop it here
                    process.terminate()
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(timeout=10)
                    self._clean_stale(_quiet)
                raise

    def _wait_ready(
        self,
        timeout: float,
        progress: Progress,
        process: subprocess.Popen[bytes] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            state = self.read_state() or {}
            status = state.get("status")
            if status == "ready":
                return state
            if status == "failed":
                raise ChurnOpsError(
                    f"twin failed to start: {state.get('error', 'see ' + str(self.log_file))}"
                )
            if state.get("stage") and state.get("stage") != last:
                last = state["stage"]
                progress(f"twin: {last}")
            if process is not None and process.poll() is not None:
                raise ChurnOpsError(
                    f"twin daemon exited with code {process.returncode} during start-up: {self._log_tail()}"
                )
            if process is None and self.daemon_pid() is None:
                raise ChurnOpsError(f"twin daemon died during start-up: {self._log_tail()}")
            time.sleep(0.2)
        raise ChurnOpsError(f"twin not ready within {timeout:.0f}s: {self._log_tail()}")

    def down(self, *, timeout: float = 60.0, progress: Progress = _quiet) -> dict[str, Any]:
        with self._lock():
            return self._stop_locked(timeout=timeout, progress=progress)

    def _stop_locked(self, *, timeout: float = 60.0, progress: Progress = _quiet) -> dict[str, Any]:
        stopped: dict[str, Any] = {"daemon": None, "mariadb": False}
        pid = self.daemon_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)  # the daemon stops its API, MariaDB and moto itself
            if not _wait_gone(pid, timeout):
                progress(f"twin: daemon {pid} did not stop in {timeout:.0f}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10)
            stopped["daemon"] = pid
        stopped["mariadb"] = self._clean_stale(progress)
        return stopped

    def _clean_stale(self, progress: Progress) -> bool:
        """Stop what a dead daemon left behind and forget its state. True if something was found."""
        found = False
        state = self.read_state() or {}
        group = state.get("pgid")
        if isinstance(group, int) and self.daemon_pid() is None:
            # children of a killed daemon (the Spark JVM) share its process group
            members = group_members(group)
            if members:
                progress(f"twin: stopping {len(members)} process(es) left by a dead daemon")
                found = True
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    for pid in members:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, sig)
                    if all(_wait_gone(pid, 10) for pid in members):
                        break
        if (self.mariadb_dir / "mariadbd.pid").exists():
            from churnops.local.mariadb import PrivateMariaDB

            server = PrivateMariaDB(self.mariadb_dir)
            pid = server._pid()  # owner-checked again by PrivateMariaDB.stop
            if pid is not None and _alive(pid):
                progress(f"twin: stopping MariaDB {pid} left by an earlier run")
                found = True
            server.stop()
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        return found

    def status(self) -> dict[str, Any]:
        state = self.read_state()
        pid = self.daemon_pid()
        if state is None:
            return {"status": "stopped", "state_dir": str(self.state_dir)}
        if pid is None:
            return {
                "status": "dead",
                "state_dir": str(self.state_dir),
                "note": "the daemon is gone; `churnops local up` cleans up and starts afresh",
            }
        return state

    def require_ready(self) -> dict[str, Any]:
        state = self.read_state() or {}
        if state.get("status") != "ready" or self.daemon_pid() is None:
            raise ChurnOpsError(
                f"the twin is not running in {self.state_dir}: start it with `churnops local up`"
            )
        return state

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "no daemon log"
        return " | ".join(text[-lines:])

    # -- clients -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def environment(self) -> Iterator[dict[str, Any]]:
        """AWS_ENDPOINT_URL and placeholder credentials for code that uses `churnops.aws`, restored
        afterwards."""
        from churnops.aws import reset_clients

        state = self.require_ready()
        values = {**TWIN_CREDENTIALS, "AWS_ENDPOINT_URL": state["moto_endpoint"]}
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        reset_clients()
        try:
            yield state
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
            reset_clients()

    def upload(
        self, path: str | Path, *, key: str | None = None, wait: bool = True, timeout: float = 300.0
    ) -> dict[str, Any]:
        """Put a CSV into the raw bucket under the watched prefix, as a user would; with `wait`,
        follow the ingest execution it triggers and report the file's outcome."""
        from churnops.aws import client

        path = Path(path)
        if not path.is_file():
            raise ChurnOpsError(f"{path}: no such file")
        with self.environment() as state:
            layout = state["layout"]
            if not layout.get("raw_bucket") or not layout.get("ingest_state_machine"):
                raise ChurnOpsError("the synthesized template has no S3-triggered ingest flow")
            object_key = key or f"{layout.get('watched_prefix') or 'incoming/'}{path.name}"
            etag = (
                client("s3")
                .put_object(Bucket=layout["raw_bucket"], Key=object_key, Body=path.read_bytes())[
                    "ETag"
                ]
                .strip('"')
            )
            if not wait:
                return {"bucket": layout["raw_bucket"], "key": object_key, "etag": etag}
            return self.ingest_outcome(object_key, etag, timeout=timeout)

    def ingest_execution(self, object_key: str, timeout: float = 30.0) -> str:
        """The ingest execution EventBridge started for this upload."""
        from churnops.aws import client

        sfn = client("stepfunctions")
        machine = self.require_ready()["layout"]["ingest_state_machine"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = sfn.list_executions(stateMachineArn=machine, maxResults=1000)["executions"]
            # newest first: EventBridge starts the execution while put_object is being served,
            # so for a key uploaded twice the newest matching execution is this upload's
            for execution in sorted(listed, key=lambda e: e["startDate"], reverse=True):
                described = sfn.describe_execution(executionArn=execution["executionArn"])
                # the rule may hand the flow the whole event or a transformed input: look for the
                # key as a JSON string value anywhere in it
                if json.dumps(object_key) in (described.get("input") or ""):
                    return str(execution["executionArn"])
            time.sleep(0.2)
        raise ChurnOpsError(
            f"no ingest execution started for {object_key} (does the rule's pattern match it?)"
        )

    def wait_execution(self, execution_arn: str, timeout: float) -> dict[str, Any]:
        from churnops.aws import client

        sfn = client("stepfunctions")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                return described
            if self.daemon_pid() is None:
                raise ChurnOpsError("the twin daemon stopped while an execution was running")
            time.sleep(0.3)
        raise ChurnOpsError(
            f"execution {execution_arn.rsplit(':', 1)[-1]} still running after {timeout:.0f}s"
        )

    def ingest_outcome(
        self, object_key: str, etag: str, *, timeout: float = 300.0
    ) -> dict[str, Any]:
        from churnops.aws import client

        with self.environment() as state:
            layout = state["layout"]
            execution_arn = self.ingest_execution(object_key)
            described = self.wait_execution(execution_arn, timeout)
            audit = self._audit_rows(object_key)
            same_bytes = [row for row in audit if (row.get("etag") or "").strip('"') == etag]
            latest = (same_bytes or audit or [{}])[-1]
            from churnops.ingestion import failed_key

            failed_file = None
            with contextlib.suppress(Exception):
                # where the job moves a rejected file: its path under failed/, subfolders kept
                moved = failed_key(object_key)
                client("s3").head_object(Bucket=layout["raw_bucket"], Key=moved)
                failed_file = f"s3://{layout['raw_bucket']}/{moved}"
            return {
                "file": f"s3://{layout['raw_bucket']}/{object_key}",
                "execution": described["status"],
                "status": latest.get("status")
                or ("failed" if described["status"] != "SUCCEEDED" else "unknown"),
                "rows_read": int(latest.get("rows_read") or 0),
                "rows_loaded": int(latest.get("rows_loaded") or 0),
                "rows_quarantined": int(latest.get("rows_quarantined") or 0),
                "quarantine_uri": latest.get("quarantine_uri"),
                "curated_uri": latest.get("curated_uri"),
                "failed_file": failed_file,
                "error": latest.get("error") or described.get("error"),
                "audit_runs": len(audit),
            }

    def _audit_rows(self, object_key: str | None = None) -> list[dict[str, Any]]:
        from churnops import database

        state = self.require_ready()
        secret = state["layout"].get("db_secret_arn")
        if not secret:
            return []
        conn = database.connect(secret, database=state["layout"].get("database_name"))
        try:
            return [
                {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
                for row in database.runs(conn, key=object_key)
            ]
        except Exception as err:  # the audit table does not exist before the first ingest
            if "doesn't exist" in str(err):
                return []
            raise
        finally:
            conn.close()

    def audit(self) -> list[dict[str, Any]]:
        with self.environment():
            return self._audit_rows()

    def retrain(self, *, timeout: float = 600.0) -> dict[str, Any]:
        """Start the retrain flow with the input its schedule would give it, and wait."""
        from churnops.aws import client

        with self.environment() as state:
            layout = state["layout"]
            machine = layout.get("retrain_state_machine")
            if not machine:
                raise ChurnOpsError("the synthesized template has no scheduled retrain flow")
            payload = "{}"
            if layout.get("retrain_schedule"):
                with contextlib.suppress(Exception):
                    target = client("scheduler").get_schedule(Name=layout["retrain_schedule"])[
                        "Target"
                    ]
                    payload = target.get("Input") or "{}"
            execution = client("stepfunctions").start_execution(
                stateMachineArn=machine, input=payload
            )["executionArn"]
            described = self.wait_execution(execution, timeout)
            result: dict[str, Any] = {"execution": described["status"]}
            if described.get("output"):
                result["output"] = json.loads(described["output"])
            if described["status"] != "SUCCEEDED":
                result["error"] = described.get("error")
                result["cause"] = described.get("cause")
                result["failed_step"] = failed_step(execution)
            return result

    def registry(self) -> Any:
        """The twin's model registry (use inside `environment()`)."""
        from churnops.registry import Registry

        uri = self.require_ready()["layout"].get("registry_uri")
        if not uri:
            raise ChurnOpsError("the synthesized template names no REGISTRY_URI")
        return Registry.open(uri)


def failed_step(execution_arn: str) -> dict[str, Any] | None:
    """The last task failure in an execution's history: which step, what error, why (the flow's
    own Fail state often only says "see the alert")."""
    from churnops.aws import client

    events = client("stepfunctions").get_execution_history(
        executionArn=execution_arn, reverseOrder=True, maxResults=1000
    )["events"]
    by_id = {event["id"]: event for event in events}
    for event in events:
        details = event.get("taskFailedEventDetails") or event.get(
            "lambdaFunctionFailedEventDetails"
        )
        if not details:
            continue
        step = None
        previous = by_id.get(event.get("previousEventId"))
        while previous is not None and step is None:
            step = (previous.get("stateEnteredEventDetails") or {}).get("name")
            previous = by_id.get(previous.get("previousEventId"))
        cause = details.get("cause") or ""
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            parsed = json.loads(cause)  # a Glue run or a Lambda error object: keep its message
            cause = parsed.get("ErrorMessage") or parsed.get("errorMessage") or cause
        return {"step": step, "error": details.get("error"), "cause": cause[:1000]}
    return None


# -- what the demo and the end-to-end test do with the twin ----------------------------------------
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
    base_url: str, method: str, path: str, body: Any = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """One HTTP request with the standard library's client: (status, parsed JSON body)."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - the twin's own loopback URL
        f"{base_url.rstrip('/')}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
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


def find_key(data: Any, key: str) -> Any:
    """The first value stored under `key` anywhere in a nested JSON structure."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        values = list(data.values())
    elif isinstance(data, list):
        values = data
    else:
        return None
    for value in values:
        found = find_key(value, key)
        if found is not None:
            return found
    return None
