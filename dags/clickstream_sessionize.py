"""
### Sessionize one day of raw clicks

Nightly (cron from `Settings.nightly_cron`, UTC) for the **previous UTC day**; triggered by hand for any
day (Param `ds`). A backfill creates one run per nightly fire time between two instants, and each run
processes the day before its fire time, so days A..B (with the default 02:30 cron) are
`airflow backfill create --dag-id clickstream_sessionize --from-date A+1 --to-date B+1T02:30`
(the DAG must be switched on for its backfill runs to start; add `--reprocess-behavior completed` to
rerun days that already ran: a rerun replaces the day's outputs).

1. **wait_for_landing_zone**: waits (deferred, no worker slot held) up to 6 hours for files in
   `raw/clicks/ds=D/`.
2. **sessionize**: `jobs/sessionize.py` through `spark-submit` on the `spark_default` connection
   (`local[*]` by default; any Spark master by editing the connection). Validates rows, quarantines the
   bad ones with a reason, drops duplicates, cuts sessions at the inactivity gap.
3. **check_stats**: fails the run when the day had no rows, too many quarantined rows or no sessions;
   on success it updates the **clickstream_sessions** asset with `{"ds": D, ...}`, which starts
   `gru4rec_train`.

**Inputs**: `raw/clicks/ds=D/` and `ds=D-1/` (sessions crossing midnight), docs/CONTRACTS.md section 1.
**Outputs**: `sessions/ds=D/`, `quarantine/ds=D/`, `stats/ds=D.json` in the lake, each replaced as a
whole, so a rerun of D is idempotent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG, CronTriggerTimetable, task
from airflow.sdk.exceptions import AirflowFailException
from dag_support.assets import sessions_asset
from dag_support.checks import DataCheckError, check_session_stats
from dag_support.lake import read_json
from dag_support.params import day_param
from dag_support.spark import RUN_DAY, spark_job
from dag_support.tasks import resolve_day

from sessionrec.config import load_settings

settings = load_settings()
lake = settings.layout
sessions = sessions_asset(settings)

with DAG(
    dag_id="clickstream_sessionize",
    description="Raw clicks of a UTC day -> validated, deduplicated sessions in the lake",
    doc_md=__doc__,
    schedule=CronTriggerTimetable(settings.nightly_cron, timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=3,
    default_args={"owner": "recsys-data", "retries": 2, "execution_timeout": timedelta(minutes=30)},
    params={"ds": day_param()},
    tags=["sessionrec", "spark", "lake"],
):
    day = resolve_day()

    landing = FileSensor(
        task_id="wait_for_landing_zone",
        task_display_name="Wait for the landing zone",
        # Any visible file of the day's landing folder (a glob: hidden temporary files don't count).
        filepath=f"{lake.raw_day(RUN_DAY)}/*",
        deferrable=True,
        poke_interval=300,
        timeout=int(timedelta(hours=6).total_seconds()),
        execution_timeout=None,  # bounded by the sensor timeout above
        retries=0,
    )

    sessionize = spark_job(settings, "sessionize", "sessionize", "Sessionize (Spark)",
                           ["--raw", settings.raw, "--lake", settings.lake, "--ds", day,
                            "--gap-minutes", str(settings.gap_minutes),
                            "--max-quarantine-share", str(settings.max_quarantine_share)])

    @task(outlets=[sessions], task_display_name="Check the stats")
    def check_stats(day: str, outlet_events: Any = None) -> dict[str, Any]:
        """Check the day's stats and record the sessions asset event with the day and its counts."""
        location = lake.sessionize_stats(day)
        try:
            summary = check_session_stats(read_json(location), settings.max_quarantine_share, location)
        except DataCheckError as exc:
            raise AirflowFailException(str(exc)) from exc
        outlet_events[sessions].extra = {"ds": day, **summary}
        return summary

    day >> landing >> sessionize >> check_stats(day)
