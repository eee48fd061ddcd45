"""Command-line pieces the Spark jobs share."""

from __future__ import annotations

import argparse
from datetime import date


def parse_day(text: str) -> date:
    """An argparse ``type`` for ``--ds``: a UTC day written YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a day YYYY-MM-DD, got {text!r}") from exc
