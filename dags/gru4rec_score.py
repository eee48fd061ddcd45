"""
### Score a day's sessions and publish the recommendations to the warehouse

Runs for day D when either asset is updated (`clickstream_sessions | gru4rec_champion`), or by hand
for any day and any model version or alias:

- **clickstream_sessions**: the sessions of D exist, so D is scored with whatever `@champion` is then,
  without waiting for `gru4rec_train` (whose training of D may fail or take hours);
- **champion**: the gate of `gru4rec_train` promoted a model trained for D, so D is scored again with
  it (the partition is replaced).

The day is the latest `ds` among the triggering asset events (a run started by both a sessions event
and a champion event of an earlier day, which happens only when the DAG was paused or the scheduler
down, scores the later day; trigger the other by hand).

1. **resolve_model**: resolves the `model` Param (`champion` by default, or a version number) to one
   concrete registry version, so the whole run uses the same model even if the alias moves meanwhile;
   fails at once when there is no such version (no champion yet, on a deployment's first night: the
   first promotion of `gru4rec_train` scores the day).
2. **score**: `jobs/score.py` through `spark-submit`: the top `top_k` next items of every session of the
   day; partition D of the warehouse table `session_recommendations` is replaced in one transaction.
3. **check_partition**: reads partition D back from the warehouse and checks it against the scoring
   run's record: the row count, every session present, ranks 1..K with K distinct items per session.
   Then its health: it fails, naming the figure, its value and its limit, when the share of sessions
   served the most-popular fallback exceeds `max_fallback_share`, or the day's sessions fell by more than
   `max_session_drop` against the mean of the previous days' runs (Params; defaults from the settings).
   On success it updates the **session_recommendations** asset with these figures (and the catalogue
   coverage and unknown-event share).

**Inputs**: `sessions/ds=D/` in the lake, the registered model. **Outputs**: warehouse partition D
(`Settings.warehouse_url`), `recommendations/ds=D/` and `stats/score/ds=D.json` in the lake; a rerun
replaces them, never duplicates rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException
from dag_support.assets import champion_asset, recommendations_asset, sessions_asset
from dag_support.checks import DataCheckError, check_health, check_recommendations
from dag_support.lake import read_json
from dag_support.notify import failure_notifier
from dag_support.params import scoring_params
from dag_support.spark import spark_job
from dag_support.tasks import resolve_day

from sessionrec.config import load_settings, redact

settings = load_settings()
recommendations = recommendations_asset()

with DAG(
    dag_id="gru4rec_score",
    description="Sessions of a day -> top-K next items per session -> warehouse partition",
    doc_md=__doc__,
    schedule=sessions_asset(settings) | champion_asset(settings),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "recsys-ml", "on_failure_callback": failure_notifier(settings),
                  "retries": 1, "execution_timeout": timedelta(hours=1)},
    params=scoring_params(settings),
    tags=["sessionrec", "gru4rec", "spark", "warehouse"],
):
    day = resolve_day()

    @task(task_display_name="Resolve the model version")
    def resolve_model(params: dict[str, Any] | None = None) -> str:
        """``models:/<name>/<version>`` for the Param's version or alias; fails clearly if there is none."""
        from lifecycle.connection import connect
        from lifecycle.resolver import ModelNotFound, ModelReference, resolve_version

        reference = str((params or {}).get("model") or "champion")
        try:
            version = resolve_version(connect(settings), reference, settings.model_name)
        except ModelNotFound as exc:
            raise AirflowFailException(f"{exc}; train one with gru4rec_train or pass an existing version") from exc
        return str(ModelReference(settings.model_name, version=version))

    model_uri = resolve_model()

    score = spark_job(settings, "score", "score", "Score the sessions (Spark)",
                      ["--lake", settings.lake, "--ds", day, "--model-uri", model_uri,
                       "--top-k", "{{ params.top_k }}", "--max-session-events", str(settings.crawler_max_events)])

    @task(outlets=[recommendations], task_display_name="Check the warehouse partition")
    def check_partition(day: str, params: dict[str, Any] | None = None,
                        outlet_events: Any = None) -> dict[str, Any]:
        """Compare partition D of the warehouse with the scoring run's record, then check its health."""
        from jobs.warehouse import connect

        record_location = settings.layout.score_stats(day)
        with connect(settings.warehouse_url) as warehouse:
            partition = warehouse.read_partition(date.fromisoformat(day))
        source = f"{redact(settings.warehouse_url)} session_recommendations ds={day}"
        try:
            run_record = read_json(record_location)
            summary = check_recommendations(partition, run_record, source)
            limits = params or {}
            summary.update(check_health(
                partition, run_record, float(limits.get("max_fallback_share", settings.max_fallback_share)),
                float(limits.get("max_session_drop", settings.max_session_drop)), source))
        except DataCheckError as exc:
            raise AirflowFailException(str(exc)) from exc
        outlet_events[recommendations].extra = {"ds": day, **summary}
        return summary

    score >> check_partition(day)
