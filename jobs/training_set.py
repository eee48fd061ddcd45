"""Training set for day D: a window of session days -> time split -> filters -> item vocabulary.

    spark-submit jobs/training_set.py --lake var/lake --ds 2026-11-21 [--days 7] \
        [--min-item-support 5] [--min-session-length 2]
    python -m jobs.training_set --lake var/lake --ds 2026-11-21 --master 'local[*]'

Reads ``sessions/ds=D'/`` for D' in D-N+1..D and writes ``training/ds=D/`` (docs/CONTRACTS.md, sections 2
and 3). The protocol follows the GRU4Rec authors' preprocessing:

1. Window: a session stored on several days counts once, with its copy from the latest day (the longest).
   Events at or after D+1 00:00 UTC lie outside the window and are dropped.
2. Time split at D 00:00 UTC: ``test`` = sessions whose first event is on day D; ``train`` = sessions that
   start before D, cut at the split time (no event at or after it).
3. ``train`` is filtered until stable: items with fewer than ``min_item_support`` events and sessions
   shorter than ``min_session_length`` are dropped, round after round, until a round removes nothing.
4. ``test`` keeps only events whose item is in the filtered ``train``, then sessions of the minimum length.
5. Tuning split of the filtered ``train`` at D-1 00:00 UTC, the same way: ``valid`` = sessions whose first
   event is on D-1; ``train_tr`` = the others, cut at D-1 00:00, short sessions dropped. The support
   filter is NOT re-run on ``train_tr`` (its items may have fewer than ``min_item_support`` events);
   ``valid`` keeps only events whose item occurs in ``train_tr``, then sessions of the minimum length.

Item indexes come from ``train``: by descending event count, ties by item id, so reruns agree.

``stats.json`` holds the input days used and missing, rows per input day, the window's counts after
de-duplication, the split times, ``filter_log`` (counts after each round; round 0 is the input) and
``filter_rounds`` (rounds run, the last of which removed nothing), and per split its rows, sessions and
items, with, where a split was restricted, the counts before, ``unknown_events_dropped`` (test, valid)
and ``short_sessions_dropped``. It holds no wall-clock time, so a rerun writes identical files.

The output is written to a staging folder of the lake (``_staging/``) and swapped in by two renames (the
old folder aside, the new one in), so readers never see a partial training set; for the instant between the renames the
folder is absent. An empty train or test split fails the job before anything is written.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

if __name__ == "__main__" and importlib.util.find_spec("sessionrec") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType, StringType, TimestampType

from jobs.cli import add_master_argument, parse_day
from jobs.day_sessions import read_sessions
from jobs.lake import exists, midnight, replace_by_rename, require_micros_timestamps, staging_folder, upload
from jobs.spark import job_session
from model.data import Vocabulary, write_vocabulary
from sessionrec.config import Settings, load_settings
from sessionrec.layout import Lake, training_items, training_split, training_stats

logger = logging.getLogger(__name__)

# Filtering normally settles in 2-5 rounds; a set that has not after this many is reported, not written.
MAX_FILTER_ROUNDS = 30
INPUT_COLUMNS: dict[str, tuple[type, ...]] = {
    "session_id": (StringType,),
    "item_id": (StringType,),
    "event_time": (TimestampType,),
    "position": (IntegerType, LongType),
}
OUTPUT_COLUMNS = ("session_id", "item_id", "item_idx", "event_time")


class EmptySplitError(ValueError):
    """The window yields no usable train or test events."""


def window_days(ds: date, days: int) -> list[date]:
    """D-N+1..D, oldest first."""
    return [ds - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- reading the window ---

def _read_day(spark: SparkSession, path: str, day: date) -> DataFrame:
    """One day's sessions, checked against the contract, with the day as a column."""
    return read_sessions(spark, path, INPUT_COLUMNS).withColumn("day", F.lit(day))


def read_window(spark: SparkSession, lake: Lake, ds: date, days: int) -> tuple[DataFrame, list[date], list[date]]:
    """Events of every session stored in the window's days: (events with a ``day`` column, used, missing)."""
    used, missing = [], []
    for day in window_days(ds, days):
        (used if exists(spark, lake.sessions(day)) else missing).append(day)
    if ds in missing:
        raise FileNotFoundError(f"{lake.sessions(ds)}: sessions of day {ds} not found "
                                "(run jobs/sessionize.py for that day first)")
    for day in missing:
        logger.warning("%s not found: day skipped in the window", lake.sessions(day))
    frames = [_read_day(spark, lake.sessions(day), day) for day in used]
    return functools.reduce(DataFrame.unionByName, frames), used, missing


