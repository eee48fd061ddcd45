"""Reading the small JSON files the Spark jobs leave in the lake (stats), from a local or remote lake."""

from __future__ import annotations

import json
from typing import Any

from sessionrec.layout import is_remote, local_path

# Spark's Hadoop connector and fsspec name the same S3 storage differently.
_FSSPEC_SCHEMES = {"s3a": "s3", "s3n": "s3"}


def read_json(location: str) -> dict[str, Any]:
    """The JSON object at ``location``: a local path, ``file://`` or any fsspec URI (s3a:// read as s3://)."""
    if not is_remote(location):
        path = local_path(location)
        if not path.is_file():
            raise FileNotFoundError(f"{location}: expected a JSON file written by the job, found none")
        return json.loads(path.read_text())
    import fsspec

    scheme, _, rest = location.partition("://")
    with fsspec.open(f"{_FSSPEC_SCHEMES.get(scheme, scheme)}://{rest}", "r") as handle:
        return json.load(handle)
