"""A scoring task's events grouped into sessions (Arrow and numpy only), and the counts the tasks add up."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from pyspark.accumulators import Accumulator

from jobs.day_counts import COUNTS, CountsParam, no_counts
from jobs.session_groups import SessionGroups, group_events
from model.data import Vocabulary

VOCABULARY = Vocabulary(np.array(["a", "b", "c", "d"], dtype=object), np.array([40, 30, 20, 10]))


def events(rows: list[tuple[str | None, str | None, int | None]]) -> pa.Table:
    return pa.table({"session_id": pa.array([r[0] for r in rows], pa.string()),
                     "item_id": pa.array([r[1] for r in rows], pa.string()),
                     "position": pa.array([r[2] for r in rows], pa.int32())})


def sessions_of(groups: SessionGroups) -> dict[str, list[str]]:
    """Session id -> the item ids scored, oldest first."""
    items, offsets = groups.encoded.items, groups.encoded.offsets
    return {sid: [VOCABULARY.item_ids[i] for i in items[offsets[s]:offsets[s + 1]]]
            for s, sid in enumerate(groups.session_ids.to_pylist())}


def test_events_in_any_order_become_sessions_in_position_order() -> None:
    rows = [("s2", "c", 1), ("s1", "b", 2), ("s2", "a", 0), ("s1", "a", 0), ("s1", "d", 1), ("s3", "c", 5)]
    groups = group_events(events(rows), VOCABULARY, max_events=50)
    assert sessions_of(groups) == {"s2": ["a", "c"], "s1": ["a", "d", "b"], "s3": ["c"]}
    assert groups.counts == {"sessions": 3, "events": 6, "unknown_items": 0, "fallback_sessions": 0,
                             "truncated_sessions": 0, "events_not_scored": 0, "null_rows": 0}


def test_only_the_most_recent_events_are_kept_and_the_cut_is_counted() -> None:
    crawler = [("bot", ["a", "b", "c", "d"][p % 4], p) for p in range(10)]
    groups = group_events(events([*reversed(crawler), ("person", "b", 0)]), VOCABULARY, max_events=3)
    assert sessions_of(groups) == {"bot": ["d", "a", "b"], "person": ["b"]}  # positions 7, 8, 9
    assert (groups.counts["truncated_sessions"], groups.counts["events_not_scored"]) == (1, 7)
    assert groups.counts["events"] == 11


def test_unknown_items_are_counted_and_a_session_with_none_known_is_a_fallback() -> None:
    rows = [("s1", "a", 0), ("s1", "new", 1), ("s2", "new", 0), ("s2", "newer", 1), ("s3", "c", 0)]
    groups = group_events(events(rows), VOCABULARY, max_events=50)
    assert sessions_of(groups) == {"s1": ["a"], "s2": [], "s3": ["c"]}
    assert (groups.counts["unknown_items"], groups.counts["fallback_sessions"]) == (3, 1)
    assert groups.encoded.unknown_items == 3


def test_a_session_whose_recent_items_are_all_unknown_is_a_fallback() -> None:
    rows = [("s1", "a", 0), ("s1", "new", 1), ("s1", "newer", 2)]
    groups = group_events(events(rows), VOCABULARY, max_events=2)
    assert sessions_of(groups) == {"s1": []}
    assert groups.counts["fallback_sessions"] == 1


def test_rows_with_a_null_are_left_out_and_counted() -> None:
    rows = [("s1", "a", 0), ("s1", None, 1), (None, "b", 0), ("s2", "c", None), ("s2", "d", 1)]
    groups = group_events(events(rows), VOCABULARY, max_events=50)
    assert sessions_of(groups) == {"s1": ["a"], "s2": ["d"]}
    assert (groups.counts["null_rows"], groups.counts["events"]) == (3, 2)


def test_no_events_give_no_sessions() -> None:
    groups = group_events(events([]), VOCABULARY, max_events=50)
    assert len(groups) == 0 and groups.counts == no_counts()


def test_a_slice_holds_its_sessions_only() -> None:
    rows = [("s1", "a", 0), ("s1", "b", 1), ("s2", "c", 0), ("s3", "new", 0), ("s4", "d", 0), ("s4", "a", 1)]
    groups = group_events(events(rows), VOCABULARY, max_events=50)
    whole = sessions_of(groups)
    parts = [groups.slice(begin, begin + 2) for begin in range(0, len(groups), 2)]
    assert [len(part) for part in parts] == [2, 2]
    assert {sid: items for part in parts for sid, items in sessions_of(part).items()} == whole
    assert [part.encoded.unknown_items for part in parts] == [0, 1]  # "new" in s3, the slice's own count


def test_max_events_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_events must be a positive integer, got 0"):
        group_events(events([("s1", "a", 0)]), VOCABULARY, max_events=0)


def test_the_accumulator_adds_up_the_tasks_counts() -> None:
    total = Accumulator(0, no_counts(), CountsParam())
    first = group_events(events([("s1", "a", 0), ("s1", "new", 1)]), VOCABULARY, max_events=50).counts
    second = group_events(events([("s2", "b", 0), (None, "c", 0)]), VOCABULARY, max_events=50).counts
    total.add(first)
    total.add(second)
    assert total.value == {key: first[key] + second[key] for key in COUNTS}
    assert (total.value["sessions"], total.value["events"], total.value["null_rows"]) == (2, 3, 1)
