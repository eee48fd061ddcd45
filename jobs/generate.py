"""A synthetic clickstream with learnable sessions, for demos, tests and scale benchmarks.

Usage::

    python -m jobs.generate --raw var/lake/raw --end-day 2026-11-21 --days 7 --events 1000000 \\
        [--items 5000] [--visitors N] [--seed 1] [--dirty-share 0.01] [--format parquet|csv|jsonl]

How the data behaves (numbers are the module constants below):

- Items have Zipf-like popularity and belong to latent topics. Each item has a few successors in its
  topic, and a session mostly walks that Markov chain: the next item depends strongly on the current
  one (what GRU4Rec learns), sometimes on the session's topic, sometimes on global popularity (which
  keeps most-popular a meaningful baseline). Consecutive repeats and exact duplicate rows occur.
- Visitors have several sessions; a visitor's sessions are at least ``MIN_SESSION_GAP_S`` apart, while
  gaps within a session are log-normal with a median of ``GAP_MEDIAN_S``, so the inactivity-gap rule
  recovers the sessions. ``session_id`` is therefore left null.
- Session starts follow a diurnal and weekly profile; sessions started late in the evening cross UTC
  midnight.
- With ``dirty_share`` > 0 that share of rows is damaged (empty item id, unparsable timestamp, no
  visitor, timestamp over a day before the generated days) and ``event_time`` becomes an ISO-8601
  string column, since a timestamp column cannot hold an unparsable value.

Rows come in arrival order (by true event time). Everything is vectorised with numpy and determined
by the seed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from jobs.landing import day_dir, temporary_path
from sessionrec.config import load_settings
from sessionrec.layout import LandingZone

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
EVENT_TIME_TYPE = pa.timestamp("ms", tz="UTC")
FILE_FORMATS = ("parquet", "csv", "jsonl")
EVENT_FILE_STEM = "events"

# Sessions and visitors.
MEAN_SESSION_LENGTH = 4.5
MAX_SESSION_LENGTH = 60
SESSIONS_PER_VISITOR = 3.0
VISITOR_ACTIVITY_SIGMA = 1.0  # log-normal spread of how many sessions a visitor has
GAP_MEDIAN_S = 40.0
GAP_SIGMA = 1.1
MAX_GAP_S = 45 * 60
MIN_SESSION_GAP_S = 31 * 60
MEAN_EXTRA_SESSION_GAP_S = 20 * 60
# Session starts per UTC hour and per weekday (Monday first); relative weights.
HOURLY_ACTIVITY = (0.35, 0.25, 0.18, 0.15, 0.15, 0.2, 0.35, 0.55, 0.75, 0.85, 0.9, 0.95,
                   1.0, 0.95, 0.9, 0.9, 0.95, 1.05, 1.2, 1.35, 1.4, 1.25, 0.95, 0.6)
WEEKDAY_ACTIVITY = (1.0, 1.0, 1.0, 1.0, 0.95, 1.1, 1.15)

# Items and the next-item process. The step probabilities must sum to at most 1; the rest of the mass
# is a jump to a globally popular item.
ZIPF_EXPONENT = 1.0
TOPIC_SIZE = 40
SUCCESSOR_PROBS = (0.45, 0.25, 0.15, 0.1, 0.05)
P_DUPLICATE = 0.01  # exact copy of the previous row (same item and time)
P_REPEAT = 0.05     # same item again, later
P_SUCCESSOR = 0.65  # one of the current item's successors
P_TOPIC = 0.2       # a popular item of the session's topic

ITEM_ID_OFFSET = 100_000
VISITOR_ID_OFFSET = 1_000_000
UNPARSABLE_TIMES = ("not-a-timestamp", "", "2026-13-45T25:61:00Z", "NaN", "31/12/2026 25:00")
MAX_DAYS_BEFORE_RANGE = 60


@dataclass(frozen=True)
class Topics:
    """Items grouped by topic, to draw a popular item of a given topic."""

    items: np.ndarray   # item indexes ordered by topic
    cdf: np.ndarray     # cumulative popularity along ``items``
    bounds: np.ndarray  # topic t covers items[bounds[t]:bounds[t + 1]]

    @classmethod
    def build(cls, topic: np.ndarray, popularity: np.ndarray) -> Topics:
        items = np.argsort(topic, kind="stable")
        bounds = np.searchsorted(topic[items], np.arange(int(topic.max()) + 2))
        return cls(items, np.cumsum(popularity[items]), bounds)

    def draw(self, topics: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One item per entry of ``topics``, drawn by popularity within that topic."""
        start, end = self.bounds[topics], self.bounds[topics + 1]
        low = np.where(start > 0, self.cdf[np.maximum(start - 1, 0)], 0.0)
        high = self.cdf[end - 1]
        position = np.searchsorted(self.cdf, low + u * (high - low), side="right")
        return self.items[np.clip(position, start, end - 1)]

    def neighbour(self, item: np.ndarray, topic: np.ndarray) -> np.ndarray:
        """The item after ``item`` in its topic (wrapping around)."""
        position = np.empty(len(self.items), dtype=np.int64)
        position[self.items] = np.arange(len(self.items))
        start, end = self.bounds[topic], self.bounds[topic + 1]
        return self.items[start + (position[item] - start + 1) % (end - start)]


