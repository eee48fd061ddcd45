"""jobs/training_set.py on a hand-built lake: window, time split, filters, vocabulary, output contract."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from jobs.training_set import EmptySplitError, build_training_set, filter_until_stable, parse_args
from model.data import SPLITS, load_split, read_vocabulary
from sessionrec.config import load_settings

D = date(2026, 11, 20)
SPLIT = datetime(2026, 11, 20, tzinfo=UTC)
VALID_SPLIT = datetime(2026, 11, 19, tzinfo=UTC)
SESSION_SCHEMA = pa.schema([
    ("session_id", pa.string()), ("visitor_id", pa.string()), ("position", pa.int32()),
    ("item_id", pa.string()), ("event_time", pa.timestamp("us", tz="UTC")), ("event_type", pa.string()),
])

# Per stored day: session -> [(item, UTC time)]. Day 2026-11-17 is missing (inside the window of 4 days).
# s2 crosses midnight 18 -> 19 (two copies); s7 crosses into D with an event exactly at the split time.
# s4/s5 need two filter rounds with min support 2: R (1 event) goes, so s4 = [X] goes, so X (now 1) goes.
# Test: U is unknown to train (s8 keeps A, B; s9 shrinks to [A] and goes). Valid: C does not occur in
# train_tr (its only train_tr-era event, s2's, is at 11-19 00:05), so s3 shrinks to [A] and goes.
LAKE_DAYS = {
    date(2026, 11, 18): {
        "s1": [("A", "2026-11-18T10:00"), ("B", "2026-11-18T10:05")],
        "s2": [("A", "2026-11-18T23:50"), ("B", "2026-11-18T23:55")],
        "s4": [("R", "2026-11-18T12:00"), ("X", "2026-11-18T12:01")],
        "s5": [("X", "2026-11-18T13:00"), ("Y", "2026-11-18T13:01"), ("Z", "2026-11-18T13:02")],
        "s6": [("Z", "2026-11-18T14:00"), ("Y", "2026-11-18T14:01")],
    },
    date(2026, 11, 19): {
        "s2": [("A", "2026-11-18T23:50"), ("B", "2026-11-18T23:55"), ("C", "2026-11-19T00:05")],
        "s3": [("A", "2026-11-19T09:00"), ("C", "2026-11-19T09:05")],
        "s7": [("A", "2026-11-19T23:50"), ("B", "2026-11-19T23:55")],
    },
    D: {
        "s7": [("A", "2026-11-19T23:50"), ("B", "2026-11-19T23:55"), ("C", "2026-11-20T00:00")],
        "s8": [("A", "2026-11-20T10:00"), ("B", "2026-11-20T10:05"), ("U", "2026-11-20T10:10")],
        "s9": [("U", "2026-11-20T11:00"), ("A", "2026-11-20T11:05")],
    },
}
PARAMS = {"days": 4, "min_item_support": 2, "min_session_length": 2}


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def write_sessions(lake: Path, day: date, sessions: dict[str, list[tuple[str, str]]],
                   crawlers: set[str] | None = None) -> None:
    """One day's sessions as Parquet per docs/CONTRACTS.md section 2 (without the crawler flag, as a day
    written before it existed, unless ``crawlers`` names the flagged sessions)."""
    rows = [{"session_id": sid, "visitor_id": f"v-{sid}", "position": pos, "item_id": item,
             "event_time": _utc(when), "event_type": "click"}
            for sid, events in sessions.items() for pos, (item, when) in enumerate(events)]
    table = pa.Table.from_pylist(rows, schema=SESSION_SCHEMA)
    if crawlers is not None:
        table = table.append_column("crawler", pa.array([row["session_id"] in crawlers for row in rows]))
    folder = lake / "sessions" / f"ds={day.isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-00000.parquet")


def read_rows(folder: Path) -> list[dict]:
    return ds.dataset(folder, format="parquet").to_table().to_pylist()


def by_session(rows: list[dict]) -> dict[str, list[str]]:
    sessions: dict[str, list[str]] = {}
    for row in rows:
        sessions.setdefault(row["session_id"], []).append(row["item_id"])
    return sessions


def snapshot(out: Path) -> dict[str, object]:
    return {**{split: read_rows(out / split) for split in SPLITS},
            "items": pq.read_table(out / "items.parquet").to_pylist(),
            "stats": (out / "stats.json").read_text()}


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    lake = tmp_path_factory.mktemp("lake")
    for day, sessions in LAKE_DAYS.items():
        write_sessions(lake, day, sessions)
    stats = build_training_set(spark, str(lake), D, **PARAMS)
    return lake, stats


@pytest.fixture(scope="module")
def out(built: tuple[Path, dict]) -> Path:
    return built[0] / "training" / f"ds={D.isoformat()}"


def test_window_keeps_latest_copy_of_each_session(built, out: Path) -> None:
    _, stats = built
    assert stats["input_days"] == ["2026-11-18", "2026-11-19", "2026-11-20"]
    assert stats["missing_days"] == ["2026-11-17"]
    assert stats["input_rows_per_day"] == {"2026-11-18": 11, "2026-11-19": 7, "2026-11-20": 8}
    # s2 and s7 once each, from their latest day: 22 events in 9 sessions.
    assert stats["window"] == {"rows": 22, "sessions": 9, "items": 8}
    assert by_session(read_rows(out / "train"))["s2"] == ["A", "B", "C"]


def test_time_split_has_no_leakage(out: Path) -> None:
    train, test = read_rows(out / "train"), read_rows(out / "test")
    train_tr, valid = read_rows(out / "train_tr"), read_rows(out / "valid")
    assert max(row["event_time"] for row in train) < SPLIT
    assert max(row["event_time"] for row in train_tr) < VALID_SPLIT
    assert {row["session_id"] for row in test}.isdisjoint(row["session_id"] for row in train)
    starts: dict[str, datetime] = {}
    for row in test + valid:
        starts[row["session_id"]] = min(starts.get(row["session_id"], row["event_time"]), row["event_time"])
    assert all(start.date() == D for sid, start in starts.items() if sid in by_session(test))
    assert all(start.date() == date(2026, 11, 19) for sid, start in starts.items() if sid in by_session(valid))
    # s7 started before D: it is a train (and valid) session without its event at exactly D 00:00.
    assert by_session(train)["s7"] == ["A", "B"]
    assert by_session(valid) == {"s7": ["A", "B"]}
    assert by_session(train_tr) == {"s1": ["A", "B"], "s2": ["A", "B"], "s5": ["Y", "Z"], "s6": ["Z", "Y"]}


def test_filtering_runs_until_stable(built, out: Path) -> None:
    _, stats = built
    assert [entry["rows"] for entry in stats["filter_log"]] == [16, 14, 13, 13]
    assert stats["filter_rounds"] == 3
    train = by_session(read_rows(out / "train"))
    assert train == {"s1": ["A", "B"], "s2": ["A", "B", "C"], "s3": ["A", "C"], "s5": ["Y", "Z"],
                     "s6": ["Z", "Y"], "s7": ["A", "B"]}
    support: dict[str, int] = {}
    for items in train.values():
        for item in items:
            support[item] = support.get(item, 0) + 1
    assert min(support.values()) >= 2 and min(map(len, train.values())) >= 2
    assert stats["splits"]["train"] == {"rows": 13, "sessions": 6, "items": 5}


def test_filtering_fails_when_not_stable_within_the_bound(spark) -> None:
    rows = [(sid, item, _utc(when), pos) for sid, events in LAKE_DAYS[date(2026, 11, 18)].items()
            for pos, (item, when) in enumerate(events)]
    events = spark.createDataFrame(rows, "session_id string, item_id string, event_time timestamp, position int")
    with pytest.raises(RuntimeError, match="not stable after 2 rounds"):
        filter_until_stable(events, min_item_support=2, min_session_length=2, max_rounds=2)


def test_unknown_items_are_dropped_and_counted(built, out: Path) -> None:
    _, stats = built
    assert by_session(read_rows(out / "test")) == {"s8": ["A", "B"]}
    test = stats["splits"]["test"]
    assert (test["rows_before"], test["unknown_events_dropped"], test["short_sessions_dropped"]) == (5, 2, 1)
    assert (test["rows"], test["sessions"]) == (2, 1)
    valid = stats["splits"]["valid"]
    assert (valid["unknown_events_dropped"], valid["short_sessions_dropped"], valid["rows"]) == (1, 1, 2)
    assert stats["splits"]["train_tr"]["rows"] == 8


def test_item_indexes_follow_train_counts_then_ids(out: Path) -> None:
    vocabulary = read_vocabulary(out / "items.parquet")
    assert vocabulary.item_ids.tolist() == ["A", "B", "C", "Y", "Z"]
    assert vocabulary.counts.tolist() == [4, 3, 2, 2, 2]
    for split in SPLITS:
        for row in read_rows(out / split):
            assert vocabulary.item_ids[row["item_idx"]] == row["item_id"], split


def test_output_follows_contract_and_loads_with_model_data(built, out: Path) -> None:
    _, stats = built
    assert pq.read_schema(out / "items.parquet").field("item_idx").type == pa.int32()
    for split in SPLITS:
        table = ds.dataset(out / split, format="parquet").to_table()
        assert table.schema.names == ["session_id", "item_id", "item_idx", "event_time"]
        assert table.schema.field("item_idx").type == pa.int32()
        assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
        keys = list(zip(table.column("session_id").to_pylist(), table.column("event_time").to_pylist(),
                        strict=True))
        assert keys == sorted(keys), split
        dataset = load_split(out, split)
        assert dataset.n_items == 5
        assert (dataset.n_events, dataset.n_sessions) == (stats["splits"][split]["rows"],
                                                          stats["splits"][split]["sessions"])
    assert json.loads((out / "stats.json").read_text()) == stats
    assert load_split(out, "test").session(0).tolist() == [0, 1]


def test_rerun_gives_identical_output(spark, built, out: Path) -> None:
    lake, _ = built
    before = snapshot(out)
    build_training_set(spark, str(lake), D, **PARAMS)
    assert snapshot(out) == before
    assert sorted(p.name for p in (lake / "training").iterdir()) == [f"ds={D.isoformat()}"]


def bot(day: str, clicks: int) -> list[tuple[str, str]]:
    """A crawler's session on the items of the scenario, one click a second from 03:00."""
    return [("ABCYZ"[i % 5], f"{day}T03:{i // 60:02d}:{i % 60:02d}") for i in range(clicks)]


