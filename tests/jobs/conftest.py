"""Fixtures of the Spark job tests: writing tiny landing-zone files."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

LandingWriter = Callable[[Path, date, str, object], Path]


def write_landing_file(raw: Path, day: date, name: str, content: object) -> Path:
    """Write ``raw/clicks/ds=DAY/name``: a str is written as is (CSV or JSON text), a list of dicts as JSON
    lines (``.jsonl``), a ``pyarrow.Table`` as Parquet."""
    path = raw / "clicks" / f"ds={day.isoformat()}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, pa.Table):
        pq.write_table(content, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in content))
    return path


@pytest.fixture(scope="session")
def landing_file() -> LandingWriter:
    """``landing_file(raw, day, name, content)`` writes one landing-zone file (see write_landing_file)."""
    return write_landing_file
