"""What a user does with a running twin, done as they would do it: put a CSV into the raw bucket
and follow the ingest execution it triggers, start the retrain flow with its schedule's input,
read the audit table and the model registry, and say which step of a failed execution failed.

Everything goes through the AWS APIs (boto3 against moto) and the database secret, with the
names the daemon discovered in the template (`state.json`'s `layout`).
"""

from __future__ import annotations

import abc
import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnops.errors import ChurnOpsError
from churnops.wiring import INCOMING_PREFIX, ServingEnvironment, failed_key

if TYPE_CHECKING:
    from churnops.registry import Registry

# MariaDB's ER_NO_SUCH_TABLE: the audit table does not exist before the first ingest.
_NO_SUCH_TABLE = 1146


class TwinFlows(abc.ABC):
    """The user's side of `Twin`; the lifecycle (`churnops/local/twin.py`) provides these three."""

    @abc.abstractmethod
    def require_ready(self) -> dict[str, Any]:
        """The state of a running, ready twin (an error otherwise)."""

    @abc.abstractmethod
    def daemon_pid(self) -> int | None:
        """The daemon's pid while it runs."""

    @abc.abstractmethod
    def environment(self) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """AWS_ENDPOINT_URL and credentials for `churnops.aws` while the block runs."""

    def upload(
        self, path: str | Path, *, key: str | None = None, wait: bool = True, timeout: float = 300.0
    ) -> dict[str, Any]:
        """Put a CSV into the raw bucket under the watched prefix, as a user would; with `wait`,
        follow the ingest execution it triggers and report the file's outcome."""
        from churnops import storage

        path = Path(path)
        if not path.is_file():
            raise ChurnOpsError(f"{path}: no such file")
        with self.environment() as state:
            layout = state["layout"]
            if not layout.get("raw_bucket") or not layout.get("ingest_state_machine"):
                raise ChurnOpsError("the synthesized template has no S3-triggered ingest flow")
            object_key = key or f"{incoming_prefix(layout)}{path.name}"
            etag = storage.put_bytes(layout["raw_bucket"], object_key, path.read_bytes())
            if not wait:
                return {"bucket": layout["raw_bucket"], "key": object_key, "etag": etag}
            return self.ingest_outcome(object_key, etag, timeout=timeout)

    def ingest_execution(self, object_key: str, timeout: float = 30.0) -> str:
        """The ingest execution EventBridge started for this upload."""
        from churnops.aws import client

        sfn = client("stepfunctions")
        layout = self.require_ready()["layout"]
        # where the rule's target puts the object key in the flow's input (found by the daemon
        # from the target's Input/InputPath/InputTransformer)
        key_path = layout.get("ingest_key_path")
        if key_path is None:
            raise ChurnOpsError(
                "the ingest rule hands its flow no object key: cannot follow uploads"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = sfn.list_executions(
                stateMachineArn=layout["ingest_state_machine"], maxResults=1000
            )["executions"]
            # newest first: EventBridge starts the execution while put_object is being served,
            # so for a key uploaded twice the newest matching execution is this upload's
            for execution in sorted(listed, key=lambda e: e["startDate"], reverse=True):
                described = sfn.describe_execution(executionArn=execution["executionArn"])
                if _at(json.loads(described.get("input") or "null"), key_path) == object_key:
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
            described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
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
        from churnops import storage

        with self.environment() as state:
            layout = state["layout"]
            execution_arn = self.ingest_execution(object_key)
            described = self.wait_execution(execution_arn, timeout)
            audit = self._audit_rows(object_key)
            same_bytes = [row for row in audit if (row.get("etag") or "").strip('"') == etag]
            latest = (same_bytes or audit or [{}])[-1]
            # where the job moves a rejected file: its path below the incoming prefix, under
            # failed/
            moved = failed_key(object_key, incoming_prefix(layout))
            failed_file = None
            if storage.head(layout["raw_bucket"], moved) is not None:
                failed_file = storage.s3_uri(layout["raw_bucket"], moved)
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
        except Exception as err:
            if err.args[:1] == (_NO_SUCH_TABLE,):
                return []
            raise
        finally:
            conn.close()

    def audit(self) -> list[dict[str, Any]]:
        with self.environment():
            return self._audit_rows()

    def retrain(self, *, timeout: float = 600.0, follow_rollout: bool = True) -> dict[str, Any]:
        """Start the retrain flow with the input its schedule would give it, and wait; with
        `follow_rollout`, wait for the rollout it hands a passed challenger to as well."""
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
            handed = (result.get("output") or {}).get("rollout_execution") or {}
            if follow_rollout and handed.get("ExecutionArn"):
                result["rollout"] = self.follow_rollout(handed["ExecutionArn"], timeout=timeout)
            return result

    def follow_rollout(self, execution_arn: str, *, timeout: float = 600.0) -> dict[str, Any]:
        """Wait for a rollout execution; its outcome and the stages it went through, from the
        registry's history (what, when, why, which alarm)."""
        with self.environment():
            described = self.wait_execution(execution_arn, timeout)
            result: dict[str, Any] = {"execution": described["status"]}
            output = json.loads(described.get("output") or "{}")
            ended = ((output.get("rollout") or {}).get("Payload")) or {}
            result.update(
                stage=ended.get("stage"),
                version=ended.get("version"),
                rollout_id=ended.get("rollout_id"),
                alarm=ended.get("alarm"),
            )
            if described["status"] != "SUCCEEDED":
                result["error"] = described.get("error")
                result["cause"] = described.get("cause")
                result["failed_step"] = failed_step(execution_arn)
            result["stages"] = (
                self._rollout_steps(ended["rollout_id"]) if ended.get("rollout_id") else []
            )
            return result

    def _rollout_steps(self, rollout_id: str) -> list[dict[str, Any]]:
        return [
            {
                "at": entry["at"],
                "action": entry["action"],
                "stage": entry["details"].get("stage"),
                "actor": entry["actor"],
                "alarm": entry["details"].get("alarm"),
                "reason": entry["reason"],
            }
            for entry in self.registry().history()
            if entry["action"].startswith("rollout_")
            and (entry.get("details") or {}).get("rollout_id") == rollout_id
        ]

    def rollout_status(self) -> dict[str, Any]:
        """The rollout in the registry, the champion, the candidate's alarms and the rollout
        state machine's latest execution."""
        from churnops.aws import client

        with self.environment() as state:
            layout = state["layout"]
            registry = self.registry()
            record = registry.rollout()
            champion = registry.champion()
            alarms: dict[str, Any] = {}
            names = layout.get("rollout_alarm_names") or []
            if names:
                described = client("cloudwatch").describe_alarms(AlarmNames=names)
                alarms = {
                    a["AlarmName"]: {"state": a["StateValue"], "reason": a.get("StateReason")}
                    for a in described.get("MetricAlarms", [])
                }
            execution = None
            if layout.get("rollout_state_machine"):
                runs = client("stepfunctions").list_executions(
                    stateMachineArn=layout["rollout_state_machine"], maxResults=1000
                )["executions"]
                if runs:
                    latest = max(runs, key=lambda run: run["startDate"])
                    execution = {"name": latest["name"], "status": latest["status"]}
            return {
                "champion": champion["version"] if champion else None,
                "active": registry.active_rollout() is not None,
                "rollout": record,
                "candidate_alarms": alarms,
                "latest_execution": execution,
                "steps": self._rollout_steps(record["rollout_id"]) if record else [],
            }

    def decide_rollout(self, decision: str, *, actor: str, reason: str) -> dict[str, Any]:
        """A person's `advance` or `abort` of the active rollout; the running rollout state
        machine sees it at its next check (full: it batch-scores; aborted: it alerts)."""
        with self.environment():
            registry = self.registry()
            if decision == "advance":
                return registry.advance_rollout(actor=actor, reason=reason)
            if decision == "abort":
                return registry.abort_rollout(actor=actor, reason=reason)
            raise ChurnOpsError(f"a rollout is advanced or aborted, not {decision!r}")

    def registry(self) -> Registry:
        """The twin's model registry (use inside `environment()`)."""
        from churnops.registry import Registry

        uri = self.require_ready()["layout"].get("registry_uri")
        if not uri:
            variable = ServingEnvironment.env_names()["registry_uri"]
            raise ChurnOpsError(f"the synthesized template names no {variable}")
        return Registry.open(uri)


def incoming_prefix(layout: dict[str, Any]) -> str:
    """The raw bucket's upload prefix: the one the ingest rule watches, which the stack derives
    from the same setting as the ingest job's --incoming_prefix."""
    return str(layout.get("watched_prefix") or INCOMING_PREFIX)


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


def _at(data: Any, path: list[str | int]) -> Any:
    """The value at `path` (keys and list indexes) in parsed JSON, None where it does not lead."""
    for step in path:
        if isinstance(data, dict) and isinstance(step, str):
            data = data.get(step)
        elif isinstance(data, list) and isinstance(step, int) and -len(data) <= step < len(data):
            data = data[step]
        else:
            return None
    return data
