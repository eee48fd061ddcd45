"""Data checks the DAGs run after a job wrote its output; each fails with a message naming what is wrong.

They raise :class:`DataCheckError`; the tasks turn it into ``AirflowFailException`` (a retry cannot fix
bad data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DataCheckError(ValueError):
    """An output exists but is not what the next stage can use."""


def _count(stats: Mapping[str, Any], key: str, source: str) -> int:
    value = stats.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataCheckError(f"{source}: expected a non-negative integer {key!r}, got {value!r}")
    return value


def check_session_stats(stats: Mapping[str, Any], max_quarantine_share: float, source: str) -> dict[str, Any]:
    """A sessionized day read rows, quarantined at most the allowed share and produced sessions.

    Returns the figures recorded with the sessions asset event.
    """
    read = _count(stats, "rows_read", source)
    quarantined = _count(stats, "rows_quarantined", source)
    sessions = _count(stats, "sessions", source)
    events = _count(stats, "events", source)
    if read == 0:
        raise DataCheckError(f"{source}: the landing-zone day had no rows (rows_read = 0)")
    share = quarantined / read
    if share > max_quarantine_share:
        raise DataCheckError(
            f"{source}: {quarantined} of {read} rows ({share:.2%}) quarantined, more than the allowed "
            f"{max_quarantine_share:.2%} (max_quarantine_share); by reason: {stats.get('quarantined_by_reason')}")
    if sessions == 0 or events == 0:
        raise DataCheckError(f"{source}: no sessions written (sessions = {sessions}, events = {events}) "
                             f"from {read - quarantined} valid rows")
    return {"sessions": sessions, "events": events, "rows_read": read,
            "rows_quarantined": quarantined}


def check_recommendations(partition: Any, run_record: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Partition D of the warehouse table holds K ranked items for every scored session, as recorded.

    ``partition`` is the partition as a ``pyarrow.Table``; ``run_record`` the scoring job's
    ``stats/score/ds=D.json``. Returns the figures recorded with the recommendations asset event.
    """
    import pyarrow.compute as pc

    sessions = _count(run_record, "sessions", source)
    expected = _count(run_record, "expected_rows", source)
    if sessions == 0:
        raise DataCheckError(f"{source}: the scoring run recorded no sessions")
    if expected % sessions:
        raise DataCheckError(f"{source}: expected_rows {expected} is not a multiple of sessions {sessions}")
    per_session = expected // sessions
    if partition.num_rows != expected:
        raise DataCheckError(f"{source}: {partition.num_rows} rows in the warehouse partition, expected "
                             f"{expected} ({sessions} sessions x {per_session})")
    for column in ("session_id", "rank", "item_id", "score"):
        nulls = partition.column(column).null_count
        if nulls:
            raise DataCheckError(f"{source}: column {column!r} has {nulls} null values, expected none")
    per = partition.group_by("session_id").aggregate(
        [("rank", "count"), ("rank", "min"), ("rank", "max"), ("rank", "count_distinct"),
         ("item_id", "count_distinct")])
    if per.num_rows != sessions:
        raise DataCheckError(f"{source}: {per.num_rows} sessions in the warehouse partition, the scoring "
                             f"run recorded {sessions}")
    complete = pc.and_(pc.and_(pc.equal(per["rank_count"], per_session), pc.equal(per["rank_min"], 1)),
                       pc.and_(pc.equal(per["rank_max"], per_session),
                               pc.and_(pc.equal(per["rank_count_distinct"], per_session),
                                       pc.equal(per["item_id_count_distinct"], per_session))))
    broken = per.filter(pc.invert(complete))
    if broken.num_rows:
        example = broken.slice(0, 1).to_pylist()[0]
        raise DataCheckError(
            f"{source}: {broken.num_rows} sessions do not have ranks 1..{per_session} with distinct items; "
            f"first: session {example['session_id']!r} with {example['rank_count']} rows, ranks "
            f"{example['rank_min']}..{example['rank_max']}, {example['item_id_count_distinct']} distinct items")
    return {"rows": partition.num_rows, "sessions": sessions, "k": per_session}