@dataclass(frozen=True)
class Catalog:
    """Items: popularity, topics and successor lists, indexed by item index."""

    popularity_cdf: np.ndarray  # cumulative popularity over item indexes
    topic: np.ndarray           # topic of each item
    topics: Topics
    successors: np.ndarray      # (n_items, len(SUCCESSOR_PROBS)) item indexes


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indexes drawn from the distribution with cumulative weights ``cdf`` (last value = total)."""
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)


def build_catalog(rng: np.random.Generator, n_items: int) -> Catalog:
    """Zipf popularity over a random ranking, topics of about ``TOPIC_SIZE`` items, successor lists.

    An item's successors are popular items of its own topic, never the item itself (repeats are a
    separate step of the walk).
    """
    popularity = 1.0 / np.power(rng.permutation(n_items) + 1.0, ZIPF_EXPONENT)
    topic = rng.permutation(n_items) % max(1, math.ceil(n_items / TOPIC_SIZE))
    topics = Topics.build(topic, popularity)
    k = len(SUCCESSOR_PROBS)
    successors = topics.draw(np.repeat(topic, k), rng.random(n_items * k)).reshape(n_items, k)
    own_row, own_column = np.nonzero(successors == np.arange(n_items)[:, None])
    successors[own_row, own_column] = topics.neighbour(own_row, topic[own_row])
    return Catalog(np.cumsum(popularity), topic, topics, successors)


def session_lengths(rng: np.random.Generator, n_events: int) -> np.ndarray:
    """Geometric lengths (capped) adding up to exactly ``n_events``."""
    draws = []
    total = 0
    while total < n_events:
        batch = np.minimum(rng.geometric(1.0 / MEAN_SESSION_LENGTH, int(n_events / MEAN_SESSION_LENGTH) + 16),
                           MAX_SESSION_LENGTH)
        draws.append(batch)
        total += int(batch.sum())
    lengths = np.concatenate(draws)
    ends = np.cumsum(lengths)
    last = int(np.searchsorted(ends, n_events))
    lengths = lengths[: last + 1].copy()
    lengths[-1] -= int(ends[last]) - n_events
    return lengths


def session_items(rng: np.random.Generator, catalog: Catalog,
                  lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Item index of every event (sessions back to back) and a flag for exact duplicate rows."""
    n_events = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    items = np.empty(n_events, dtype=np.int64)
    duplicate = np.zeros(n_events, dtype=bool)
    items[starts] = _draw(catalog.popularity_cdf, rng.random(len(lengths)))
    session_topic = catalog.topic[items[starts]]
    # Walk all sessions one step at a time, longest first, so step t touches a prefix of them.
    by_length = np.argsort(-lengths, kind="stable")
    descending = lengths[by_length]
    successor_cdf = np.cumsum(SUCCESSOR_PROBS)
    thresholds = np.cumsum([P_DUPLICATE, P_REPEAT, P_SUCCESSOR, P_TOPIC])
    for step in range(1, int(lengths.max(initial=0))):
        active = by_length[: np.searchsorted(-descending, -step, side="left")]
        position = starts[active] + step
        previous = items[position - 1]
        kind = np.searchsorted(thresholds, rng.random(len(active)), side="right")
        following = previous.copy()
        is_successor = kind == 2
        rank = _draw(successor_cdf, rng.random(int(is_successor.sum())))
        following[is_successor] = catalog.successors[previous[is_successor], rank]
        in_topic = kind == 3
        following[in_topic] = catalog.topics.draw(session_topic[active[in_topic]],
                                                 rng.random(int(in_topic.sum())))
        jump = kind == 4
        following[jump] = _draw(catalog.popularity_cdf, rng.random(int(jump.sum())))
        items[position] = following
        duplicate[position[kind == 0]] = True
    return items, duplicate