def test_crawler_sessions_stay_out_of_every_split(spark, built, out: Path, tmp_path: Path) -> None:
    """Crawlers of the training days and of the test day add nothing, as if they were not in the lake;
    a session flagged only on an earlier day's copy counts by its latest copy."""
    days = {day: dict(sessions) for day, sessions in LAKE_DAYS.items()}
    days[date(2026, 11, 18)]["bot-1"] = bot("2026-11-18", 900)
    days[date(2026, 11, 19)]["bot-2"] = bot("2026-11-19", 300)
    days[D]["bot-3"] = bot("2026-11-20", 600)
    flagged = {date(2026, 11, 18): {"bot-1", "s2"}, date(2026, 11, 19): {"bot-2"}, D: {"bot-3"}}
    lake = tmp_path / "lake"
    for day, sessions in days.items():
        write_sessions(lake, day, sessions, crawlers=flagged[day])
    stats = build_training_set(spark, str(lake), D, **PARAMS)
    assert stats["crawlers_dropped"] == {"rows": 1800, "sessions": 3}
    assert stats["window"] == {"rows": 22 + 1800, "sessions": 9 + 3, "items": 8}
    clean = snapshot(out)
    with_bots = snapshot(lake / "training" / f"ds={D.isoformat()}")
    assert {key: with_bots[key] for key in (*SPLITS, "items")} == {key: clean[key] for key in (*SPLITS, "items")}


