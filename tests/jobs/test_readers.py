"""Public-format readers (jobs/readers.py) and landing them by UTC day (jobs/landing.py)."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.landing import input_stem, land_file, main
from jobs.readers import EVENT_SCHEMA, FORMATS, ReaderError, iter_events, read_events

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
YOOCHOOSE_CLICKS = FIXTURES / "yoochoose-clicks.dat"
RETAILROCKET = FIXTURES / "retailrocket-events.csv"
OTTO = FIXTURES / "otto.jsonl"
OTTO_SECONDS = FIXTURES / "otto-seconds.jsonl"


def _ms(table: pa.Table) -> list[int]:
    return table["event_time"].cast(pa.int64()).to_pylist()


def _iso_ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def _n_unique(values: pa.ChunkedArray) -> int:
    return len(pc.unique(values))


@pytest.fixture(scope="module")
def yoochoose_dir(shared_data: Path) -> Path:
    return shared_data / "yoochoose-rsc15-100k"


@pytest.fixture(scope="module")
def diginetica_file(shared_data: Path) -> Path:
    return shared_data / "diginetica-sample" / "sample_train-item-views.csv"


# Real samples (counts from SOURCE.txt beside the data).

def test_yoochoose_prepared_train_full(yoochoose_dir: Path) -> None:
    events = read_events(yoochoose_dir / "yoochoose-clicks-100k_train_full.txt", "yoochoose-prepared")
    assert events.schema == EVENT_SCHEMA
    assert events.num_rows == 70_278
    assert _n_unique(events["session_id"]) == 17_794
    assert _n_unique(events["item_id"]) == 2_933
    assert events["visitor_id"].null_count == events.num_rows
    assert pc.unique(events["event_type"]).to_pylist() == ["click"]
    # First data line: 3<TAB>214716935<TAB>1396437466.94
    assert events.slice(0, 1).select(["item_id", "session_id"]).to_pylist() == [
        {"item_id": "214716935", "session_id": "3"}]
    assert _ms(events)[0] == 1_396_437_466_940
    first, last = pc.min_max(events["event_time"]).values()
    assert first.as_py().strftime("%Y-%m-%d %H:%M") == "2014-04-01 01:02"
    assert last.as_py().strftime("%Y-%m-%d %H:%M") == "2014-04-07 00:43"


def test_yoochoose_prepared_test_file(yoochoose_dir: Path) -> None:
    events = read_events(yoochoose_dir / "yoochoose-clicks-100k_test.txt", "yoochoose-prepared")
    assert events.num_rows == 13_568
    assert _n_unique(events["session_id"]) == 3_416


def test_diginetica_sample(diginetica_file: Path) -> None:
    events = read_events(diginetica_file, "diginetica")
    assert events.schema == EVENT_SCHEMA
    assert events.num_rows == 12_391
    assert _n_unique(events["session_id"]) == 2_986
    assert _n_unique(events["item_id"]) == 7_139
    assert events.num_rows - events["visitor_id"].null_count == 4_710  # user_id other than "NA"
    assert pc.unique(events["event_type"]).to_pylist() == ["view"]
    # First data line: 1;NA;81766;526309;2016-05-09 -> midnight of 2016-05-09 + 526309 ms.
    assert events.slice(0, 1).select(["item_id", "visitor_id", "session_id"]).to_pylist() == [
        {"item_id": "81766", "visitor_id": None, "session_id": "1"}]
    assert _ms(events)[0] == _iso_ms("2016-05-09T00:00:00+00:00") + 526_309
    days = pc.unique(events["event_time"].cast(pa.date32())).to_pylist()
    assert min(days) == dt.date(2016, 1, 3) and max(days) == dt.date(2016, 6, 1)


def test_diginetica_times_count_from_the_session_start_day(diginetica_file: Path) -> None:
    """Session 2205's eventdate moves from 05-31 to 06-01 mid-session; its timeframe keeps counting."""
    events = read_events(diginetica_file, "diginetica")
    session = events.filter(pc.equal(events["session_id"], "2205"))
    start = _iso_ms("2016-05-31T00:00:00+00:00")
    timeframes = [37669, 690000, 801831, 930301, 621765, 882792, 528275, 908201, 370520, 841901]
    assert _ms(session) == [start + t for t in timeframes]


# Hand-made fixtures in the published formats.

def test_yoochoose_clicks_fixture() -> None:
    events = read_events(YOOCHOOSE_CLICKS, "yoochoose-clicks")
    assert events.schema == EVENT_SCHEMA
    assert events.num_rows == 12
    assert events["session_id"].to_pylist()[:5] == ["1", "1", "1", "1", "2"]
    assert events["item_id"][0].as_py() == "214536502"
    assert _ms(events)[0] == _iso_ms("2014-04-07T10:51:09.277+00:00")
    assert events["visitor_id"].null_count == 12
    assert pc.unique(events["event_type"]).to_pylist() == ["click"]


