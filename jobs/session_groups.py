"""A scoring task's events grouped into sessions, in Arrow and numpy, and the day's counts they add up to.

The scoring job (jobs/score.py) sends each Python worker whole sessions: the day's events are hash-partitioned
by ``session_id``, so every event of a session reaches the same task, in no particular order. The worker
groups them here: each session's events in ``position`` order, its most recent ``max_events`` kept for
the model (a crawler's session costs no more than that), items looked up in the model's vocabulary in one
pass. Grouping where the model runs replaces a Spark aggregation, a checkpoint and a separate counting pass
over the day.

The counts of each task reach the driver through a Spark accumulator (jobs/day_counts.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from model.data import Vocabulary
from model.recommender import EncodedSessions


@dataclass(frozen=True)
class SessionGroups:
    """The sessions of one task: ``session_ids[s]`` is scored on ``encoded``'s session ``s`` (its most recent
    events whose item the model knows, oldest first), ``recent_unknown[s]`` of its most recent events had an
    item the model does not know; ``counts`` has a value for each of :data:`jobs.day_counts.COUNTS`."""

    session_ids: pa.Array
    encoded: EncodedSessions
    recent_unknown: np.ndarray
    counts: dict[str, int]

    def __len__(self) -> int:
        return len(self.session_ids)

    def slice(self, begin: int, end: int) -> SessionGroups:
        """Sessions ``begin:end`` (the day's counts are not split: they stay with the whole)."""
        offsets = self.encoded.offsets[begin:end + 1]
        unknown = self.recent_unknown[begin:end]
        encoded = EncodedSessions(self.encoded.items[offsets[0]:offsets[-1]], offsets - offsets[0], int(unknown.sum()))
        return SessionGroups(self.session_ids[begin:end], encoded, unknown, self.counts)


def group_events(events: pa.Table, vocabulary: Vocabulary, max_events: int) -> SessionGroups:
    """Sessions of ``events`` (columns session_id, item_id, position; all events of each session present).

    A session keeps the events whose position is greater than its highest position less ``max_events``
    (its most recent ones), and of those the ones whose item ``vocabulary`` holds. Rows with a null in any
    column are left out and counted as ``null_rows`` (the contract allows none: the caller fails the run).
    The counts: sessions, events, ``unknown_items`` (events whose item the model does not know),
    ``fallback_sessions`` (no known item among those kept), ``truncated_sessions`` (more than
    ``max_events`` events) and ``events_not_scored`` (their events beyond ``max_events``).
    """
    if max_events < 1:
        raise ValueError(f"max_events must be a positive integer, got {max_events}")
    null = pc.or_(pc.or_(pc.is_null(events["session_id"]), pc.is_null(events["item_id"])),
                  pc.is_null(events["position"]))
    null_rows = int(pc.sum(null).as_py() or 0)
    if null_rows:
        events = events.filter(pc.invert(null))
    sessions = pc.dictionary_encode(events["session_id"].combine_chunks())
    codes = sessions.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    positions = events["position"].combine_chunks().to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((positions, codes))
    codes, positions = codes[order], positions[order]
    items = vocabulary.lookup(events["item_id"].combine_chunks())[order]
    n_sessions = len(sessions.dictionary)
    lengths = np.bincount(codes, minlength=n_sessions)
    last_position = positions[np.cumsum(lengths) - 1] if len(positions) else np.zeros(0, dtype=np.int64)
    recent = positions > (last_position - max_events)[codes]
    known = items >= 0
    scored = recent & known
    scored_lengths = np.bincount(codes[scored], minlength=n_sessions)
    offsets = np.concatenate([[0], np.cumsum(scored_lengths)]).astype(np.int64)
    cut = lengths > max_events
    counts = {
        "sessions": n_sessions,
        "events": len(codes),
        "unknown_items": int((~known).sum()),
        "fallback_sessions": int((scored_lengths == 0).sum()),
        "truncated_sessions": int(cut.sum()),
        "events_not_scored": int((lengths[cut] - max_events).sum()),
        "null_rows": null_rows,
    }
    recent_unknown = np.bincount(codes[recent & ~known], minlength=n_sessions)
    encoded = EncodedSessions(items[scored], offsets, int(recent_unknown.sum()))
    return SessionGroups(sessions.dictionary, encoded, recent_unknown, counts)
