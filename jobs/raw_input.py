"""One day of the landing zone (``RAW/clicks/ds=D/``, docs/CONTRACTS.md section 1) read into Spark and checked.

Every file is read on its own, so a whole-file problem (unreadable, a required column missing or of the
wrong type) fails with the file's name. Each row keeps its original values as strings (for the quarantine
copy) next to the parsed event time, its source file, whether it comes from the look-back day D-1, and the
reason it is rejected (null when it is valid).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.lake import hadoop_path, midnight
from sessionrec.layout import LandingZone

logger = logging.getLogger(__name__)

EVENT_TIME, ITEM_ID, VISITOR_ID, SESSION_ID, EVENT_TYPE = (
    "event_time", "item_id", "visitor_id", "session_id", "event_type")
CONTRACT_COLUMNS = (EVENT_TIME, ITEM_ID, VISITOR_ID, SESSION_ID, EVENT_TYPE)
DEFAULT_EVENT_TYPE = "click"
# In used_events: true for rows of day D's own files, false for the look-back day's.
FROM_DAY = "from_day"
# Added to the quarantine copy, so a landing file may not use them.
REASON, SOURCE_FILE = "reason", "source_file"
# Spark puts the text of a CSV or JSON line it cannot parse into this column.
MALFORMED_TEXT = "_corrupt_record"

# Internal columns, next to the original ones.
TS, FILE, LOOKBACK, MALFORMED, REJECTED = "_sr_ts", "_sr_file", "_sr_lookback", "_sr_malformed", "_sr_reason"

# Reasons a row is quarantined, in the order they are checked (a row gets the first that applies).
MALFORMED_RECORD = "malformed_record"
MISSING_ITEM_ID = "missing_item_id"
MISSING_EVENT_TIME = "missing_event_time"
UNPARSABLE_EVENT_TIME = "unparsable_event_time"
EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
MISSING_VISITOR_AND_SESSION_ID = "missing_visitor_and_session_id"
REASONS = (MALFORMED_RECORD, MISSING_ITEM_ID, MISSING_EVENT_TIME, UNPARSABLE_EVENT_TIME,
           EVENT_TIME_OUT_OF_RANGE, MISSING_VISITOR_AND_SESSION_ID)

# File name endings and the Spark reader for each (Spark decompresses .gz by itself).
FORMATS = {".csv": "csv", ".csv.gz": "csv", ".jsonl": "json", ".jsonl.gz": "json", ".json": "json",
           ".json.gz": "json", ".parquet": "parquet"}
# Epoch numbers above this are milliseconds (CONTRACTS.md); above MAX_EPOCH_MS they are not a time at all.
EPOCH_MS_ABOVE = 1e11
MAX_EPOCH_MS = 1e14
NUMBER = r"^\s*[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?\s*$"
ID_TYPES = (T.StringType, T.IntegralType)
TIME_TYPES = (T.StringType, T.NumericType, T.TimestampType, T.TimestampNTZType, T.DateType)


class RawInputError(ValueError):
    """The landing zone of a day cannot be processed as a whole (missing, unreadable, wrong schema, too dirty)."""


@dataclass(frozen=True)
class FileCount:
    """Rows of one landing-zone file and what became of them."""

    path: str
    lookback: bool
    rows: int = 0
    # Rows that pass validation; for a look-back file, those also timed on D-1 (the ones this run uses).
    used: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "used": self.used, "rejected": dict(self.rejected)}


@dataclass(frozen=True)
class InputCounts:
    """Row counts per file of day D and of the look-back day D-1."""

    day_dir: str
    files: list[FileCount]

    def with_files(self, files: list[FileCount]) -> InputCounts:
        """These counts and those of more files."""
        return InputCounts(self.day_dir, sorted([*self.files, *files], key=lambda f: (not f.lookback, f.path)))

    def day_files(self) -> list[FileCount]:
        return [f for f in self.files if not f.lookback]

    def lookback_files(self) -> list[FileCount]:
        return [f for f in self.files if f.lookback]

    @property
    def rows_read(self) -> int:
        return sum(f.rows for f in self.day_files())

    @property
    def rows_kept(self) -> int:
        return sum(f.used for f in self.day_files())

    def quarantined_by_reason(self) -> dict[str, int]:
        """Day D's rejected rows per reason (the look-back day's were counted by its own run)."""
        total: Counter[str] = Counter()
        for f in self.day_files():
            total.update(f.rejected)
        return {reason: total[reason] for reason in REASONS if total[reason]}

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined_by_reason().values())


def _format_of(name: str) -> str | None:
    lowered = name.lower()
    return next((fmt for ending, fmt in FORMATS.items() if lowered.endswith(ending)), None)


def list_day_files(spark: SparkSession, directory: str) -> list[str] | None:
    """The data files of one day folder, sorted; None when the folder does not exist.

    Names starting with ``.`` or ``_`` (temporary files, ``_SUCCESS``, checksums) are skipped; anything
    else that is not a CSV, JSON lines or Parquet file is an error rather than being ignored.
    """
    fs, jpath = hadoop_path(spark, directory)
    if not fs.exists(jpath):
        return None
    files = []
    for status in fs.listStatus(jpath):
        name = status.getPath().getName()
        if name.startswith((".", "_")):
            continue
        if not status.isFile() or _format_of(name) is None:
            raise RawInputError(f"{status.getPath().toString()}: unexpected entry in the landing zone; expected "
                                f"files ending in {', '.join(FORMATS)} (docs/CONTRACTS.md section 1)")
        files.append(status.getPath().toString())
    return sorted(files)


def _quoted(name: str) -> Column:
    """A column by its exact name, even with dots or spaces in it."""
    return F.col("`" + name.replace("`", "``") + "`")


def _read_csv(spark: SparkSession, path: str) -> DataFrame:
    header = spark.read.option("header", True).csv(path).columns
    schema = T.StructType([T.StructField(name, T.StringType()) for name in header]
                          + [T.StructField(MALFORMED_TEXT, T.StringType())])
    # Without columnPruning=false a row with too many or too few fields is only caught when every column
    # is selected; the counting and sessionizing queries select a few.
    return (spark.read.schema(schema).option("header", True).option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", MALFORMED_TEXT).option("columnPruning", False).csv(path))


def _read_json(spark: SparkSession, path: str) -> DataFrame:
    # primitivesAsString keeps numbers as they were written (epoch times, numeric ids) for the quarantine copy.
    frame = (spark.read.option("primitivesAsString", True).option("mode", "PERMISSIVE")
             .option("columnNameOfCorruptRecord", MALFORMED_TEXT).json(path))
    if frame.columns == [MALFORMED_TEXT]:
        raise RawInputError(f"{path}: no line could be parsed as a JSON object (expected JSON lines)")
    return frame


def _read_parquet(spark: SparkSession, path: str) -> DataFrame:
    return spark.read.parquet(path)


_READERS = {"csv": _read_csv, "json": _read_json, "parquet": _read_parquet}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _check_columns(path: str, frame: DataFrame) -> None:
    """Required columns present and of a usable type, or an error naming the file and the column."""
    types = {f.name: f.dataType for f in frame.schema.fields}
    found = ", ".join(name for name in types if name != MALFORMED_TEXT) or "none"
    required = [EVENT_TIME, ITEM_ID] + ([] if SESSION_ID in types else [VISITOR_ID])
    for name in required:
        if name not in types:
            expected = ("visitor_id or session_id (string)" if name == VISITOR_ID
                        else f"{name} ({'ISO-8601 or epoch number' if name == EVENT_TIME else 'string'})")
            raise RawInputError(f"{path}: required column {name!r} is missing; found columns: {found}; "
                                f"expected {expected} (docs/CONTRACTS.md section 1)")
    for name in (REASON, SOURCE_FILE):
        if name in types:
            raise RawInputError(f"{path}: column {name!r} is reserved for the quarantine copy; rename it")
    for name, allowed, expected in ((EVENT_TIME, TIME_TYPES, "ISO-8601 strings, epoch numbers or timestamps"),
                                    (ITEM_ID, ID_TYPES, "strings or integers"),
                                    (VISITOR_ID, ID_TYPES, "strings or integers"),
                                    (SESSION_ID, ID_TYPES, "strings or integers"),
                                    (EVENT_TYPE, (T.StringType,), "strings")):
        if name in types and not isinstance(types[name], allowed):
            raise RawInputError(f"{path}: column {name!r} has type {types[name].simpleString()}; "
                                f"expected {expected}")


def epoch_to_timestamp(number: Column) -> Column:
    """Epoch seconds, or milliseconds above 1e11, as a timestamp; null for NaN or absurd magnitudes."""
    micros = F.when(F.abs(number) > EPOCH_MS_ABOVE, number * 1e3).otherwise(number * 1e6)
    return F.when(F.abs(number) < MAX_EPOCH_MS, F.timestamp_micros(F.round(micros).cast("long")))


def parse_event_time(column: Column, data_type: T.DataType) -> Column:
    """The UTC event time from a column of any accepted type; null when it cannot be parsed."""
    if isinstance(data_type, T.TimestampType):
        return column
    if isinstance(data_type, (T.TimestampNTZType, T.DateType)):
        return column.cast("timestamp")
    if isinstance(data_type, T.NumericType):
        return epoch_to_timestamp(column.cast("double"))
    # A time of day has a ':' and an epoch number never has one, so most rows skip the regex.
    text = F.try_to_timestamp(column)
    return (F.when(column.contains(":"), text)
            .when(column.rlike(NUMBER), epoch_to_timestamp(column.try_cast("double")))
            .otherwise(text))


def read_file(spark: SparkSession, path: str, lookback: bool) -> DataFrame:
    """One landing-zone file: original columns as strings plus the internal columns."""
    fmt = _format_of(path)
    try:
        frame = _READERS[fmt](spark, path)
    except (PySparkException, Py4JJavaError) as exc:
        raise RawInputError(f"{path}: cannot be read as {fmt}: {_first_line(exc)}") from exc
    _check_columns(path, frame)
    types = {f.name: f.dataType for f in frame.schema.fields}
    originals = [_quoted(name).cast("string").alias(name) for name in frame.columns]
    absent = [F.lit(None).cast("string").alias(name) for name in CONTRACT_COLUMNS if name not in types]
    malformed = F.col(MALFORMED_TEXT).isNotNull() if MALFORMED_TEXT in types else F.lit(False)
    return frame.select(*originals, *absent,
                        parse_event_time(F.col(EVENT_TIME), types[EVENT_TIME]).alias(TS),
                        F.lit(path).alias(FILE), F.lit(lookback).alias(LOOKBACK), malformed.alias(MALFORMED))


def _blank(name: str) -> Column:
    return F.col(name).isNull() | (F.trim(F.col(name)) == "")


def rejection_reason(ds: dt.date) -> Column:
    """Why a row is rejected (null when valid); times must fall on D-1 or D, the days this run reads."""
    start, end = midnight(ds - dt.timedelta(days=1)), midnight(ds + dt.timedelta(days=1))
    return (F.when(F.col(MALFORMED), MALFORMED_RECORD)
            .when(_blank(ITEM_ID), MISSING_ITEM_ID)
            .when(_blank(EVENT_TIME), MISSING_EVENT_TIME)
            .when(F.col(TS).isNull(), UNPARSABLE_EVENT_TIME)
            .when((F.col(TS) < F.lit(start)) | (F.col(TS) >= F.lit(end)), EVENT_TIME_OUT_OF_RANGE)
            .when(_blank(VISITOR_ID) & _blank(SESSION_ID), MISSING_VISITOR_AND_SESSION_ID))


def is_used(ds: dt.date) -> Column:
    """Valid rows of day D's files, and valid rows of D-1's files timed on D-1.

    D-1's own run judged its files against D-2..D-1; here they only complete sessions that cross into D,
    so its rows timed on D-2 or on D (already quarantined as out of range by that run) are left out.
    """
    return F.col(REJECTED).isNull() & (~F.col(LOOKBACK) | (F.col(TS) < F.lit(midnight(ds))))


@dataclass(frozen=True)
class CountedRows:
    """Rows with one Spark observation per counted file: the counts are known once a query over ``frame``
    has run, at no extra pass over the input."""

    frame: DataFrame
    observed: list[tuple[str, bool, Observation]]  # (path, from the look-back day, observation)

    def counts(self) -> list[FileCount]:
        """Each counted file's rows, used rows and rejected rows per reason (after the query has run)."""
        return [_file_count(path, lookback, observation.get) for path, lookback, observation in self.observed]