def _day_weights(first_day: dt.date, days: int) -> np.ndarray:
    return np.array([WEEKDAY_ACTIVITY[(first_day + dt.timedelta(days=d)).weekday()] for d in range(days)])


def session_starts(rng: np.random.Generator, first_day: dt.date, days: int, n_sessions: int) -> np.ndarray:
    """Epoch ms of session starts, by weekday and hour of day."""
    day = _draw(np.cumsum(_day_weights(first_day, days)), rng.random(n_sessions))
    hour = _draw(np.cumsum(HOURLY_ACTIVITY), rng.random(n_sessions))
    first_ms = _epoch_ms(first_day)
    return first_ms + day * DAY_MS + hour * 3_600_000 + rng.integers(0, 3_600_000, n_sessions)


def within_session_offsets(rng: np.random.Generator, lengths: np.ndarray,
                           duplicate: np.ndarray) -> np.ndarray:
    """Milliseconds from the session's first event to each event (duplicates share their time)."""
    gaps = np.minimum(rng.lognormal(math.log(GAP_MEDIAN_S), GAP_SIGMA, len(duplicate)), MAX_GAP_S)
    gaps_ms = np.rint(gaps * 1000).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    gaps_ms[starts] = 0
    gaps_ms[duplicate] = 0
    elapsed = np.cumsum(gaps_ms)
    return elapsed - np.repeat(elapsed[starts], lengths)


def assign_visitors(rng: np.random.Generator, starts: np.ndarray, durations: np.ndarray, n_visitors: int,
                    range_end_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Visitor per session and session starts moved so a visitor's sessions are far enough apart.

    A visitor's sessions are pushed later until each starts at least ``MIN_SESSION_GAP_S`` (plus a
    random extra) after the previous one ends. Sessions that would then end after the generated days
    keep their original start and go to new visitors (ids from ``n_visitors`` on).
    """
    n_sessions = len(starts)
    activity = rng.lognormal(0.0, VISITOR_ACTIVITY_SIGMA, n_visitors)
    # Every visitor of the pool gets one session (while sessions last), the rest go by activity.
    visitor = np.concatenate([rng.permutation(n_visitors)[:n_sessions],
                              _draw(np.cumsum(activity), rng.random(max(0, n_sessions - n_visitors)))])
    gap_ms = MIN_SESSION_GAP_S * 1000 + rng.exponential(MEAN_EXTRA_SESSION_GAP_S * 1000, n_sessions)
    order = np.lexsort((starts, visitor))
    v, s, d, g = visitor[order], starts[order], durations[order], gap_ms[order].astype(np.int64)
    first = np.ones(n_sessions, dtype=bool)
    first[1:] = v[1:] != v[:-1]
    # Earliest start after the previous session: s'_i = max(s_i, s'_(i-1) + d_(i-1) + g_i). With
    # c = running sum of (d_(i-1) + g_i) within the visitor, s'_i = c_i + running max of (s_j - c_j).
    step = np.zeros(n_sessions, dtype=np.int64)
    step[1:] = d[:-1] + g[1:]
    step[first] = 0
    total = np.cumsum(step)
    group = np.cumsum(first) - 1
    c = total - total[np.nonzero(first)[0]][group]
    slack = s - c
    # Lift each visitor's values above the previous visitor's so one running max serves all of them.
    span = int(slack.max() - slack.min()) + 1 if n_sessions else 1
    if span * (int(group[-1]) + 1 if n_sessions else 1) >= 2**62:
        raise ValueError(f"{n_sessions} sessions over {n_visitors} visitors: too many to schedule")
    shifted = slack - slack.min() + group * span
    moved = c + np.maximum.accumulate(shifted) - group * span + slack.min()
    overflow = moved + d >= range_end_ms
    moved[overflow] = s[overflow]
    v = v.copy()
    v[overflow] = n_visitors + np.arange(int(overflow.sum()))
    if overflow.any():
        log.info("%d of %d sessions did not fit their visitor's schedule and got new visitors",
                 int(overflow.sum()), n_sessions)
    new_starts, new_visitor = np.empty_like(starts), np.empty_like(visitor)
    new_starts[order], new_visitor[order] = moved, v
    return new_visitor, new_starts


def _epoch_ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY_MS


def _iso(times: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """UTC timestamps as ISO-8601 strings ``2026-11-21T10:00:00.123Z`` (10x faster than strftime)."""
    naive = times.cast(pa.int64()).cast(pa.timestamp(times.type.unit)).cast(pa.string())
    return pc.binary_join_element_wise(pc.binary_replace_slice(naive, 10, 11, "T"), "Z", "")


def _ids(numbers: np.ndarray, offset: int) -> pa.Array:
    return pa.array(numbers + offset, pa.int64()).cast(pa.string())


def _damage(rng: np.random.Generator, time_ms: np.ndarray, item_id: pa.Array, visitor_id: pa.Array,
            dirty_share: float, first_ms: int) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Damage ``dirty_share`` of the rows, one defect each; event_time becomes ISO-8601 strings.

    Out-of-range times lie more than a day before the first generated day (or at the epoch), outside
    the D-1..D window any landing day D accepts. The first row stays clean so that every row has a
    landing day (see :func:`landing_days`).
    """
    n_dirty = min(round(dirty_share * len(time_ms)), len(time_ms) - 1)
    rows = rng.choice(len(time_ms) - 1, n_dirty, replace=False) + 1
    defect = rng.integers(0, 4, n_dirty)
    time_ms = time_ms.copy()
    early = rows[defect == 3]
    stale = first_ms - DAY_MS - rng.integers(1, MAX_DAYS_BEFORE_RANGE * DAY_MS, len(early))
    time_ms[early] = np.where(rng.random(len(early)) < 0.2, 0, stale)
    times = _iso(pa.array(time_ms, pa.int64()).cast(EVENT_TIME_TYPE))
    garbage = rows[defect == 1]
    times = pc.replace_with_mask(times, _mask(len(time_ms), garbage),
                                 pa.array(rng.choice(UNPARSABLE_TIMES, len(garbage)), pa.string()))
    empty = rows[defect == 0]
    item_id = pc.replace_with_mask(item_id, _mask(len(time_ms), empty), pa.repeat(pa.scalar(""), len(empty)))
    anonymous = rows[defect == 2]
    visitor_id = pc.replace_with_mask(visitor_id, _mask(len(time_ms), anonymous),
                                      pa.nulls(len(anonymous), pa.string()))
    return times, item_id, visitor_id


