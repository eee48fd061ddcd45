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
are dropped; sessions are cut (:func:`mark_events`); then consecutive repeats of an item within a
session are collapsed unless ``keep_repeats``; finally sessions too long or too fast for a person are
flagged ``crawler`` (:class:`CrawlerRules`, on the events written) and counted, not dropped: training
sets leave them out and scoring reads only their most recent events. The look-back is one day: a visitor
active without a break of more than the gap for over 24 hours gets a new session id on the third day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__" and importlib.util.find_spec("sessionrec") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # spark-submit jobs/sessionize.py

from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.window import WindowSpec

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
    FileCount,
    InputCounts,
    LandingDay,
    check_quarantine_share,
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
# Whose events a row is: a hash (a cheap sort prefix), then (has a source session id, that id or else the
# visitor id).
OWNER_HASH, SOURCE, OWNER = "_owner_hash", "_source", "_owner"
OWNER_KEY = (OWNER_HASH, SOURCE, OWNER)
# Per event: a copy of the previous event, the first event of a session, a repeat of the previous item.
DUPLICATE, STARTS, REPEAT = "_duplicate", "_starts", "_repeat"
# Per event: its session's first event time (names the session), whether the session reaches day D, and the
# session's written-event count.
SESSION_START, ON_DAY, LENGTH = "_session_start", "_on_day", "_length"
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

    Every later step works within one owner (copies, a visitor's gaps, a session's events), so this is the
    job's only shuffle.
    """
    owned = (events.withColumn(SOURCE, F.col(SESSION_ID).isNotNull())
             .withColumn(OWNER, F.coalesce(SESSION_ID, VISITOR_ID)))
    return owned.withColumn(OWNER_HASH, F.xxhash64(SOURCE, OWNER)).repartition(OWNER_HASH)


def _by_owner() -> WindowSpec:
    """An owner's events in order; copies of one event are adjacent, the look-back day's copy first."""
    return Window.partitionBy(*OWNER_KEY).orderBy(*EVENT_ORDER, FROM_DAY)


def mark_events(events: DataFrame, gap_minutes: int) -> DataFrame:
    """Flag each event of :func:`cluster_by_owner`'s output in one ordered pass over its owner's events.

    - ``DUPLICATE``: it copies the previous event (same owner, time, item, type and visitor);
    - ``STARTS``: it starts a session: an owner's first event, or, for a visitor, the first after a gap
      strictly greater than ``gap_minutes`` (exactly the gap continues the session);
    - ``REPEAT``: it repeats the previous event's item within the session (never true of a copy).

    A copy has the time and item of the event it copies, so comparing with the previous row, copies
    included, gives the same gaps and repeats as after dropping them.
    """
    by_owner = _by_owner()
    previous = {name: F.lag(name).over(by_owner).alias(f"_previous_{name}") for name in EVENT_ORDER}
    lagged = events.select("*", *previous.values())
    before = {name: F.col(f"_previous_{name}") for name in EVENT_ORDER}
    copy = functools.reduce(lambda a, b: a & b, (before[name].eqNullSafe(F.col(name)) for name in EVENT_ORDER))
    gap = F.unix_micros(EVENT_TIME) - F.unix_micros(before[EVENT_TIME])
    first = before[EVENT_TIME].isNull()
    starts = F.when(F.col(SOURCE), first).otherwise(first | (gap > gap_minutes * 60_000_000))
    repeat = ~starts & ~copy & F.coalesce(before[ITEM_ID] == F.col(ITEM_ID), F.lit(False))
    return lagged.select(*events.columns, copy.alias(DUPLICATE), starts.alias(STARTS), repeat.alias(REPEAT))


def start_sessions(events: DataFrame, ds: dt.date) -> DataFrame:
    """Per event of :func:`mark_events`: ``SESSION_START``, the time of its session's first event, and
    ``ON_DAY``, whether its session has an event on day D; one pass in :func:`_by_owner` order (no new sort).

    An owner's sessions follow one another in time, so once one of them reaches D every later one does.
    The first of them starts at the owner's first event on D if that event starts a session, else at the
    owner's last session start before midnight; an event is in a session on D when it is at or after that
    start (events at the same instant are never split: the first of them starts the session).
    """
    running = _by_owner().rowsBetween(Window.unboundedPreceding, Window.currentRow)
    whole = _by_owner().rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    on_day, starts, time_ = F.col(EVENT_TIME) >= F.lit(midnight(ds)), F.col(STARTS), F.col(EVENT_TIME)
    owner_times = {"_first_on_day": F.min(F.when(on_day, time_)),
                   "_first_start_on_day": F.min(F.when(on_day & starts, time_)),
                   "_last_start_before": F.max(F.when(~on_day & starts, time_))}
    windowed = events.select("*", F.last(F.when(starts, time_), ignorenulls=True).over(running).alias(SESSION_START),
                             *(value.over(whole).alias(name) for name, value in owner_times.items()))
    first_on_day, first_start_on_day, last_start_before = (F.col(name) for name in owner_times)
    first_session_on_day = F.when(first_start_on_day == first_on_day, first_on_day).otherwise(last_start_before)
    on_day_session = F.coalesce(first_on_day.isNotNull() & (time_ >= first_session_on_day), F.lit(False))
    return windowed.select(*events.columns, SESSION_START, on_day_session.alias(ON_DAY))


def session_id() -> Column:
    """The source's session id when given; otherwise ``<visitor_id>:<epoch milliseconds of its first
    event>``, so reruns and the next day agree on it."""
    derived = F.concat_ws(":", VISITOR_ID, F.unix_millis(SESSION_START).cast("string"))
    return F.when(F.col(SOURCE), F.col(SESSION_ID)).otherwise(derived)


def _span_seconds(first: Column, last: Column) -> Column:
    return (F.unix_micros(last) - F.unix_micros(first)) / 1e6


def describe_sessions(written: DataFrame, crawlers: CrawlerRules) -> DataFrame:
    """The written events of each session (:func:`start_sessions`' output, filtered) with their 0-based
    position, the session's ``LENGTH`` and its ``CRAWLER`` flag."""
    in_order = Window.partitionBy(*OWNER_KEY, SESSION_START).orderBy(*EVENT_ORDER)
    whole = in_order.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    first, last = "_first_time", "_last_time"
    windowed = written.select("*", (F.row_number().over(in_order) - 1).cast("int").alias(POSITION),
                              F.count(F.lit(1)).over(whole).alias(LENGTH),
                              F.min(EVENT_TIME).over(whole).alias(first), F.max(EVENT_TIME).over(whole).alias(last))
    crawler = crawlers.is_crawler(F.col(LENGTH), _span_seconds(F.col(first), F.col(last)))
    return windowed.select(*written.columns, POSITION, LENGTH, crawler.alias(CRAWLER))


def session_rows(events: DataFrame, ds: dt.date, gap_minutes: int, keep_repeats: bool,
                 crawlers: CrawlerRules) -> tuple[DataFrame, list[Observation]]:
    """Used events -> day D's output (the events of sessions on D, copies dropped, repeats collapsed unless
    kept, 0-based positions, crawler sessions flagged) and the observations that count them as they are
    written (:func:`session_stats` reads them).

    Two sorts: an owner's events in order (copies, gaps, sessions, day D), then each written session's
    (position, length, crawler); only events written go through the second, and only they get a session id.
    """
    started = start_sessions(mark_events(cluster_by_owner(events), gap_minutes), ds)
    dropped = Observation("sessionize-dropped")
    written = (~F.col(DUPLICATE) & F.col(ON_DAY)) & (F.lit(True) if keep_repeats else ~F.col(REPEAT))
    kept = started.observe(dropped, _count(F.col(DUPLICATE) & F.col(FROM_DAY)).alias("duplicates_dropped"),
                           _count(F.col(ON_DAY) & F.col(REPEAT)).alias("repeats")).filter(written)
    counted = Observation("sessionize-written")
    described = describe_sessions(kept, crawlers).observe(counted, *_stat_columns(ds))
    return described.withColumn(SESSION_ID, session_id()).select(*OUTPUT_COLUMNS), [dropped, counted]


# --- statistics ---

def _count(condition: Column) -> Column:
    return F.sum(condition.cast("long"))


def _session_length_percentile(q: float) -> Column:
    """Nearest-rank percentile of the written sessions' lengths (``percentile_disc``, as SQL: the Python
    API has no function for it)."""
    length = f"CASE WHEN {POSITION} = 0 THEN {LENGTH} END"
    return F.expr(f"percentile_disc({q}) WITHIN GROUP (ORDER BY {length})")


def _bucket_name(low: int, high: int | None) -> str:
    return f"{low}" if low == high else f"{low}+" if high is None else f"{low}-{high}"


def _stat_columns(ds: dt.date) -> list[Column]:
    """Aggregates over :func:`describe_sessions`' rows that give the stats file's session counts."""
    day_start, session = F.lit(midnight(ds)), F.col(POSITION) == 0
    length = F.when(session, F.col(LENGTH))
    buckets = [_count(session & (F.col(LENGTH) >= low) & (F.lit(True) if high is None else F.col(LENGTH) <= high))
               .alias(_bucket_name(low, high)) for low, high in LENGTH_BUCKETS]
    return [_count(session).alias("sessions"),
            _count(session & (F.col(EVENT_TIME) < day_start)).alias("sessions_from_previous_day"),
            F.count(F.lit(1)).alias("events"),
            _count(F.col(EVENT_TIME) >= day_start).alias("events_on_day"),
            _count(session & F.col(CRAWLER)).alias("crawler_sessions"),
            _count(F.col(CRAWLER)).alias("crawler_events"),
            F.min(length).alias("min"), F.max(length).alias("max"),
            _session_length_percentile(0.5).alias("median"), _session_length_percentile(0.9).alias("p90"),
            *buckets]


def session_stats(observations: list[Observation], keep_repeats: bool, distinct_items: int) -> dict[str, Any]:
    """The stats file's session counts from :func:`session_rows`' observations (once its output is written)."""
    observed = {name: value for observation in observations for name, value in observation.get.items()}
    counts = {name: observed[name] or 0 for name in (
        "duplicates_dropped", "sessions", "sessions_from_previous_day", "events", "events_on_day",
        "crawler_sessions", "crawler_events")}
    sessions = counts["sessions"]
    summary = {name: None if observed[name] is None else int(observed[name])
               for name in ("min", "median", "p90", "max")}
    length = {**summary, "mean": round(counts["events"] / sessions, 3) if sessions else None,
              "histogram": {_bucket_name(low, high): observed[_bucket_name(low, high)] or 0
                            for low, high in LENGTH_BUCKETS}}
    return {**counts, "repeats_collapsed": 0 if keep_repeats else observed["repeats"] or 0,
            "distinct_items": distinct_items, "session_length": length}


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
    """Sessionize day ``ds`` from the landing zone ``raw`` into ``lake``; returns the stats written.

    Two passes over the input, each counting as it goes (Spark observations), nothing cached: the
    quarantine (reads D's files and counts them, so a day too dirty fails before the sessions are built)
    and the sessions (read both days, count the look-back files and the sessions as they are written).
    """
    _check_arguments(spark, gap_minutes, max_quarantine_share, crawlers)
    started = time.monotonic()
    landing = read_landing_days(spark, raw, ds)
    layout = Lake(lake, raw)
    paths = output_paths(layout, ds)
    with staging_folder(spark, layout.staging("sessionize", ds)) as staging:
        counts = landing.write_quarantine(f"{staging}/quarantine")
        logger.info("day %s: %d rows read from %d file(s), %d kept, %d quarantined %s", ds, counts.rows_read,
                    len(counts.day_files()), counts.rows_kept, counts.rows_quarantined,
                    counts.quarantined_by_reason())
        check_quarantine_share(counts, max_quarantine_share)
        session_counts, lookback_counts = _write_sessions(spark, landing, ds, gap_minutes, keep_repeats, crawlers,
                                                          f"{staging}/sessions")
        counts = counts.with_files(lookback_counts)
        logger.info("look-back: %d rows read, %d used", sum(f.rows for f in counts.lookback_files()),
                    sum(f.used for f in counts.lookback_files()))
        stats = {"ds": ds.isoformat(), "raw": raw, "gap_minutes": gap_minutes, "keep_repeats": keep_repeats,
                 "max_quarantine_share": max_quarantine_share, "crawler_rules": asdict(crawlers),
                 **input_stats(counts), **session_counts, "outputs": paths,
                 "elapsed_s": round(time.monotonic() - started, 3)}
        write_text(spark, f"{staging}/stats.json", json.dumps(stats, indent=2) + "\n")
        staged = {"quarantine": f"{staging}/quarantine", "sessions": f"{staging}/sessions",
                  "stats": f"{staging}/stats.json"}
        for name, path in staged.items():  # stats last: its presence means the day is complete
            replace_by_rename(spark, path, paths[name], f"{staging}/previous-{name}")
            logger.info("%s of %s written to %s", name, ds, paths[name])
    return stats


def _write_sessions(spark: SparkSession, landing: LandingDay, ds: dt.date, gap_minutes: int, keep_repeats: bool,
                    crawlers: CrawlerRules, path: str) -> tuple[dict[str, Any], list[FileCount]]:
    """Day D's sessions written to ``path``; returns their counts and the look-back files' counts."""
    rows = landing.rows(count_lookback=True)
    sessions, observations = session_rows(used_events(rows.frame, ds), ds, gap_minutes, keep_repeats, crawlers)
    with landing.reading():  # the look-back files are first read here
        sessions.write.parquet(path)
    items = spark.read.parquet(path).select(ITEM_ID).distinct().count()
    stats = session_stats(observations, keep_repeats, items)
    logger.info("%d duplicates dropped, %d repeats collapsed; %d sessions (%d from the day before), %d events, "
                "%d distinct items; %d crawler sessions with %d events", stats["duplicates_dropped"],
                stats["repeats_collapsed"], stats["sessions"], stats["sessions_from_previous_day"],
                stats["events"], stats["distinct_items"], stats["crawler_sessions"], stats["crawler_events"])
    return stats, rows.counts()


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