def test_retailrocket_fixture() -> None:
    events = read_events(RETAILROCKET, "retailrocket")
    assert events.num_rows == 10
    assert events.slice(6, 1).drop_columns(["event_time"]).to_pylist() == [
        {"item_id": "248676", "visitor_id": "992329", "session_id": None, "event_type": "transaction"}]
    assert _ms(events)[0] == 1_433_221_332_117
    assert events["session_id"].null_count == 10
    assert sorted(pc.unique(events["event_type"]).to_pylist()) == ["addtocart", "transaction", "view"]


def test_otto_fixture_milliseconds() -> None:
    events = read_events(OTTO, "otto")
    assert events.num_rows == 12
    assert events["visitor_id"].to_pylist() == ["12899779"] + ["12899780"] * 5 + ["12899781"] * 6
    assert events["session_id"].null_count == 12
    assert events.slice(5, 1).select(["item_id", "event_type"]).to_pylist() == [
        {"item_id": "1142000", "event_type": "orders"}]
    assert _ms(events)[:2] == [1_661_724_000_278, 1_661_724_000_378]


def test_otto_seconds_are_detected_by_magnitude() -> None:
    events = read_events(OTTO_SECONDS, "otto")
    assert _ms(events) == [1_661_724_000_000, 1_661_724_086_000, 1_661_724_000_000, 1_661_724_058_000]


@pytest.mark.parametrize(("path", "fmt", "block_bytes"), [
    (YOOCHOOSE_CLICKS, "yoochoose-clicks", 200),
    (RETAILROCKET, "retailrocket", 150),
    (OTTO, "otto", 700),
])
def test_small_blocks_stream_the_same_events(path: Path, fmt: str, block_bytes: int) -> None:
    blocks = list(iter_events(path, fmt, block_bytes=block_bytes))
    assert len(blocks) > 1
    assert pa.concat_tables(blocks).equals(read_events(path, fmt))


