"""The twin's background process: moto (with the extension layer), a private MariaDB and the API
stand-in, on loopback only, provisioned from the synthesized template.

Started detached by `churnops local up` (`python -m churnops.local.daemon --state-dir ...`); it
publishes its endpoints in `<state-dir>/state.json` and stops everything it started on SIGTERM or
SIGINT. The state file is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from churnops.local.processes import free_port
from churnops.local.synthesis import STACK_NAME
from churnops.local.twin import TWIN_CREDENTIALS
from churnops.wiring import ServingEnvironment

LOG = logging.getLogger("churnops.twin")

# The twin retrains in seconds, not weeks: the API picks up a new champion within this many
# seconds instead of the deployed default (ServingEnvironment.refresh_seconds, 30).
TWIN_CHAMPION_REFRESH_SECONDS = "2"
# CloudWatch evaluates alarms on its own; moto never does, so the daemon evaluates every alarm
# this often (churnops.local.moto_ext.cloudwatch.evaluate_alarms). Seconds, not AWS's minute: a
# twin rollout bakes for seconds. 0 turns evaluation off.
ALARM_SECONDS_ENV = "CHURNOPS_TWIN_ALARM_SECONDS"
DEFAULT_ALARM_SECONDS = 5.0


def alarm_seconds(environ: Any = None) -> float:
    """How often the daemon evaluates alarms: `CHURNOPS_TWIN_ALARM_SECONDS`, else 5 s."""
    raw = str((os.environ if environ is None else environ).get(ALARM_SECONDS_ENV, "")).strip()
    if not raw:
        return DEFAULT_ALARM_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{ALARM_SECONDS_ENV}={raw!r} is not a number of seconds") from None
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"{ALARM_SECONDS_ENV}={raw!r} must be 0 (off) or more")
    return seconds


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def update(self, **values: Any) -> None:
        self.data.update(values)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)


def run(state_dir: Path, cdk_out: Path, repo_root: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    state = StateFile(state_dir / "state.json")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state.update(
        status="starting",
        pid=os.getpid(),
        # the group holds the daemon's children (the Spark JVM); only a group the daemon leads
        # (started with a new session, as `local up` does) may be cleaned up as a whole
        pgid=os.getpid() if os.getpgid(0) == os.getpid() else None,
        stage="moto",
        started_at=time.time(),
    )
    cleanups: list[tuple[str, Any]] = []
    try:
        _start(state, state_dir, cdk_out, repo_root, cleanups, stop)
        if not stop.is_set():
            state.update(status="ready", stage="ready")
            LOG.info(
                "twin ready: %s",
                json.dumps({k: state.data[k] for k in ("moto_endpoint", "api_url")}),
            )
        while not stop.wait(1.0):
            pass
        state.update(status="stopping", stage="stopping")
        return 0
    except Exception as err:
        LOG.exception("twin start-up failed")
        state.update(
            status="failed", error=f"{state.data.get('stage')}: {type(err).__name__}: {err}"
        )
        return 1
    finally:
        for what, cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception:
                LOG.exception("stopping %s failed", what)
        with contextlib.suppress(FileNotFoundError):
            if state.data.get("status") != "failed":
                state.path.unlink()


def _start(
    state: StateFile,
    state_dir: Path,
    cdk_out: Path,
    repo_root: Path,
    cleanups: list[tuple[str, Any]],
    stop: threading.Event,
) -> None:
    from moto.server import ThreadedMotoServer

    from churnops.aws import reset_clients
    from churnops.local import moto_ext
    from churnops.local.mariadb import PrivateMariaDB
    from churnops.local.provision import DatabaseEndpoint, Provisioner

    seconds = alarm_seconds()  # a bad setting fails the start before anything runs
    # 1. moto, reached by everything in this process (handlers, Glue scripts) through the env
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    cleanups.append(("moto", server.stop))
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {**TWIN_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    reset_clients()
    runner = moto_ext.install(moto_ext.TaskRunner(repo_root=repo_root))
    # reversed at exit: queued Glue runs are cancelled and the running one finishes (uninstall)
    # before its Spark session stops, so no run starts a new session during shutdown
    cleanups.append(("spark", runner.stop_spark))
    cleanups.append(("moto extension", moto_ext.uninstall))
    state.update(moto_endpoint=endpoint, moto_port=port, stage="mariadb")
    if stop.is_set():
        return

    # 2. a fresh private MariaDB (moto's state is in memory, so old rows would be orphans)
    data_dir = state_dir / "mariadb"
    shutil.rmtree(data_dir, ignore_errors=True)
    database = PrivateMariaDB(data_dir)
    cleanups.append(("mariadb", database.stop))
    database.start()
    state.update(mariadb_port=database.port, mariadb_host=database.host, stage="provisioning")
    if stop.is_set():
        return

    # 3. everything the CDK app defines, from its synthesized template
    template = json.loads((cdk_out / f"{STACK_NAME}.template.json").read_text())
    provisioner = Provisioner(
        template,
        cdk_out=cdk_out,
        repo_root=repo_root,
        database=DatabaseEndpoint(database.host, database.port, "mariadb", database.grant),
        stack_name=STACK_NAME,
    )
    layout = provisioner.provision()
    # From here on every call is authorized as AWS would: handlers, Glue jobs and state machines
    # as their own synthesized roles, the operator (this process, the CLI) as an allow-all user.
    from churnops.local.moto_ext import iam as moto_iam

    moto_iam.operator_credentials(
        TWIN_CREDENTIALS["AWS_ACCESS_KEY_ID"] or "", TWIN_CREDENTIALS["AWS_SECRET_ACCESS_KEY"] or ""
    )
    runner.assume_role = moto_iam.assume_role_as_service
    moto_iam.enforce_iam()
    # Alarms change state from here on, with their actions and EventBridge events (the drift
    # alarm's rule starts a retrain; a rollout reads its candidate's alarms).
    if seconds > 0:
        evaluator = moto_ext.AlarmEvaluator(seconds).start()
        cleanups.append(("alarm evaluation", evaluator.stop))
    state.update(layout=layout.to_json(), iam_enforced=True, alarm_seconds=seconds, stage="api")
    if stop.is_set():
        return

    # 4. the serving function behind the API Gateway stand-in, invoked through Lambda (its own
    # execution environments, role, limits) as the API's AWS_PROXY integration invokes it
    if layout.serving_function:
        from churnops.aws import client
        from churnops.local.apigw import (
            LambdaProxyIntegration,
            LocalApiGateway,
            rest_api_from_template,
        )

        refresh = ServingEnvironment.env_names()["refresh_seconds"]
        client("lambda").update_function_configuration(
            FunctionName=layout.serving_function,
            Environment={
                "Variables": {
                    **layout.serving_environment,
                    refresh: TWIN_CHAMPION_REFRESH_SECONDS,
                }
            },
        )
        handler = LambdaProxyIntegration(layout.serving_function)
        # The template's REST API as API Gateway runs it: its routes, keys (their values made
        # here, as API Gateway generates them), throttles, quota, model and gateway responses.
        defined = rest_api_from_template(provisioner.template)
        api, keys = defined if defined is not None else (None, {})
        gateway = LocalApiGateway(handler, host="127.0.0.1", port=0, stage="twin", api=api)
        gateway.start()
        cleanups.append(("api", gateway.stop))
        state.update(
            api_url=gateway.url,
            api_key=next(iter(keys.values()), None),
            api_keys=keys,
        )
    else:
        state.update(api_url=None, api_key=None, api_keys={})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="churnops-twin-daemon")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--cdk-out", required=True, type=Path)
    parser.add_argument("--repo-root", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("werkzeug", "botocore", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run(args.state_dir.resolve(), args.cdk_out.resolve(), args.repo_root.resolve())


if __name__ == "__main__":
    sys.exit(main())
