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


def _share(stats: Mapping[str, Any], key: str, source: str) -> float | None:
    value = stats.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise DataCheckError(f"{source}: expected a number or null {key!r}, got {value!r}")
    return value


def check_health(partition: Any, run_record: Mapping[str, Any], max_fallback_share: float,
                 max_session_drop: float, source: str) -> dict[str, Any]:
    """What partition D serves is healthy: few fallback sessions and no collapse of the session count.

    ``partition`` is the warehouse partition (a ``pyarrow.Table`` with ``session_id``, ``item_id`` and
    ``fallback``), ``run_record`` the scoring run's record (jobs/score_health.py's figures). The fallback
    share and the catalogue coverage are measured on the partition itself. Fails naming every figure
    beyond its limit, with its value and the limit; returns the figures otherwise.
    """
    import pyarrow.compute as pc

    sessions = pc.count_distinct(partition.column("session_id")).as_py()
    fallback_sessions = pc.count_distinct(partition.filter(partition.column("fallback")).column("session_id")).as_py()
    vocabulary = _count(run_record, "vocabulary_size", source)
    recommended = pc.count_distinct(partition.column("item_id")).as_py()
    figures = {
        "fallback_share": round(fallback_sessions / sessions, 6) if sessions else None,
        "fallback_sessions": fallback_sessions,
        "unknown_event_share": _share(run_record, "unknown_event_share", source),
        "catalogue_coverage": round(recommended / vocabulary, 6) if vocabulary else None,
        "session_count_change": _share(run_record, "session_count_change", source),
        "previous_sessions_mean": _share(run_record, "previous_sessions_mean", source),
    }
    problems = []
    if figures["fallback_share"] is not None and figures["fallback_share"] > max_fallback_share:
        problems.append(
            f"fallback_share {figures['fallback_share']:.3f} is above the limit {max_fallback_share:.3f} "
            f"(max_fallback_share): {fallback_sessions} of {sessions} sessions got the most-popular fallback "
            f"because the model knows none of their items (unknown_event_share "
            f"{figures['unknown_event_share']}); is the champion trained on this catalogue?")
    change = figures["session_count_change"]
    if change is not None and -change > max_session_drop:
        problems.append(
            f"session_count_change {change:+.3f} is a drop of more than {max_session_drop:.3f} "
            f"(max_session_drop): {sessions} sessions against a mean of {figures['previous_sessions_mean']} "
            f"over the previous days {run_record.get('previous_sessions')}")
    if problems:
        raise DataCheckError(f"{source}: " + "; ".join(problems))
    return figures