def _mask(size: int, rows: np.ndarray) -> pa.Array:
    mask = np.zeros(size, dtype=bool)
    mask[rows] = True
    return pa.array(mask)


def generate_clickstream(end_day: dt.date, days: int, n_events: int, n_items: int = 5000,
                         n_visitors: int | None = None, seed: int = 1,
                         dirty_share: float = 0.01) -> pa.Table:
    """``n_events`` landing-zone events over the ``days`` UTC days ending with ``end_day``.

    Columns ``event_time`` (UTC timestamp; ISO-8601 strings when ``dirty_share`` > 0), ``item_id``,
    ``visitor_id``, ``session_id`` (null: sessions come from the inactivity gap), ``event_type``.
    ``n_visitors`` (default: one per ``SESSIONS_PER_VISITOR`` sessions) is the visitor pool; a few more
    ids appear when a visitor's sessions do not fit in the days. Same arguments, same table.
    """
    if days < 1 or n_events < 1 or n_items < 2:
        raise ValueError(f"need days >= 1, n_events >= 1, n_items >= 2; got {days}, {n_events}, {n_items}")
    if not 0.0 <= dirty_share < 1.0:
        raise ValueError(f"dirty_share must be in [0, 1), got {dirty_share}")
    if n_visitors is not None and n_visitors < 1:
        raise ValueError(f"n_visitors must be positive, got {n_visitors}")
    rng = np.random.default_rng(seed)
    first_day = end_day - dt.timedelta(days=days - 1)
    first_ms, end_ms = _epoch_ms(first_day), _epoch_ms(end_day) + DAY_MS
    catalog = build_catalog(rng, n_items)
    lengths = session_lengths(rng, n_events)
    items, duplicate = session_items(rng, catalog, lengths)
    offsets = within_session_offsets(rng, lengths, duplicate)
    ends = np.cumsum(lengths) - 1
    durations = offsets[ends]
    starts = session_starts(rng, first_day, days, len(lengths))
    starts = np.clip(starts, first_ms, np.maximum(end_ms - 1 - durations, first_ms))
    pool = n_visitors or max(1, round(len(lengths) / SESSIONS_PER_VISITOR))
    visitor, starts = assign_visitors(rng, starts, durations, pool, end_ms)
    time_ms = np.repeat(starts, lengths) + offsets
    order = np.argsort(time_ms, kind="stable")
    time_ms, items, visitor_of_event = time_ms[order], items[order], np.repeat(visitor, lengths)[order]
    item_id = _ids(items, ITEM_ID_OFFSET)
    visitor_id = _ids(visitor_of_event, VISITOR_ID_OFFSET)
    if dirty_share > 0:
        event_time, item_id, visitor_id = _damage(rng, time_ms, item_id, visitor_id, dirty_share, first_ms)
    else:
        event_time = pa.array(time_ms, pa.int64()).cast(EVENT_TIME_TYPE)
    log.info("generated %d events, %d sessions, %d items over %s .. %s", n_events, len(lengths), n_items,
             first_day, end_day)
    return pa.table({
        "event_time": event_time,
        "item_id": item_id,
        "visitor_id": visitor_id,
        "session_id": pa.nulls(n_events, pa.string()),
        "event_type": pa.repeat(pa.scalar("click"), n_events),
    })


