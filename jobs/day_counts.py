"""The day's counts of a scoring run, added up from its tasks by a Spark accumulator.

Each scoring task counts its sessions (jobs/session_groups.py) and adds them to an accumulator of
:class:`CountsParam`; the driver reads the sum once the rows are written. Spark merges a task's
accumulator updates only when the task succeeds, and a result stage's once per partition, so a retried
task is not counted twice: the scoring runs in the write's result stage. The driver and every Python
worker import this module (the accumulator travels with the scoring function), so it imports nothing heavy.
"""

from __future__ import annotations

from pyspark.accumulators import AccumulatorParam

# The counts: all but null_rows go into the run record (jobs/score.py, docs/CONTRACTS.md section 6); a day
# with null rows fails instead (jobs/day_sessions.py, checked_counts).
COUNTS = ("sessions", "events", "unknown_items", "fallback_sessions", "truncated_sessions", "events_not_scored",
          "null_rows")


def no_counts() -> dict[str, int]:
    return dict.fromkeys(COUNTS, 0)


class CountsParam(AccumulatorParam):
    """Sums :data:`COUNTS` dictionaries."""

    def zero(self, value: dict[str, int]) -> dict[str, int]:
        return no_counts()

    def addInPlace(self, value1: dict[str, int], value2: dict[str, int]) -> dict[str, int]:  # noqa: N802 (Spark's name)
        for key in COUNTS:
            value1[key] += value2[key]
        return value1
