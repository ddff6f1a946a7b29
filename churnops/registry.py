"""The model registry: immutable versions, a champion pointer moved by compare-and-swap, and an
append-only history of decisions. Same layout on a local directory and on an ``s3://`` prefix:

    <root>/versions/<version>/model.joblib, model.onnx, model_card.json, metrics.json, ...
    <root>/champion.json
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

Only the standard library and boto3 (through `churnops.storage`) are imported: the serving image
reads the registry without pandas or scikit-learn.
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
    CARD,
    CHAMPION_KEY,
    MODEL_ONNX,
    NEVER_CHAMPION,
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
        try:
            pointer: dict[str, Any] = json.loads(self.storage.get(CHAMPION_KEY))
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

    def _pointer_and_etag(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            data, etag = self.storage.get_with_etag(CHAMPION_KEY)
        except ObjectNotFoundError:
            return None, None
        return json.loads(data), etag

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
        try:
            self.storage.replace_if_match(CHAMPION_KEY, _dumps(pointer), etag)
        except PreconditionFailedError:
            # S3 may apply a PUT whose answer is lost; the SDK then sends it again and the
            # repeat finds the tag changed by its own first copy. The pointer tells: if it is
            # this decision's, the move happened.
            landed = self.champion()
            if landed is None or not _written_by(landed, action, version, decision_id):
                raise ConcurrentUpdateError(
                    f"the champion pointer in {self.uri} changed meanwhile; "
                    f"{version} was not promoted"
                ) from None
            pointer = landed
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
    """Whether `pointer` is what decision `decision_id` wrote when its `action` made `version`
    champion (one id may promote and later roll back, as a rollout would)."""
    return (
        decision_id is not None
        and pointer.get("decision_id") == decision_id
        and pointer.get("action") == action
        and pointer.get("version") == version
    )