@dataclass(frozen=True)
class LandingDay:
    """The files of day D and of the look-back day D-1, each read with its rows' rejection reasons."""

    ds: dt.date
    directory: str
    files: list[tuple[str, bool, DataFrame]]  # (path, from the look-back day, rows)

    def rows(self, count_lookback: bool) -> CountedRows:
        """Every file's rows in one frame, the files of D-1 (``count_lookback``) or those of D counted. A frame
        holds each file's count once, so each query gets its own frame."""
        observed, frames = [], []
        for n, (path, lookback, frame) in enumerate(self.files):
            if lookback == count_lookback:
                observation = Observation(f"file-{n}")
                observed.append((path, lookback, observation))
                frame = frame.observe(observation, *_count_columns(self.ds))
            frames.append(frame)
        return CountedRows(_union(frames), observed)

    def write_quarantine(self, path: str) -> InputCounts:
        """Day D's rejected rows (:func:`quarantine_rows`) written to ``path`` as Parquet; returns the counts
        of D's files, taken in the same pass (the look-back files are not read here)."""
        rows = self.rows(count_lookback=False)
        with self.reading():
            quarantine_rows(rows.frame).write.parquet(path)
        return InputCounts(self.directory, rows.counts())

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A query over these files that fails (a file unreadable past its schema) raises
        :class:`RawInputError` naming the landing zone and Spark's first line."""
        try:
            yield
        except (PySparkException, Py4JJavaError) as exc:
            raise RawInputError(f"reading the landing zone for {self.ds} ({self.directory} and the day before) "
                                f"failed: {_first_line(exc)}") from exc


