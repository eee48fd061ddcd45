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


def add_master_argument(parser: argparse.ArgumentParser) -> None:
    """``--master``: None keeps spark-submit's master, and :func:`jobs.spark.build_session` else uses local[*]."""
    parser.add_argument("--master", default=None,
                        help="Spark master (default: spark-submit's --master, else local[*])")
