"""Readers for the public clickstream formats, each producing landing-zone events (docs/CONTRACTS.md, 1).

Every reader yields pyarrow Tables with :data:`EVENT_SCHEMA`: ``event_time`` (UTC timestamp, ms),
``item_id``, ``visitor_id``, ``session_id`` and ``event_type`` (strings). Files are streamed in blocks
with pyarrow's CSV and JSON readers, so a multi-gigabyte file never has to fit in memory; the one
exception is Diginetica, whose event times depend on the session's first day (read whole; the full
public file is about 1.2M rows). ``.gz``/``.bz2`` inputs are decompressed on the fly.

Formats (``FORMATS``):

- ``yoochoose-clicks``: RSC15 ``yoochoose-clicks.dat``, no header, ``session_id,timestamp,item_id,category``
  with ISO-8601 timestamps (``2014-04-07T10:51:09.277Z``); the category is ignored.
- ``yoochoose-prepared``: the GRU4Rec train/test files, tab-separated, header ``SessionId ItemId Time``,
  ``Time`` in unix seconds (float).
- ``diginetica``: ``train-item-views.csv``, ``;``-separated, header
  ``session_id;user_id;item_id;timeframe;eventdate``; ``user_id`` ``NA`` means unknown. ``timeframe`` is
  milliseconds since the session's start, so an event's time is the UTC midnight of the session's first
  ``eventdate`` plus ``timeframe`` (the dataset's ``eventdate`` moves to the next day within sessions
  that cross midnight, while ``timeframe`` keeps counting from the start).
- ``retailrocket``: ``events.csv``, header ``timestamp,visitorid,event,itemid,transactionid``, epoch ms.
  Retailrocket has no sessions: ``visitor_id`` is set and sessions come from the inactivity gap.
- ``otto``: JSON lines ``{"session": 1, "events": [{"aid": 2, "ts": 1661724000278, "type": "clicks"}]}``,
  ``ts`` in epoch ms or seconds (values below 1e11 are seconds, as in the contract). An OTTO "session"
  spans up to four weeks of one user's activity, so it becomes ``visitor_id`` and real sessions come
  from the inactivity gap.

A file that does not match its format raises :class:`ReaderError` naming the file, the column and what
was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson

log = logging.getLogger(__name__)

EVENT_SCHEMA = pa.schema([
    ("event_time", pa.timestamp("ms", tz="UTC")),
    ("item_id", pa.string()),
    ("visitor_id", pa.string()),
    ("session_id", pa.string()),
    ("event_type", pa.string()),
])
DEFAULT_BLOCK_BYTES = 16 << 20
# Epoch values below this are seconds, above it milliseconds (docs/CONTRACTS.md, section 1).
EPOCH_MS_THRESHOLD = 100_000_000_000

YOOCHOOSE_CLICKS_COLUMNS = ("session_id", "timestamp", "item_id", "category")
YOOCHOOSE_PREPARED_COLUMNS = ("SessionId", "ItemId", "Time")
DIGINETICA_COLUMNS = ("session_id", "user_id", "item_id", "timeframe", "eventdate")
RETAILROCKET_COLUMNS = ("timestamp", "visitorid", "event", "itemid", "transactionid")
RETAILROCKET_EVENTS = ("view", "addtocart", "transaction")
OTTO_EVENTS = ("clicks", "carts", "orders")
OTTO_SCHEMA = pa.schema([
    ("session", pa.int64()),
    ("events", pa.list_(pa.struct([("aid", pa.int64()), ("ts", pa.int64()), ("type", pa.string())]))),
])


class ReaderError(ValueError):
    """The input file does not match the format it was read as."""


def _fail(path: Path, column: str, expected: str, detail: str) -> ReaderError:
    return ReaderError(f"{path}: column {column!r}: expected {expected}; {detail}")


def _cast(values: pa.Array | pa.ChunkedArray, to: pa.DataType, path: Path, column: str,
          expected: str) -> pa.Array | pa.ChunkedArray:
    """Cast or raise a :class:`ReaderError` that quotes the offending value (Arrow's message does)."""
    try:
        return values.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _fail(path, column, expected, str(exc)) from exc


def _check_values(values: pa.Array | pa.ChunkedArray, allowed: tuple[str, ...], path: Path,
                  column: str) -> None:
    unknown = pc.unique(pc.filter(values, pc.invert(pc.is_in(values, pa.array(allowed)))))
    if len(unknown):
        shown = ", ".join(repr(v) for v in unknown.to_pylist()[:5])
        raise _fail(path, column, f"one of {', '.join(allowed)}", f"found {shown}")


def _first_line(path: Path) -> str:
    with pa.input_stream(str(path), compression="detect") as stream:
        head = stream.read(1 << 16).decode("utf-8", errors="replace")
    return head.splitlines()[0] if head else ""


def _check_header(path: Path, delimiter: str, required: tuple[str, ...]) -> None:
    found = [name.strip() for name in _first_line(path).split(delimiter)]
    missing = [name for name in required if name not in found]
    if missing:
        raise ReaderError(
            f"{path}: missing column(s) {', '.join(missing)}: expected a {delimiter!r}-separated header "
            f"with {delimiter.join(required)}; found {delimiter.join(found) or 'an empty file'}")


def _csv_blocks(path: Path, delimiter: str, columns: tuple[str, ...], *, header: bool,
                block_bytes: int) -> Iterator[pa.RecordBatch]:
    """The file's ``columns`` as strings, block by block."""
    if header:
        _check_header(path, delimiter, columns)
    else:
        found = _first_line(path).split(delimiter)
        if found != [""] and len(found) != len(columns):
            raise ReaderError(f"{path}: expected {len(columns)} {delimiter!r}-separated fields without a "
                              f"header ({delimiter.join(columns)}); the first line has {len(found)}")
    read_options = pcsv.ReadOptions(block_size=block_bytes,
                                    column_names=None if header else list(columns))
    convert_options = pcsv.ConvertOptions(column_types={name: pa.string() for name in columns},
                                          include_columns=list(columns), strings_can_be_null=False)
    try:
        reader = pcsv.open_csv(str(path), read_options=read_options,
                               parse_options=pcsv.ParseOptions(delimiter=delimiter),
                               convert_options=convert_options)
        yield from reader
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            return
        raise ReaderError(f"{path}: not a {delimiter!r}-separated file with columns "
                          f"{delimiter.join(columns)}: {exc}") from exc


def _events(event_time: pa.Array, item_id: pa.Array, visitor_id: pa.Array | None,
            session_id: pa.Array | None, event_type: pa.Array | str) -> pa.Table:
    rows = len(item_id)
    if isinstance(event_type, str):
        event_type = pa.repeat(pa.scalar(event_type, pa.string()), rows)
    return pa.Table.from_arrays([
        event_time,
        item_id,
        visitor_id if visitor_id is not None else pa.nulls(rows, pa.string()),
        session_id if session_id is not None else pa.nulls(rows, pa.string()),
        event_type,
    ], schema=EVENT_SCHEMA)


def _epoch_to_time(values: pa.Array) -> pa.Array:
    """Epoch seconds or milliseconds (by magnitude, per value) as a UTC timestamp."""
    millis = pc.if_else(pc.less(values, EPOCH_MS_THRESHOLD), pc.multiply(values, 1000), values)
    return millis.cast(EVENT_SCHEMA.field("event_time").type)


def _yoochoose_clicks(path: Path, block_bytes: int) -> Iterator[pa.Table]:
    for block in _csv_blocks(path, ",", YOOCHOOSE_CLICKS_COLUMNS, header=False, block_bytes=block_bytes):
        event_time = _cast(block["timestamp"], EVENT_SCHEMA.field("event_time").type, path, "timestamp",
                           "an ISO-8601 time with zone such as 2014-04-07T10:51:09.277Z")
        yield _events(event_time, block["item_id"], None, block["session_id"], "click")


def _yoochoose_prepared(path: Path, block_bytes: int) -> Iterator[pa.Table]:
    for block in _csv_blocks(path, "\t", YOOCHOOSE_PREPARED_COLUMNS, header=True, block_bytes=block_bytes):
        seconds = _cast(block["Time"], pa.float64(), path, "Time", "unix seconds such as 1396437466.94")
        millis = pc.round(pc.multiply(seconds, 1000.0)).cast(pa.int64())
        yield _events(millis.cast(EVENT_SCHEMA.field("event_time").type), block["ItemId"], None,
                      block["SessionId"], "click")


def _diginetica(path: Path, block_bytes: int) -> Iterator[pa.Table]:
    blocks = list(_csv_blocks(path, ";", DIGINETICA_COLUMNS, header=True, block_bytes=block_bytes))
    if not blocks:
        return
    table = pa.Table.from_batches(blocks)
    timeframe = _cast(table["timeframe"], pa.int64(), path, "timeframe",
                      "milliseconds since the session start (an integer)")
    eventdate = _cast(table["eventdate"], pa.date32(), path, "eventdate", "a date YYYY-MM-DD")
    first_day = (pa.table({"session_id": table["session_id"], "day": eventdate})
                 .group_by("session_id").aggregate([("day", "min")]))
    session_day = pc.take(first_day["day_min"],
                          pc.index_in(table["session_id"], value_set=first_day["session_id"]))
    midnight_ms = pc.multiply(session_day.cast(pa.int32()).cast(pa.int64()), 86_400_000)
    event_time = pc.add(midnight_ms, timeframe).cast(EVENT_SCHEMA.field("event_time").type)
    user = table["user_id"]
    visitor_id = pc.if_else(pc.is_in(user, pa.array(["NA", ""])), pa.scalar(None, pa.string()), user)
    yield _events(event_time.combine_chunks(), table["item_id"].combine_chunks(),
                  visitor_id.combine_chunks(), table["session_id"].combine_chunks(), "view")


def _retailrocket(path: Path, block_bytes: int) -> Iterator[pa.Table]:
    for block in _csv_blocks(path, ",", RETAILROCKET_COLUMNS, header=True, block_bytes=block_bytes):
        millis = _cast(block["timestamp"], pa.int64(), path, "timestamp", "epoch milliseconds (an integer)")
        _check_values(block["event"], RETAILROCKET_EVENTS, path, "event")
        yield _events(_epoch_to_time(millis), block["itemid"], block["visitorid"], None, block["event"])


def _otto(path: Path, block_bytes: int) -> Iterator[pa.Table]:
    expected = ('JSON lines {"session": int, "events": [{"aid": int, "ts": epoch ms or s, '
                '"type": "clicks"|"carts"|"orders"}]}')
    parse_options = pjson.ParseOptions(explicit_schema=OTTO_SCHEMA, unexpected_field_behavior="ignore")
    try:
        reader = pjson.open_json(str(path), read_options=pjson.ReadOptions(block_size=block_bytes),
                                 parse_options=parse_options)
        for block in reader:
            yield _otto_events(block, path, expected)
    except pa.ArrowInvalid as exc:
        if "Empty JSON stream" in str(exc):
            return
        raise ReaderError(f"{path}: expected {expected}; {exc}") from exc


def _otto_events(block: pa.RecordBatch, path: Path, expected: str) -> pa.Table:
    for column in ("session", "events"):
        if block[column].null_count:
            raise _fail(path, column, expected, f"{block[column].null_count} line(s) without it")
    events = pc.list_flatten(block["events"])
    for field in ("aid", "ts", "type"):
        missing = pc.struct_field(events, field).null_count
        if missing:
            raise _fail(path, f"events.{field}", expected, f"{missing} event(s) without it")
    event_type = pc.struct_field(events, "type")
    _check_values(event_type, OTTO_EVENTS, path, "events.type")
    session = pc.take(block["session"], pc.list_parent_indices(block["events"]))
    return _events(_epoch_to_time(pc.struct_field(events, "ts")),
                   pc.struct_field(events, "aid").cast(pa.string()), session.cast(pa.string()), None,
                   event_type)


_READERS: dict[str, Callable[[Path, int], Iterator[pa.Table]]] = {
    "yoochoose-clicks": _yoochoose_clicks,
    "yoochoose-prepared": _yoochoose_prepared,
    "diginetica": _diginetica,
    "retailrocket": _retailrocket,
    "otto": _otto,
}
FORMATS: tuple[str, ...] = tuple(_READERS)


def iter_events(path: str | Path, fmt: str, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[pa.Table]:
    """The events of ``path`` (a file in format ``fmt``) as contract Tables, one per block read."""
    if fmt not in _READERS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    log.info("reading %s as %s", path, fmt)
    yield from _READERS[fmt](path, block_bytes)


def read_events(path: str | Path, fmt: str, block_bytes: int = DEFAULT_BLOCK_BYTES) -> pa.Table:
    """All events of ``path`` as one contract Table (see :func:`iter_events` for large files)."""
    blocks = list(iter_events(path, fmt, block_bytes))
    return pa.concat_tables(blocks) if blocks else EVENT_SCHEMA.empty_table()
