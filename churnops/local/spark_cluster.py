"""A two-node Spark standalone cluster on one machine: what a Glue job meets with two workers.

On AWS Glue with two or more workers the driver and the executors are different machines: a file
the driver writes to its disk does not exist for an executor. `local[*]` hides that (one process,
one disk). This cluster shows it: a standalone master, and one worker started in a private mount
namespace with its own tmpfs on /tmp (`unshare -m`), so its executors see none of the driver's
/tmp. The driver then uses `CHURNOPS_SPARK_MASTER=<master_url>`.

Needs root (a mount namespace) and util-linux's `unshare`. The processes are this object's own:
`stop()` ends exactly the process groups it started.

    python -m churnops.local.spark_cluster      # start, print the master URL, run until Ctrl-C
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from churnops.local.processes import free_port

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def missing_requirements() -> str | None:
    """Why this machine cannot start the cluster, or None."""
    if os.geteuid() != 0:
        return "root (the worker needs its own mount namespace)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux)"
    if shutil.which("java") is None:
        return "Java (for Spark)"
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "PySpark"
    return None


def _spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "bin" / "spark-class"


def _kept_under_tmp() -> list[str]:
    """What the worker needs that may live under /tmp (a checkout in a temporary directory):
    the virtualenv with PySpark, and the project its executors import."""
    project = Path(__file__).resolve().parents[2]
    paths = sorted({Path(sys.prefix).resolve(), project})
    kept: list[Path] = []
    for path in paths:
        if path.is_relative_to("/tmp") and not any(path.is_relative_to(k) for k in kept):  # noqa: S108
            kept.append(path)
    return [str(p) for p in kept]


def _private_tmp_script(hold: Path) -> str:
    """Shell commands, run in the worker's own mount namespace, that give it an empty /tmp of
    its own. Paths the worker needs that live under the real /tmp (the project and its
    virtualenv, when checked out there) are bound back at the same place; the real /tmp is
    reachable only for that moment, through `hold`, which is then unmounted."""
    commands = [f"mount --bind /tmp {shlex.quote(str(hold))}", "mount -t tmpfs none /tmp"]
    for path in _kept_under_tmp():
        inside = shlex.quote(str(hold / Path(path).relative_to("/tmp")))  # noqa: S108
        commands += [
            f"mkdir -p {shlex.quote(path)}",
            f"mount --bind {inside} {shlex.quote(path)}",
        ]
    commands.append(f"umount -l {shlex.quote(str(hold))}")
    return " && ".join(commands)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} not open after {limit:.0f}s: {log.read_text()[-2000:]}")


@dataclass
class TwoNodeSparkCluster:
    """`start()` brings up the master and the isolated worker; `master_url` is for the driver.

    `worker_cores` and `worker_memory` are what the worker offers its executors (a G.1X Glue
    worker has 4 vCPUs and 16 GB; this machine has 2 cores)."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="churnops-spark-")))
    worker_cores: int = 2
    worker_memory: str = "4g"
    master_port: int = field(default_factory=free_port)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def start(self, timeout: float = 60.0) -> TwoNodeSparkCluster:
        problem = missing_requirements()
        if problem is not None:
            raise RuntimeError(f"a two-node Spark cluster needs {problem}")
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # a master whose worker failed must not outlive the attempt
            raise

    def _start(self, timeout: float) -> TwoNodeSparkCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        spark_class = str(_spark_class())
        env = {
            **os.environ,
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_NO_DAEMONIZE": "1",
            # Executors run the same interpreter as the driver (the project's virtualenv).
            "PYSPARK_PYTHON": sys.executable,
        }
        master_log = self.workdir / "master.log"
        master = self._spawn(
            [
                spark_class,
                MASTER_CLASS,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.master_port),
                "--webui-port",
                str(free_port()),
            ],
            env,
            master_log,
        )
        _wait_for_port(self.master_port, master, master_log, timeout)
        # The worker, and every executor it forks, sees a /tmp of its own: the driver's files
        # are not there, as on Glue's second node. Its work dir lives in that tmpfs too.
        worker_port = free_port()
        worker = " ".join(
            shlex.quote(part)
            for part in (
                spark_class,
                WORKER_CLASS,
                self.master_url,
                "--host",
                "127.0.0.1",
                "--port",
                str(worker_port),
                "--webui-port",
                str(free_port()),
                "--cores",
                str(self.worker_cores),
                "--memory",
                self.worker_memory,
                "--work-dir",
                "/tmp/spark-worker",  # noqa: S108 - the worker's own tmpfs, nobody else's
            )
        )
        worker_log = self.workdir / "worker.log"
        process = self._spawn(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"{_private_tmp_script(self._hold_dir())} && exec {worker}",
            ],
            env,
            worker_log,
        )
        _wait_for_port(worker_port, process, worker_log, timeout)
        self._wait_registered(worker_log, process, timeout)
        return self

    def _hold_dir(self) -> Path:
        """Where the worker's namespace briefly holds the real /tmp: anywhere but under /tmp."""
        hold = Path.home() / ".cache" / "churnops" / "spark-worker-hold"
        if hold.resolve().is_relative_to("/tmp"):  # noqa: S108 - checking, not using, /tmp
            hold = Path("/var/tmp/churnops-spark-worker-hold")  # noqa: S108 - not /tmp itself
        hold.mkdir(parents=True, exist_ok=True)
        return hold

    def _spawn(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        handle = log.open("wb")
        process = subprocess.Popen(  # noqa: S603 - our fixed command lines
            command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        self._processes.append(process)
        return process

    def _wait_registered(self, log: Path, process: subprocess.Popen[bytes], limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if "Successfully registered with master" in log.read_text(errors="replace"):
                return
            if process.poll() is not None:
                raise RuntimeError(f"worker exited: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker did not register: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        """End the worker (and its executors) first, then the master: by their process groups,
        which hold only what this object started."""
        for process in reversed(self._processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        self._processes.clear()

    def __enter__(self) -> TwoNodeSparkCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` ends the cluster as Ctrl-C does: through stop()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with TwoNodeSparkCluster() as cluster:
        print(f"CHURNOPS_SPARK_MASTER={cluster.master_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
