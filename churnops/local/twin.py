"""The local twin's lifecycle seen from outside: start, stop and inspect the background daemon,
and the environment in which code reaches it.

The daemon (`churnops/local/daemon.py`) owns the moto server, the private MariaDB and the API
stand-in; this module only talks to it through `state.json` in the state directory and through
the endpoints it publishes there. The twin is ephemeral: `down` discards its data, and `up` after
a crash cleans up whatever the dead daemon left (its MariaDB, a stale state file) before starting
afresh, so no run ever sees half of an earlier one. What a user does with a running twin (upload,
retrain) is in `churnops/local/flows.py`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from churnops.errors import ChurnOpsError
from churnops.local.flows import TwinFlows
from churnops.local.processes import (
    alive,
    cmdline,
    environment,
    group_members,
    log_tail,
    stop_all,
    wait_gone,
)
from churnops.local.synthesis import REPO_ROOT, Progress, quiet, synthesize

DAEMON_MODULE = "churnops.local.daemon"
# The twin's operator: an IAM user allowed everything (the daemon makes it; handlers and Glue jobs
# call as their own roles). Not secrets: they open a throwaway emulator on loopback only. An IAM
# user's key takes no session token, so a token in the caller's environment is set aside.
TWIN_CREDENTIALS: dict[str, str | None] = {
    "AWS_ACCESS_KEY_ID": "twin",
    "AWS_SECRET_ACCESS_KEY": "twin",
    "AWS_SESSION_TOKEN": None,
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Twin(TwinFlows):
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
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"status": "corrupt"}
        return state

    def daemon_pid(self) -> int | None:
        """The daemon's pid if it is alive AND is our daemon for this state dir."""
        state = self.read_state() or {}
        pid = state.get("pid")
        if not isinstance(pid, int) or not alive(pid):
            return None
        arguments = cmdline(pid)
        if DAEMON_MODULE not in arguments or str(self.state_dir) not in arguments:
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
    def up(self, *, timeout: float = 240.0, progress: Progress = quiet) -> dict[str, Any]:
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
                self._stop_locked(progress=quiet)
                if process.poll() is None:  # died before it published its pid: stop it here
                    process.terminate()
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(timeout=10)
                    self._clean_stale(quiet)
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

    def down(self, *, timeout: float = 60.0, progress: Progress = quiet) -> dict[str, Any]:
        with self._lock():
            return self._stop_locked(timeout=timeout, progress=progress)

    def _stop_locked(self, *, timeout: float = 60.0, progress: Progress = quiet) -> dict[str, Any]:
        stopped: dict[str, Any] = {"daemon": None, "mariadb": False}
        pid = self.daemon_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)  # the daemon stops its API, MariaDB and moto itself
            if not wait_gone(pid, timeout):
                progress(f"twin: daemon {pid} did not stop in {timeout:.0f}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 10)
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
                stop_all(members)
        if (self.mariadb_dir / "mariadbd.pid").exists():
            from churnops.local.mariadb import PrivateMariaDB

            server = PrivateMariaDB(self.mariadb_dir)
            pid = server.server_pid()
            if pid is not None:
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

    def _log_tail(self) -> str:
        return log_tail(self.log_file, 5, "no daemon log")

    # -- reaching it -------------------------------------------------------------------------
    @contextlib.contextmanager
    def environment(self) -> Iterator[dict[str, Any]]:
        """AWS_ENDPOINT_URL and placeholder credentials for code that uses `churnops.aws`, restored
        afterwards."""
        from churnops.aws import reset_clients

        state = self.require_ready()
        try:
            with environment({**TWIN_CREDENTIALS, "AWS_ENDPOINT_URL": state["moto_endpoint"]}):
                reset_clients()
                yield state
        finally:
            reset_clients()  # the clients built for the twin's endpoint must not outlive it
