"""The rows train and evaluate read from a snapshot: bounded, deterministic, part by part.

- Train gets a sample of at most `fit_rows` labelled training customers, stratified by the
  label (each class keeps its share of the training rows, to the row) and chosen by a stable hash
  of the customer id: the customers with the smallest hashes in each class. The same snapshot
  always gives the same sample, however it was sliced, and a customer picked in one run is
  picked in the next as long as the table does not grow past it.
- Evaluate gets the labelled holdout customers, at most `max_rows` of them: those with the
  smallest holdout hash, so a capped holdout is a fixed subset of the holdout (the same
  customers run after run), not a fresh draw.

Both keep, while reading, only the rows that can still make the cut: the rows chosen so far plus
one part. Frames come back in `typed` form, sorted by id, so the order (which training's folds
and the evaluation's bootstrap depend on) is canonical too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from churnops.contract import Contract
from churnops.retrain.snapshot import (
    HOLDOUT,
    TRAIN,
    StoredSnapshot,
    holdout_hash,
    id_hash,
    labelled,
    typed,
)

# Fixed 16-character key of the id hash that picks the training sample (independent of the
# holdout's, so the sample is not the training rows nearest the holdout boundary).
_SAMPLE_KEY = "churnops-fitrows"
_HASH = "__churnops_id_hash__"


class SmallestByHash:
    """The `limit` rows with the smallest id hash among every row offered, ties broken by id;
    holds at most the rows kept so far plus the frame being offered."""

    def __init__(self, limit: int, id_column: str) -> None:
        self.limit = max(int(limit), 0)
        self.id_column = id_column
        self._frames: list[pd.DataFrame] = []
        self._held = 0
        self.offered = 0
        # The largest hash still kept once `limit` rows are held; a row above it cannot get in.
        self._bound: np.uint64 | None = None

    def offer(self, frame: pd.DataFrame, hashes: npt.NDArray[np.uint64]) -> None:
        self.offered += len(frame)
        if self.limit == 0 or frame.empty:
            return
        if self._bound is not None:
            fits = hashes <= self._bound
            frame, hashes = frame[fits], hashes[fits]
            if frame.empty:
                return
        self._frames.append(frame.assign(**{_HASH: hashes}))
        self._held += len(frame)
        if self._held > self.limit:
            self._cut()

    def _cut(self) -> None:
        held = pd.concat(self._frames, ignore_index=True)
        hashes = held[_HASH].to_numpy()
        order = np.argsort(hashes, kind="stable")
        if hashes[order[self.limit - 1]] == hashes[order[self.limit]]:
            # Two customers share a 64-bit hash across the cut (about never): the id decides,
            # so the choice does not depend on the order the parts came in.
            order = np.lexsort((held[self.id_column].to_numpy(dtype=str), hashes))
        kept = held.iloc[order[: self.limit]].reset_index(drop=True)
        self._bound = kept[_HASH].iloc[-1]
        self._frames, self._held = [kept], len(kept)

    @property
    def kept(self) -> int:
        return self._held

    def frame(self) -> pd.DataFrame | None:
        if not self._frames:
            return None
        return pd.concat(self._frames, ignore_index=True).drop(columns=[_HASH])


@dataclass(frozen=True)
class Selection:
    """Rows chosen for a step, and how many were eligible (labelled rows of the split)."""

    frame: pd.DataFrame
    available: int

    @property
    def rows(self) -> int:
        return len(self.frame)


def _combine(parts: Iterable[pd.DataFrame | None], contract: Contract) -> pd.DataFrame:
    frames = [f for f in parts if f is not None and not f.empty]
    if not frames:
        return typed(pd.DataFrame(columns=contract.column_names), contract)
    return typed(pd.concat(frames, ignore_index=True), contract)


def class_counts(stored: StoredSnapshot, contract: Contract, split_name: str) -> tuple[int, int]:
    """(positive, negative) labelled rows of a split: from the manifest, or counted by reading the
    target column when the snapshot has none."""
    target = contract.target_column
    by_label = stored.label_counts(split_name)
    if by_label is None:
        by_label = {}
        for frame in stored.frames(contract, split_name, columns=[target]):
            for label, count in labelled(frame, contract)[target].value_counts().items():
                by_label[str(label)] = by_label.get(str(label), 0) + int(count)
    positive = by_label.get(contract.positive_label, 0)
    return positive, sum(by_label.values()) - positive


def training_sample(stored: StoredSnapshot, contract: Contract, fit_rows: int) -> Selection:
    """At most `fit_rows` labelled training customers, stratified by label (see module doc)."""
    positive, negative = class_counts(stored, contract, TRAIN)
    available = positive + negative
    take = min(fit_rows, available)
    take_positive = round(take * positive / available) if available else 0
    keepers = {
        1: SmallestByHash(take_positive, contract.id_column),
        0: SmallestByHash(take - take_positive, contract.id_column),
    }
    for frame in stored.frames(contract, TRAIN):
        rows = labelled(frame, contract)
        y = contract.target_vector(rows)
        hashes = id_hash(rows[contract.id_column], _SAMPLE_KEY)
        for label, keeper in keepers.items():
            chosen = y == label
            keeper.offer(rows[chosen], hashes[chosen])
    return Selection(_combine((k.frame() for k in keepers.values()), contract), available)


def evaluation_holdout(stored: StoredSnapshot, contract: Contract, max_rows: int) -> Selection:
    """The labelled holdout customers, at most `max_rows` (the smallest holdout hashes)."""
    keeper = SmallestByHash(max_rows, contract.id_column)
    for frame in stored.frames(contract, HOLDOUT):
        rows = labelled(frame, contract)
        keeper.offer(rows, holdout_hash(rows[contract.id_column]))
    return Selection(_combine([keeper.frame()], contract), keeper.offered)
