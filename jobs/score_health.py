"""What a scoring run served, as figures for its run record; dags/dag_support/checks.py holds the limits.

- ``fallback_share``: sessions served the most-popular fallback (no item the model knows among those
  scored) / sessions. A champion trained on another catalogue serves fallbacks to almost everyone.
- ``unknown_event_share``: the day's events whose item the model does not know / events.
- ``catalogue_coverage``: distinct items recommended / the model's vocabulary.
- ``previous_sessions``: the session counts that the score run records of the :data:`HISTORY_DAYS` days
  before D hold (days without one are left out), their mean, and ``session_count_change``: D's count
  against that mean (-0.4 is 40 % fewer sessions; null without history).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as pads
from pyspark.sql import SparkSession

from jobs.lake import exists, read_text
from sessionrec.layout import Lake

HISTORY_DAYS = 7


def share(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def previous_session_counts(spark: SparkSession, layout: Lake, ds: date,
                            days: int = HISTORY_DAYS) -> dict[str, int]:
    """Day -> sessions scored, from the run records of the ``days`` days before ``ds`` that have one."""
    counts = {}
    for offset in range(days, 0, -1):
        path = layout.score_stats(ds - timedelta(days=offset))
        if exists(spark, path):
            record = json.loads(read_text(spark, path))
            counts[record["ds"]] = int(record["sessions"])
    return counts


def recommended_items(recommendations: Path) -> int:
    """Distinct ``item_id`` values in the recommendations written, a Parquet folder on the driver's disk
    (the copy :func:`jobs.lake.local_copy` makes for the warehouse load): one column, read by Arrow."""
    column = pads.dataset(str(recommendations), format="parquet").to_table(columns=["item_id"]).column("item_id")
    return pc.count_distinct(column).as_py()


def health_figures(spark: SparkSession, layout: Lake, ds: date, stats: dict[str, int], vocabulary_size: int,
                   recommendations: Path) -> dict[str, Any]:
    """The figures of the module docstring for day ``ds``; ``stats`` are the day's
    counts (:func:`jobs.session_groups.group_events`), ``recommendations`` the rows written (see
    :func:`recommended_items`)."""
    recommended = recommended_items(recommendations)
    previous = previous_session_counts(spark, layout, ds)
    mean = sum(previous.values()) / len(previous) if previous else None
    return {
        "fallback_share": share(stats["fallback_sessions"], stats["sessions"]),
        "unknown_event_share": share(stats["unknown_items"], stats["events"]),
        "recommended_items": recommended,
        "catalogue_coverage": share(recommended, vocabulary_size),
        "previous_sessions": previous,
        "previous_sessions_mean": round(mean, 3) if mean is not None else None,
        "session_count_change": round(stats["sessions"] / mean - 1, 6) if mean else None,
    }