def test_a_crawler_flag_of_another_type_is_an_error(spark, tmp_path: Path) -> None:
    folder = tmp_path / "sessions" / f"ds={D.isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"session_id": ["s"], "item_id": ["A"], "position": pa.array([0], pa.int32()),
                             "event_time": pa.array([_utc("2026-11-20T10:00")], pa.timestamp("us", "UTC")),
                             "crawler": ["yes"]}), folder / "part-0.parquet")
    with pytest.raises(ValueError, match=r"ds=2026-11-20: column 'crawler' is string; expected boolean"):
        build_training_set(spark, str(tmp_path), D, **PARAMS)


def test_missing_day_d_is_an_error(spark, tmp_path: Path) -> None:
    write_sessions(tmp_path, date(2026, 11, 19), LAKE_DAYS[date(2026, 11, 19)])
    with pytest.raises(FileNotFoundError, match=f"sessions/ds={D.isoformat()}"):
        build_training_set(spark, str(tmp_path), D, **PARAMS)


def test_wrong_input_schema_names_file_and_column(spark, tmp_path: Path) -> None:
    folder = tmp_path / "sessions" / f"ds={D.isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"session_id": ["s"], "item_id": ["A"], "position": pa.array([0], pa.int32()),
                             "event_time": ["2026-11-20T10:00:00Z"]}), folder / "part-0.parquet")
    with pytest.raises(ValueError, match=r"ds=2026-11-20: column 'event_time' is string; expected timestamp"):
        build_training_set(spark, str(tmp_path), D, **PARAMS)


def test_empty_test_split_is_an_error_and_writes_nothing(spark, tmp_path: Path) -> None:
    write_sessions(tmp_path, date(2026, 11, 19), LAKE_DAYS[date(2026, 11, 19)])
    write_sessions(tmp_path, D, {"s7": LAKE_DAYS[D]["s7"], "s9": LAKE_DAYS[D]["s9"]})
    with pytest.raises(EmptySplitError, match=r"ds=2026-11-20: the test split is empty \(1 sessions start"):
        build_training_set(spark, str(tmp_path), D, days=2, min_item_support=1, min_session_length=2)
    assert not (tmp_path / "training").exists()


def test_cli_defaults_come_from_settings() -> None:
    settings = load_settings(env={"SESSIONREC_TRAINING_DAYS": "3", "SESSIONREC_LAKE": "/data/lake"})
    args = parse_args(["--ds", "2026-11-20"], settings)
    assert (args.lake, args.ds, args.days, args.min_item_support, args.min_session_length, args.master) == (
        "/data/lake", D, 3, 5, 2, None)
    with pytest.raises(SystemExit):
        parse_args(["--ds", "20.11.2026"], settings)


def test_runs_as_a_script(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "jobs" / "training_set.py"
    result = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "--min-item-support" in result.stdout
