"""The warehouse table against a real DuckDB file and a real PostgreSQL server (tests/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.warehouse import (
    COLUMN_NAMES,
    TABLE,
    DuplicateKeys,
    RowCountMismatch,
    Warehouse,
    WarehouseSchemaError,
    connect,
    read_rows,
)
from sessionrec.config import redact

DAY = date(2026, 11, 21)
OTHER_DAY = date(2026, 11, 20)


def recommendation_rows(ds: date, sessions: int, k: int, version: str = "1") -> pa.Table:
    """``sessions`` x ``k`` rows as the scoring job writes them (Spark's types: int64 rank, UTC timestamps)."""
    n = sessions * k
    return pa.table({
        "ds": pa.array([ds] * n, pa.date32()),
        "session_id": [f"s{s}" for s in range(sessions) for _ in range(k)],
        "rank": pa.array([r + 1 for _ in range(sessions) for r in range(k)], pa.int64()),
        "item_id": [f"i{(s + r) % 7}" for s in range(sessions) for r in range(k)],
        "score": pa.array([1.0 / (r + 1) for _ in range(sessions) for r in range(k)], pa.float32()),
        "fallback": [s == 0 for s in range(sessions) for _ in range(k)],
        "model_name": ["gru4rec"] * n,
        "model_version": [version] * n,
        "generated_at": pa.array([datetime(2026, 11, 22, 2, 30)] * n, pa.timestamp("us", tz="UTC")),
    })


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return f"duckdb://{tmp_path / 'warehouse.duckdb'}"
    return request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    with connect(warehouse_url) as opened:
        yield opened


def execute(warehouse_url: str, statement: str) -> None:
    """Run DDL through the database's own client (to set up tables the code under test did not make)."""
    if warehouse_url.startswith("duckdb"):
        import duckdb

        with duckdb.connect(warehouse_url.removeprefix("duckdb://")) as con:
            con.execute(statement)
    else:
        import psycopg

        with psycopg.connect(warehouse_url, autocommit=True) as conn:
            conn.execute(statement)


def test_creates_the_table_and_loads_a_partition(warehouse: Warehouse) -> None:
    rows = recommendation_rows(DAY, sessions=5, k=3)
    assert warehouse.replace_partition(DAY, rows.to_batches(), expected_rows=15) == 15
    loaded = warehouse.read_partition(DAY)
    assert loaded.column_names == list(COLUMN_NAMES)
    assert loaded.column("session_id").to_pylist() == rows.column("session_id").to_pylist()
    assert loaded.column("rank").to_pylist() == rows.column("rank").to_pylist()
    assert loaded.column("item_id").to_pylist() == rows.column("item_id").to_pylist()
    assert loaded.column("score").to_pylist() == rows.column("score").to_pylist()
    assert loaded.column("fallback").to_pylist() == rows.column("fallback").to_pylist()
    assert set(loaded.column("generated_at").to_pylist()) == {datetime(2026, 11, 22, 2, 30)}


def test_rerun_replaces_the_partition_without_duplicates(warehouse: Warehouse) -> None:
    warehouse.replace_partition(OTHER_DAY, recommendation_rows(OTHER_DAY, 2, 2).to_batches())
    warehouse.replace_partition(DAY, recommendation_rows(DAY, 4, 3, version="1").to_batches())
    warehouse.replace_partition(DAY, recommendation_rows(DAY, 4, 3, version="2").to_batches())
    assert warehouse.replace_partition(DAY, recommendation_rows(DAY, 3, 3, version="3").to_batches()) == 9
    assert warehouse.count(DAY) == 9
    assert set(warehouse.read_partition(DAY).column("model_version").to_pylist()) == {"3"}
    assert warehouse.count(OTHER_DAY) == 4


def test_failure_between_delete_and_commit_keeps_the_previous_rows(warehouse: Warehouse,
                                                                   warehouse_url: str) -> None:
    warehouse.replace_partition(DAY, recommendation_rows(DAY, 4, 2, version="old").to_batches())
    seen_by_reader = []

    def crash() -> None:
        with connect(warehouse_url) as reader:
            seen_by_reader.append(reader.read_partition(DAY).column("model_version").to_pylist())
        raise OSError("worker lost in the middle of the load")

    with pytest.raises(OSError, match="worker lost"):
        warehouse.replace_partition(DAY, recommendation_rows(DAY, 6, 2, version="new").to_batches(),
                                    before_commit=crash)
    assert seen_by_reader == [["old"] * 8]  # another connection saw the old rows during the load
    assert warehouse.read_partition(DAY).column("model_version").to_pylist() == ["old"] * 8


def test_key_violation_in_the_middle_of_the_load_keeps_the_previous_rows(warehouse: Warehouse) -> None:
    warehouse.replace_partition(DAY, recommendation_rows(DAY, 3, 2, version="old").to_batches())
    fresh = recommendation_rows(DAY, 5, 2, version="new")
    # DuckDB's table declares no key: the load's own check names the partition and the count.
    expected = (DuplicateKeys, "ds=2026-11-21: 1 duplicate key") if warehouse.dialect == "duckdb" \
        else (Exception, "(?i)duplicate key|unique")
    with pytest.raises(expected[0], match=expected[1]):
        warehouse.replace_partition(DAY, [*fresh.to_batches(), *fresh.slice(0, 1).to_batches()])
    assert warehouse.read_partition(DAY).column("model_version").to_pylist() == ["old"] * 6


def test_duckdb_table_has_no_key_index_and_one_made_with_the_key_still_loads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"duckdb://{tmp_path / 'new.duckdb'}"
    with connect(url) as warehouse:
        warehouse.ensure_table()
        assert warehouse._primary_key() == ()  # no ART index for every load and delete to maintain
    old_url = f"duckdb://{tmp_path / 'old.duckdb'}"
    execute(old_url, f"CREATE TABLE {TABLE} (ds DATE NOT NULL, session_id VARCHAR NOT NULL, "
                     "rank INTEGER NOT NULL, item_id VARCHAR NOT NULL, score FLOAT NOT NULL, "
                     "fallback BOOLEAN NOT NULL, model_name VARCHAR NOT NULL, model_version VARCHAR NOT NULL, "
                     "generated_at TIMESTAMP NOT NULL, PRIMARY KEY (ds, session_id, rank))")
    with connect(old_url) as warehouse:
        warehouse.replace_partition(DAY, recommendation_rows(DAY, 3, 2, version="1").to_batches())
        assert warehouse.replace_partition(DAY, recommendation_rows(DAY, 4, 2, version="2").to_batches()) == 8
        assert warehouse._primary_key() == ("ds", "session_id", "rank")
    assert sum("has a primary key index" in r.getMessage() for r in caplog.records) == 1  # once per connection


def test_row_count_mismatch_fails_loudly_and_rolls_back(warehouse: Warehouse) -> None:
    warehouse.replace_partition(DAY, recommendation_rows(DAY, 3, 2, version="old").to_batches())
    with pytest.raises(RowCountMismatch, match="10 rows loaded from rows, expected 11"):
        warehouse.replace_partition(DAY, recommendation_rows(DAY, 5, 2).to_batches(), expected_rows=11)
    assert warehouse.count(DAY) == 6


def test_rows_of_another_day_are_rejected(warehouse: Warehouse) -> None:
    warehouse.replace_partition(DAY, recommendation_rows(DAY, 2, 2, version="old").to_batches())
    mixed = [*recommendation_rows(DAY, 2, 2).to_batches(), *recommendation_rows(OTHER_DAY, 1, 2).to_batches()]
    with pytest.raises(ValueError, match="2 row\\(s\\) with a ds other than 2026-11-21"):
        warehouse.replace_partition(DAY, mixed)
    assert warehouse.count(DAY) == 4
    assert warehouse.count(OTHER_DAY) == 0


def test_wrong_column_type_names_table_column_and_expected_type(warehouse_url: str) -> None:
    execute(warehouse_url, f"CREATE TABLE {TABLE} (ds date, session_id text, rank integer, item_id text, "
                           "score text, fallback boolean, model_name text, model_version text, "
                           "generated_at timestamp, PRIMARY KEY (ds, session_id, rank))")
    expected = "FLOAT" if warehouse_url.startswith("duckdb") else "real"
    with connect(warehouse_url) as warehouse, pytest.raises(WarehouseSchemaError) as error:
        warehouse.replace_partition(DAY, recommendation_rows(DAY, 1, 1).to_batches())
    message = str(error.value)
    assert TABLE in message
    assert f"column score has type {'VARCHAR' if expected == 'FLOAT' else 'text'}, expected {expected}" in message


def test_missing_column_and_missing_key_are_reported(warehouse_url: str) -> None:
    execute(warehouse_url, f"CREATE TABLE {TABLE} (ds date, session_id text, rank integer, item_id text, "
                           "score real, model_name text, model_version text, generated_at timestamp)")
    with connect(warehouse_url) as warehouse, pytest.raises(WarehouseSchemaError) as error:
        warehouse.ensure_table()
    assert "column fallback is missing (expected type" in str(error.value)
    # DuckDB's table declares no key (each load checks it); PostgreSQL's must have it.
    key_reported = "primary key is none, expected (ds, session_id, rank)" in str(error.value)
    assert key_reported == warehouse_url.startswith("postgres")


def test_read_rows_streams_a_spark_style_folder(tmp_path: Path, warehouse: Warehouse) -> None:
    folder = tmp_path / "recommendations"
    folder.mkdir()
    rows = recommendation_rows(DAY, 6, 2)
    pq.write_table(rows.slice(0, 5), folder / "part-00000.parquet")
    pq.write_table(rows.slice(5), folder / "part-00001.parquet")
    (folder / "_SUCCESS").touch()
    assert warehouse.replace_partition(DAY, read_rows(folder), expected_rows=12, source=str(folder)) == 12


def test_read_rows_names_the_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(recommendation_rows(DAY, 1, 1).drop_columns(["score"]), path)
    with pytest.raises(ValueError, match=f"{path}: missing column\\(s\\) \\['score'\\]"):
        read_rows(path)


@pytest.mark.parametrize("url, message", [
    ("sqlite:///tmp/x.db", "unsupported scheme 'sqlite'"),
    ("duckdb://relative/file.duckdb", "expected duckdb:///absolute/path"),
])
def test_connect_rejects_unknown_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        connect(url)


def test_duckdb_url_with_four_slashes_names_the_same_absolute_file(tmp_path: Path) -> None:
    with connect(f"duckdb:///{tmp_path / 'w.duckdb'}") as warehouse:
        warehouse.ensure_table()
    with connect(f"duckdb://{tmp_path / 'w.duckdb'}") as warehouse:
        assert warehouse.count(DAY) == 0  # the table created through the other spelling
    assert {p.name for p in tmp_path.iterdir()} == {"w.duckdb"}


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://scorer:s3cret@db:5432/wh") == "postgresql://scorer:***@db:5432/wh"
    assert redact("duckdb:///var/warehouse.duckdb") == "duckdb:///var/warehouse.duckdb"
