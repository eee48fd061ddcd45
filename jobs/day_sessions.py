"""A day's sessions (``sessions/ds=D/``, docs/CONTRACTS.md section 2) as the later jobs read them.

:func:`read_sessions` checks a partition against the contract (the columns a job needs, with their types)
and names the folder and the column when it does not hold; the training set and the scoring job both read
through it. For scoring, :func:`scoring_events` hands the day's events to the scoring tasks, whole sessions
to each, and :func:`checked_counts` refuses a day whose counts show rows the contract forbids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, IntegerType, LongType, StringType

from jobs.lake import exists, size
from sessionrec.layout import Lake

logger = logging.getLogger(__name__)

ColumnTypes = Mapping[str, tuple[type[DataType], ...]]

SCORING_COLUMNS: ColumnTypes = {
    "session_id": (StringType,),
    "item_id": (StringType,),
    "position": (IntegerType, LongType),
}
# The sessions column flagging crawler sessions (writer jobs/sessionize.py; optional for readers: days
# written before it have none).
CRAWLER = "crawler"
# Scoring tasks: one per executor core (a task scores thousands of sessions, each of at most max_events
# events, so hashing evens them out), more when the day is large: one per this many bytes of the day's
# Parquet, since a task holds all its events in its Python worker while it groups them
# (jobs/session_groups.py).
SCORING_BYTES_PER_TASK = 32 << 20


def read_sessions(spark: SparkSession, path: str, columns: ColumnTypes,
                  optional: ColumnTypes | None = None) -> DataFrame:
    """The ``columns`` of the sessions partition at ``path``; a missing folder, an unreadable one, or a
    column that is missing or of another type fails with the path and the column named. ``optional``
    columns are checked the same way when present and read as nulls (with a warning) when absent: a day
    written before they were added to the contract."""
    if not exists(spark, path):
        raise FileNotFoundError(f"{path}: cannot read the sessions: no such folder "
                                "(run jobs/sessionize.py for that day first)")
    try:
        frame = spark.read.parquet(path)
    except AnalysisException as exc:
        raise ValueError(f"{path}: cannot read the sessions as Parquet ({exc.getMessage()})") from exc
    fields = {f.name: f.dataType for f in frame.schema.fields}
    optional = optional or {}
    for name, types in {**columns, **optional}.items():
        expected = " or ".join(t.typeName() for t in types)
        if name not in fields:
            if name in optional:
                logger.warning("%s: no column %r (written before it existed): read as nulls", path, name)
                continue
            raise ValueError(f"{path}: column {name!r} is missing; expected {expected} (docs/CONTRACTS.md 2)")
        if not isinstance(fields[name], types):
            raise ValueError(f"{path}: column {name!r} is {fields[name].simpleString()}; expected {expected}")
    return frame.select(*columns, *(F.col(name) if name in fields else F.lit(None).cast(types[0]()).alias(name)
                                    for name, types in optional.items()))


def scoring_events(spark: SparkSession, lake: Lake, ds: date) -> tuple[DataFrame, str]:
    """Day D's events (session_id, item_id, position), checked, hash-partitioned by session id so that each
    scoring task holds whole sessions (jobs/session_groups.py groups them; :data:`SCORING_BYTES_PER_TASK` of
    the day's Parquet at most per task); and the folder read.

    The partition count is explicit because adaptive execution would otherwise coalesce a day's events
    (small as data, expensive to score) into one or two partitions and leave most executors idle.
    """
    path = lake.sessions(ds)
    events = read_sessions(spark, path, SCORING_COLUMNS)
    partitions = max(spark.sparkContext.defaultParallelism, -(-size(spark, path) // SCORING_BYTES_PER_TASK))
    return events.repartition(partitions, "session_id"), path


def checked_counts(counts: dict[str, int], path: str) -> dict[str, int]:
    """The day's counts (jobs/session_groups.py) without ``null_rows``; ValueError naming ``path`` when an
    event had a null session id, item or position."""
    if counts["null_rows"]:
        raise ValueError(f"{path}: {counts['null_rows']} row(s) with a null {', '.join(SCORING_COLUMNS)}; "
                         "expected none")
    return {key: value for key, value in counts.items() if key != "null_rows"}
