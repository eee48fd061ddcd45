"""The warehouse table ``session_recommendations`` and the back ends that hold it.

One small interface, :class:`Warehouse`, chosen by URL with :func:`connect`:

- ``duckdb:///abs/path/warehouse.duckdb``: an embedded DuckDB file (the default); rows go in through
  DuckDB's native Arrow scan. The table declares no primary key: DuckDB backs one with an in-memory ART
  index that every load and every delete of a day's rows must maintain, which made reloading a day many
  times slower than loading it. The key ``(ds, session_id, rank)`` is checked inside each load's
  transaction instead (:class:`DuplicateKeys`). A table made with the key by an earlier version is
  accepted as it is.
- ``postgresql://user:password@host:port/database`` (or ``postgres://``): PostgreSQL, whose table declares
  the primary key; rows go in through ``COPY ... FROM STDIN`` in CSV format, each Arrow batch rendered by
  Arrow's CSV writer (no per-row Python). Fields left out of the URL come from the standard libpq ``PG*``
  environment variables.

The URL is configuration (``Settings.warehouse_url``, i.e. ``SESSIONREC_WAREHOUSE_URL``); an Airflow DAG
passes the URL it builds from its Airflow connection. No credentials live in code.

:meth:`Warehouse.replace_partition` replaces day D in one transaction (delete D, bulk insert, key check,
count, commit), so readers see the old rows or the new rows, never a mix, and a failure at any point
before the commit leaves the previous rows in place.
"""

from __future__ import annotations

import io
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from sessionrec.config import redact

logger = logging.getLogger(__name__)

TABLE = "session_recommendations"
PRIMARY_KEY = ("ds", "session_id", "rank")


@dataclass(frozen=True)
class Column:
    """One column of the table: its Arrow type and its type as each back end names it."""

    name: str
    arrow: pa.DataType
    duckdb: str
    postgres: str


COLUMNS = (
    Column("ds", pa.date32(), "DATE", "date"),
    Column("session_id", pa.string(), "VARCHAR", "text"),
    Column("rank", pa.int32(), "INTEGER", "integer"),
    Column("item_id", pa.string(), "VARCHAR", "text"),
    Column("score", pa.float32(), "FLOAT", "real"),
    Column("fallback", pa.bool_(), "BOOLEAN", "boolean"),
    Column("model_name", pa.string(), "VARCHAR", "text"),
    Column("model_version", pa.string(), "VARCHAR", "text"),
    # UTC wall-clock time (the contract's type is a plain timestamp).
    Column("generated_at", pa.timestamp("us"), "TIMESTAMP", "timestamp without time zone"),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)
ROW_SCHEMA = pa.schema([pa.field(c.name, c.arrow, nullable=False) for c in COLUMNS])


class WarehouseSchemaError(ValueError):
    """An existing table whose columns or key differ from the contract."""


class RowCountMismatch(RuntimeError):
    """The partition holds a different number of rows than the caller expected; nothing was committed."""


class DuplicateKeys(RuntimeError):
    """The rows loaded hold a key ``(ds, session_id, rank)`` more than once; nothing was committed."""


def read_rows(path: str | Path) -> pa.RecordBatchReader:
    """Stream the rows of a Parquet file or folder (Spark's output; ``_SUCCESS`` and ``.crc`` skipped)."""
    dataset = pads.dataset(str(path), format="parquet")
    missing = [name for name in COLUMN_NAMES if name not in dataset.schema.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected the columns of {TABLE}: "
                         f"{', '.join(COLUMN_NAMES)}")
    return dataset.scanner(columns=list(COLUMN_NAMES)).to_reader()


def conform(batches: Iterable[pa.RecordBatch], ds: date, source: str = "rows") -> Iterator[pa.RecordBatch]:
    """Cast each batch to :data:`ROW_SCHEMA`, checking that every row belongs to partition ``ds``."""
    for batch in batches:
        columns = []
        for column in COLUMNS:
            if column.name not in batch.schema.names:
                raise ValueError(f"{source}: missing column {column.name!r}; expected {column.arrow}")
            values = batch.column(column.name)
            try:
                columns.append(values.cast(column.arrow))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"{source}: column {column.name!r} has type {values.type}, "
                                 f"expected {column.arrow}") from exc
        conformed = pa.RecordBatch.from_arrays(columns, schema=ROW_SCHEMA)
        other_days = pc.sum(pc.not_equal(conformed.column("ds"), pa.scalar(ds, pa.date32()))).as_py()
        if other_days:
            raise ValueError(f"{source}: {other_days} row(s) with a ds other than {ds}; column 'ds' must "
                             "hold the partition being replaced")
        yield conformed


