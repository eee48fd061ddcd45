"""Sessions and the item vocabulary as the trainer, the evaluator and the baselines see them.

A :class:`SessionDataset` is a compact, read-only view: every event's item index, grouped by session,
sessions ordered by their first event time (the order session-parallel mini-batches consume them in).
It is built from the training set's Parquet folders (see docs/CONTRACTS.md) or from any table of
(session, item, time) rows, without Spark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

SPLITS = ("train", "test", "train_tr", "valid")
VOCABULARY_FILE = "items.parquet"
VOCABULARY_SCHEMA = pa.schema([("item_id", pa.string()), ("item_idx", pa.int32()), ("count", pa.int64())])


@dataclass(frozen=True)
class Vocabulary:
    """Item ids by index (position), with their event counts in the training data."""

    item_ids: np.ndarray
    counts: np.ndarray

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.counts):
            raise ValueError(f"vocabulary: {len(self.item_ids)} item ids but {len(self.counts)} counts")
        if len(set(self.item_ids.tolist())) != len(self.item_ids):
            raise ValueError("vocabulary: item ids are not unique")

    def __len__(self) -> int:
        return len(self.item_ids)

    def lookup(self, ids: np.ndarray | list[str] | pa.Array) -> np.ndarray:
        """Indexes of ``ids`` (int64), -1 where an id is not in the vocabulary."""
        found = pc.index_in(pa.array(ids, type=pa.string()), value_set=pa.array(self.item_ids, type=pa.string()))
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    @classmethod
    def from_counts(cls, item_ids: np.ndarray, counts: np.ndarray) -> Vocabulary:
        """A vocabulary ordered by descending count, ties by id (deterministic indexes)."""
        order = np.lexsort((np.asarray(item_ids, dtype=str), -np.asarray(counts)))
        return cls(np.asarray(item_ids, dtype=object)[order], np.asarray(counts, dtype=np.int64)[order])


def read_vocabulary(path: Path | str) -> Vocabulary:
    """Read ``items.parquet``; indexes must be exactly 0..n-1."""
    table = pq.read_table(path)
    missing = {"item_id", "item_idx", "count"} - set(table.column_names)
    if missing:
        raise ValueError(f"{path}: vocabulary lacks column(s) {sorted(missing)}; expected item_id, item_idx, count")
    table = table.sort_by("item_idx")
    idx = table.column("item_idx").to_numpy()
    if not np.array_equal(idx, np.arange(len(idx))):
        raise ValueError(f"{path}: column item_idx must hold 0..{len(idx) - 1} exactly once each")
    return Vocabulary(
        np.asarray(table.column("item_id").to_pylist(), dtype=object),
        table.column("count").to_numpy().astype(np.int64),
    )


def write_vocabulary(vocabulary: Vocabulary, path: Path | str) -> None:
    table = pa.table(
        {
            "item_id": pa.array(vocabulary.item_ids, type=pa.string()),
            "item_idx": pa.array(np.arange(len(vocabulary), dtype=np.int32)),
            "count": pa.array(vocabulary.counts, type=pa.int64()),
        },
        schema=VOCABULARY_SCHEMA,
    )
    pq.write_table(table, path)


@dataclass(frozen=True)
class SessionDataset:
    """Events grouped by session; session ``s`` is ``item_idx[offsets[s]:offsets[s + 1]]``.

    Sessions are ordered by first event time (ties by session id), events by time within a session.
    """

    item_idx: np.ndarray
    offsets: np.ndarray
    session_ids: np.ndarray
    n_items: int

    def __post_init__(self) -> None:
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.item_idx):
            raise ValueError("session offsets must start at 0 and end at the number of events")
        if len(self.session_ids) != len(self.offsets) - 1:
            raise ValueError("one session id per session expected")
        if len(self.item_idx) and (self.item_idx.min() < 0 or self.item_idx.max() >= self.n_items):
            raise ValueError(f"item indexes must lie in [0, {self.n_items})")

    @property
    def n_sessions(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_events(self) -> int:
        return len(self.item_idx)

    @property
    def n_pairs(self) -> int:
        """Training pairs: every event that has a next event in its session."""
        return self.n_events - self.n_sessions

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def session(self, s: int) -> np.ndarray:
        return self.item_idx[self.offsets[s]:self.offsets[s + 1]]

    @classmethod
    def from_events(cls, session_ids: np.ndarray, item_idx: np.ndarray, times: np.ndarray,
                    n_items: int) -> SessionDataset:
        """Group unordered events; rows with item index -1 must have been removed by the caller."""
        session_ids = np.asarray(session_ids)
        item_idx = np.asarray(item_idx, dtype=np.int64)
        times = np.asarray(times)
        if not len(item_idx):
            return cls(item_idx, np.zeros(1, dtype=np.int64), session_ids[:0], n_items)
        by_session = np.lexsort((times, session_ids))
        sid, items, t = session_ids[by_session], item_idx[by_session], times[by_session]
        starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
        order = np.lexsort((sid[starts], t[starts]))
        lengths = np.diff(np.r_[starts, len(sid)])[order]
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        gather = np.arange(len(items)) + np.repeat(starts[order] - offsets[:-1], lengths)
        return cls(items[gather], offsets, sid[starts][order], n_items)


def dataset_from_table(table: pa.Table, vocabulary: Vocabulary, session_col: str = "session_id",
                       item_col: str = "item_id", time_col: str = "event_time",
                       source: str = "table") -> tuple[SessionDataset, int]:
    """Map item ids through the vocabulary, drop unknown items, and group. Returns (dataset, dropped)."""
    missing = {session_col, item_col, time_col} - set(table.column_names)
    if missing:
        raise ValueError(f"{source}: missing column(s) {sorted(missing)}; "
                         f"expected {session_col}, {item_col}, {time_col}")
    items = vocabulary.lookup(pc.cast(table.column(item_col), pa.string()))
    known = items >= 0
    sessions = np.asarray(pc.cast(table.column(session_col), pa.string()).to_pylist(), dtype=object)[known]
    times = table.column(time_col)
    if pa.types.is_timestamp(times.type):
        times = pc.cast(times, pa.timestamp("us"))
    times = times.to_numpy()[known]
    dataset = SessionDataset.from_events(sessions, items[known], times, len(vocabulary))
    return dataset, int((~known).sum())


def load_split(training_dir: Path | str, split: str, vocabulary: Vocabulary | None = None) -> SessionDataset:
    """One split of a training set folder written by ``jobs/training_set.py``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    training_dir = Path(training_dir)
    path = training_dir / split
    if not path.exists():
        raise FileNotFoundError(f"{path}: split folder not found (is {training_dir} a training set?)")
    vocabulary = vocabulary or read_vocabulary(training_dir / VOCABULARY_FILE)
    table = ds.dataset(path, format="parquet").to_table(columns=["session_id", "item_idx", "event_time"])
    sessions = np.asarray(table.column("session_id").to_pylist(), dtype=object)
    items = table.column("item_idx").to_numpy().astype(np.int64)
    times = pc.cast(table.column("event_time"), pa.timestamp("us")).to_numpy()
    return SessionDataset.from_events(sessions, items, times, len(vocabulary))
