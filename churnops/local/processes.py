"""The operating-system side of the local stand-ins: which processes are alive and whose they are,
stopping what a dead process left behind, a loopback port for a server to listen on, and this
process's environment for the length of a block.

Everything reads `/proc` directly (Linux only, as the twin is): a pid alone proves nothing, since
pids are recycled, so callers check a process's command line before they signal it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path


def cmdline(pid: int) -> list[str]:
    """The process's arguments, [] when it is gone (or a zombie, whose cmdline is empty)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\x00") if part]


def alive(pid: int) -> bool:
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


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return not alive(pid)


def group_members(pgid: int) -> list[int]:
    """The live processes of a process group (a daemon's children share its group)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def stop_all(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM, and SIGKILL what is still there after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if all(wait_gone(pid, timeout) for pid in pids):
            return


def log_tail(path: Path, lines: int, missing: str) -> str:
    """The last lines of a server's log on one line, for an error message; `missing` when the
    log does not exist."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return missing
    return " | ".join(text[-lines:])


def free_port() -> int:
    """A loopback port nobody listens on now (a server started right after binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """`values` in os.environ for the block (None: the variable unset); the previous values (or
    their absence) restored."""
    saved = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
