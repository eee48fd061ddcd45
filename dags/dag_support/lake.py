"""Reading the small JSON files the Spark jobs leave in the lake (stats), from a local or remote lake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

# Spark's Hadoop connector and fsspec name the same S3 storage differently.
_FSSPEC_SCHEMES = {"s3a": "s3", "s3n": "s3"}


def read_json(location: str) -> dict[str, Any]:
    """The JSON object at ``location``: a local path, ``file://`` or any fsspec URI (s3a:// read as s3://)."""
    scheme, sep, rest = location.partition("://")
    if not sep or scheme == "file":
        path = Path(url2pathname(urlsplit(location).path) if sep else location)
        if not path.is_file():
            raise FileNotFoundError(f"{location}: expected a JSON file written by the job, found none")
        return json.loads(path.read_text())
    import fsspec

    uri = f"{_FSSPEC_SCHEMES.get(scheme, scheme)}://{rest}"
    with fsspec.open(uri, "r") as handle:
        return json.load(handle)