def _union(frames: list[DataFrame]) -> DataFrame:
    return functools.reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


def _count_columns(ds: dt.date) -> list[Column]:
    """A file's rows, the rows this run uses, and its rejected rows per reason."""
    return [F.count(F.lit(1)).alias("rows"), F.sum(is_used(ds).cast("long")).alias("used"),
            *(F.sum((F.col(REJECTED) == reason).cast("long")).alias(reason) for reason in REASONS)]


def _file_count(path: str, lookback: bool, observed: dict[str, Any]) -> FileCount:
    rejected = {reason: observed[reason] for reason in REASONS if observed[reason]}
    return FileCount(path, lookback, observed["rows"], observed["used"] or 0, rejected)


def read_landing_days(spark: SparkSession, raw: str, ds: dt.date) -> LandingDay:
    """Every file of day D and of the look-back day D-1, with the rejection reason of each row.

    A missing or empty folder for D is an error; a missing D-1 is normal (the first day of a lake).
    """
    landing = LandingZone(raw)
    directory = landing.day(ds)
    day_files = list_day_files(spark, directory)
    if day_files is None:
        raise RawInputError(f"{directory}: landing zone of day {ds} not found")
    if not day_files:
        raise RawInputError(f"{directory}: no data files for day {ds}; expected files ending in "
                            f"{', '.join(FORMATS)}")
    previous = landing.day(ds - dt.timedelta(days=1))
    lookback_files = list_day_files(spark, previous) or []
    if not lookback_files:
        logger.info("%s: no look-back files (normal on the first day); sessions start on %s", previous, ds)
    logger.info("reading %d file(s) of %s and %d look-back file(s) of %s",
                len(day_files), directory, len(lookback_files), previous)
    listed = [(path, False) for path in day_files] + [(path, True) for path in lookback_files]
    return LandingDay(ds, directory, [(path, lookback, read_file(spark, path, lookback)
                                       .withColumn(REJECTED, rejection_reason(ds)))
                                      for path, lookback in listed])