def schema_problems(existing: dict[str, str], primary_key: tuple[str, ...], dialect: str,
                    key_declared: bool) -> list[str]:
    """What differs between an existing table (column -> type as the back end names it) and the contract.

    ``key_declared`` False (a back end that checks the key on load): a table without a primary key is
    accepted too."""
    problems = []
    for column in COLUMNS:
        expected = getattr(column, dialect)
        found = existing.get(column.name)
        if found is None:
            problems.append(f"column {column.name} is missing (expected type {expected})")
        elif found.lower() != expected.lower():
            problems.append(f"column {column.name} has type {found}, expected {expected}")
    if primary_key != PRIMARY_KEY and (key_declared or primary_key):
        found_key = f"({', '.join(primary_key)})" if primary_key else "none"
        problems.append(f"primary key is {found_key}, expected ({', '.join(PRIMARY_KEY)})")
    return problems


class Warehouse(ABC):
    """A SQL database holding :data:`TABLE`. Use as a context manager, or call :meth:`close`."""

    dialect: str
    # Whether the table this back end creates declares PRIMARY_KEY (else each load checks it, _check_key).
    key_declared: bool

    def __init__(self, url: str) -> None:
        self.url = url
        self._key_index_reported = False

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def ensure_table(self) -> None:
        """Create the table if missing; otherwise check it matches the contract (clear error if not)."""
        existing = self._existing_columns()
        if not existing:
            self._create_table()
            logger.info("created table %s in %s", TABLE, redact(self.url))
            return
        primary_key = self._primary_key()
        problems = schema_problems(existing, primary_key, self.dialect, self.key_declared)
        if problems:
            raise WarehouseSchemaError(f"table {TABLE} in {redact(self.url)} does not match the contract "
                                       f"(docs/CONTRACTS.md section 5): {'; '.join(problems)}")
        if primary_key and not self.key_declared and not self._key_index_reported:
            self._key_index_reported = True
            logger.warning("table %s in %s has a primary key index, which makes each reload of a day slow; "
                           "loads check the key themselves, so a copy without the key loads faster",
                           TABLE, redact(self.url))

    def replace_partition(self, ds: date, batches: Iterable[pa.RecordBatch], expected_rows: int | None = None,
                          before_commit: Callable[[], None] | None = None, source: str = "rows") -> int:
        """Replace partition ``ds`` with ``batches`` in one transaction; returns the rows now in it.

        The key and the row count are checked inside the transaction: a repeated key raises
        :class:`DuplicateKeys` (or the database's own key violation) and a count mismatch
        :class:`RowCountMismatch`, either leaving the previous rows untouched. ``before_commit`` runs last
        inside the transaction (an operational hook, e.g. a final check; an exception from it rolls
        everything back).
        """
        self.ensure_table()
        with self._transaction():
            self._lock_partition(ds)
            deleted = self._delete_partition(ds)
            self._insert(conform(batches, ds, source))
            self._check_key(ds, source)
            loaded = self.count(ds)
            if expected_rows is not None and loaded != expected_rows:
                raise RowCountMismatch(f"{TABLE} partition ds={ds}: {loaded} rows loaded from {source}, "
                                       f"expected {expected_rows}; rolled back, previous rows kept")
            if before_commit is not None:
                before_commit()
        logger.info("replaced %s partition ds=%s in %s: %d rows deleted, %d rows loaded",
                    TABLE, ds, redact(self.url), deleted, loaded)
        return loaded

    @abstractmethod
    def count(self, ds: date) -> int:
        """Rows in partition ``ds``."""

    @abstractmethod
    def read_partition(self, ds: date) -> pa.Table:
        """Partition ``ds`` as an Arrow table in :data:`ROW_SCHEMA` order, sorted by session and rank."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    @abstractmethod
    def _existing_columns(self) -> dict[str, str]:
        """Column name -> type name of the table in the current schema; empty if there is no table."""

    @abstractmethod
    def _primary_key(self) -> tuple[str, ...]:
        """The table's primary key columns in key order; empty if it has none."""

    @abstractmethod
    def _create_table(self) -> None: ...

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """Commit on normal exit, roll back on an exception."""

    @abstractmethod
    def _lock_partition(self, ds: date) -> None:
        """Serialize concurrent loads of the same day (called inside the transaction)."""

    @abstractmethod
    def _delete_partition(self, ds: date) -> int: ...

    @abstractmethod
    def _insert(self, batches: Iterator[pa.RecordBatch]) -> None: ...

    @abstractmethod
    def _check_key(self, ds: date, source: str) -> None:
        """Raise :class:`DuplicateKeys` when partition ``ds`` holds a key twice (called inside the transaction)."""


