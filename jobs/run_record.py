"""What a job run records about itself: seconds per phase, and the record as JSON in the lake."""

from __future__ import annotations

import json
import time
from typing import Any

from pyspark.sql import SparkSession

from jobs.lake import write_text


class PhaseTimer:
    """Seconds spent in each named phase of a run, for the run record."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> float:
        """Close ``phase`` (it ran since the previous lap); returns its seconds."""
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 3)
        self._last = now
        return self.seconds[phase]

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def write_run_record(spark: SparkSession, path: str, record: dict[str, Any]) -> str:
    """``record`` as JSON at ``path`` in the lake (replaced on rerun); returns the path."""
    write_text(spark, path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path
