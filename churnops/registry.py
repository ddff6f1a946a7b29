"""The model registry: immutable versions, a champion pointer moved by compare-and-swap, and an
append-only history of decisions. Same layout on a local directory and on an ``s3://`` prefix:

    <root>/versions/<version>/model.joblib, model.onnx, model_card.json, metrics.json, ...
    <root>/champion.json
    <root>/rollout.json
    <root>/history/<UTC timestamp>-<version>-<action>.json

Every version file is written once. The card is written last, so a version without a card is an
interrupted registration and is ignored. The champion pointer is only ever replaced
conditionally on the tag read before the decision, so two concurrent promotions cannot both win
and a reader never sees a half-written pointer.

A pointer move can carry a decision id (the retrain run that decided, the champion a rollback is
from). The pointer records it, so a caller that repeats the same decision after its first attempt
moved the pointer (Step Functions retrying a Lambda that timed out after the write, a person
re-running a rollback whose answer they never saw) is recognised: it gets the pointer that
attempt wrote and the history keeps one entry, instead of a false conflict or a second move. A
different decision in the meantime still fails with `ConcurrentUpdateError`.

A rollout puts a candidate beside the champion without moving the champion pointer: the rollout
pointer (`rollout.json`, replaced by the same compare-and-swap and carrying a decision id the same
way) names the candidate, its stage (shadow, canary, then full, or aborted) and the share of
customers a canary answers. `full` promotes the candidate through `promote`, against the champion
tag read when the rollout started, so a champion that changed meanwhile makes it fail cleanly.
Every step is a history entry (what, why, which alarm, who).

Only the standard library and boto3 (through `churnops.storage`) are imported: the serving image
reads the registry without pandas or scikit-learn. Pointer moves also move MLflow's `champion` and
`candidate` aliases through `churnops.tracking`, which imports mlflow only when
`MLFLOW_TRACKING_URI` is set and never fails a decision.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from typing import Any

from churnops.errors import ChurnOpsError, NoChampionError
from churnops.storage import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    Storage,
    open_storage,
)

# The registry's file names and statuses are part of the wiring (the stacks name them too);
# the ones this module does not use itself are re-exported for its callers.
from churnops.wiring import (
    ACTIVE_STAGES,
    CARD,
    CHAMPION_KEY,
    DEFAULT_CANARY_SHARE,
    MODEL_ONNX,
    NEVER_CHAMPION,
    ROLLOUT_KEY,
    ROLLOUT_STAGES,
    STAGE_ABORTED,
    STAGE_FULL,
    STAGE_SHADOW,
    STATUS_CANDIDATE,
)
from churnops.wiring import DRIFT_REPORT as DRIFT_REPORT
from churnops.wiring import METRICS as METRICS
from churnops.wiring import MODEL_JOBLIB as MODEL_JOBLIB
from churnops.wiring import STATUS_BELOW_FLOOR as STATUS_BELOW_FLOOR
from churnops.wiring import STATUS_ELIGIBLE as STATUS_ELIGIBLE
from churnops.wiring import STATUS_NO_SKILL as STATUS_NO_SKILL

_VERSION_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class ConcurrentUpdateError(ChurnOpsError):
    """The champion pointer moved between reading it and writing it."""


class _Current:
    """Sentinel: compare against the pointer as read at the start of the call."""

    def __repr__(self) -> str:
        return "<current>"


CURRENT = _Current()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def new_version_id(moment: dt.datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<6 hex>``: sorts by time, unique without coordination."""
    moment = moment or _utcnow()
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