def _count_input(events: DataFrame, lake: Lake) -> dict[str, int]:
    """Rows per input day; fails on null ids or times (the sessions contract does not allow them)."""
    nulls = F.col("session_id").isNull() | F.col("item_id").isNull() | F.col("event_time").isNull()
    per_day = events.groupBy("day").agg(F.count(F.lit(1)).alias("rows"),
                                        F.count(F.when(nulls, 1)).alias("nulls")).collect()
    for row in per_day:
        if row["nulls"]:
            raise ValueError(f"{lake.sessions(row['day'])}: {row['nulls']} row(s) with a null "
                             "session_id, item_id or event_time; expected none")
    return {row["day"].isoformat(): row["rows"] for row in sorted(per_day, key=lambda r: r["day"])}


def load_window(spark: SparkSession, lake: Lake, ds: date, days: int) -> tuple[DataFrame, dict[str, Any]]:
    """Latest copy of every session in the window (checkpointed), and what the window held."""
    raw, used, missing = read_window(spark, lake, ds, days)
    rows_per_day = _count_input(raw, lake)
    events, latest = checkpoint(latest_copies(raw))
    logger.info("window %s..%s: rows per day %s (missing days: %s); latest copies: %s",
                used[0], ds, rows_per_day, [d.isoformat() for d in missing] or "none", latest)
    return events, {"days": days, "input_days": [d.isoformat() for d in used],
                    "missing_days": [d.isoformat() for d in missing], "input_rows_per_day": rows_per_day,
                    "window": latest}


def latest_copies(events: DataFrame) -> DataFrame:
    """Each session's events from the latest day it is stored on (that copy holds its full event list)."""
    by_session = Window.partitionBy("session_id")
    return (events.withColumn("_latest", F.max("day").over(by_session))
            .filter(F.col("day") == F.col("_latest"))
            .drop("_latest", "day"))


# --- splitting and filtering ---

def split_at(events: DataFrame, split: datetime, end: datetime) -> tuple[DataFrame, DataFrame]:
    """(sessions starting before ``split``, cut at ``split``; sessions starting in [split, end), cut at end)."""
    start = F.min("event_time").over(Window.partitionBy("session_id"))
    with_start = events.withColumn("_start", start)
    before = with_start.filter((F.col("_start") < F.lit(split)) & (F.col("event_time") < F.lit(split)))
    after = with_start.filter((F.col("_start") >= F.lit(split)) & (F.col("_start") < F.lit(end))
                              & (F.col("event_time") < F.lit(end)))
    return before.drop("_start"), after.drop("_start")


def _keep_groups(events: DataFrame, column: str, minimum: int) -> DataFrame:
    size = F.count(F.lit(1)).over(Window.partitionBy(column))
    return events.withColumn("_size", size).filter(F.col("_size") >= minimum).drop("_size")


def drop_rare_items(events: DataFrame, min_item_support: int) -> DataFrame:
    return _keep_groups(events, "item_id", min_item_support)


def drop_short_sessions(events: DataFrame, min_session_length: int) -> DataFrame:
    return _keep_groups(events, "session_id", min_session_length)


def counts(events: DataFrame) -> dict[str, int]:
    """Rows, sessions and distinct items, in one Spark job."""
    row = events.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("session_id").alias("sessions"),
                     F.countDistinct("item_id").alias("items")).first()
    return {"rows": row["rows"], "sessions": row["sessions"], "items": row["items"]}


def checkpoint(events: DataFrame) -> tuple[DataFrame, dict[str, int]]:
    """``events`` with their plan cut (a lazy local checkpoint, filled by the same job that counts them)."""
    events = events.localCheckpoint(eager=False)
    return events, counts(events)


def filter_until_stable(events: DataFrame, min_item_support: int, min_session_length: int,
                        max_rounds: int = MAX_FILTER_ROUNDS) -> tuple[DataFrame, list[dict[str, int]]]:
    """Drop rare items then short sessions, repeatedly, until a round removes nothing.

    Returns the stable events and one entry per round: round 0 is the input, the last round is the one
    that removed nothing. Each round is checkpointed, so the plan does not grow with the rounds.
    """
    current, before = checkpoint(events)
    log = [{"round": 0, **before}]
    logger.info("train before filtering: %s", before)
    for round_ in range(1, max_rounds + 1):
        current, after = checkpoint(drop_short_sessions(drop_rare_items(current, min_item_support),
                                                        min_session_length))
        log.append({"round": round_, **after})
        logger.info("filter round %d: %s", round_, after)
        if after["rows"] == log[-2]["rows"]:
            return current, log
    raise RuntimeError(f"item/session filtering not stable after {max_rounds} rounds: {log[-2]} -> {log[-1]}")


