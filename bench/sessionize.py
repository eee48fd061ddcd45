"""Sessionization throughput: jobs/sessionize.py (Spark) against the same rules as DuckDB SQL.

    .venv/bin/python -m bench.sessionize [--events 1000000 10000000] [--format parquet] [--quick]

For each size N, ``jobs.generate`` writes N synthetic events over two UTC days (1% damaged rows, so
``event_time`` is ISO-8601 text) into a landing zone, and day D is sessionized with D-1 as look-back, so
both engines read all N rows. Each engine runs in a fresh process:

- spark: ``jobs.sessionize.sessionize`` (local[*], the project's session settings; start-up reported
  apart): validation, quarantine, duplicates, inactivity-gap sessions, repeat collapse, outputs swapped
  in by rename, stats;
- duckdb: the same rules as one SQL query writing the sessions, plus one query writing the quarantine
  (all threads; malformed-line detection and the stats file are Spark-only).

Both outputs are then compared (rows, sessions and a hash of every row), so the ratio compares equal
work. Peak memory is the largest summed RSS of the process and its children (the JVM for Spark),
sampled every 0.1 s. The machine is shared, so load averages are recorded with each number. Prints a
table and writes bench/results/sessionize.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import in_fresh_process, machine, write_results
from jobs.raw_input import NUMBER

RESULTS = Path(__file__).resolve().parent / "results" / "sessionize.json"
DAY = dt.date(2026, 11, 21)
GAP_MINUTES = 30

# The rules of jobs/sessionize.py (see its docstring and jobs/raw_input.py) in DuckDB SQL. Placeholders:
# {source} a read_* call with filename=true, {day}/{start}/{day_start}/{end} the day and its bounds.
DUCKDB_VALIDATED = r"""
WITH raw AS (
    SELECT CAST(event_time AS VARCHAR) AS event_time, CAST(item_id AS VARCHAR) AS item_id,
           CAST(visitor_id AS VARCHAR) AS visitor_id, CAST(session_id AS VARCHAR) AS session_id,
           CAST(event_type AS VARCHAR) AS event_type, filename,
           contains(filename, '/ds={day}/') AS from_day
    FROM {source}
),
parsed AS (
    SELECT *, CASE
        WHEN epoch IS NOT NULL THEN CASE WHEN abs(epoch) < 1e14 THEN make_timestamp(CAST(round(
            CASE WHEN abs(epoch) > 1e11 THEN epoch * 1e3 ELSE epoch * 1e6 END) AS BIGINT)) END
        ELSE CAST(TRY_CAST(event_time AS TIMESTAMPTZ) AS TIMESTAMP) END AS ts
    FROM (SELECT *, CASE WHEN NOT contains(event_time, ':') AND regexp_matches(event_time, '{number}')
                         THEN TRY_CAST(trim(event_time) AS DOUBLE) END AS epoch FROM raw)
),
validated AS (
    SELECT *, CASE
        WHEN item_id IS NULL OR trim(item_id) = '' THEN 'missing_item_id'
        WHEN event_time IS NULL OR trim(event_time) = '' THEN 'missing_event_time'
        WHEN ts IS NULL THEN 'unparsable_event_time'
        WHEN ts < TIMESTAMP '{start}' OR ts >= TIMESTAMP '{end}' THEN 'event_time_out_of_range'
        WHEN (visitor_id IS NULL OR trim(visitor_id) = '') AND (session_id IS NULL OR trim(session_id) = '')
            THEN 'missing_visitor_and_session_id'
    END AS reason
    FROM parsed
)
"""

DUCKDB_SESSIONS = DUCKDB_VALIDATED + r""",
used AS (
    SELECT CASE WHEN trim(visitor_id) <> '' THEN visitor_id END AS visitor_id,
           CASE WHEN trim(session_id) <> '' THEN session_id END AS session_id,
           ts AS event_time, item_id,
           coalesce(CASE WHEN trim(event_type) <> '' THEN event_type END, 'click') AS event_type, from_day
    FROM validated
    WHERE reason IS NULL AND (from_day OR ts < TIMESTAMP '{day_start}')
),
events AS (
    SELECT visitor_id, session_id, event_time, item_id, event_type
    FROM used GROUP BY visitor_id, session_id, event_time, item_id, event_type
),
gaps AS (
    SELECT *, coalesce(epoch_us(event_time) - lag(epoch_us(event_time)) OVER w > {gap_us}, true) AS starts
    FROM events WHERE session_id IS NULL
    WINDOW w AS (PARTITION BY visitor_id ORDER BY event_time, item_id, event_type)
),
numbered AS (
    SELECT *, sum(CAST(starts AS INTEGER)) OVER (PARTITION BY visitor_id ORDER BY event_time, item_id,
        event_type ROWS UNBOUNDED PRECEDING) AS n
    FROM gaps
),
sessions AS (
    SELECT visitor_id, session_id, event_time, item_id, event_type FROM events WHERE session_id IS NOT NULL
    UNION ALL
    SELECT visitor_id,
           visitor_id || ':' || CAST(epoch_ms(min(event_time) OVER (PARTITION BY visitor_id, n)) AS VARCHAR),
           event_time, item_id, event_type
    FROM numbered
),
flagged AS (
    SELECT *, coalesce(lag(item_id) OVER s = item_id, false) AS repeat,
           max(event_time) OVER (PARTITION BY session_id) >= TIMESTAMP '{day_start}' AS on_day
    FROM sessions
    WINDOW s AS (PARTITION BY session_id ORDER BY event_time, item_id, event_type, visitor_id NULLS FIRST)
)
SELECT session_id, visitor_id,
       CAST(row_number() OVER (PARTITION BY session_id ORDER BY event_time, item_id, event_type,
           visitor_id NULLS FIRST) - 1 AS INTEGER) AS position,
       item_id, event_time, event_type