def landing_days(event_time: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The UTC day (days since epoch) each row arrives on: rows are in arrival order.

    A row lands on the latest day seen so far among parsable timestamps, so a clean time-ordered
    table lands by its own days, while an unparsable or stale timestamp lands with its neighbours.
    """
    if pa.types.is_timestamp(event_time.type):
        days = event_time.cast(pa.date32())
    else:
        days = pc.strptime(pc.utf8_slice_codeunits(event_time, 0, 10), format="%Y-%m-%d", unit="s",
                           error_is_null=True).cast(pa.date32())
    values = days.cast(pa.int32()).to_numpy(zero_copy_only=False)
    parsed = ~np.isnan(values) if values.dtype.kind == "f" else np.ones(len(values), dtype=bool)
    if not parsed.any():
        raise ValueError("event_time: expected timestamps or ISO-8601 strings; none could be parsed")
    known = np.where(parsed, values, np.iinfo(np.int32).min).astype(np.int64)
    known[: int(np.argmax(parsed))] = known[int(np.argmax(parsed))]
    return np.maximum.accumulate(known)


def _write_file(table: pa.Table, path: str, file_format: str) -> None:
    if file_format == "parquet":
        pq.write_table(table, path)
        return
    if pa.types.is_timestamp(table.schema.field("event_time").type):
        table = table.set_column(table.schema.get_field_index("event_time"), "event_time",
                                 _iso(table["event_time"]))
    if file_format == "csv":
        pcsv.write_csv(table, path)
    else:
        table.to_pandas().to_json(path, orient="records", lines=True)


def write_landing_zone(table: pa.Table, raw_dir: str, file_format: str = "parquet") -> dict[str, int]:
    """Write ``table`` to ``raw_dir/clicks/ds=D/events.<ext>``, one file per landing day.

    Rows land by :func:`landing_days`. Each file is written under a temporary name and renamed, and
    an ``events.*`` file of another format for the same day is removed, so a rerun replaces a day.
    Returns rows per day (``YYYY-MM-DD``).
    """
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format {file_format!r}: expected one of {', '.join(FILE_FORMATS)}")
    if table.num_rows == 0:
        return {}
    days = landing_days(table["event_time"])  # non-decreasing: each day is one slice of the table
    unique, firsts, counts = np.unique(days, return_index=True, return_counts=True)
    rows: dict[str, int] = {}
    for day_number, first, count in zip(unique.tolist(), firsts.tolist(), counts.tolist(), strict=True):
        day = dt.date(1970, 1, 1) + dt.timedelta(days=day_number)
        folder = day_dir(raw_dir, day)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{EVENT_FILE_STEM}.{file_format}"
        temporary = temporary_path(final)
        try:
            _write_file(table.slice(first, count), str(temporary), file_format)
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        for other in FILE_FORMATS:
            if other != file_format:
                (folder / f"{EVENT_FILE_STEM}.{other}").unlink(missing_ok=True)
        rows[day.isoformat()] = count
        log.info("%s: %d events -> %s", day, count, final)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", help="landing zone root (default: Settings.raw)")
    parser.add_argument("--end-day", required=True, type=dt.date.fromisoformat, help="last UTC day")
    parser.add_argument("--days", required=True, type=int)
    parser.add_argument("--events", required=True, type=int)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--visitors", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dirty-share", type=float, default=0.01)
    parser.add_argument("--format", choices=FILE_FORMATS, default="parquet")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raw_dir = args.raw or load_settings().raw
    table = generate_clickstream(args.end_day, args.days, args.events, n_items=args.items,
                                 n_visitors=args.visitors, seed=args.seed, dirty_share=args.dirty_share)
    rows = write_landing_zone(table, raw_dir, args.format)
    print(f"{table.num_rows:,} events in {len(rows)} day folder(s) under {LandingZone(raw_dir).clicks} "
          f"({min(rows)} .. {max(rows)}), format {args.format}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
