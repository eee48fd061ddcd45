"""jobs/sessionize.py on tiny landing zones written in every accepted format, with the shared local Spark."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import sysconfig
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.raw_input import FileCount, InputCounts, RawInputError, check_quarantine_share
from jobs.sessionize import (
    DEFAULT_CRAWLER_RULES,
    CrawlerRules,
    main,
    parse_args,
    session_rows,
    session_stats,
    sessionize,
)
from sessionrec.config import load_settings

DAY = date(2026, 11, 21)
PREVIOUS = date(2026, 11, 20)
MAX_SHARE = 0.5  # the scenario is deliberately dirty


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ms(text: str) -> int:
    return int(utc(text).timestamp() * 1000)


PREVIOUS_CSV = """event_time,item_id,visitor_id
2026-11-20T10:00:00Z,x1,early
2026-11-20T23:40:00Z,a,night
2026-11-20T23:55:00Z,b,night
2026-11-20T12:00:00Z,,early
2026-11-21T01:00:00Z,z,early
"""

# 7 good rows (one resent from D-1, one exact duplicate), then one row per quarantine reason (two for items).
DAY_CSV = """event_time,item_id,visitor_id,event_type,note
2026-11-21T00:10:00Z,c,night,view,
2026-11-21T00:20:00Z,c,night,click,
2026-11-20T23:55:00Z,b,night,,resent
2026-11-21T12:00:00+02:00,g1,gap,,
2026-11-21T10:30:00Z,g2,gap,,
2026-11-21T11:00:01Z,g3,gap,,
2026-11-21T10:30:00Z,g2,gap,,again
2026-11-21T09:00:00Z,,v1,,no item
2026-11-21T09:00:00Z,   ,v1,,blank item
,i,v1,,no time
yesterday,i,v1,,keep-me
2026-11-22T00:00:00Z,i,v1,,tomorrow
2026-11-19T23:59:59Z,i,v1,,two days ago
2026-11-21T09:00:00Z,i,,,nobody
2026-11-21T09:00:00Z,i,v1,click,x,EXTRA
"""

DAY_JSONL = "".join(line + "\n" for line in [
    json.dumps({"event_time": ms("2026-11-21T10:00:00"), "item_id": "s1", "session_id": "S-1"}),
    json.dumps({"event_time": ms("2026-11-21T12:00:00") // 1000, "item_id": "s2", "session_id": "S-1"}),
    json.dumps({"event_time": str(ms("2026-11-21T13:00:00") // 1000), "item_id": 7, "visitor_id": "json"}),
    json.dumps({"event_time": ms("2026-11-21T14:00:00"), "item_id": "j2", "visitor_id": "json",
                "session_id": "S-2"}),
    '{"event_time": 1795341600, "item_id": ',
])

DAY_PARQUET = pa.table({
    "event_time": pa.array([utc("2026-11-21T15:00:00"), utc("2026-11-21T15:05:00")], pa.timestamp("us", "UTC")),
    "item_id": pa.array([42, 43], pa.int64()),
    "visitor_id": ["pq", "pq"],
    "event_type": ["view", "view"],
})

EXPECTED_DAY = {
    f"night:{ms('2026-11-20T23:40:00')}": ["a", "b", "c"],
    f"gap:{ms('2026-11-21T10:00:00')}": ["g1", "g2"],
    f"gap:{ms('2026-11-21T11:00:01')}": ["g3"],
    "S-1": ["s1", "s2"],
    f"json:{ms('2026-11-21T13:00:00')}": ["7"],
    "S-2": ["j2"],
    f"pq:{ms('2026-11-21T15:00:00')}": ["42", "43"],
}


def write_scenario(raw: Path, landing_file) -> None:
    landing_file(raw, PREVIOUS, "previous.csv", PREVIOUS_CSV)
    landing_file(raw, DAY, "clicks.csv", DAY_CSV)
    landing_file(raw, DAY, "events.jsonl", DAY_JSONL)
    landing_file(raw, DAY, "more.parquet", DAY_PARQUET)


def rows_of(folder: Path) -> list[dict]:
    return pq.read_table(folder).to_pylist()


def sessions_of(lake: Path, day: date) -> dict[str, list[dict]]:
    """Events per session of one day's output, in position order."""
    grouped: dict[str, list[dict]] = {}
    for row in sorted(rows_of(lake / "sessions" / f"ds={day}"), key=lambda r: (r["session_id"], r["position"])):
        grouped.setdefault(row["session_id"], []).append(row)
    return grouped


