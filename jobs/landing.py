"""Land a public-format clickstream file in the landing zone, one Parquet file per UTC day.

Usage::

    python -m jobs.landing --format yoochoose-prepared --input data/yoochoose-clicks_train_full.txt \\
        [--raw var/lake/raw]

The events of ``FILE`` (read by :mod:`jobs.readers`) go to ``RAW/clicks/ds=YYYY-MM-DD/<stem>.parquet``,
where ``<stem>`` is the input's file name without extensions. The input is streamed, so files larger
than memory land too. Rerunning is idempotent: every day's file is written under a temporary name and
renamed over the old one, and a day that no longer has events from this input loses its old file.
The landing zone is a local folder (``Settings.raw``); object stores are not written by this tool.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.readers import EVENT_SCHEMA, FORMATS, ReaderError, iter_events
from sessionrec.config import load_settings
from sessionrec.layout import PARTITION_PREFIX, LandingZone, local_path, partition_day

log = logging.getLogger(__name__)

COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")


def day_dir(raw_dir: str | Path, day: dt.date) -> Path:
    """Day ``day``'s folder of a local landing zone (this tool writes no object store: copy the landed files
    there separately)."""
    return local_path(LandingZone(str(raw_dir)).day(day))


def temporary_path(final: Path) -> Path:
    """A hidden sibling of ``final`` (Spark and pyarrow datasets skip names starting with '.')."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")


def input_stem(path: str | Path) -> str:
    """``events.csv.gz`` -> ``events``: the name landed files of this input are called by."""
    name = Path(path).name
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    return Path(name).stem


def split_by_day(events: pa.Table) -> Iterator[tuple[dt.date, pa.Table]]:
    """The rows of ``events`` grouped by the UTC day of ``event_time``, days in ascending order."""
    days = events["event_time"].cast(pa.date32()).cast(pa.int32()).to_numpy()
    order = np.argsort(days, kind="stable")
    unique, starts, counts = np.unique(days[order], return_index=True, return_counts=True)
    ordered = events.take(pa.array(order))
    for day, start, count in zip(unique.tolist(), starts.tolist(), counts.tolist(), strict=True):
        yield dt.date(1970, 1, 1) + dt.timedelta(days=day), ordered.slice(start, count)


class DayFiles:
    """One Parquet file per day, written under temporary names and committed by rename.

    Use as a context manager: leaving the block normally commits every day's file, an exception
    removes the temporary files and leaves the previous files in place.
    """

    def __init__(self, raw_dir: str | Path, file_name: str, schema: pa.Schema) -> None:
        self._raw_dir = raw_dir
        self._file_name = file_name
        self._schema = schema
        self._writers: dict[dt.date, tuple[pq.ParquetWriter, Path]] = {}
        self.rows: dict[dt.date, int] = {}

    def write(self, day: dt.date, table: pa.Table) -> None:
        if day not in self._writers:
            folder = day_dir(self._raw_dir, day)
            folder.mkdir(parents=True, exist_ok=True)
            temporary = temporary_path(folder / self._file_name)
            self._writers[day] = (pq.ParquetWriter(temporary, self._schema), temporary)
            self.rows[day] = 0
        self._writers[day][0].write_table(table)
        self.rows[day] += table.num_rows

    def __enter__(self) -> DayFiles:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        for writer, _ in self._writers.values():
            writer.close()
        for day, (_, temporary) in self._writers.items():
            if exc_type is None:
                os.replace(temporary, temporary.with_name(self._file_name))
            else:
                temporary.unlink(missing_ok=True)
                log.warning("discarded the partial file for %s after an error", day)


def remove_stale_days(raw_dir: str | Path, file_name: str, keep: set[dt.date]) -> list[Path]:
    """Delete ``RAW/clicks/ds=*/<file_name>`` for days not in ``keep`` (left by an earlier landing)."""
    removed = []
    for path in sorted(local_path(LandingZone(str(raw_dir)).clicks).glob(f"{PARTITION_PREFIX}*/{file_name}")):
        day = partition_day(path.parent.name)
        if day not in keep:
            path.unlink()
            removed.append(path)
            log.info("removed %s: no events of this input on %s any more", path, day)
    return removed


def land_file(input_path: str | Path, fmt: str, raw_dir: str | Path) -> dict[dt.date, int]:
    """Land ``input_path`` (format ``fmt``) in ``raw_dir``; returns the rows written per UTC day."""
    file_name = f"{input_stem(input_path)}.parquet"
    with DayFiles(raw_dir, file_name, EVENT_SCHEMA) as files:
        for block in iter_events(input_path, fmt):
            for day, rows in split_by_day(block):
                files.write(day, rows)
    remove_stale_days(raw_dir, file_name, keep=set(files.rows))
    for day, count in sorted(files.rows.items()):
        log.info("%s: %d events -> %s", day, count, day_dir(raw_dir, day) / file_name)
    return dict(sorted(files.rows.items()))


def summary(input_path: str | Path, raw_dir: str | Path, rows: dict[dt.date, int]) -> str:
    if not rows:
        return f"{input_path}: no events; nothing landed in {raw_dir}"
    days = sorted(rows)
    return (f"{input_path}: {sum(rows.values()):,} events landed in {LandingZone(str(raw_dir)).clicks} "
            f"over {len(days)} day(s), {days[0]} .. {days[-1]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", required=True, choices=FORMATS, help="the input's public format")
    parser.add_argument("--input", required=True, type=Path, help="the file to land")
    parser.add_argument("--raw", help="landing zone root (default: Settings.raw)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raw_dir = args.raw or load_settings().raw
    try:
        rows = land_file(args.input, args.format, raw_dir)
    except (ReaderError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(args.input, raw_dir, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