def keep_sessions(events: DataFrame, min_session_length: int,
                  items: DataFrame | None = None) -> tuple[DataFrame, dict[str, int]]:
    """Drop events whose item is not in ``items`` (when given), then sessions shorter than the minimum.

    The counts before, the events dropped as unknown, the sessions dropped as short and the counts after
    all come from one Spark job.
    """
    if items is None:
        flagged = events.withColumn("_known", F.lit(True))
    else:
        known_items = F.broadcast(items.select("item_id").distinct().withColumn("_known", F.lit(True)))
        flagged = events.join(known_items, "item_id", "left").fillna(False, subset=["_known"])
    length = F.count(F.when(F.col("_known"), 1)).over(Window.partitionBy("session_id"))
    flagged = flagged.withColumn("_kept", F.col("_known") & (length >= min_session_length))
    flagged = flagged.localCheckpoint(eager=False)
    known, kept = F.col("_known"), F.col("_kept")
    row = flagged.agg(
        F.count(F.lit(1)).alias("rows_before"), F.countDistinct("session_id").alias("sessions_before"),
        F.count(F.when(~known, 1)).alias("unknown"), F.countDistinct(F.when(known, F.col("session_id"))).alias("known"),
        F.count(F.when(kept, 1)).alias("rows"), F.countDistinct(F.when(kept, F.col("session_id"))).alias("sessions"),
        F.countDistinct(F.when(kept, F.col("item_id"))).alias("items"),
    ).first()
    stats = {key: row[key] for key in ("rows", "sessions", "items", "rows_before", "sessions_before")}
    stats["short_sessions_dropped"] = row["known"] - row["sessions"]
    if items is not None:
        stats["unknown_events_dropped"] = row["unknown"]
    return flagged.filter(kept).drop("_known", "_kept"), stats


def tuning_split(train: DataFrame, ds: date, min_session_length: int
                 ) -> tuple[DataFrame, DataFrame, dict[str, dict[str, int]]]:
    """(train_tr, valid, their stats): ``train`` split at D-1 00:00 like the main split at D 00:00."""
    train_tr_cut, valid_raw = split_at(train, midnight(ds - timedelta(days=1)), midnight(ds))
    train_tr, train_tr_stats = keep_sessions(train_tr_cut, min_session_length)
    valid, valid_stats = keep_sessions(valid_raw, min_session_length, items=train_tr)
    for name, split_stats in (("train_tr", train_tr_stats), ("valid", valid_stats)):
        logger.info("%s: %s", name, split_stats)
        if not split_stats["rows"]:
            logger.warning("training set for ds=%s: the %s split is empty", ds, name)
    return train_tr, valid, {"train_tr": train_tr_stats, "valid": valid_stats}


# --- vocabulary and output ---

def build_vocabulary(train: DataFrame) -> Vocabulary:
    """Items of ``train`` indexed by descending event count, ties by item id."""
    table = train.groupBy("item_id").agg(F.count(F.lit(1)).alias("count")).toArrow()
    return Vocabulary.from_counts(np.asarray(table.column("item_id").to_pylist(), dtype=object),
                                  table.column("count").to_numpy())


def _index_frame(spark: SparkSession, vocabulary: Vocabulary) -> DataFrame:
    return spark.createDataFrame(pa.table({
        "item_id": pa.array(vocabulary.item_ids, type=pa.string()),
        "item_idx": pa.array(np.arange(len(vocabulary), dtype=np.int32)),
    }))


def write_split(events: DataFrame, index: DataFrame, path: str) -> None:
    """Events with item indexes, sorted by session then time (position breaks ties)."""
    (events.join(F.broadcast(index), "item_id")
     .orderBy("session_id", "event_time", "position")
     .select(*OUTPUT_COLUMNS)
     .write.mode("errorifexists").parquet(path))


def _write_small_files(spark: SparkSession, vocabulary: Vocabulary, stats: dict[str, Any], folder: str) -> None:
    """The vocabulary (one file, by model/data.py's own writer) and the statistics of the set in ``folder``."""
    with tempfile.TemporaryDirectory(prefix="training-set-") as local:
        items, stats_file = Path(training_items(local)), Path(training_stats(local))
        write_vocabulary(vocabulary, items)
        stats_file.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        upload(spark, items, training_items(folder))
        upload(spark, stats_file, training_stats(folder))


