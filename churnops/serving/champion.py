"""Which model serving uses: the registry's champion, loaded once and swapped when it changes.

A Lambda container lives for many requests. Reading the pointer on every request would add an S3
round trip to each; never reading it would need a redeploy to pick up a new champion. So the
pointer's entity tag (one HEAD request, or one stat locally) is checked at most every
`refresh_seconds`, and the model is reloaded only when the tag changed.

A new champion that cannot be served (another contract, a broken ONNX file, the registry briefly
unreachable) does not take down a working server: the model in memory keeps serving, the problem
is kept for `/health` and the logs, and the load is retried at the next check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from churnops.contract import Contract
from churnops.errors import ChurnOpsError
from churnops.registry import Registry
from churnops.serving.model import ServingModel
from churnops.wiring import MODEL_ONNX

log = logging.getLogger(__name__)


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

    def current(self) -> ServingModel | None:
        """The model to serve now, checking the pointer first when a check is due."""
        checked = self._checked_at
        if checked is None or self._clock() - checked >= self.refresh_seconds:
            self._refresh(force=False)
        return self._model

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
                if etag == self._etag or (etag is not None and etag == self._refused_etag):
                    return
                self._load(etag)
            except ChurnOpsError as err:
                self.last_error = str(err)
                log.warning("champion not loaded: %s", err)
            except Exception as err:  # registry unreachable and the like: retry at the next check
                self.last_error = f"{type(err).__name__}: {err}"
                log.warning("champion refresh failed: %s", self.last_error)

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
        card = self.registry.card(version)
        onnx_bytes = self.registry.read(version, MODEL_ONNX)
        try:
            model = ServingModel(card=card, onnx_bytes=onnx_bytes, contract=self.contract)
        except ChurnOpsError:
            # The model itself cannot be served (another contract, a broken graph): do not
            # download it again until the pointer moves. Registry errors above are retried.
            self._refused_etag = etag
            raise
        previous = self._model.version if self._model else None
        # The tag read before the pointer: if the pointer moved in between, the next check sees
        # a different tag and loads again, so a swap is never missed.
        self._model, self._etag = model, etag
        self.last_error = None
        log.info("champion loaded: %s (previous: %s)", version, previous)

    def status(self) -> dict[str, Any]:
        model = self._model
        return {
            "champion_loaded": model is not None,
            "model_version": model.version if model else None,
            "last_refresh_error": self.last_error,
        }