def _create_statement(dialect: str, key_declared: bool) -> str:
    columns = [f"{c.name} {getattr(c, dialect)} NOT NULL" for c in COLUMNS]
    if key_declared:
        columns.append(f"PRIMARY KEY ({', '.join(PRIMARY_KEY)})")
    return f"CREATE TABLE IF NOT EXISTS {TABLE} ({', '.join(columns)})"


_SELECT_PARTITION = f"SELECT {', '.join(COLUMN_NAMES)} FROM {TABLE} WHERE ds = {{param}} ORDER BY session_id, rank"


class DuckDBWarehouse(Warehouse):
    """An embedded DuckDB file. One process at a time may write it (DuckDB's own rule)."""

    dialect = "duckdb"
    key_declared = False

    def __init__(self, url: str, path: Path) -> None:
        import duckdb

        super().__init__(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(path))
        # A table's rows have no order (readers sort); keeping the stream's order would load it on one thread.
        self._con.execute("SET preserve_insertion_order = false")

    def count(self, ds: date) -> int:
        return self._con.execute(f"SELECT count(*) FROM {TABLE} WHERE ds = ?", [ds]).fetchone()[0]

    def read_partition(self, ds: date) -> pa.Table:
        query = _SELECT_PARTITION.format(param="?")
        return self._con.execute(query, [ds]).to_arrow_table().cast(ROW_SCHEMA)

    def close(self) -> None:
        self._con.close()

    def _existing_columns(self) -> dict[str, str]:
        rows = self._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?", [TABLE]).fetchall()
        return dict(rows)

    def _primary_key(self) -> tuple[str, ...]:
        row = self._con.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE schema_name = current_schema() AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
            [TABLE]).fetchone()
        return tuple(row[0]) if row else ()

    def _create_table(self) -> None:
        self._con.execute(_create_statement(self.dialect, self.key_declared))

    def _transaction(self) -> AbstractContextManager[None]:
        return _DuckDBTransaction(self._con)

    def _lock_partition(self, ds: date) -> None:
        """Nothing to do: DuckDB admits one writing process, and its transactions conflict on the same rows."""

    def _delete_partition(self, ds: date) -> int:
        return self._con.execute(f"DELETE FROM {TABLE} WHERE ds = ?", [ds]).fetchone()[0]

    def _insert(self, batches: Iterator[pa.RecordBatch]) -> None:
        import duckdb

        failures: list[Exception] = []

        def remembered() -> Iterator[pa.RecordBatch]:
            try:
                yield from batches
            except Exception as exc:
                failures.append(exc)
                raise

        self._con.register("staged_recommendations", pa.RecordBatchReader.from_batches(ROW_SCHEMA, remembered()))
        try:
            self._con.execute(f"INSERT INTO {TABLE} ({', '.join(COLUMN_NAMES)}) "
                              f"SELECT {', '.join(COLUMN_NAMES)} FROM staged_recommendations")
        except duckdb.Error:
            if failures:  # DuckDB wraps errors raised while it reads the batches; surface the original
                raise failures[0] from None
            raise
        finally:
            self._con.unregister("staged_recommendations")

    def _check_key(self, ds: date, source: str) -> None:
        key = ", ".join(PRIMARY_KEY)
        repeated = self._con.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE ds = ? GROUP BY {key} HAVING count(*) > 1)",
            [ds]).fetchone()[0]
        if repeated:
            raise DuplicateKeys(f"{TABLE} partition ds={ds}: {repeated} duplicate key(s) ({key}) in the rows "
                                f"loaded from {source}; rolled back, previous rows kept")


