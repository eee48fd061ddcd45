"""The synthetic clickstream (jobs/generate.py): shape, determinism, dirt, and learnable sessions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from jobs.generate import generate_clickstream, landing_days, main, write_landing_zone
from jobs.readers import EVENT_SCHEMA

END_DAY = dt.date(2026, 11, 21)
DAYS = 7
FIRST_DAY = END_DAY - dt.timedelta(days=DAYS - 1)
GAP_MS = 30 * 60 * 1000
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def clean() -> pa.Table:
    return generate_clickstream(END_DAY, DAYS, 200_000, n_items=2000, seed=7, dirty_share=0.0)


@pytest.fixture(scope="module")
def dirty() -> pa.Table:
    return generate_clickstream(END_DAY, DAYS, 50_000, n_items=500, seed=3, dirty_share=0.05)


def _epoch_ms(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY_MS


def _sessions(table: pa.Table) -> dict[str, np.ndarray]:
    """Events ordered by visitor and time, with a session number from the 30-minute gap rule."""
    time = table["event_time"].cast(pa.int64()).to_numpy()
    visitor = table["visitor_id"].cast(pa.int64()).to_numpy()
    item = table["item_id"].cast(pa.int64()).to_numpy()
    order = np.lexsort((time, visitor))
    time, visitor, item = time[order], visitor[order], item[order]
    new = np.ones(len(time), dtype=bool)
    new[1:] = (visitor[1:] != visitor[:-1]) | (np.diff(time) > GAP_MS)
    return {"time": time, "visitor": visitor, "item": item, "session": np.cumsum(new) - 1}


def _next_item_pairs(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = _sessions(table)
    same = s["session"][1:] == s["session"][:-1]
    return s["item"][:-1][same], s["item"][1:][same], s["time"][1:][same]


def _most_frequent_next(current: np.ndarray, following: np.ndarray) -> dict[int, int]:
    pairs, counts = np.unique(np.stack([current, following], axis=1), axis=0, return_counts=True)
    order = np.lexsort((-counts, pairs[:, 0]))
    best = {}
    for cur, nxt in pairs[order].tolist():
        best.setdefault(cur, nxt)
    return best


def test_clean_table_follows_the_landing_contract(clean: pa.Table) -> None:
    assert clean.schema == EVENT_SCHEMA
    assert clean.num_rows == 200_000
    assert clean["session_id"].null_count == clean.num_rows
    assert clean["visitor_id"].null_count == 0
    assert pc.min(pc.utf8_length(clean["item_id"])).as_py() > 0
    assert pc.unique(clean["event_type"]).to_pylist() == ["click"]
    time = clean["event_time"].cast(pa.int64()).to_numpy()
    assert np.all(np.diff(time) >= 0), "rows come in arrival (time) order"
    assert time.min() >= _epoch_ms(FIRST_DAY) and time.max() < _epoch_ms(END_DAY) + DAY_MS
    days, counts = np.unique(time // DAY_MS, return_counts=True)
    assert days.tolist() == list(range(_epoch_ms(FIRST_DAY) // DAY_MS, _epoch_ms(END_DAY) // DAY_MS + 1))
    assert counts.min() > 0.8 * clean.num_rows / DAYS


def test_same_seed_same_table_other_seed_other_table() -> None:
    first = generate_clickstream(END_DAY, 2, 20_000, n_items=300, seed=11, dirty_share=0.02)
    assert first.equals(generate_clickstream(END_DAY, 2, 20_000, n_items=300, seed=11, dirty_share=0.02))
    assert not first.equals(generate_clickstream(END_DAY, 2, 20_000, n_items=300, seed=12, dirty_share=0.02))


def test_visitors_have_several_sessions_separated_by_inactivity(clean: pa.Table) -> None:
    s = _sessions(clean)
    n_sessions = int(s["session"][-1]) + 1
    n_visitors = len(np.unique(s["visitor"]))
    assert n_visitors > 10_000
    assert n_sessions / n_visitors > 2.0
    same_visitor = s["visitor"][1:] == s["visitor"][:-1]
    gaps = np.diff(s["time"])[same_visitor]
    within = gaps[gaps <= GAP_MS]
    assert np.median(within) < 2 * 60 * 1000
    # The gap rule separates sessions cleanly: hardly any gap falls just around 30 minutes.
    assert np.mean((gaps > 20 * 60 * 1000) & (gaps < 31 * 60 * 1000)) < 0.0012
    assert np.mean(gaps > 31 * 60 * 1000) > 0.1
    assert np.mean(within < 10 * 60 * 1000) > 0.9
    assert 3.5 < clean.num_rows / n_sessions < 5.5


def test_sessions_cross_utc_midnight(clean: pa.Table) -> None:
    s = _sessions(clean)
    same = s["session"][1:] == s["session"][:-1]
    crossing = same & (s["time"][1:] // DAY_MS != s["time"][:-1] // DAY_MS)
    assert len(np.unique(s["session"][1:][crossing])) >= 10


def test_diurnal_activity(clean: pa.Table) -> None:
    hours = np.bincount(clean["event_time"].cast(pa.int64()).to_numpy() // 3_600_000 % 24, minlength=24)
    assert hours.max() > 3 * hours.min()
    assert hours[18:22].sum() > 2 * hours[2:6].sum()


def test_zipf_like_popularity(clean: pa.Table) -> None:
    counts = np.sort(pc.value_counts(clean["item_id"]).field("counts").to_numpy())[::-1]
    top = int(0.05 * len(counts))
    assert counts[:top].sum() > 0.3 * counts.sum()
    assert counts[-1] < 0.05 * counts[0]


def test_repeats_and_exact_duplicates_occur(clean: pa.Table) -> None:
    current, following, _ = _next_item_pairs(clean)
    assert 0.03 < np.mean(current == following) < 0.25
    duplicates = clean.num_rows - clean.group_by(clean.column_names, use_threads=False).aggregate([]).num_rows
    assert 0.003 * clean.num_rows < duplicates < 0.03 * clean.num_rows


def test_next_item_is_learnable_and_popularity_is_a_real_baseline(clean: pa.Table) -> None:
    """A bigram table fitted on the first 80% of time predicts held-out next items far better than
    most-popular, which in turn is far better than chance."""
    current, following, time = _next_item_pairs(clean)
    train = time < np.quantile(time, 0.8)
    best_next = _most_frequent_next(current[train], following[train])
    predicted = np.array([best_next.get(item, -1) for item in current[~train].tolist()])
    bigram_hit = np.mean(predicted == following[~train])
    items, counts = np.unique(following[train], return_counts=True)
    popular = items[np.argsort(-counts, kind="stable")]
    popular_hit = np.mean(following[~train] == popular[0])
    popular_recall_20 = np.mean(np.isin(following[~train], popular[:20]))
    assert bigram_hit > 5 * popular_hit
    assert bigram_hit > 0.3
    assert popular_recall_20 > 0.1
    assert popular_recall_20 > 20 * 20 / 2000  # chance recall@20 is 20/n_items


def _parsed_ms(event_time: pa.ChunkedArray) -> np.ndarray:
    """Milliseconds of ISO-8601 strings; -1 where unparsable."""
    parsed = pc.strptime(pc.utf8_slice_codeunits(event_time, 0, 19), format="%Y-%m-%dT%H:%M:%S",
                         unit="ms", error_is_null=True)
    fraction = pc.utf8_slice_codeunits(event_time, 19, 24)
    ok = pc.and_(pc.is_valid(parsed), pc.match_substring_regex(fraction, r"^\.\d{3}Z$"))
    return pc.if_else(ok, parsed.cast(pa.int64()), -1).to_numpy(zero_copy_only=False)


def test_dirty_rows_have_the_requested_share(dirty: pa.Table) -> None:
    assert dirty.schema.field("event_time").type == pa.string()
    time = _parsed_ms(dirty["event_time"])
    unparsable = time == -1
    out_of_range = ~unparsable & (time < _epoch_ms(FIRST_DAY) - DAY_MS)
    empty_item = pc.equal(dirty["item_id"], "").to_numpy(zero_copy_only=False)
    no_visitor = dirty["visitor_id"].is_null().to_numpy(zero_copy_only=False)
    defects = {"unparsable": unparsable, "out_of_range": out_of_range, "empty_item": empty_item,
               "no_visitor": no_visitor}
    for name, rows in defects.items():
        assert 0.008 < rows.mean() < 0.018, name
    damaged = unparsable | out_of_range | empty_item | no_visitor
    assert abs(damaged.mean() - 0.05) < 0.002
    assert np.all(time[~damaged] < _epoch_ms(END_DAY) + DAY_MS)
    assert np.all(time[~damaged] >= _epoch_ms(FIRST_DAY))


def test_landing_days_keep_stale_and_garbage_rows_with_their_neighbours(dirty: pa.Table) -> None:
    days = landing_days(dirty["event_time"])
    assert np.all(np.diff(days) >= 0)
    assert days.min() == _epoch_ms(FIRST_DAY) // DAY_MS and days.max() == _epoch_ms(END_DAY) // DAY_MS
    strings = pa.array(["garbage", "2026-11-20T23:59:00.000Z", "1970-01-01T00:00:00.000Z", "nope",
                        "2026-11-21T00:00:01.000Z", "2026-11-19T08:00:00.000Z"])
    day_20 = _epoch_ms(dt.date(2026, 11, 20)) // DAY_MS
    assert landing_days(strings).tolist() == [day_20] * 4 + [day_20 + 1] * 2


def _files(raw: Path) -> list[str]:
    return sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file())


def test_write_parquet_keeps_timestamps_and_rerun_replaces(tmp_path: Path) -> None:
    table = generate_clickstream(END_DAY, 3, 5_000, n_items=200, seed=5, dirty_share=0.0)
    rows = write_landing_zone(table, str(tmp_path))
    assert list(rows) == ["2026-11-19", "2026-11-20", "2026-11-21"] and sum(rows.values()) == 5_000
    day = pq.read_table(tmp_path / "clicks" / "ds=2026-11-20" / "events.parquet")
    assert day.schema == EVENT_SCHEMA and day.num_rows == rows["2026-11-20"]
    assert pc.unique(day["event_time"].cast(pa.date32())).to_pylist() == [dt.date(2026, 11, 20)]
    before = _files(tmp_path)
    assert write_landing_zone(table, str(tmp_path)) == rows
    assert _files(tmp_path) == before, "a rerun writes the same files and leaves no temporary ones"
    write_landing_zone(table, str(tmp_path), "csv")
    assert _files(tmp_path) == [name.replace(".parquet", ".csv") for name in before]


def test_write_csv_and_jsonl_with_iso_times(tmp_path: Path) -> None:
    table = generate_clickstream(END_DAY, 2, 3_000, n_items=200, seed=5, dirty_share=0.0)
    write_landing_zone(table, str(tmp_path / "csv"), "csv")
    write_landing_zone(table, str(tmp_path / "jsonl"), "jsonl")
    csv_day = pcsv.read_csv(tmp_path / "csv" / "clicks" / "ds=2026-11-21" / "events.csv",
                            convert_options=pcsv.ConvertOptions(column_types={"event_time": pa.string()}))
    assert csv_day["event_time"][0].as_py().startswith("2026-11-21T")
    parsed = csv_day["event_time"].cast(pa.timestamp("ms", tz="UTC"))
    on_day = table.filter(pc.equal(table["event_time"].cast(pa.date32()), dt.date(2026, 11, 21)))
    assert parsed.equals(on_day["event_time"])
    lines = (tmp_path / "jsonl" / "clicks" / "ds=2026-11-21" / "events.jsonl").read_text().splitlines()
    assert len(lines) == on_day.num_rows
    record = json.loads(lines[0])
    assert record["session_id"] is None and record["item_id"] == on_day["item_id"][0].as_py()
    assert record["event_time"] == csv_day["event_time"][0].as_py()


def test_dirty_table_lands_only_in_generated_days(tmp_path: Path, dirty: pa.Table) -> None:
    rows = write_landing_zone(dirty, str(tmp_path))
    expected_days = [(FIRST_DAY + dt.timedelta(days=d)).isoformat() for d in range(DAYS)]
    assert list(rows) == expected_days and sum(rows.values()) == dirty.num_rows
    landed = pq.read_table(tmp_path / "clicks" / f"ds={expected_days[0]}" / "events.parquet")
    assert landed.schema.field("event_time").type == pa.string()


@pytest.mark.parametrize("kwargs", [{"days": 0}, {"n_events": 0}, {"n_items": 1}, {"dirty_share": 1.0},
                                    {"n_visitors": 0}])
def test_invalid_arguments(kwargs: dict[str, float]) -> None:
    arguments = {"end_day": END_DAY, "days": 1, "n_events": 100} | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        generate_clickstream(**arguments)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--raw", str(tmp_path), "--end-day", "2026-11-21", "--days", "2", "--events", "4000",
                 "--items", "100", "--format", "jsonl"]) == 0
    assert "4,000 events in 2 day folder(s)" in capsys.readouterr().out
    assert _files(tmp_path) == ["clicks/ds=2026-11-20/events.jsonl", "clicks/ds=2026-11-21/events.jsonl"]
