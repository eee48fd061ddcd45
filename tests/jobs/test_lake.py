"""jobs/lake.py on local paths: the staged swap by rename, file helpers, UTC midnight, Parquet timestamps."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.lake import (
    delete,
    exists,
    midnight,
    replace_by_rename,
    require_micros_timestamps,
    size,
    staging_folder,
    upload,
    write_text,
)
from jobs.spark import PARQUET_TIMESTAMP_TYPE_KEY


def folder_with(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def contents(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir()) if not p.name.startswith(".")}


def test_midnight_is_the_start_of_the_utc_day() -> None:
    assert midnight(date(2026, 11, 21)) == datetime(2026, 11, 21, tzinfo=UTC)
    assert midnight(date(2026, 11, 21)).tzinfo is UTC


def test_replace_by_rename_replaces_an_existing_folder(spark, tmp_path: Path) -> None:
    target = folder_with(tmp_path / "lake" / "sessions" / "ds=2026-11-21", {"old.txt": "old", "gone.txt": "x"})
    staged = folder_with(tmp_path / "lake" / "_staging" / "sessions", {"new.txt": "new"})
    previous = tmp_path / "lake" / "_staging" / "previous-sessions"

    replace_by_rename(spark, str(staged), str(target), str(previous))

    assert contents(target) == {"new.txt": "new"}
    assert not staged.exists()
    assert not previous.exists()


def test_replace_by_rename_creates_a_missing_parent(spark, tmp_path: Path) -> None:
    staged = folder_with(tmp_path / "_staging" / "stats", {"a.txt": "a"})
    target = tmp_path / "lake" / "stats" / "ds=2026-11-21"

    replace_by_rename(spark, str(staged), str(target), str(tmp_path / "_staging" / "previous"))

    assert contents(target) == {"a.txt": "a"}


def test_replace_by_rename_ignores_a_leftover_previous_folder(spark, tmp_path: Path) -> None:
    target = folder_with(tmp_path / "training" / "ds=2026-11-21", {"old.txt": "old"})
    staged = folder_with(tmp_path / "training" / "_ds=2026-11-21.tmp", {"new.txt": "new"})
    previous = folder_with(tmp_path / "training" / "_ds=2026-11-21.old", {"stale.txt": "stale"})

    replace_by_rename(spark, str(staged), str(target), str(previous))

    assert contents(target) == {"new.txt": "new"}
    assert not previous.exists()


def test_a_failed_swap_restores_the_old_folder(spark, tmp_path: Path) -> None:
    target = folder_with(tmp_path / "sessions" / "ds=2026-11-21", {"old.txt": "old"})
    missing = tmp_path / "_staging" / "never-written"
    previous = tmp_path / "_staging" / "previous"

    with pytest.raises(OSError, match=re.escape(f"could not rename {missing} to {target}")):
        replace_by_rename(spark, str(missing), str(target), str(previous))

    assert contents(target) == {"old.txt": "old"}
    assert not previous.exists()


def test_staging_folder_leaves_no_partial_output_on_failure(spark, tmp_path: Path) -> None:
    target = folder_with(tmp_path / "training" / "ds=2026-11-21", {"old.txt": "old"})
    staging = tmp_path / "training" / "_ds=2026-11-21.tmp"

    with pytest.raises(RuntimeError, match="write failed"), staging_folder(spark, str(staging)) as folder:
        write_text(spark, f"{folder}/part-0.txt", "half")
        raise RuntimeError("write failed")

    assert not staging.exists()
    assert contents(target) == {"old.txt": "old"}


def test_staging_folder_starts_empty_and_is_removed_after_the_swap(spark, tmp_path: Path) -> None:
    staging = folder_with(tmp_path / "training" / "_ds=2026-11-21.tmp", {"stale.txt": "from a crashed run"})
    target = tmp_path / "training" / "ds=2026-11-21"

    with staging_folder(spark, str(staging)) as folder:
        assert not exists(spark, folder)
        write_text(spark, f"{folder}/new.txt", "new")
        replace_by_rename(spark, folder, str(target), str(tmp_path / "training" / "_ds=2026-11-21.old"))

    assert contents(target) == {"new.txt": "new"}
    assert not staging.exists()


def test_write_text_upload_exists_and_delete(spark, tmp_path: Path) -> None:
    written = tmp_path / "lake" / "stats.json"
    write_text(spark, str(written), "{\"rows\": 1}\n")
    write_text(spark, str(written), "{\"rows\": 2}\n")
    local = tmp_path / "items.txt"
    local.write_text("a\nb\n")
    uploaded = tmp_path / "lake" / "items.txt"
    upload(spark, local, str(uploaded))

    assert written.read_text() == "{\"rows\": 2}\n"
    assert uploaded.read_text() == "a\nb\n"
    assert exists(spark, str(uploaded))
    delete(spark, str(tmp_path / "lake"))
    assert not exists(spark, str(tmp_path / "lake"))
    delete(spark, str(tmp_path / "lake"))  # absent: nothing happens


def test_size_counts_every_file_below_a_folder(spark, tmp_path: Path) -> None:
    (tmp_path / "day" / "part").mkdir(parents=True)
    (tmp_path / "day" / "a.parquet").write_bytes(b"x" * 1000)
    (tmp_path / "day" / "part" / "b.parquet").write_bytes(b"y" * 234)
    assert size(spark, str(tmp_path / "day")) == 1234
    assert size(spark, str(tmp_path / "day" / "a.parquet")) == 1000


def test_build_session_writes_parquet_timestamps_as_utc_micros(spark, tmp_path: Path) -> None:
    frame = spark.createDataFrame([("s1", datetime(2026, 11, 21, 12, 30, 0, 123456, tzinfo=UTC))],
                                  "session_id string, event_time timestamp")
    frame.write.parquet(str(tmp_path / "out"))

    table = pq.read_table(tmp_path / "out")
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert table.column("event_time").to_pylist() == [datetime(2026, 11, 21, 12, 30, 0, 123456, tzinfo=UTC)]
    require_micros_timestamps(spark)


def test_a_session_writing_int96_is_refused(spark) -> None:
    before = spark.conf.get(PARQUET_TIMESTAMP_TYPE_KEY)
    spark.conf.set(PARQUET_TIMESTAMP_TYPE_KEY, "INT96")
    try:
        with pytest.raises(ValueError, match=r"outputTimestampType is 'INT96'; the lake needs TIMESTAMP_MICROS"):
            require_micros_timestamps(spark)
    finally:
        spark.conf.set(PARQUET_TIMESTAMP_TYPE_KEY, before)
