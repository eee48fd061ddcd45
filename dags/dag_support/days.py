"""Which UTC day a DAG run processes, whichever way the run started.

Airflow 3 runs do not all carry a usable date: a cron run (``CronTriggerTimetable``) has a zero-length
data interval at the fire time, a manual or API run may have no logical date at all, and an
asset-triggered run's own dates say nothing about the data. The rule, in order:

1. the ``ds`` Param when the person or API call that triggered the run gave one;
2. the latest ``ds`` recorded in the extras of the asset events that triggered the run;
3. the UTC day before the run's logical date (a nightly run at 02:30 processes yesterday; a backfill
   from A to B processes A-1 .. B-1), or, for a run without a logical date, before the time it was
   queued to run after.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

DAY_KEY = "ds"


def day_of_run(param_day: str | None, asset_days: Iterable[str], logical_date: datetime | None,
               run_after: datetime) -> date:
    """The day a run processes (rules in the module docstring)."""
    if param_day:
        return date.fromisoformat(param_day)
    days = [date.fromisoformat(day) for day in asset_days]
    if days:
        return max(days)
    anchor = logical_date if logical_date is not None else run_after
    return anchor.date() - timedelta(days=1)


def asset_event_days(triggering_asset_events: Mapping[Any, Iterable[Any]] | None) -> list[str]:
    """The ``ds`` of every triggering asset event that recorded one."""
    if not triggering_asset_events:
        return []
    return [event.extra[DAY_KEY] for events in triggering_asset_events.values() for event in events
            if event.extra and event.extra.get(DAY_KEY)]