def items_of(sessions: dict[str, list[dict]]) -> dict[str, list[str]]:
    return {sid: [event["item_id"] for event in events] for sid, events in sessions.items()}


def snapshot(lake: Path, day: date) -> dict[str, object]:
    stats = json.loads((lake / "stats" / f"ds={day}.json").read_text())
    stats.pop("elapsed_s")
    return {
        "sessions": sorted(rows_of(lake / "sessions" / f"ds={day}"), key=lambda r: (r["session_id"], r["position"])),
        "quarantine": sorted(rows_of(lake / "quarantine" / f"ds={day}"), key=json.dumps),
        "stats": stats,
    }


@pytest.fixture(scope="module")
def scenario(spark, landing_file, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    """(raw, lake, stats of D-1, stats of D): D-1 sessionized first (its own D-2 is missing), then D."""
    root = tmp_path_factory.mktemp("sessionize")
    raw, lake = root / "raw", root / "lake"
    write_scenario(raw, landing_file)
    previous = sessionize(spark, str(raw), str(lake), PREVIOUS, max_quarantine_share=MAX_SHARE)
    day = sessionize(spark, str(raw), str(lake), DAY, max_quarantine_share=MAX_SHARE)
    return raw, lake, previous, day


def test_gap_of_exactly_the_limit_continues_and_anything_longer_starts_a_session(spark) -> None:
    events = spark.createDataFrame(
        [("v", None, utc("2026-11-21T10:00:00"), "i1", "click"),
         ("v", None, utc("2026-11-21T10:30:00"), "i2", "click"),
         ("v", None, datetime(2026, 11, 21, 11, 0, 0, 1, tzinfo=UTC), "i3", "click"),
         ("w", None, utc("2026-11-21T10:00:00"), "i1", "click"),
         ("w", None, utc("2026-11-21T10:45:00"), "i2", "click")],
        "visitor_id string, session_id string, event_time timestamp, item_id string, event_type string",
    ).withColumn("from_day", F.lit(True))
    sessions = {row["item_id"] + row["visitor_id"]: row["session_id"]
                for row in session_rows(events, DAY, 30, False, DEFAULT_CRAWLER_RULES)[0].collect()}
    assert sessions["i1v"] == sessions["i2v"] == f"v:{ms('2026-11-21T10:00:00')}"
    assert sessions["i3v"] == f"v:{ms('2026-11-21T11:00:00')}"
    assert sessions["i1w"] != sessions["i2w"]
    longer = {row["item_id"] + row["visitor_id"]: row["session_id"]
              for row in session_rows(events, DAY, 45, False, DEFAULT_CRAWLER_RULES)[0].collect()}
    assert longer["i1w"] == longer["i2w"]


def test_sessions_of_the_day(scenario) -> None:
    _, lake, _, _ = scenario
    assert items_of(sessions_of(lake, DAY)) == EXPECTED_DAY


def test_session_crossing_midnight_is_on_both_days_and_longer_on_the_second(scenario) -> None:
    _, lake, _, stats = scenario
    night = f"night:{ms('2026-11-20T23:40:00')}"
    before, after = sessions_of(lake, PREVIOUS), sessions_of(lake, DAY)
    assert items_of(before) == {night: ["a", "b"], f"early:{ms('2026-11-20T10:00:00')}": ["x1"]}
    assert [e["item_id"] for e in after[night]] == ["a", "b", "c"]
    assert stats["sessions_from_previous_day"] == 1


def test_output_follows_the_contract(scenario) -> None:
    _, lake, _, _ = scenario
    schema = pq.read_table(lake / "sessions" / f"ds={DAY}").schema
    assert [(f.name, f.type) for f in schema] == [
        ("session_id", pa.string()), ("visitor_id", pa.string()), ("position", pa.int32()),
        ("item_id", pa.string()), ("event_time", pa.timestamp("us", "UTC")), ("event_type", pa.string()),
        ("crawler", pa.bool_())]
    for events in sessions_of(lake, DAY).values():
        assert [e["position"] for e in events] == list(range(len(events)))
        assert [e["event_time"] for e in events] == sorted(e["event_time"] for e in events)


def test_every_timestamp_format_is_parsed(scenario) -> None:
    _, lake, _, _ = scenario
    times = {e["item_id"]: e["event_time"] for events in sessions_of(lake, DAY).values() for e in events}
    assert times["c"] == utc("2026-11-21T00:10:00")  # ISO with Z (CSV)
    assert times["g1"] == utc("2026-11-21T10:00:00")  # ISO with an offset (CSV)
    assert times["s1"] == utc("2026-11-21T10:00:00")  # epoch milliseconds (JSON number)
    assert times["s2"] == utc("2026-11-21T12:00:00")  # epoch seconds (JSON number)
    assert times["7"] == utc("2026-11-21T13:00:00")  # epoch seconds (JSON string), numeric item id
    assert times["42"] == utc("2026-11-21T15:00:00")  # Parquet timestamp, int64 item id


def test_source_session_ids_are_used_as_is(scenario) -> None:
    _, lake, _, _ = scenario
    sessions = sessions_of(lake, DAY)
    assert [e["item_id"] for e in sessions["S-1"]] == ["s1", "s2"]  # two hours apart, still one session
    assert [e["visitor_id"] for e in sessions["S-1"]] == [None, None]
    assert [(e["item_id"], e["visitor_id"]) for e in sessions["S-2"]] == [("j2", "json")]


def test_event_type_defaults_to_click_and_repeats_are_collapsed(scenario) -> None:
    _, lake, _, stats = scenario
    night = sessions_of(lake, DAY)[f"night:{ms('2026-11-20T23:40:00')}"]
    assert [(e["item_id"], e["event_type"]) for e in night] == [("a", "click"), ("b", "click"), ("c", "view")]
    assert stats["repeats_collapsed"] == 1


def test_duplicates_are_dropped_and_counted(scenario) -> None:
    _, lake, _, stats = scenario
    # g2 twice in D's file, and b resent in D's file although D-1's file has it.
    assert stats["duplicates_dropped"] == 2
    items = [e["item_id"] for events in sessions_of(lake, DAY).values() for e in events]
    assert items.count("g2") == 1 and items.count("b") == 1


def test_every_quarantine_reason_with_original_values(scenario) -> None:
    _, lake, _, stats = scenario
    rows = rows_of(lake / "quarantine" / f"ds={DAY}")
    by_reason: dict[str, int] = {}
    for row in rows:
        by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + 1
    assert by_reason == {"malformed_record": 2, "missing_item_id": 2, "missing_event_time": 1,
                         "unparsable_event_time": 1, "event_time_out_of_range": 2,
                         "missing_visitor_and_session_id": 1}
    assert stats["quarantined_by_reason"] == by_reason
    unparsable = next(r for r in rows if r["reason"] == "unparsable_event_time")
    assert (unparsable["event_time"], unparsable["note"]) == ("yesterday", "keep-me")
    assert unparsable["source_file"].endswith(f"ds={DAY}/clicks.csv")
    malformed = {Path(r["source_file"]).name: r["_corrupt_record"] for r in rows if r["reason"] == "malformed_record"}
    assert malformed["clicks.csv"].endswith("EXTRA") and malformed["events.jsonl"].startswith('{"event_time"')
    assert not any("previous.csv" in r["source_file"] for r in rows)


def test_lookback_rows_judged_by_their_own_day(scenario) -> None:
    _, lake, previous, stats = scenario
    assert previous["quarantined_by_reason"] == {"missing_item_id": 1, "event_time_out_of_range": 1}
    assert previous["lookback"] == {"rows_read": 0, "rows_used": 0, "files": []}  # D-2 missing: first day
    # D-1's row timed on D ("z") was quarantined by D-1's run: D neither uses nor quarantines it again.
    assert stats["lookback"]["rows_read"] == 5 and stats["lookback"]["rows_used"] == 3
    items = [e["item_id"] for events in sessions_of(lake, DAY).values() for e in events]
    assert "z" not in items and "x1" not in items


def test_stats_of_the_day(scenario) -> None:
    _, lake, _, stats = scenario
    assert json.loads((lake / "stats" / f"ds={DAY}.json").read_text()) == stats
    files = {Path(f["path"]).name: (f["rows"], f["used"]) for f in stats["files"]}
    assert files == {"clicks.csv": (15, 7), "events.jsonl": (5, 4), "more.parquet": (2, 2)}
    assert (stats["rows_read"], stats["rows_kept"], stats["rows_quarantined"]) == (22, 13, 9)
    assert (stats["sessions"], stats["events"], stats["distinct_items"]) == (7, 12, 12)
    assert stats["events_on_day"] == 10
    assert (stats["crawler_sessions"], stats["crawler_events"]) == (0, 0)
    assert stats["crawler_rules"] == {"max_events": 200, "max_events_per_minute": 30.0, "rate_min_events": 20}
    assert stats["session_length"] == {
        "min": 1, "median": 2, "p90": 3, "max": 3, "mean": round(12 / 7, 3),
        "histogram": {"1": 3, "2": 3, "3": 1, "4": 0, "5": 0, "6-10": 0, "11-20": 0, "21-50": 0,
                      "51-100": 0, "101+": 0}}
    assert stats["outputs"] == {"sessions": f"{lake}/sessions/ds={DAY}",
                                "quarantine": f"{lake}/quarantine/ds={DAY}",
                                "stats": f"{lake}/stats/ds={DAY}.json"}


def test_rerun_replaces_the_day_with_identical_output_and_ids(spark, scenario) -> None:
    raw, lake, _, _ = scenario
    first = snapshot(lake, DAY)
    files = sorted(p.name for p in (lake / "sessions" / f"ds={DAY}").glob("*.parquet"))
    sessionize(spark, str(raw), str(lake), DAY, max_quarantine_share=MAX_SHARE)
    assert snapshot(lake, DAY) == first
    assert len(sorted((lake / "sessions" / f"ds={DAY}").glob("*.parquet"))) == len(files)
    assert not any((lake / "_staging").iterdir())


def test_cli_end_to_end_keeps_repeats_and_leaves_the_session_running(spark, scenario, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    raw, _, _, _ = scenario
    lake = tmp_path / "lake"
    code = main(["--raw", str(raw), "--lake", str(lake), "--ds", DAY.isoformat(), "--keep-repeats",
                 "--max-quarantine-share", str(MAX_SHARE), "--gap-minutes", "30", "--crawler-max-events", "3"])
    assert code == 0
    assert "7 sessions, 13 events (1 crawler sessions)" in capsys.readouterr().out
    night = sessions_of(lake, DAY)[f"night:{ms('2026-11-20T23:40:00')}"]
    assert [(e["item_id"], e["crawler"]) for e in night] == [("a", True), ("b", True), ("c", True), ("c", True)]
    assert json.loads((lake / "stats" / f"ds={DAY}.json").read_text())["repeats_collapsed"] == 0
    assert spark.range(3).count() == 3


def test_cli_defaults_come_from_settings() -> None:
    settings = load_settings(env={"SESSIONREC_LAKE": "/data/lake", "SESSIONREC_GAP_MINUTES": "45",
                                  "SESSIONREC_MAX_QUARANTINE_SHARE": "0.2"})
    args = parse_args(["--ds", DAY.isoformat()], settings)
    assert (args.raw, args.lake, args.ds, args.gap_minutes, args.keep_repeats, args.max_quarantine_share,
            args.master) == ("/data/lake/raw", "/data/lake", DAY, 45, False, 0.2, None)
    assert (args.crawler_max_events, args.crawler_max_events_per_minute, args.crawler_rate_min_events) == \
        (200, 30.0, 20)
    with pytest.raises(SystemExit):
        parse_args(["--ds", "21.11.2026"], settings)


def test_runs_as_a_script_without_the_project_installed(tmp_path: Path) -> None:
    """As spark-submit runs it: -S skips the .pth of the editable install, PYTHONPATH still finds pyspark."""
    script = Path(__file__).resolve().parents[2] / "jobs" / "sessionize.py"
    result = subprocess.run([sys.executable, "-S", str(script), "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False,
                            env={"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": os.environ["PATH"]})
    assert result.returncode == 0, result.stderr
    assert "--keep-repeats" in result.stdout


def test_missing_day_is_an_error_naming_the_path(spark, tmp_path: Path, landing_file) -> None:
    landing_file(tmp_path / "raw", PREVIOUS, "previous.csv", PREVIOUS_CSV)
    with pytest.raises(RawInputError, match=rf"raw/clicks/ds={DAY}: landing zone of day {DAY} not found"):
        sessionize(spark, str(tmp_path / "raw"), str(tmp_path / "lake"), DAY)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("no-item.csv", "event_time,visitor_id\n2026-11-21T10:00:00Z,v\n",
     r"no-item.csv: required column 'item_id' is missing; found columns: event_time, visitor_id; expected item_id"),
    ("no-ids.jsonl", [{"event_time": 1795341600, "item_id": "i"}],
     r"no-ids.jsonl: required column 'visitor_id' is missing; .* expected visitor_id or session_id"),
    ("bool-time.parquet", pa.table({"event_time": [True], "item_id": ["i"], "visitor_id": ["v"]}),
     r"bool-time.parquet: column 'event_time' has type boolean; expected ISO-8601 strings, epoch numbers"),
    ("broken.parquet", "this is not parquet", r"broken.parquet: cannot be read as parquet"),
    ("notes.txt", "hello", r"notes.txt: unexpected entry in the landing zone; expected files ending in .csv"),
])
def test_whole_file_problems_name_the_file(spark, tmp_path: Path, landing_file, name: str, content: object,
                                           message: str) -> None:
    raw = tmp_path / "raw"
    landing_file(raw, DAY, "good.csv", "event_time,item_id,visitor_id\n2026-11-21T10:00:00Z,i,v\n")
    landing_file(raw, DAY, name, content)
    with pytest.raises(RawInputError, match=message):
        sessionize(spark, str(raw), str(tmp_path / "lake"), DAY)


def test_too_many_bad_rows_fail_with_counts_and_write_nothing(spark, tmp_path: Path, landing_file) -> None:
    raw, lake = tmp_path / "raw", tmp_path / "lake"
    landing_file(raw, DAY, "dirty.csv", "event_time,item_id,visitor_id\n2026-11-21T10:00:00Z,i,v\n"
                 "2026-11-21T10:00:00Z,,v\nnever,i,v\n" + "2026-11-21T11:00:00Z,j,v\n" * 17)
    with pytest.raises(RawInputError, match=r"2 of 20 rows \(10.00%\) failed validation, more than the allowed "
                                            r"5.00% .* missing_item_id=1, unparsable_event_time=1; "
                                            r"worst files: .*dirty.csv: 2 of 20"):
        sessionize(spark, str(raw), str(lake), DAY)
    assert not [path for path in lake.rglob("*") if path.is_file()]  # the staged quarantine is removed


def test_a_day_without_a_valid_row_writes_no_sessions_and_counts_it(spark, tmp_path: Path, landing_file) -> None:
    # Nothing reaches the sessions pass: its counts come from observations that must still be delivered.
    raw, lake = tmp_path / "raw", tmp_path / "lake"
    landing_file(raw, DAY, "bad.csv", "event_time,item_id,visitor_id\n2020-01-01T00:00:00Z,i,v\nnever,i,v\n")
    stats = sessionize(spark, str(raw), str(lake), DAY, max_quarantine_share=1.0)
    assert (stats["rows_read"], stats["rows_quarantined"], stats["sessions"], stats["events"]) == (2, 2, 0, 0)
    assert stats["session_length"]["median"] is None and stats["distinct_items"] == 0
    assert sessions_of(lake, DAY) == {}


def test_a_lookback_file_broken_past_its_header_fails_naming_the_landing_zone(spark, tmp_path: Path,
                                                                             landing_file) -> None:
    # The look-back files are first read by the sessions pass: its failure is an input error too.
    raw, lake = tmp_path / "raw", tmp_path / "lake"
    landing_file(raw, DAY, "day.csv", "event_time,item_id,visitor_id\n2026-11-21T10:00:00Z,i,v\n")
    rows = "".join(f"2026-11-20T{h:02d}:00:00Z,i{h},v\n" for h in range(24)) * 400
    broken = gzip.compress(("event_time,item_id,visitor_id\n" + rows).encode())
    path = raw / "clicks" / f"ds={PREVIOUS}" / "previous.csv.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(broken[: len(broken) // 2])
    with pytest.raises(RawInputError, match=r"reading the landing zone for 2026-11-21 .*ds=2026-11-21 and the day "
                                            r"before\) failed"):
        sessionize(spark, str(raw), str(lake), DAY)
    assert not [p for p in lake.rglob("*") if p.is_file()]


def test_quarantine_share_limit_is_inclusive_and_ignores_the_lookback_day() -> None:
    counts = InputCounts("raw/clicks/ds=2026-11-21", [
        FileCount("day.csv", lookback=False, rows=20, used=18, rejected={"missing_item_id": 2}),
        FileCount("previous.csv", lookback=True, rows=10, used=0, rejected={"missing_item_id": 10})])
    check_quarantine_share(counts, 0.1)
    with pytest.raises(RawInputError, match=r"2 of 20 rows \(10.00%\)"):
        check_quarantine_share(counts, 0.09)


def test_session_length_summary_uses_nearest_rank_percentiles(spark) -> None:
    lengths = [1] * 5 + [2] * 3 + [7, 150]
    start = datetime(2026, 11, 21, 8, tzinfo=UTC)
    events = spark.createDataFrame(
        [(f"v{n}", None, start + timedelta(minutes=i), f"i{i}", "click", True)
         for n, length in enumerate(lengths) for i in range(length)],
        "visitor_id string, session_id string, event_time timestamp, item_id string, event_type string, "
        "from_day boolean")
    rows, observations = session_rows(events, DAY, 30, keep_repeats=False, crawlers=CrawlerRules(200, 30.0, 20))
    assert rows.count() == sum(lengths)
    summary = session_stats(observations, keep_repeats=False, distinct_items=150)["session_length"]
    # nearest rank: the 5th of 10 lengths is 1, the 9th is 7
    assert (summary["min"], summary["median"], summary["p90"], summary["max"]) == (1, 1, 7, 150)
    assert summary["mean"] == round(sum(lengths) / len(lengths), 3)
    assert summary["histogram"] == {"1": 5, "2": 3, "3": 0, "4": 0, "5": 0, "6-10": 1, "11-20": 0, "21-50": 0,
                                    "51-100": 0, "101+": 1}


def clicks(visitor: str, count: int, start: str, seconds_apart: float) -> list[dict]:
    """``count`` clicks of one visitor on distinct consecutive items, evenly spaced."""
    first = utc(start).timestamp()
    return [{"event_time": round((first + i * seconds_apart) * 1000), "item_id": f"i{i % 97}",
             "visitor_id": visitor} for i in range(count)]


def test_crawler_sessions_are_flagged_and_counted_not_dropped(spark, tmp_path: Path, landing_file) -> None:
    raw, lake = tmp_path / "raw", tmp_path / "lake"
    landing_file(raw, DAY, "visits.jsonl",
                 clicks("bot", 2000, "2026-11-21T03:00:00", 0.15)        # 2,000 clicks in 5 minutes
                 + clicks("scraper", 25, "2026-11-21T04:00:00", 1.0)    # 60 a minute, sustained
                 + clicks("burst", 19, "2026-11-21T05:00:00", 1.0)      # as fast, but too short to count
                 + clicks("reader", 40, "2026-11-21T06:00:00", 20.0)    # long and slow: a person
                 + clicks("limit", 200, "2026-11-21T07:00:00", 2.0))    # exactly 200 events at 30 a minute
    stats = sessionize(spark, str(raw), str(lake), DAY)
    flags = {sid.split(":")[0]: {e["crawler"] for e in events} for sid, events in sessions_of(lake, DAY).items()}
    assert flags == {"bot": {True}, "scraper": {True}, "burst": {False}, "reader": {False}, "limit": {False}}
    assert (stats["crawler_sessions"], stats["crawler_events"]) == (2, 2025)
    assert (stats["sessions"], stats["events"]) == (5, 2284)  # still written, with all their events

    stricter = sessionize(spark, str(raw), str(lake), DAY, crawlers=CrawlerRules(199, 29.0, 19))
    assert stricter["crawler_sessions"] == 5 - 1  # only the reader is a person now
    with pytest.raises(ValueError, match="crawler rules need"):
        sessionize(spark, str(raw), str(lake), DAY, crawlers=CrawlerRules(200, 0.0, 20))
