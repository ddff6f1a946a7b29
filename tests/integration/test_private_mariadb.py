"""The private MariaDB server manager: idempotent start, reuse of a running server, recovery from
a stale pid file, password logins, and no process left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from churnops.local.mariadb import PrivateMariaDB, available


def alive(pid: int) -> bool:
    try:
        return b"mariadbd" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture
def data_dir(tmp_path, need_service) -> Path:
    need_service(available(), "MariaDB server binaries (/usr/sbin/mariadbd)")
    return tmp_path / "db"


def test_lifecycle_reuse_stale_pid_and_clean_stop(data_dir):
    import pymysql

    # GIVEN a started server with a database and a password user
    server = PrivateMariaDB(data_dir).start()
    try:
        pid = int(server.pid_file.read_text())
        server.create_database("churn")
        server.create_user("app", "s3cret-Pw", "churn")
        with (
            pymysql.connect(
                host=server.host,
                port=server.port,
                user="app",
                password="s3cret-Pw",
                database="churn",
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT @@local_infile, @@bind_address")
            assert cur.fetchone() == (1, "127.0.0.1")
        with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
            pymysql.connect(host=server.host, port=server.port, user="app", password="wrong")

        # WHEN start() is called again, or another manager opens the same data directory
        server.start()
        other = PrivateMariaDB(data_dir, port=server.port)
        # THEN the running server is reused: same process, no second one
        assert other.running() and other.start() is other
        assert int(server.pid_file.read_text()) == pid and alive(pid)

        # WHEN the server dies hard, leaving its pid file behind
        server.kill()
        assert not alive(pid) and server.pid_file.exists()
        # THEN a new manager cleans up and starts it again, with the data kept
        revived = PrivateMariaDB(data_dir, port=server.port).start()
        new_pid = int(revived.pid_file.read_text())
        assert new_pid != pid and alive(new_pid)
        with revived.root_connection() as conn, conn.cursor() as cur:
            cur.execute("SHOW DATABASES LIKE 'churn'")
            assert cur.fetchone() == ("churn",)
    finally:
        # WHEN stopped (twice: the second is a no-op)
        PrivateMariaDB(data_dir, port=server.port).stop()
        server.stop()
    # THEN no server process and no pid file remain
    assert not server.pid_file.exists()
    assert not any(alive(p) for p in (pid, locals().get("new_pid", pid)))
    assert not server.running()
    assert os.path.isdir(data_dir / "mysql")