FROM flagged
WHERE on_day AND NOT repeat
"""

DUCKDB_QUARANTINE = DUCKDB_VALIDATED + r"""
SELECT event_time, item_id, visitor_id, session_id, event_type, reason, filename AS source_file
FROM validated WHERE reason IS NOT NULL AND from_day
"""


# --- inputs ---

def write_landing(raw: Path, n_events: int, n_items: int, file_format: str) -> dict[str, int]:
    """N generated events over D-1 and D in ``raw``; returns rows per landing day."""
    from jobs.generate import generate_clickstream, write_landing_zone

    table = generate_clickstream(DAY, 2, n_events, n_items=n_items, seed=1, dirty_share=0.01)
    return write_landing_zone(table, str(raw), file_format)


def landing_files(raw: Path) -> list[str]:
    days = (DAY - dt.timedelta(days=1), DAY)
    return sorted(str(p) for day in days for p in (raw / "clicks" / f"ds={day}").glob("*") if p.is_file()
                  and not p.name.startswith((".", "_")))


# --- the measured runs (each in a fresh process) ---

def run_spark(raw: str, lake: str, scratch: str) -> dict[str, Any]:
    from jobs.sessionize import sessionize
    from jobs.spark import build_session
    from sessionrec.config import load_settings

    start = time.perf_counter()
    spark = build_session("bench-sessionize", master="local[*]", scratch=Path(scratch),
                          driver_memory=load_settings().spark_driver_memory)
    session_seconds = time.perf_counter() - start
    try:
        start = time.perf_counter()
        stats = sessionize(spark, raw, lake, DAY, gap_minutes=GAP_MINUTES, max_quarantine_share=0.05)
        seconds = time.perf_counter() - start
    finally:
        spark.stop()
    return {"seconds": seconds, "session_start_seconds": session_seconds,
            "rows_read": stats["rows_read"] + stats["lookback"]["rows_read"],
            "quarantined": stats["rows_quarantined"], "output": f"{lake}/sessions/ds={DAY}"}


def _duckdb_source(files: list[str], file_format: str) -> str:
    listed = "[" + ", ".join(f"'{path}'" for path in files) + "]"
    options = "filename = true, union_by_name = true"
    return {"parquet": f"read_parquet({listed}, {options})",
            "csv": f"read_csv({listed}, {options}, header = true, all_varchar = true)",
            "jsonl": f"read_json({listed}, {options}, format = 'newline_delimited')"}[file_format]


def duckdb_queries(files: list[str], file_format: str) -> tuple[str, str]:
    """(sessions query, quarantine query) for day DAY over ``files``."""
    values = {"source": _duckdb_source(files, file_format), "day": DAY.isoformat(), "number": NUMBER,
              "start": DAY - dt.timedelta(days=1), "day_start": DAY, "end": DAY + dt.timedelta(days=1),
              "gap_us": GAP_MINUTES * 60_000_000}
    return DUCKDB_SESSIONS.format(**values), DUCKDB_QUARANTINE.format(**values)


def run_duckdb(files: list[str], file_format: str, out: str) -> dict[str, Any]:
    import duckdb

    sessions, quarantine = duckdb_queries(files, file_format)
    Path(out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with duckdb.connect(config={"threads": os.cpu_count() or 1}) as con:
        con.execute(f"COPY ({sessions}) TO '{out}/sessions.parquet' (FORMAT parquet)")
        sessions_seconds = time.perf_counter() - start
        con.execute(f"COPY ({quarantine}) TO '{out}/quarantine.parquet' (FORMAT parquet)")
        quarantined = con.execute(f"SELECT count(*) FROM '{out}/quarantine.parquet'").fetchone()[0]
    return {"seconds": time.perf_counter() - start, "sessions_query_seconds": sessions_seconds,
            "quarantined": quarantined, "output": f"{out}/sessions.parquet"}


# --- comparison and report ---

def output_digest(parquet_glob: str) -> dict[str, int]:
    """Rows, sessions and an order-independent hash of every output row."""
    import duckdb

    with duckdb.connect() as con:
        rows, sessions, digest = con.execute(
            "SELECT count(*), count(DISTINCT session_id), "
            "sum(hash(session_id, visitor_id, position, item_id, epoch_us(event_time), event_type)) "
            f"FROM read_parquet('{parquet_glob}')").fetchone()
    return {"rows": rows, "sessions": sessions, "digest": str(digest)}


def bench_size(n_events: int, n_items: int, file_format: str, root: Path) -> dict[str, Any]:
    raw = root / f"raw-{n_events}"
    start = time.perf_counter()
    per_day = write_landing(raw, n_events, n_items, file_format)
    generate_seconds = time.perf_counter() - start
    files = landing_files(raw)
    spark = in_fresh_process(run_spark, str(raw), str(root / f"lake-{n_events}"), str(root / "spark"))
    duck = in_fresh_process(run_duckdb, files, file_format, str(root / f"duckdb-{n_events}"))
    spark_out, duck_out = output_digest(f"{spark['output']}/*.parquet"), output_digest(duck["output"])
    shutil.rmtree(raw)
    return {
        "events": n_events, "format": file_format, "landing_rows_per_day": per_day,
        "generate_seconds": round(generate_seconds, 1),
        "spark": {**spark, "events_per_s": round(spark["rows_read"] / spark["seconds"])},
        "duckdb": {**duck, "events_per_s": round(spark["rows_read"] / duck["seconds"])},
        "spark_over_duckdb": {"seconds": round(spark["seconds"] / duck["seconds"], 2),
                              "peak_rss": round(spark["peak_rss_mb"] / duck["peak_rss_mb"], 2)},
        "output": {"spark": spark_out, "duckdb": duck_out,
                   "agree": spark_out == duck_out and spark["quarantined"] == duck["quarantined"]},
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'events':>10} {'format':<8} {'engine':<7} {'seconds':>8} {'events/s':>10} {'peak RSS MB':>11} "
              f"{'sessions':>9}  agree  load avg 1m before/after")
    print(header)
    print("-" * len(header))
    for row in rows:
        for engine in ("spark", "duckdb"):
            run = row[engine]
            print(f"{row['events']:>10} {row['format']:<8} {engine:<7} {run['seconds']:>8.1f} "
                  f"{run['events_per_s']:>10} {run['peak_rss_mb']:>11} {row['output'][engine]['sessions']:>9}  "
                  f"{'yes' if row['output']['agree'] else 'NO':<5}  "
                  f"{run['load_avg_before'][0]:.2f} / {run['load_avg_after'][0]:.2f}")
        ratio = row["spark_over_duckdb"]
        print(f"{'':>10} {'':<8} {'ratio':<7} spark/duckdb: {ratio['seconds']:.2f}x time, "
              f"{ratio['peak_rss']:.2f}x peak memory")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000, 10_000_000],
                        help="input sizes to measure (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="one small input of 100,000 events (a smoke run)")
    parser.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet",
                        help="landing-zone file format (default: %(default)s)")
    parser.add_argument("--items", type=int, default=20_000, help="catalogue size (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [100_000] if args.quick else args.events
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="bench-sessionize-") as scratch:
        rows = [bench_size(n, args.items, args.format, Path(scratch)) for n in sizes]
    print_table(rows)
    import duckdb
    import pyspark

    result = {
        "benchmark": "sessionize", "started": started.isoformat(),
        "wall_seconds": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        "config": {"day": DAY.isoformat(), "days": 2, "gap_minutes": GAP_MINUTES, "items": args.items,
                   "dirty_share": 0.01, "spark_master": "local[*]", "pyspark": pyspark.__version__,
                   "duckdb": duckdb.__version__},
        "machine": machine(), "results": rows,
    }
    write_results(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