def write_training_set(spark: SparkSession, lake: Lake, ds: date, splits: dict[str, DataFrame], index: DataFrame,
                       vocabulary: Vocabulary, stats: dict[str, Any]) -> None:
    """Write everything to a staging folder of the lake, then swap it in as ``training/ds=D``."""
    target = lake.training_set(ds)
    with staging_folder(spark, lake.staging("training_set", ds)) as staging:
        folder = f"{staging}/training"
        for split, events in splits.items():
            write_split(events, index, training_split(folder, split))
        _write_small_files(spark, vocabulary, stats, folder)
        replace_by_rename(spark, folder, target, f"{staging}/previous")
    logger.info("training set written to %s: rows %s", target,
                {split: split_stats["rows"] for split, split_stats in stats["splits"].items()})


# --- the job ---

def _require_events(split_counts: dict[str, int], split: str, ds: date, detail: str) -> None:
    if not split_counts["rows"]:
        raise EmptySplitError(f"training set for ds={ds}: the {split} split is empty ({detail})")


def build_training_set(spark: SparkSession, lake: str, ds: date, days: int = 7, min_item_support: int = 5,
                       min_session_length: int = 2) -> dict[str, Any]:
    """Build ``LAKE/training/ds=D/`` from the window of session days ending on ``ds``; returns the stats."""
    for name, value in (("days", days), ("min_item_support", min_item_support),
                        ("min_session_length", min_session_length)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    require_micros_timestamps(spark)
    layout = Lake(lake)
    split, end = midnight(ds), midnight(ds + timedelta(days=1))
    events, window = load_window(spark, layout, ds, days)

    train_raw, test_raw = split_at(events, split, end)
    train, filter_log = filter_until_stable(train_raw, min_item_support, min_session_length)
    first, last = filter_log[0], filter_log[-1]
    _require_events(last, "train", ds, f"{first['rows']} events in {first['sessions']} sessions before "
                    f"{_iso(split)}, {last['rows']} after {len(filter_log) - 1} filter rounds")
    vocabulary = build_vocabulary(train)
    index = _index_frame(spark, vocabulary)
    test, test_stats = keep_sessions(test_raw, min_session_length, items=index)
    logger.info("test: %s", test_stats)
    _require_events(test_stats, "test", ds,
                    f"{test_stats['sessions_before']} sessions start on {ds} with {test_stats['rows_before']} "
                    f"events; {test_stats['unknown_events_dropped']} events have items unknown to train, then "
                    f"{test_stats['short_sessions_dropped']} sessions have fewer than {min_session_length} events")
    train_tr, valid, tuning_stats = tuning_split(train, ds, min_session_length)

    stats = {
        "ds": ds.isoformat(), **window, "min_item_support": min_item_support,
        "min_session_length": min_session_length, "split_time": _iso(split),
        "valid_split_time": _iso(midnight(ds - timedelta(days=1))), "window_end": _iso(end),
        "filter_rounds": len(filter_log) - 1, "filter_log": filter_log,
        "splits": {"train": {k: last[k] for k in ("rows", "sessions", "items")}, "test": test_stats,
                   **tuning_stats},
    }
    splits = {"train": train, "test": test, "train_tr": train_tr, "valid": valid}
    write_training_set(spark, layout, ds, splits, index, vocabulary, stats)
    return stats


# --- command line ---


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="jobs.training_set", description="Build LAKE/training/ds=D from the sessions of the days up to D.")
    parser.add_argument("--lake", default=settings.lake, help="lake root (default: %(default)s)")
    parser.add_argument("--ds", type=parse_day, required=True, help="last day of the window, the test day (UTC)")
    parser.add_argument("--days", type=int, default=settings.training_days,
                        help="days in the window (default: %(default)s)")
    parser.add_argument("--min-item-support", type=int, default=settings.min_item_support,
                        help="minimum events per item in train (default: %(default)s)")
    parser.add_argument("--min-session-length", type=int, default=settings.min_session_length,
                        help="minimum events per session (default: %(default)s)")
    add_master_argument(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    settings = load_settings()
    args = parse_args(argv, settings)
    with job_session("training_set", args.master, settings) as spark:
        stats = build_training_set(spark, args.lake, args.ds, days=args.days,
                                   min_item_support=args.min_item_support,
                                   min_session_length=args.min_session_length)
    print(json.dumps({"ds": stats["ds"], "splits": stats["splits"], "filter_rounds": stats["filter_rounds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
