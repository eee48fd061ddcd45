"""Tasks shared by the DAGs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from airflow.sdk import task

from dag_support.days import DAY_KEY, asset_event_days, day_of_run

log = logging.getLogger(__name__)


@task(task_display_name="Resolve the day")
def resolve_day(params: Mapping[str, Any] | None = None, dag_run: Any = None,
                logical_date: datetime | None = None,
                triggering_asset_events: Mapping[Any, Iterable[Any]] | None = None) -> str:
    """The run's day as ``YYYY-MM-DD`` (Airflow fills the arguments from the run's context)."""
    day = day_of_run((params or {}).get(DAY_KEY), asset_event_days(triggering_asset_events), logical_date,
                     dag_run.run_after)
    log.info("run %s processes the UTC day %s", dag_run.run_id, day.isoformat())
    return day.isoformat()