def test_gzip_input_is_decompressed(tmp_path: Path) -> None:
    packed = tmp_path / "events.csv.gz"
    with RETAILROCKET.open("rb") as source, gzip.open(packed, "wb") as target:
        shutil.copyfileobj(source, target)
    assert read_events(packed, "retailrocket").equals(read_events(RETAILROCKET, "retailrocket"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_header_only_file_has_no_events(tmp_path: Path, fmt: str) -> None:
    headers = {"yoochoose-clicks": "", "yoochoose-prepared": "SessionId\tItemId\tTime\n",
               "diginetica": "session_id;user_id;item_id;timeframe;eventdate\n",
               "retailrocket": "timestamp,visitorid,event,itemid,transactionid\n", "otto": ""}
    path = tmp_path / "empty.txt"
    path.write_text(headers[fmt])
    events = read_events(path, fmt)
    assert events.num_rows == 0 and events.schema == EVENT_SCHEMA


# Errors name the file, the column and what was expected.

@pytest.mark.parametrize(("fmt", "content", "expected"), [
    ("retailrocket", "timestamp,visitor,event,itemid,transactionid\n1433221332117,1,view,2,\n",
     ["visitorid", "timestamp,visitorid,event,itemid,transactionid", "found timestamp,visitor"]),
    ("retailrocket", "timestamp,visitorid,event,itemid,transactionid\n2015-06-02,1,view,2,\n",
     ["'timestamp'", "epoch milliseconds", "2015-06-02"]),
    ("retailrocket", "timestamp,visitorid,event,itemid,transactionid\n1433221332117,1,click,2,\n",
     ["'event'", "one of view, addtocart, transaction", "'click'"]),
    ("yoochoose-prepared", "SessionId\tItemId\tTime\n1\t2\tyesterday\n",
     ["'Time'", "unix seconds", "yesterday"]),
    ("yoochoose-prepared", "SessionId,ItemId,Time\n1,2,1396437466.94\n", ["SessionId", "'\\t'-separated"]),
    ("yoochoose-clicks", "1,2014-04-07 10:51:09,214536502,0\n", ["'timestamp'", "ISO-8601", "10:51:09"]),
    ("yoochoose-clicks", "1,2014-04-07T10:51:09.277Z,214536502\n", ["expected 4", "first line has 3"]),
    ("diginetica", "session_id;user_id;item_id;timeframe;eventdate\n1;NA;2;3;09.05.2016\n",
     ["'eventdate'", "YYYY-MM-DD", "09.05.2016"]),
    ("diginetica", "session_id;user_id;item_id;timeframe;eventdate\n1;NA;2;soon;2016-05-09\n",
     ["'timeframe'", "milliseconds", "soon"]),
    ("otto", '{"session": 1, "evts": [{"aid": 2, "ts": 1661724000278, "type": "clicks"}]}\n',
     ["'events'", "JSON lines", "1 line(s) without it"]),
    ("otto", '{"session": 1, "events": [{"aid": 2, "time": 1661724000278, "type": "clicks"}]}\n',
     ["'events.ts'", "without it"]),
    ("otto", '{"session": 1, "events": [{"aid": "x", "ts": 1661724000278, "type": "clicks"}]}\n',
     ["aid", "JSON lines"]),
    ("otto", '{"session": 1, "events": [{"aid": 2, "ts": 1661724000278, "type": "view"}]}\n',
     ["'events.type'", "clicks, carts, orders", "'view'"]),
])
def test_bad_input_names_file_column_and_expectation(tmp_path: Path, fmt: str, content: str,
                                                     expected: list[str]) -> None:
    path = tmp_path / "bad-input.txt"
    path.write_text(content)
    with pytest.raises(ReaderError) as error:
        read_events(path, fmt)
    message = str(error.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format 'csv': expected one of yoochoose-clicks"):
        read_events(RETAILROCKET, "csv")
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        read_events(tmp_path / "absent.csv", "retailrocket")


# Landing by UTC day.

def _landed(raw: Path) -> dict[str, pa.Table]:
    return {path.relative_to(raw).as_posix(): pq.read_table(path)
            for path in sorted(raw.rglob("*")) if path.is_file()}


def test_landing_splits_by_utc_day(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    rows = land_file(YOOCHOOSE_CLICKS, "yoochoose-clicks", raw)
    assert rows == {dt.date(2014, 4, 7): 8, dt.date(2014, 4, 8): 4}
    files = _landed(raw)
    assert sorted(files) == ["clicks/ds=2014-04-07/yoochoose-clicks.parquet",
                             "clicks/ds=2014-04-08/yoochoose-clicks.parquet"]
    for name, table in files.items():
        assert table.schema == EVENT_SCHEMA
        day = dt.date.fromisoformat(name.split("/")[1].removeprefix("ds="))
        assert pc.unique(table["event_time"].cast(pa.date32())).to_pylist() == [day]
    # Session 3 crosses midnight: its first event lands on the 7th, the rest on the 8th.
    assert files["clicks/ds=2014-04-07/yoochoose-clicks.parquet"]["session_id"].to_pylist()[-1] == "3"


def test_landing_rerun_is_idempotent_and_drops_stale_days(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    land_file(RETAILROCKET, "retailrocket", raw)
    first = _landed(raw)
    land_file(RETAILROCKET, "retailrocket", raw)
    again = _landed(raw)
    assert sorted(again) == sorted(first)
    assert all(again[name].equals(first[name]) for name in first)
    assert not [p for p in raw.rglob(".*")], "temporary files left behind"

    # The same input, now holding only 2 June: its 1 June file disappears, other inputs stay.
    other = raw / "clicks" / "ds=2015-06-01" / "another-input.parquet"
    shutil.copy(raw / "clicks" / "ds=2015-06-01" / "retailrocket-events.parquet", other)
    newer = tmp_path / "newer" / RETAILROCKET.name
    newer.parent.mkdir()
    header, *lines = RETAILROCKET.read_text().splitlines(keepends=True)
    june_2 = _iso_ms("2015-06-02T00:00:00+00:00")
    newer.write_text(header + "".join(line for line in lines if int(line.split(",")[0]) >= june_2))
    assert land_file(newer, "retailrocket", raw) == {dt.date(2015, 6, 2): 7}
    assert sorted(_landed(raw)) == ["clicks/ds=2015-06-01/another-input.parquet",
                                    "clicks/ds=2015-06-02/retailrocket-events.parquet"]


def test_landing_failure_keeps_previous_files(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    land_file(RETAILROCKET, "retailrocket", raw)
    before = _landed(raw)
    broken = tmp_path / "broken" / RETAILROCKET.name
    broken.parent.mkdir()
    broken.write_text(RETAILROCKET.read_text() + "not-a-time,1,view,2,\n")
    with pytest.raises(ReaderError, match="not-a-time"):
        land_file(broken, "retailrocket", raw)
    after = _landed(raw)
    assert sorted(after) == sorted(before) and all(after[n].equals(before[n]) for n in before)
    assert not [p for p in raw.rglob(".*")]


def test_landing_real_sample(tmp_path: Path, diginetica_file: Path) -> None:
    rows = land_file(diginetica_file, "diginetica", tmp_path)
    assert sum(rows.values()) == 12_391
    assert min(rows) == dt.date(2016, 1, 3) and max(rows) == dt.date(2016, 6, 1)
    landed = pq.read_table(tmp_path / "clicks", partitioning="hive")
    assert landed.num_rows == 12_391


def test_input_stem() -> None:
    assert input_stem("/data/yoochoose-clicks-100k_train_full.txt") == "yoochoose-clicks-100k_train_full"
    assert input_stem("events.csv.gz") == "events"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    assert main(["--format", "otto", "--input", str(OTTO), "--raw", str(raw)]) == 0
    assert "12 events landed" in capsys.readouterr().out
    assert sorted(_landed(raw)) == ["clicks/ds=2022-08-28/otto.parquet", "clicks/ds=2022-08-29/otto.parquet"]
    assert main(["--format", "otto", "--input", str(RETAILROCKET), "--raw", str(raw)]) == 2
    assert str(RETAILROCKET) in capsys.readouterr().err
