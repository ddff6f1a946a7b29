"""Which model serving uses: the registry's champion, loaded once and swapped when it changes.

A Lambda container lives for many requests. Reading the pointer on every request would add an S3
round trip to each; never reading it would need a redeploy to pick up a new champion. So the
pointer's entity tag (one HEAD request, or one stat locally) is checked at most every
`refresh_seconds`, and the model is reloaded only when the tag changed.

A new champion that cannot be served (another contract, a broken ONNX file, the registry briefly
unreachable) does not take down a working server: the model in memory keeps serving, the problem
is kept for `/health` and the logs, and the load is retried at the next check.

The rollout pointer is watched the same way, at the same checks: while a rollout is active
(stage shadow or canary) its candidate is loaded beside the champion. A version already in
memory is never loaded twice, so the candidate a rollout promotes becomes the champion without
a download. A candidate that cannot be served is refused like a champion, and the champion
serves alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from churnops.contract import Contract
from churnops.errors import ChurnOpsError
from churnops.registry import Registry
from churnops.serving.model import ServingModel
from churnops.wiring import MODEL_ONNX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """An active rollout's candidate, loaded: the rollout pointer and the model it names."""

    rollout: dict[str, Any]
    model: ServingModel

    @property
    def rollout_id(self) -> str:
        return str(self.rollout["rollout_id"])

    @property
    def stage(self) -> str:
        return str(self.rollout["stage"])

    @property
    def canary_share(self) -> float:
        return float(self.rollout["canary_share"])


@dataclass(frozen=True)
class Served:
    """What serves a request: the champion and, during a rollout, its candidate. Taken as one
    snapshot, so a request never mixes a champion with another champion's rollout."""

    champion: ServingModel | None
    candidate: Candidate | None = None
    # An active rollout whose candidate cannot be served (a broken graph, another contract):
    # every request counts as a failure of that candidate, so its error alarm rolls it back
    # instead of the rollout advancing on silence.
    unservable: dict[str, Any] | None = None


class ChampionWatcher:
    def __init__(
        self,
        registry: Registry,
        contract: Contract,
        *,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.contract = contract
        self.refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._model: ServingModel | None = None
        self._etag: str | None = None
        self._checked_at: float | None = None
        self._refused_etag: str | None = None
        self.last_error: str | None = None  # why the newest champion is not the one serving
        self._candidate: Candidate | None = None
        self._rollout_etag: str | None = None
        self._refused_rollout_etag: str | None = None
        self._unservable: dict[str, Any] | None = None
        self.rollout_error: str | None = None  # why an active rollout's candidate is not loaded
        self._served = Served(None)

    def current(self) -> ServingModel | None:
        """The model to serve now, checking the pointer first when a check is due."""
        return self.served().champion

    def served(self) -> Served:
        """The champion and the rollout's candidate to serve now, checking the pointers first
        when a check is due."""
        checked = self._checked_at
        if checked is None or self._clock() - checked >= self.refresh_seconds:
            self._refresh(force=False)
        return self._served

    def refresh(self) -> None:
        """Check the pointer's tag now, whatever the interval, and load a changed champion."""
        self._refresh(force=True)

    def _refresh(self, *, force: bool) -> None:
        with self._lock:
            now = self._clock()
            # Another thread may have checked while this one waited for the lock.
            if (
                not force
                and self._checked_at is not None
                and now - self._checked_at < self.refresh_seconds
            ):
                return
            self._checked_at = now
            etag: str | None = None
            try:
                etag = self.registry.champion_etag()
                if not (etag == self._etag or (etag is not None and etag == self._refused_etag)):
                    self._load(etag)
            except ChurnOpsError as err:
                self.last_error = str(err)
                log.warning("champion not loaded: %s", err)
            except Exception as err:  # registry unreachable and the like: retry at the next check
                self.last_error = f"{type(err).__name__}: {err}"
                log.warning("champion refresh failed: %s", self.last_error)
            try:
                etag = self.registry.rollout_etag()
                if not (
                    etag == self._rollout_etag
                    or (etag is not None and etag == self._refused_rollout_etag)
                ):
                    self._load_rollout(etag)
            except ChurnOpsError as err:
                self.rollout_error = str(err)
                log.warning("rollout candidate not loaded: %s", err)
            except Exception as err:  # as for the champion: retried at the next check
                self.rollout_error = f"{type(err).__name__}: {err}"
                log.warning("rollout refresh failed: %s", self.rollout_error)
            candidate, unservable = self._candidate, self._unservable
            if candidate is not None and (
                self._model is None or candidate.model.version == self._model.version
            ):
                candidate = None  # promoted (or nothing to compare with): the champion alone
            self._served = Served(self._model, candidate, unservable)

    def _load(self, etag: str | None) -> None:
        if etag is None:
            # No pointer: there is no champion (yet, or any more); serving answers 503.
            if self._model is not None:
                log.warning("the champion pointer disappeared; unloading %s", self._model.version)
            self._model, self._etag = None, None
            self.last_error = None
            return
        pointer = self.registry.champion()
        if pointer is None:
            self._model, self._etag = None, None
            return
        version = pointer["version"]
        if self._model is not None and self._model.version == version:
            self._etag = etag  # the pointer was rewritten but names the same version
            return
        model = self._model_for(version, refuse=lambda: setattr(self, "_refused_etag", etag))
        previous = self._model.version if self._model else None
        # The tag read before the pointer: if the pointer moved in between, the next check sees
        # a different tag and loads again, so a swap is never missed.
        self._model, self._etag = model, etag
        self.last_error = None
        log.info("champion loaded: %s (previous: %s)", version, previous)

    def _load_rollout(self, etag: str | None) -> None:
        record = self.registry.active_rollout() if etag is not None else None
        if record is None:
            # No rollout, or it ended (full or aborted): the champion serves alone.
            if self._candidate is not None:
                log.info("rollout %s ended; candidate unloaded", self._candidate.rollout_id)
            self._candidate, self._rollout_etag, self.rollout_error = None, etag, None
            self._unservable = None
            return

        def refuse() -> None:
            self._refused_rollout_etag = etag
            self._candidate, self._unservable = None, record

        model = self._model_for(record["version"], refuse=refuse)
        self._candidate, self._rollout_etag = Candidate(record, model), etag
        self._unservable = None
        self.rollout_error = None
        log.info(
            "rollout %s: candidate %s in %s beside champion %s",
            record["rollout_id"],
            model.version,
            record["stage"],
            record["champion_version"],
        )

    def _model_for(self, version: str, *, refuse: Callable[[], None]) -> ServingModel:
        """`version` loaded for serving: the model in memory when it is one, else read from the
        registry. A model that cannot be served calls `refuse` (so it is not downloaded again
        until its pointer moves); registry errors are raised as they are, to be retried."""
        for loaded in (self._model, self._candidate.model if self._candidate else None):
            if loaded is not None and loaded.version == version:
                return loaded
        card = self.registry.card(version)
        onnx_bytes = self.registry.read(version, MODEL_ONNX)
        try:
            return ServingModel(card=card, onnx_bytes=onnx_bytes, contract=self.contract)
        except ChurnOpsError:
            # The model itself cannot be served (another contract, a broken graph).
            refuse()
            raise

    def status(self) -> dict[str, Any]:
        served = self._served
        model, candidate = served.champion, served.candidate
        return {
            "champion_loaded": model is not None,
            "model_version": model.version if model else None,
            "last_refresh_error": self.last_error,
            "candidate_version": candidate.model.version if candidate else None,
            "rollout_stage": candidate.stage if candidate else None,
        }