class Registry:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @classmethod
    def open(cls, uri: str) -> Registry:
        return cls(open_storage(uri))

    @property
    def uri(self) -> str:
        return self.storage.uri

    # ---- versions ---------------------------------------------------------------------------
    @staticmethod
    def _check_version(version: str) -> str:
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise ChurnOpsError(
                f"'{version}' is not a version id (expected YYYYMMDDTHHMMSSZ-xxxxxx)"
            )
        return version

    @staticmethod
    def _check_name(name: str) -> str:
        if not _NAME_RE.match(name) or name in (".", ".."):
            raise ChurnOpsError(f"invalid registry file name '{name}'")
        return name

    def register(self, files: dict[str, bytes], card: dict[str, Any]) -> str:
        """Write a new version's files, then its card (which makes the version visible)."""
        if CARD in files:
            raise ChurnOpsError(f"pass the card as `card`, not as a file named {CARD}")
        version = new_version_id()
        card = {**card, "version": version}
        # Microseconds: version ids only resolve seconds, and list order must follow time.
        card.setdefault(
            "created_at", _utcnow().isoformat(timespec="microseconds").replace("+00:00", "Z")
        )
        card.setdefault("status", STATUS_CANDIDATE)
        card["files"] = sorted(files)
        for name, data in files.items():
            self.storage.put_if_absent(f"versions/{version}/{self._check_name(name)}", data)
        self.storage.put_if_absent(f"versions/{version}/{CARD}", _dumps(card))
        return version

    def list_versions(self) -> list[dict[str, Any]]:
        """Cards of every completely registered version, oldest first."""
        versions = sorted(
            key.split("/")[1]
            for key in self.storage.list("versions/")
            if key.endswith("/" + CARD) and key.count("/") == 2
        )
        cards = [self.card(v) for v in versions]
        # Ids sort by second; within one second the card's creation time decides.
        return sorted(
            cards, key=lambda c: (c["version"][:16], str(c.get("created_at")), c["version"])
        )

    def card(self, version: str) -> dict[str, Any]:
        self._check_version(version)
        try:
            card: dict[str, Any] = json.loads(self.storage.get(f"versions/{version}/{CARD}"))
        except ObjectNotFoundError:
            raise ChurnOpsError(f"no version {version} in registry {self.uri}") from None
        return card

    def read(self, version: str, name: str) -> bytes:
        self._check_version(version)
        try:
            return self.storage.get(f"versions/{version}/{self._check_name(name)}")
        except ObjectNotFoundError:
            raise ChurnOpsError(f"version {version} has no file {name}") from None

    def has_file(self, version: str, name: str) -> bool:
        self._check_version(version)
        return self.storage.exists(f"versions/{version}/{self._check_name(name)}")

    def write_extra(self, version: str, name: str, data: bytes) -> None:
        """Add a file to a registered version after the fact (the retrain's drift report).
        Write-once like the rest: an existing file is never replaced."""
        self.card(version)  # the version must exist
        try:
            self.storage.put_if_absent(f"versions/{version}/{self._check_name(name)}", data)
        except ObjectExistsError:
            raise ChurnOpsError(
                f"version {version} already has {name}; versions are immutable"
            ) from None

    # ---- champion ---------------------------------------------------------------------------
    def champion(self) -> dict[str, Any] | None:
        return self._read_pointer(CHAMPION_KEY)

    def _read_pointer(self, key: str) -> dict[str, Any] | None:
        try:
            pointer: dict[str, Any] = json.loads(self.storage.get(key))
        except ObjectNotFoundError:
            return None
        return pointer

    def require_champion(self) -> dict[str, Any]:
        pointer = self.champion()
        if pointer is None:
            raise NoChampionError(f"no champion model in registry {self.uri}: train one first")
        return pointer

    def champion_etag(self) -> str | None:
        return self.storage.etag(CHAMPION_KEY)

    def _pointer_and_etag(
        self, key: str = CHAMPION_KEY
    ) -> tuple[dict[str, Any] | None, str | None]:
        try:
            data, etag = self.storage.get_with_etag(key)
        except ObjectNotFoundError:
            return None, None
        return json.loads(data), etag

    def _replace_pointer(
        self, key: str, pointer: dict[str, Any], etag: str | None, *, conflict: str
    ) -> dict[str, Any]:
        """Write `pointer` at `key` if it still has tag `etag`, and return the pointer that
        landed. `pointer` names its `action`, `version` and `decision_id`: a write that lost to
        its own first copy (S3 applied a PUT whose answer was lost, and the SDK sent it again)
        is recognised by them; anything else that got there first is `ConcurrentUpdateError`
        with the message `conflict`."""
        try:
            self.storage.replace_if_match(key, _dumps(pointer), etag)
        except PreconditionFailedError:
            # The repeat finds the tag changed by its own first copy. The pointer tells: if it
            # is this decision's, the write happened.
            landed = self._read_pointer(key)
            if landed is None or not _written_by(
                landed, pointer["action"], pointer["version"], pointer.get("decision_id")
            ):
                raise ConcurrentUpdateError(conflict) from None
            pointer = landed
        return pointer

    def _move_pointer(
        self,
        version: str,
        *,
        previous: dict[str, Any] | None,
        etag: str | None,
        actor: str,
        reason: str,
        action: str,
        decision_id: str | None,
    ) -> dict[str, Any]:
        """Point the champion at `version` if the pointer still has tag `etag`, record the move
        in the history, and return the pointer."""
        pointer = {
            "version": version,
            "previous_version": previous["version"] if previous else None,
            "updated_at": _iso(_utcnow()),
            "actor": actor,
            "reason": reason,
            "sequence": (previous["sequence"] + 1) if previous else 1,
            # Which decision put the pointer here, so that decision can recognise its own write.
            "action": action,
            "decision_id": decision_id,
        }
        pointer = self._replace_pointer(
            CHAMPION_KEY,
            pointer,
            etag,
            conflict=f"the champion pointer in {self.uri} changed meanwhile; "
            f"{version} was not promoted",
        )
        self._record_move(pointer)
        return pointer

    def _record_move(self, pointer: dict[str, Any]) -> None:
        """The history entry of a pointer move, built from the pointer alone so that a retry,
        which only has the pointer its first attempt wrote, records exactly the same entry."""
        action = pointer["action"]
        details: dict[str, Any] = {"sequence": pointer["sequence"]}
        if action == "rollback":
            details["from_version"] = pointer["previous_version"]
        else:
            details["previous_version"] = pointer["previous_version"]
        self.record_decision(
            pointer["version"],
            action,
            actor=pointer["actor"],
            reason=pointer["reason"],
            details=details,
            decision_id=pointer.get("decision_id"),
        )
        # MLflow's `champion` alias follows the pointer when tracking is on (a repeat sets it
        # again, so a first attempt that stopped before this still gets it right).
        from churnops import tracking

        tracking.on_champion_moved(self, pointer["version"])

    def check_promotable(self, version: str) -> dict[str, Any]:
        card = self.card(version)
        status = card.get("status")
        if status in NEVER_CHAMPION:
            raise ChurnOpsError(f"version {version} has status {status} and cannot be champion")
        if not self.has_file(version, MODEL_ONNX):
            raise ChurnOpsError(f"version {version} has no {MODEL_ONNX} and cannot be champion")
        return card

    def promote(
        self,
        version: str,
        *,
        actor: str,
        reason: str,
        expected_etag: str | _Current | None = CURRENT,
        decision_id: str | None = None,
    ) -> dict[str, Any]:
        """Make `version` champion if the pointer still has tag `expected_etag` (default: the tag
        read now; None: only if there is no champion yet).

        With `decision_id`, a repeat of the same decision after its pointer write landed returns
        that pointer (and records the promotion if the first attempt stopped before it could)
        rather than failing on the tag its own write changed."""
        self.check_promotable(version)
        current, etag = self._pointer_and_etag()
        if current is not None and _written_by(current, "promote", version, decision_id):
            self._record_move(current)
            return current
        if not isinstance(expected_etag, _Current) and expected_etag != etag:
            raise ConcurrentUpdateError(
                f"the champion pointer in {self.uri} changed meanwhile; {version} was not promoted"
            )
        if current and current.get("version") == version:
            raise ChurnOpsError(f"version {version} is already the champion")
        return self._move_pointer(
            version,
            previous=current,
            etag=etag,
            actor=actor,
            reason=reason,
            action="promote",
            decision_id=decision_id,
        )

    def rollback(
        self,
        *,
        actor: str,
        reason: str,
        from_version: str | None = None,
        decision_id: str | None = None,
    ) -> dict[str, Any]:
        """Point back at `previous_version`. The version rolled back from becomes the new
        `previous_version`, so a second rollback undoes the first.

        `from_version` names the champion the caller means to roll back: if the champion is by
        then another version, nothing moves (`ConcurrentUpdateError`); if the pointer already is
        the rollback from it, that is this same decision repeated (its answer was lost, or two
        people reacted to one alarm) and the pointer is returned as it is, with one history
        entry. Without `from_version` a repeat cannot be told from a second rollback. A caller
        with its own decision id (an execution) passes `decision_id` instead."""
        if from_version is not None:
            self._check_version(from_version)
            decision_id = decision_id or f"rollback-from-{from_version}"
        current, etag = self._pointer_and_etag()
        if current is None:
            raise NoChampionError(f"no champion in registry {self.uri}: nothing to roll back")
        if _written_by(current, "rollback", current["version"], decision_id):
            self._record_move(current)
            return current
        if from_version is not None and current["version"] != from_version:
            raise ConcurrentUpdateError(
                f"the champion in {self.uri} is {current['version']}, not {from_version}; "
                "nothing was rolled back"
            )
        target = current.get("previous_version")
        if not target:
            raise ChurnOpsError(
                f"champion {current['version']} has no previous version to roll back to"
            )
        self.card(target)
        return self._move_pointer(
            target,
            previous=current,
            etag=etag,
            actor=actor,
            reason=reason,
            action="rollback",
            decision_id=decision_id,
        )

    # ---- rollout ----------------------------------------------------------------------------
    def rollout(self) -> dict[str, Any] | None:
        """The rollout pointer as last written (an ended rollout stays, at stage full or
        aborted, until the next one starts), or None when there never was one."""
        return self._read_pointer(ROLLOUT_KEY)

    def active_rollout(self) -> dict[str, Any] | None:
        """The rollout being served (stage shadow or canary), if any."""
        record = self.rollout()
        return record if record is not None and record["stage"] in ACTIVE_STAGES else None

    def rollout_etag(self) -> str | None:
        return self.storage.etag(ROLLOUT_KEY)

    def start_rollout(
        self,
        version: str,
        *,
        actor: str,
        reason: str,
        canary_share: float = DEFAULT_CANARY_SHARE,
        champion_etag: str | _Current = CURRENT,
        decision_id: str | None = None,
    ) -> dict[str, Any]:
        """Make promotable `version` the candidate beside the champion, at stage shadow.

        Refused when a rollout is active, when there is no champion or `version` is it, and
        (`ConcurrentUpdateError`) when the champion's tag is no longer `champion_etag` (default:
        the tag read now). The champion's tag is kept in the rollout: `full` promotes against it.
        A repeat of the same decision returns the rollout it started."""
        if not 0 < canary_share <= 1:
            raise ChurnOpsError(f"the canary share must be in (0, 1], got {canary_share}")
        self.check_promotable(version)
        current, etag = self._pointer_and_etag(ROLLOUT_KEY)
        if current is not None and _written_by(current, "rollout_start", version, decision_id):
            self._record_rollout(current)
            return current
        if current is not None and current["stage"] in ACTIVE_STAGES:
            raise ChurnOpsError(
                f"rollout {current['rollout_id']} of {current['version']} is active (stage "
                f"{current['stage']}); advance it to full or abort it first"
            )
        champion, tag = self._pointer_and_etag()
        if champion is None or tag is None:
            raise NoChampionError(
                f"no champion in registry {self.uri}: a rollout needs one to compare with; "
                "promote the first model directly"
            )
        if not isinstance(champion_etag, _Current) and champion_etag != tag:
            raise ConcurrentUpdateError(
                f"the champion pointer in {self.uri} changed meanwhile; no rollout of {version}"
            )
        if champion["version"] == version:
            raise ChurnOpsError(f"version {version} is already the champion")
        now = _iso(_utcnow())
        record = {
            "rollout_id": f"rollout-{new_version_id()}",
            "version": version,  # the candidate
            "champion_version": champion["version"],
            "champion_etag": tag,
            "stage": STAGE_SHADOW,
            "previous_stage": None,
            "canary_share": float(canary_share),
            "started_at": now,
            "updated_at": now,
            "actor": actor,
            "reason": reason,
            "alarm": None,
            "sequence": (current["sequence"] + 1) if current else 1,
            "action": "rollout_start",
            "decision_id": decision_id,
        }
        return self._write_rollout(record, etag)

    def advance_rollout(
        self,
        *,
        actor: str,
        reason: str,
        from_stage: str | None = None,
        rollout_id: str | None = None,
        decision_id: str | None = None,
    ) -> dict[str, Any]:
        """Move the active rollout one stage on: shadow -> canary -> full. `full` promotes the
        candidate (through `promote`, against the champion tag read at the start, with this
        decision's id) and then ends the rollout; if the champion changed meanwhile nothing
        moves (`ConcurrentUpdateError`).

        `from_stage` (and `rollout_id`) name the state the caller saw: if the rollout is by then
        elsewhere, nothing moves (`ConcurrentUpdateError`), unless it is this same decision's
        write (its answer was lost), which is returned as it is. Without `decision_id` the
        decision is "advance rollout R from stage S", S being `from_stage` or, without it, the
        stage read now (so run twice, it advances twice)."""
        current, etag = self._pointer_and_etag(ROLLOUT_KEY)
        current = self._expected_rollout(current, rollout_id)
        if from_stage is not None and from_stage not in ACTIVE_STAGES:
            raise ChurnOpsError(
                f"a rollout advances from {' or '.join(sorted(ACTIVE_STAGES))}, not {from_stage}"
            )
        stage = from_stage or current["stage"]
        decision_id = decision_id or f"{current['rollout_id']}-advance-from-{stage}"
        if _written_by(current, "rollout_advance", current["version"], decision_id):
            self._record_rollout(current)
            return current
        self._require_active(current)
        if current["stage"] != stage:
            raise ConcurrentUpdateError(
                f"rollout {current['rollout_id']} is at stage {current['stage']}, not {stage}; "
                "nothing was advanced"
            )
        target = ROLLOUT_STAGES[ROLLOUT_STAGES.index(stage) + 1]
        if target == STAGE_FULL:
            # Its own conflict (another champion meanwhile) leaves the rollout where it is.
            self.promote(
                current["version"],
                actor=actor,
                reason=f"rollout {current['rollout_id']}: {reason}",
                expected_etag=current["champion_etag"],
                decision_id=decision_id,
            )
        return self._write_rollout(
            self._next_rollout(
                current, target, actor=actor, reason=reason, action="rollout_advance"
            )
            | {"decision_id": decision_id},
            etag,
        )

    def abort_rollout(
        self,
        *,
        actor: str,
        reason: str,
        alarm: str | None = None,
        rollout_id: str | None = None,
        decision_id: str | None = None,
    ) -> dict[str, Any]:
        """Drop the active rollout's candidate; the champion is not touched. `alarm` names the
        alarm that called for it, if one did. Without `decision_id` the decision is "abort
        rollout R", so a second abort of the same rollout (two people answering one alarm, an
        answer lost) returns the first one's pointer and history keeps one entry."""
        current, etag = self._pointer_and_etag(ROLLOUT_KEY)
        current = self._expected_rollout(current, rollout_id)
        decision_id = decision_id or f"{current['rollout_id']}-abort"
        if _written_by(current, "rollout_abort", current["version"], decision_id):
            self._record_rollout(current)
            return current
        self._require_active(current)
        champion = self.champion()
        if champion is not None and champion["version"] == current["version"]:
            raise ConcurrentUpdateError(
                f"the candidate {current['version']} of rollout {current['rollout_id']} is "
                "already the champion; roll it back with `churnops registry rollback "
                f"--from-version {current['version']}`"
            )
        record = self._next_rollout(
            current, STAGE_ABORTED, actor=actor, reason=reason, action="rollout_abort"
        )
        return self._write_rollout(record | {"alarm": alarm, "decision_id": decision_id}, etag)

    def _expected_rollout(
        self, current: dict[str, Any] | None, rollout_id: str | None
    ) -> dict[str, Any]:
        if current is None:
            raise ChurnOpsError(f"no rollout in registry {self.uri}")
        if rollout_id is not None and current["rollout_id"] != rollout_id:
            raise ConcurrentUpdateError(
                f"the rollout in {self.uri} is {current['rollout_id']}, not {rollout_id}; "
                "nothing was changed"
            )
        return current

    @staticmethod
    def _require_active(current: dict[str, Any]) -> None:
        if current["stage"] in ACTIVE_STAGES:
            return
        note = (
            f"; its candidate {current['version']} is champion: `churnops registry rollback "
            f"--from-version {current['version']}` rolls it back"
            if current["stage"] == STAGE_FULL
            else ""
        )
        raise ChurnOpsError(
            f"rollout {current['rollout_id']} has ended (stage {current['stage']}){note}"
        )

    @staticmethod
    def _next_rollout(
        current: dict[str, Any], stage: str, *, actor: str, reason: str, action: str
    ) -> dict[str, Any]:
        return {
            **current,
            "stage": stage,
            "previous_stage": current["stage"],
            "updated_at": _iso(_utcnow()),
            "actor": actor,
            "reason": reason,
            "alarm": None,
            "sequence": current["sequence"] + 1,
            "action": action,
        }

    def _write_rollout(self, record: dict[str, Any], etag: str | None) -> dict[str, Any]:
        record = self._replace_pointer(
            ROLLOUT_KEY,
            record,
            etag,
            conflict=f"the rollout pointer in {self.uri} changed meanwhile; "
            f"{record['action']} of {record['version']} did not happen",
        )
        self._record_rollout(record)
        return record

    def _record_rollout(self, record: dict[str, Any]) -> None:
        """A rollout step's history entry, from the pointer alone (a retry records the same)."""
        self.record_decision(
            record["version"],
            record["action"],
            actor=record["actor"],
            reason=record["reason"],
            details={
                "rollout_id": record["rollout_id"],
                "stage": record["stage"],
                "previous_stage": record["previous_stage"],
                "canary_share": record["canary_share"],
                "champion_version": record["champion_version"],
                "alarm": record["alarm"],
                "sequence": record["sequence"],
            },
            decision_id=record.get("decision_id"),
        )
        # MLflow's `candidate` alias follows the rollout when tracking is on (as `champion`).
        from churnops import tracking

        tracking.on_rollout_step(self, record)

    # ---- history ----------------------------------------------------------------------------
    def record_decision(
        self,
        version: str,
        action: str,
        *,
        actor: str,
        reason: str,
        details: dict[str, Any] | None = None,
        decision_id: str | None = None,
    ) -> dict[str, Any]:
        """Append one decision (promote, rollback, reject, no_skill, ...); never rewritten.

        With `decision_id`, at most once per version, action and decision: a retried step that
        already recorded it gets the entry it wrote before."""
        self._check_version(version)
        self._check_name(action)
        if decision_id is not None:
            recorded = self._recorded(version, action, decision_id)
            if recorded is not None:
                return recorded
            details = {**(details or {}), "decision_id": decision_id}
        moment = _utcnow()
        entry = {
            "at": moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "version": version,
            "action": action,
            "actor": actor,
            "reason": reason,
            "details": details or {},
        }
        stamp = moment.strftime("%Y%m%dT%H%M%S.%fZ")
        for attempt in range(100):
            suffix = f"-{attempt}" if attempt else ""
            try:
                self.storage.put_if_absent(
                    f"history/{stamp}-{version}-{action}{suffix}.json", _dumps(entry)
                )
                return entry
            except ObjectExistsError:
                continue
        raise ChurnOpsError("could not record the decision: too many entries at the same instant")

    def history(self) -> list[dict[str, Any]]:
        return [json.loads(self.storage.get(key)) for key in self.storage.list("history/")]

    def _recorded(self, version: str, action: str, decision_id: str) -> dict[str, Any] | None:
        # Keys name the version and the action, so only those few entries are read.
        marker = f"-{version}-{action}"
        for key in self.storage.list("history/"):
            name = key.rsplit("/", 1)[-1].removesuffix(".json")
            if not (name.endswith(marker) or f"{marker}-" in name):
                continue
            entry = json.loads(self.storage.get(key))
            if (
                entry.get("action") == action
                and (entry.get("details") or {}).get("decision_id") == decision_id
            ):
                return dict(entry)
        return None


def _written_by(
    pointer: dict[str, Any], action: str, version: str, decision_id: str | None
) -> bool:
    """Whether `pointer` (the champion's or the rollout's) is what decision `decision_id` wrote
    when its `action` concerned `version` (one id may promote and later roll back, and a rollout
    step's id is also its promotion's: the action tells them apart)."""
    return (
        decision_id is not None
        and pointer.get("decision_id") == decision_id
        and pointer.get("action") == action
        and pointer.get("version") == version
    )
