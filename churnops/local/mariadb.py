"""A private MariaDB server: the local stand-in for RDS (MySQL-compatible).

Tests, the benchmark and the local twin each start their own server with its own data directory,
unix socket and loopback port, so nothing depends on (or disturbs) a system service. The server
keeps its grant tables: applications log in as a user with a password, exactly as they would on
RDS with the credentials from Secrets Manager; root is used only over the unix socket, to create
databases and users.

`start()` is idempotent: a server already running on the same data directory (from this object,
or left behind by a crashed process whose pid file survived) is reused when it answers, and
killed when it does not. `stop()` always leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from churnops.errors import ChurnOpsError
from churnops.local.processes import cmdline, free_port, log_tail

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"
# Unix socket paths longer than this do not fit sockaddr_un (108 bytes with the terminator).
_SOCKET_PATH_LIMIT = 100


def available() -> bool:
    """True when the server binaries this module drives are installed."""
    return Path(MARIADBD).is_file() and shutil.which(INSTALL_DB) is not None


def _quote_identifier(name: str) -> str:
    if not name or "`" in name or "\x00" in name:
        raise ChurnOpsError(f"invalid database identifier: {name!r}")
    return f"`{name}`"


class PrivateMariaDB:
    """One mariadbd process owning `data_dir`, listening on 127.0.0.1:`port`."""

    def __init__(
        self, data_dir: str | Path, port: int | None = None, *, buffer_pool: str = "512M"
    ) -> None:
        """`buffer_pool`: InnoDB's cache (RDS gives it about 3/4 of the instance's memory);
        size it to the working set of a benchmark, keep the default for tests and the twin."""
        self.data_dir = Path(data_dir).resolve()
        self.buffer_pool = buffer_pool
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._adopted_pid: int | None = None
        socket_path = self.data_dir.parent / f"{self.data_dir.name}.sock"
        if len(str(socket_path)) > _SOCKET_PATH_LIMIT:
            socket_path = (
                Path(tempfile.gettempdir()) / f"churnops-mariadb-{os.getpid()}-{id(self)}.sock"
            )
        self.socket = socket_path

    # ---- paths -------------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.data_dir / "mariadbd.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "mariadbd.err"

    @property
    def url(self) -> str:
        return f"mysql://{self.host}:{self.port}"

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> PrivateMariaDB:
        if self.running():
            return self
        self._clean_stale()
        if not (self.data_dir / "mysql").is_dir():
            self._install()
        command = [
            MARIADBD,
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.log_file}",
            "--skip-name-resolve",
            "--skip-log-bin",
            # LOAD DATA LOCAL INFILE is the benchmark's physical baseline.
            "--local-infile=1",
            # Large enough for the loader's multi-row INSERT batches (RDS defaults to 64 MiB).
            "--max-allowed-packet=64M",
            f"--innodb-buffer-pool-size={self.buffer_pool}",
            "--innodb-log-file-size=256M",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_bin",
        ]
        if os.geteuid() == 0:
            command.append("--user=root")  # mariadbd refuses to run as root without it
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments we built
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the caller's terminal is not the server's
        )
        self._wait_ready(timeout)
        return self

    def running(self) -> bool:
        """True when a server of ours for this data directory is alive and answering."""
        pid = self._pid()
        if pid is None or not self._is_our_server(pid):
            return False
        if self._process is None and self._adopted_pid is None:
            if not self._answers():
                return False
            self._adopted_pid = pid  # left behind by an earlier process: reuse it
        return self._answers()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server; SIGKILL when it does not exit within `timeout`. Safe to repeat."""
        pid = self._pid()
        if self._process is not None:
            pid = self._process.pid
        elif pid is not None and not self._is_our_server(pid):
            pid = None
        if pid is not None:
            self._signal_and_wait(pid, timeout)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
        self._process = None
        self._adopted_pid = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def kill(self) -> None:
        """SIGKILL the server (a crash, for failure tests); `start()` brings it back."""
        pid = self._process.pid if self._process is not None else self._pid()
        if pid is not None and self._is_our_server(pid):
            self._signal_and_wait(pid, 10.0, sig=signal.SIGKILL)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
        self._process = None
        self._adopted_pid = None

    def __enter__(self) -> PrivateMariaDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- administration (root over the unix socket) -------------------------------------------
    def root_connection(self, database: str | None = None, **kwargs: Any) -> Any:
        import pymysql

        return pymysql.connect(
            unix_socket=str(self.socket),
            user="root",
            database=database,
            autocommit=True,
            charset="utf8mb4",
            **kwargs,
        )

    def create_database(self, name: str) -> None:
        with self.root_connection() as conn, conn.cursor() as cur:
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS {_quote_identifier(name)} "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )

    def drop_database(self, name: str) -> None:
        with self.root_connection() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {_quote_identifier(name)}")

    def create_user(self, user: str, password: str, database: str | None = None) -> None:
        """A login from 127.0.0.1 with all privileges on `database` (every database if None).

        Idempotent: an existing user gets the new password."""
        target = f"{_quote_identifier(database)}.*" if database else "*.*"
        with self.root_connection() as conn, conn.cursor() as cur:
            for host in ("127.0.0.1", "localhost"):
                cur.execute(
                    "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (user, host, password)
                )
                cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))
                cur.execute(f"GRANT ALL PRIVILEGES ON {target} TO %s@%s", (user, host))
                if database is None:
                    cur.execute("GRANT FILE ON *.* TO %s@%s", (user, host))

    def grant(self, user: str, database: str) -> str:
        """`database` and a login with a fresh password for it; returns the password."""
        password = secrets.token_urlsafe(18)
        self.create_database(database)
        self.create_user(user, password, database)
        return password

    def secret_value(self, user: str, password: str, database: str) -> dict[str, Any]:
        """The JSON an RDS-managed Secrets Manager secret holds, pointing at this server."""
        return {
            "engine": "mariadb",
            "host": self.host,
            "port": self.port,
            "username": user,
            "password": password,
            "dbname": database,
        }

    # ---- internals ---------------------------------------------------------------------------
    def _install(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            shutil.which(INSTALL_DB) or INSTALL_DB,
            "--no-defaults",
            f"--datadir={self.data_dir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            command.append("--user=root")
        result = subprocess.run(  # noqa: S603 - fixed binary, arguments we built
            command, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise ChurnOpsError(f"mariadb-install-db failed in {self.data_dir}: {' | '.join(tail)}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise ChurnOpsError(
                    f"mariadbd exited with code {self._process.returncode}: {self._log_tail()}"
                )
            if self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise ChurnOpsError(
            f"mariadbd did not become ready within {timeout:.0f}s: {self._log_tail()}"
        )

    def _answers(self) -> bool:
        try:
            conn = self.root_connection(connect_timeout=2)
        except Exception:  # any failure means "not ready yet"
            return False
        conn.close()
        return True

    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def server_pid(self) -> int | None:
        """The pid of a live server of ours for this data directory (from any process)."""
        pid = self._pid()
        return pid if pid is not None and self._is_our_server(pid) else None

    def _is_our_server(self, pid: int) -> bool:
        """The pid is alive and is a mariadbd serving this data directory (not a recycled pid)."""
        arguments = cmdline(pid)
        return any(arg.endswith("mariadbd") for arg in arguments[:1]) and (
            f"--datadir={self.data_dir}" in arguments
        )

    def _clean_stale(self) -> None:
        pid = self._pid()
        if pid is not None and self._is_our_server(pid):
            self._signal_and_wait(pid, 30.0)  # alive but not answering: a hung server
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def _signal_and_wait(self, pid: int, timeout: float, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                if self._process.poll() is not None:
                    return
            elif not Path(f"/proc/{pid}").exists() or not self._is_our_server(pid):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if self._process is not None and self._process.pid == pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)

    def _log_tail(self) -> str:
        return log_tail(self.log_file, 3, "no error log")
