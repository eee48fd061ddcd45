"""Sessionize one day of raw clicks: validate -> quarantine -> deduplicate -> sessions by inactivity gap.

    spark-submit jobs/sessionize.py --raw var/lake/raw --lake var/lake --ds 2026-11-21 \\
        [--gap-minutes 30] [--keep-repeats] [--max-quarantine-share 0.05]
    python -m jobs.sessionize --ds 2026-11-21 --master 'local[*]'

Reads ``RAW/clicks/ds=D/`` and, to complete sessions that cross midnight, ``ds=D-1/`` (docs/CONTRACTS.md
section 1), and replaces day D's outputs (written under ``LAKE/_staging/`` first, then swapped in by rename):

- ``LAKE/sessions/ds=D/``: every session with an event on D, with its whole event list (CONTRACTS.md 2);
- ``LAKE/quarantine/ds=D/``: rejected rows of D's files as read, with ``reason`` and ``source_file``;
- ``LAKE/stats/ds=D.json``: counts of every step (written last: its presence means the day is complete).

Rules, in order: rows failing validation are quarantined (:mod:`jobs.raw_input`); exact duplicate events
are dropped; sessions are cut (:func:`assign_sessions`); then consecutive repeats of an item within a
session are collapsed unless ``keep_repeats``; finally sessions too long or too fast for a person are
flagged ``crawler`` (:class:`CrawlerRules`, on the events written) and counted, not dropped: training
sets leave them out and scoring reads only their most recent events. The look-back is one day: a visitor
active without a break of more than the gap for over 24 hours gets a new session id on the third day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__" and importlib.util.find_spec("sessionrec") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # spark-submit jobs/sessionize.py

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.cli import add_master_argument, parse_day
from jobs.day_sessions import CRAWLER
from jobs.lake import midnight, replace_by_rename, require_micros_timestamps, staging_folder, write_text
from jobs.raw_input import (
    EVENT_TIME,
    EVENT_TYPE,
    FROM_DAY,
    ITEM_ID,
    SESSION_ID,
    VISITOR_ID,
    InputCounts,
    check_quarantine_share,
    count_rows,
    quarantine_rows,
    read_landing_days,
    used_events,
)
from jobs.spark import job_session
from sessionrec.config import Settings, load_settings
from sessionrec.layout import Lake

logger = logging.getLogger(__name__)

POSITION = "position"
OUTPUT_COLUMNS = (SESSION_ID, VISITOR_ID, POSITION, ITEM_ID, EVENT_TIME, EVENT_TYPE, CRAWLER)
# Events of a session in this order; the trailing keys only make ties at the same instant deterministic.
EVENT_ORDER = (EVENT_TIME, ITEM_ID, EVENT_TYPE, VISITOR_ID)
DUPLICATES, REPEAT, ON_DAY = "_duplicates", "_repeat", "_on_day"
# Whose events a row is: (has a source session id, that id or else the visitor id).
SOURCE, OWNER = "_source", "_owner"
OWNER_KEY = (SOURCE, OWNER)
CACHED_PLAN_PARTITIONING = "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning"
LENGTH_BUCKETS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None))


# --- the rules ---

@dataclass(frozen=True)
class CrawlerRules:
    """A session is a crawler's when it has more than ``max_events`` events, or at least
    ``rate_min_events`` events at more than ``max_events_per_minute`` on average from its first event to
    its last (a sustained rate: a person's short burst of fast clicks does not count)."""

    max_events: int
    max_events_per_minute: float
    rate_min_events: int

    @classmethod
    def from_settings(cls, settings: Settings) -> CrawlerRules:
        return cls(settings.crawler_max_events, settings.crawler_max_events_per_minute,
                   settings.crawler_rate_min_events)

    def check(self) -> None:
        if self.max_events < 1 or self.rate_min_events < 2 or self.max_events_per_minute <= 0:
            raise ValueError(f"crawler rules need max_events >= 1, rate_min_events >= 2 and a positive "
                             f"max_events_per_minute, got {self}")

    def is_crawler(self, length: Column, span_seconds: Column) -> Column:
        """The rule on a session's event count and the seconds between its first and last event."""
        too_fast = (length >= self.rate_min_events) & (
            (length - 1) * 60.0 > span_seconds * self.max_events_per_minute)
        return (length > self.max_events) | too_fast


DEFAULT_CRAWLER_RULES = CrawlerRules.from_settings(Settings())


def cluster_by_owner(events: DataFrame) -> DataFrame:
    """Events with their owner (the source's session id when given, else the visitor), partitioned by it.

    Every later step works within one owner (duplicates, a visitor's gaps, a session's events), so this is
    the job's only shuffle.
    """
    return (events.withColumn(SOURCE, F.col(SESSION_ID).isNotNull())
            .withColumn(OWNER, F.coalesce(SESSION_ID, VISITOR_ID))
            .repartition(*OWNER_KEY))


def deduplicate(events: DataFrame) -> DataFrame:
    """One row per distinct (visitor, source session, time, item, type), with the copies dropped from D's files.

    When D-1's files hold the event too, every copy from D's files is a duplicate (D-1's run counted its
    own); otherwise all but one are.
    """
    key = (*OWNER_KEY, VISITOR_ID, SESSION_ID, EVENT_TIME, ITEM_ID, EVENT_TYPE)
    day_copies = F.sum(F.col(FROM_DAY).cast("long"))
    return events.groupBy(*key).agg(
        (day_copies - F.when(F.min(FROM_DAY), 1).otherwise(0)).alias(DUPLICATES))


def assign_sessions(events: DataFrame, gap_minutes: int) -> DataFrame:
    """Fill ``session_id``: the source's when given; otherwise cut each visitor's events by inactivity.

    In time order, a new session starts when the gap to the visitor's previous event is strictly greater
    than ``gap_minutes`` (exactly the gap continues the session). It is named
    ``<visitor_id>:<epoch milliseconds of its first event>``, so reruns and the next day agree on it.
    ``events`` come from :func:`cluster_by_owner`.
    """
    by_owner = Window.partitionBy(*OWNER_KEY).orderBy(*EVENT_ORDER)
    micros = F.unix_micros(EVENT_TIME)
    starts = F.coalesce(micros - F.lag(micros).over(by_owner) > gap_minutes * 60_000_000, F.lit(True))
    first_time = F.last(F.when(F.col("_starts"), F.col(EVENT_TIME)), ignorenulls=True).over(
        by_owner.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    derived = F.concat_ws(":", VISITOR_ID, F.unix_millis(first_time).cast("string"))
    return (events.withColumn("_starts", starts)
            .withColumn(SESSION_ID, F.when(F.col(SOURCE), F.col(SESSION_ID)).otherwise(derived))
            .drop("_starts"))


def flag_sessions(sessions: DataFrame, ds: dt.date) -> DataFrame:
    """Mark consecutive repeats of an item within a session, and sessions with an event on day D."""
    by_session = Window.partitionBy(*OWNER_KEY, SESSION_ID)
    in_order = by_session.orderBy(*EVENT_ORDER)
    return sessions.select(
        "*",
        F.coalesce(F.lag(ITEM_ID).over(in_order) == F.col(ITEM_ID), F.lit(False)).alias(REPEAT),
        (F.max(EVENT_TIME).over(by_session) >= F.lit(midnight(ds))).alias(ON_DAY),
    )


def _kept(keep_repeats: bool) -> Column:
    """Events written for day D: those of sessions on D, without repeats unless they are kept."""
    return F.col(ON_DAY) if keep_repeats else F.col(ON_DAY) & ~F.col(REPEAT)


def _span_seconds(first: Column, last: Column) -> Column:
    return (F.unix_micros(last) - F.unix_micros(first)) / 1e6


def session_rows(flagged: DataFrame, keep_repeats: bool, crawlers: CrawlerRules) -> DataFrame:
    """Day D's output: events of the sessions on D, repeats collapsed unless kept, 0-based positions,
    crawler sessions flagged."""
    kept = flagged.filter(_kept(keep_repeats))
    by_session = Window.partitionBy(*OWNER_KEY, SESSION_ID)
    in_order = by_session.orderBy(*EVENT_ORDER)
    span = _span_seconds(F.min(EVENT_TIME).over(by_session), F.max(EVENT_TIME).over(by_session))
    return (kept.withColumn(POSITION, (F.row_number().over(in_order) - 1).cast("int"))
            .withColumn(CRAWLER, crawlers.is_crawler(F.count(F.lit(1)).over(by_session), span))
            .select(*OUTPUT_COLUMNS))


def sessions_of_events(events: DataFrame, ds: dt.date, gap_minutes: int) -> DataFrame:
    """Used events -> deduplicated, with session ids and the repeat and on-day flags."""
    return flag_sessions(assign_sessions(deduplicate(cluster_by_owner(events)), gap_minutes), ds)


# --- statistics ---

def _quantile(lengths: list[tuple[int, int]], q: float) -> int:
    """Nearest-rank quantile of a histogram given as sorted (length, sessions) pairs."""
    rank, seen = max(1, math.ceil(q * sum(n for _, n in lengths))), 0
    for length, n in lengths:
        seen += n
        if seen >= rank:
            return length
    raise ValueError("empty histogram")


def length_distribution(lengths: list[tuple[int, int]]) -> dict[str, Any]:
    """min / median / p90 / max / mean and a bucketed histogram of session lengths."""
    sessions = sum(n for _, n in lengths)
    histogram = {(f"{low}" if low == high else f"{low}+" if high is None else f"{low}-{high}"):
                 sum(n for length, n in lengths if length >= low and (high is None or length <= high))
                 for low, high in LENGTH_BUCKETS}
    if not sessions:
        return {"min": None, "median": None, "p90": None, "max": None, "mean": None, "histogram": histogram}
    return {"min": lengths[0][0], "median": _quantile(lengths, 0.5), "p90": _quantile(lengths, 0.9),
            "max": lengths[-1][0], "mean": round(sum(k * n for k, n in lengths) / sessions, 3),
            "histogram": histogram}


def session_stats(flagged: DataFrame, ds: dt.date, keep_repeats: bool, crawlers: CrawlerRules) -> dict[str, Any]:
    """Duplicates, repeats, sessions, events, items, crawlers and session lengths, in two small aggregations.

    Per-session counts need no shuffle (``flagged`` is partitioned by owner); only the histogram of
    lengths and the distinct items are gathered.
    """
    kept, day_start = _kept(keep_repeats), F.lit(midnight(ds))
    kept_time = F.when(kept, F.col(EVENT_TIME))
    per_session = flagged.groupBy(*OWNER_KEY, SESSION_ID).agg(
        F.sum(kept.cast("long")).alias("length"),
        _span_seconds(F.min(kept_time), F.max(kept_time)).alias("span_s"),
        F.max((kept & (F.col(EVENT_TIME) < day_start)).cast("long")).alias("crossed"),
        F.sum((kept & (F.col(EVENT_TIME) >= day_start)).cast("long")).alias("on_day"),
        F.sum(DUPLICATES).alias("duplicates"),
        F.sum((F.col(ON_DAY) & F.col(REPEAT)).cast("long")).alias("repeats"))
    crawler = (F.col("length") > 0) & crawlers.is_crawler(F.col("length"), F.col("span_s"))
    histogram = (per_session.withColumn("crawlers", crawler.cast("long")).groupBy("length")
                 .agg(F.count(F.lit(1)).alias("sessions"), *(F.sum(c).alias(c) for c in
                                                              ("crossed", "on_day", "duplicates", "repeats",
                                                               "crawlers")))
                 .collect())
    items = flagged.filter(kept).agg(F.countDistinct(ITEM_ID)).first()[0]
    lengths = sorted((row["length"], row["sessions"]) for row in histogram if row["length"] > 0)
    repeats = sum(row["repeats"] for row in histogram)
    return {"duplicates_dropped": sum(row["duplicates"] for row in histogram),
            "repeats_collapsed": 0 if keep_repeats else repeats,
            "sessions": sum(n for _, n in lengths),
            "sessions_from_previous_day": sum(row["crossed"] for row in histogram),
            "events": sum(length * n for length, n in lengths),
            "events_on_day": sum(row["on_day"] for row in histogram),
            "crawler_sessions": sum(row["crawlers"] for row in histogram),
            "crawler_events": sum(row["length"] * row["crawlers"] for row in histogram),
            "distinct_items": items, "session_length": length_distribution(lengths)}


def input_stats(counts: InputCounts) -> dict[str, Any]:
    return {"rows_read": counts.rows_read, "rows_kept": counts.rows_kept,
            "rows_quarantined": counts.rows_quarantined,
            "quarantined_by_reason": counts.quarantined_by_reason(),
            "files": [f.as_dict() for f in counts.day_files()],
            "lookback": {"rows_read": sum(f.rows for f in counts.lookback_files()),
                         "rows_used": sum(f.used for f in counts.lookback_files()),
                         "files": [f.as_dict() for f in counts.lookback_files()]}}


# --- outputs ---

def output_paths(lake: Lake, ds: dt.date) -> dict[str, str]:
    return {"sessions": lake.sessions(ds), "quarantine": lake.quarantine(ds), "stats": lake.sessionize_stats(ds)}


# --- the job ---

def _check_arguments(spark: SparkSession, gap_minutes: int, max_quarantine_share: float,
                     crawlers: CrawlerRules) -> None:
    crawlers.check()
    if gap_minutes <= 0:
        raise ValueError(f"gap_minutes must be positive, got {gap_minutes}")
    if not 0.0 <= max_quarantine_share <= 1.0:
        raise ValueError(f"max_quarantine_share must be in [0, 1], got {max_quarantine_share}")
    zone = spark.conf.get("spark.sql.session.timeZone")
    if zone != "UTC":
        raise ValueError(f"spark.sql.session.timeZone is {zone!r}; sessionize needs UTC (landing-zone times "
                         "without a zone are UTC): build the session with jobs.spark.build_session")
    require_micros_timestamps(spark)


def sessionize(spark: SparkSession, raw: str, lake: str, ds: dt.date, gap_minutes: int = 30,
               keep_repeats: bool = False, max_quarantine_share: float = 0.05,
               crawlers: CrawlerRules = DEFAULT_CRAWLER_RULES) -> dict[str, Any]:
    """Sessionize day ``ds`` from the landing zone ``raw`` into ``lake``; returns the stats written."""
    _check_arguments(spark, gap_minutes, max_quarantine_share, crawlers)
    started = time.monotonic()
    # Not cached: re-reading the input for the counts and the quarantine measured faster than caching it
    # (1M events, Parquet and CSV); the sessionized events are cached instead (see _write_outputs).
    rows = read_landing_days(spark, raw, ds)
    layout = Lake(lake, raw)
    counts = count_rows(rows, ds, layout.raw_day(ds))
    logger.info("day %s: %d rows read from %d file(s), %d kept, %d quarantined %s; look-back %d read, %d used",
                ds, counts.rows_read, len(counts.day_files()), counts.rows_kept, counts.rows_quarantined,
                counts.quarantined_by_reason(), sum(f.rows for f in counts.lookback_files()),
                sum(f.used for f in counts.lookback_files()))
    check_quarantine_share(counts, max_quarantine_share)
    stats = {"ds": ds.isoformat(), "raw": raw, "gap_minutes": gap_minutes, "keep_repeats": keep_repeats,
             "max_quarantine_share": max_quarantine_share, "crawler_rules": asdict(crawlers),
             **input_stats(counts)}
    paths = output_paths(layout, ds)
    with staging_folder(spark, layout.staging("sessionize", ds)) as staging:
        stats.update(_write_outputs(spark, rows, ds, gap_minutes, keep_repeats, crawlers, staging))
        stats["outputs"] = paths
        stats["elapsed_s"] = round(time.monotonic() - started, 3)
        write_text(spark, f"{staging}/stats.json", json.dumps(stats, indent=2) + "\n")
        staged = {"quarantine": f"{staging}/quarantine", "sessions": f"{staging}/sessions",
                  "stats": f"{staging}/stats.json"}
        for name, path in staged.items():  # stats last: its presence means the day is complete
            replace_by_rename(spark, path, paths[name], f"{staging}/previous-{name}")
            logger.info("%s of %s written to %s", name, ds, paths[name])
    return stats


def allow_coalescing_cached_plans(spark: SparkSession) -> None:
    """Let adaptive execution coalesce the partitions of a cached plan, unless Spark was told otherwise.

    Spark 4.3 keeps a cached plan's partitions as its shuffle made them (``spark.sql.shuffle.partitions``,
    200 by default), so every pass over the cached events below would run that many mostly empty tasks
    and write that many tiny files, although adaptive execution coalesces the same shuffle when nothing
    is cached.
    """
    if not spark.sparkContext.getConf().contains(CACHED_PLAN_PARTITIONING):
        spark.conf.set(CACHED_PLAN_PARTITIONING, "true")


def _write_outputs(spark: SparkSession, rows: DataFrame, ds: dt.date, gap_minutes: int, keep_repeats: bool,
                   crawlers: CrawlerRules, staging: str) -> dict[str, Any]:
    """Quarantine and sessions written under ``staging``; returns their counts."""
    allow_coalescing_cached_plans(spark)
    flagged = sessions_of_events(used_events(rows, ds), ds, gap_minutes).persist()
    try:
        quarantine_rows(rows).write.parquet(f"{staging}/quarantine")
        session_rows(flagged, keep_repeats, crawlers).write.parquet(f"{staging}/sessions")
        stats = session_stats(flagged, ds, keep_repeats, crawlers)
    finally:
        flagged.unpersist()
    logger.info("%d duplicates dropped, %d repeats collapsed; %d sessions (%d from the day before), %d events, "
                "%d distinct items; %d crawler sessions with %d events", stats["duplicates_dropped"],
                stats["repeats_collapsed"], stats["sessions"], stats["sessions_from_previous_day"],
                stats["events"], stats["distinct_items"], stats["crawler_sessions"], stats["crawler_events"])
    return stats


# --- command line ---

def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobs.sessionize", description=__doc__.splitlines()[0])
    parser.add_argument("--raw", default=settings.raw,
                        help="landing zone holding clicks/ds=YYYY-MM-DD/ (default: %(default)s)")
    parser.add_argument("--lake", default=settings.lake, help="lake root (default: %(default)s)")
    parser.add_argument("--ds", type=parse_day, required=True, help="UTC day to sessionize, YYYY-MM-DD")
    parser.add_argument("--gap-minutes", type=int, default=settings.gap_minutes,
                        help="inactivity that ends a session (default: %(default)s)")
    parser.add_argument("--keep-repeats", action="store_true",
                        help="keep consecutive repeats of an item within a session")
    parser.add_argument("--max-quarantine-share", type=float, default=settings.max_quarantine_share,
                        help="fail when a larger share of day D's rows is rejected (default: %(default)s)")
    parser.add_argument("--crawler-max-events", type=int, default=settings.crawler_max_events,
                        help="a session with more events is a crawler's (default: %(default)s)")
    parser.add_argument("--crawler-max-events-per-minute", type=float,
                        default=settings.crawler_max_events_per_minute,
                        help="so is one faster than this on average over its events (default: %(default)s) ...")
    parser.add_argument("--crawler-rate-min-events", type=int, default=settings.crawler_rate_min_events,
                        help="... when it has at least this many (default: %(default)s)")
    add_master_argument(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; stops the Spark session only if it started it (so tests can reuse theirs)."""
    settings = load_settings()
    args = parse_args(argv, settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with job_session("sessionize", args.master, settings) as spark:
        crawlers = CrawlerRules(args.crawler_max_events, args.crawler_max_events_per_minute,
                                args.crawler_rate_min_events)
        stats = sessionize(spark, args.raw, args.lake, args.ds, gap_minutes=args.gap_minutes,
                           keep_repeats=args.keep_repeats, max_quarantine_share=args.max_quarantine_share,
                           crawlers=crawlers)
    print(f"sessionize {args.ds}: {stats['rows_read']} rows read, {stats['rows_quarantined']} quarantined, "
          f"{stats['sessions']} sessions, {stats['events']} events ({stats['crawler_sessions']} crawler "
          f"sessions) -> {stats['outputs']['sessions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