class _DuckDBTransaction(AbstractContextManager[None]):
    def __init__(self, con: object) -> None:
        self._con = con

    def __enter__(self) -> None:
        self._con.begin()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self._con.commit()
        else:
            self._con.rollback()


class PostgresWarehouse(Warehouse):
    """PostgreSQL through psycopg 3; rows are bulk-loaded with ``COPY ... FROM STDIN (FORMAT csv)``."""

    dialect = "postgres"
    key_declared = True

    def __init__(self, url: str) -> None:
        import psycopg

        super().__init__(url)
        self._conn = psycopg.connect(url, autocommit=True)

    def count(self, ds: date) -> int:
        return self._conn.execute(f"SELECT count(*) FROM {TABLE} WHERE ds = %s", [ds]).fetchone()[0]

    def read_partition(self, ds: date) -> pa.Table:
        cursor = self._conn.execute(_SELECT_PARTITION.format(param="%s"), [ds])
        rows = cursor.fetchall()
        return pa.Table.from_pylist([dict(zip(COLUMN_NAMES, row, strict=True)) for row in rows],
                                    schema=ROW_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def _existing_columns(self) -> dict[str, str]:
        rows = self._conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s", [TABLE]).fetchall()
        return dict(rows)

    def _primary_key(self) -> tuple[str, ...]:
        rows = self._conn.execute(
            "SELECT k.column_name FROM information_schema.table_constraints c "
            "JOIN information_schema.key_column_usage k "
            "ON k.constraint_schema = c.constraint_schema AND k.constraint_name = c.constraint_name "
            "WHERE c.table_schema = current_schema() AND c.table_name = %s "
            "AND c.constraint_type = 'PRIMARY KEY' ORDER BY k.ordinal_position", [TABLE]).fetchall()
        return tuple(row[0] for row in rows)

    def _create_table(self) -> None:
        self._conn.execute(_create_statement(self.dialect, self.key_declared))

    def _transaction(self) -> AbstractContextManager[None]:
        return self._conn.transaction()

    def _lock_partition(self, ds: date) -> None:
        # Without it, two loads of the same day racing would end in a key violation for the second.
        self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", [TABLE, ds.toordinal()])

    def _delete_partition(self, ds: date) -> int:
        return self._conn.execute(f"DELETE FROM {TABLE} WHERE ds = %s", [ds]).rowcount

    def _check_key(self, ds: date, source: str) -> None:
        """Nothing to do: the table's primary key made the insert fail on a repeated key."""

    def _insert(self, batches: Iterator[pa.RecordBatch]) -> None:
        options = pacsv.WriteOptions(include_header=False)
        with self._conn.cursor() as cursor, cursor.copy(
                f"COPY {TABLE} ({', '.join(COLUMN_NAMES)}) FROM STDIN (FORMAT csv)") as copy:
            for batch in batches:
                buffer = io.BytesIO()
                pacsv.write_csv(batch, buffer, options)
                copy.write(buffer.getbuffer())


def connect(url: str) -> Warehouse:
    """The back end for ``url``: ``duckdb:///abs/path.duckdb`` or ``postgresql://...``."""
    parts = urlsplit(url)
    if parts.scheme == "duckdb":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"warehouse URL {url!r}: expected duckdb:///absolute/path/to/file.duckdb")
        # duckdb:////abs (SQLAlchemy's spelling of an absolute path) names the same file as duckdb:///abs.
        return DuckDBWarehouse(url, Path("/" + parts.path.lstrip("/")))
    if parts.scheme in ("postgresql", "postgres"):
        return PostgresWarehouse(url)
    raise ValueError(f"warehouse URL {redact(url)!r}: unsupported scheme {parts.scheme!r}; "
                     "expected duckdb:///path/to/file.duckdb or postgresql://user@host:port/database")