def check_quarantine_share(counts: InputCounts, max_share: float) -> None:
    """Fail when more than ``max_share`` of day D's rows are rejected, with the counts per reason and file."""
    read, rejected = counts.rows_read, counts.rows_quarantined
    if read == 0 or rejected / read <= max_share:
        return
    reasons = ", ".join(f"{reason}={n}" for reason, n in counts.quarantined_by_reason().items())
    worst = sorted(counts.day_files(), key=lambda f: -sum(f.rejected.values()))[:3]
    files = "; ".join(f"{f.path}: {sum(f.rejected.values())} of {f.rows}" for f in worst if f.rejected)
    raise RawInputError(f"{counts.day_dir}: {rejected} of {read} rows ({rejected / read:.2%}) failed validation, "
                        f"more than the allowed {max_share:.2%} (max_quarantine_share); by reason: {reasons}; "
                        f"worst files: {files}")


def quarantine_rows(rows: DataFrame) -> DataFrame:
    """Rejected rows of day D's files as read (strings), with ``reason`` and ``source_file``."""
    originals = [name for name in rows.columns if name not in (TS, FILE, LOOKBACK, MALFORMED, REJECTED)]
    return (rows.filter(F.col(REJECTED).isNotNull() & ~F.col(LOOKBACK))
            .select(*[_quoted(name) for name in originals],
                    F.col(REJECTED).alias(REASON), F.col(FILE).alias(SOURCE_FILE)))


def _blank_to_null(name: str) -> Column:
    return F.when(~_blank(name), F.col(name))


def used_events(rows: DataFrame, ds: dt.date) -> DataFrame:
    """The rows this run sessionizes, in contract columns; ``session_id`` is the source's (null if none).

    ``from_day`` is true for rows of D's own files (only those count as duplicates of this run).
    """
    return rows.filter(is_used(ds)).select(
        _blank_to_null(VISITOR_ID).alias(VISITOR_ID),
        _blank_to_null(SESSION_ID).alias(SESSION_ID),
        F.col(TS).alias(EVENT_TIME),
        F.col(ITEM_ID),
        F.coalesce(_blank_to_null(EVENT_TYPE), F.lit(DEFAULT_EVENT_TYPE)).alias(EVENT_TYPE),
        (~F.col(LOOKBACK)).alias(FROM_DAY),
    )
