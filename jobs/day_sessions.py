"""A day's sessions (``sessions/ds=D/``, docs/CONTRACTS.md section 2) as the later jobs read them.

:func:`read_sessions` checks a partition against the contract (the columns a job needs, with their types)
and names the folder and the column when it does not hold; the training set and the scoring job both read
through it. For scoring, :func:`scoring_sequences` turns the day into one row per session with its most
recent items in position order and counts what the model will not know.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, IntegerType, LongType, StringType

from jobs.lake import exists
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
# Scoring tasks per executor core: a few per core evens out sessions of unequal length between tasks.
SCORING_TASKS_PER_CORE = 2


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


def session_sequences(events: DataFrame, known_items: DataFrame, partitions: int, max_events: int) -> DataFrame:
    """One row per session: ``item_ids``, its most recent ``max_events`` items in position order, ``length``
    (all its events), ``known`` (events whose item the model knows; ``known_items`` has one ``item_id``
    column), ``recent_known`` (those among the items scored) and ``nulls`` (events with a null item or
    position; a null session id makes a session of its own), in ``partitions`` partitions.

    Only the most recent events reach the model, and only they are gathered into a list, so a crawler's
    session of any length costs at most ``max_events`` events of memory and scoring. The partition count
    is explicit because adaptive execution would otherwise coalesce a day's sessions (small as data,
    expensive to score) into one or two partitions and leave most executors idle.
    """
    recent = F.col("position") > F.max("position").over(Window.partitionBy("session_id")) - max_events
    flagged = (events.repartition(partitions, "session_id")
               .join(F.broadcast(known_items.withColumn("is_known", F.lit(True))), "item_id", "left")
               .withColumn("recent", recent))
    return (flagged.groupBy("session_id")
            .agg(F.sort_array(F.collect_list(F.when(F.col("recent"), F.struct("position", "item_id"))))
                 .alias("events"),
                 F.count(F.lit(1)).alias("length"),
                 F.count("is_known").alias("known"),
                 F.count(F.when(F.col("recent"), F.col("is_known"))).alias("recent_known"),
                 F.count_if(F.col("item_id").isNull() | F.col("position").isNull()).alias("nulls"))
            .select("session_id", F.col("events.item_id").alias("item_ids"), "length", "known", "recent_known",
                    "nulls"))


STATS = ("sessions", "events", "unknown_items", "fallback_sessions", "truncated_sessions", "events_not_scored")


def sequence_stats(sequences: DataFrame, max_events: int, path: str) -> dict[str, int]:
    """Sessions, events, events with an unknown item, sessions with no known item among the items scored
    (the fallbacks), and sessions cut to their most recent ``max_events`` events with the events left out;
    ValueError naming ``path`` when an event has a null session id, item or position."""
    cut = F.col("length") > max_events
    null_rows = F.when(F.col("session_id").isNull(), F.col("length")).otherwise(F.col("nulls"))
    row = sequences.agg(F.count(F.lit(1)).alias("sessions"),
                        F.coalesce(F.sum("length"), F.lit(0)).alias("events"),
                        F.coalesce(F.sum(F.col("length") - F.col("known")), F.lit(0)).alias("unknown_items"),
                        F.count(F.when(F.col("recent_known") == 0, 1)).alias("fallback_sessions"),
                        F.count(F.when(cut, 1)).alias("truncated_sessions"),
                        F.coalesce(F.sum(F.when(cut, F.col("length") - max_events)), F.lit(0))
                        .alias("events_not_scored"),
                        F.coalesce(F.sum(null_rows), F.lit(0)).alias("null_rows")).first()
    if row["null_rows"]:
        raise ValueError(f"{path}: {row['null_rows']} row(s) with a null {', '.join(SCORING_COLUMNS)}; "
                         "expected none")
    return {key: int(row[key]) for key in STATS}


def scoring_sequences(spark: SparkSession, lake: Lake, ds: date, known_items_file: str,
                      max_events: int) -> tuple[DataFrame, dict[str, int]]:
    """Day D's session sequences for scoring, each cut to its most recent ``max_events`` events
    (checkpointed: read, checked, scored and counted from one pass over the day), and their counts.

    ``known_items_file`` is a Parquet file with the model's item ids in an ``item_id`` column, where every
    executor can read it (the lake): Spark reads it like any input, whereas a list handed over from the
    driver travels inside a task, and a catalogue of millions of items would outgrow Spark's RPC message.
    """
    if max_events < 1:
        raise ValueError(f"max_events must be a positive integer, got {max_events}")
    path = lake.sessions(ds)
    events = read_sessions(spark, path, SCORING_COLUMNS)
    known_items = spark.read.parquet(known_items_file).select("item_id")
    partitions = SCORING_TASKS_PER_CORE * spark.sparkContext.defaultParallelism
    sequences = session_sequences(events, known_items, partitions, max_events).localCheckpoint()
    return sequences, sequence_stats(sequences, max_events, path)
