"""
### Score a day's sessions and publish the recommendations to the warehouse

Runs after every promotion-gate decision of `gru4rec_train` (the **model** asset; the day is the one
the model was trained for, so a new sessions day has been sessionized and trained on), or by hand for
any day and any model version or alias.

1. **resolve_model**: resolves the `model` Param (`champion` by default, or a version number) to one
   concrete registry version, so the whole run uses the same model even if the alias moves meanwhile;
   fails at once when there is no such version (no champion yet: run `gru4rec_train` first).
2. **score**: `jobs/score.py` through `spark-submit`: the top `top_k` next items of every session of the
   day; partition D of the warehouse table `session_recommendations` is replaced in one transaction.
3. **check_partition**: reads partition D back from the warehouse and checks it against the scoring
   run's record: the row count, every session present, ranks 1..K with K distinct items per session.
   On success it updates the **session_recommendations** asset.

**Inputs**: `sessions/ds=D/` in the lake, the registered model. **Outputs**: warehouse partition D
(`Settings.warehouse_url`), `recommendations/ds=D/` and `stats/score/ds=D.json` in the lake; a rerun
replaces them, never duplicates rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException
from dag_support.assets import model_asset, recommendations_asset
from dag_support.checks import DataCheckError, check_recommendations
from dag_support.lake import read_json
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
    schedule=[model_asset(settings)],
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "recsys-ml", "retries": 1, "execution_timeout": timedelta(hours=1)},
    params=scoring_params(settings),
    tags=["sessionrec", "gru4rec", "spark", "warehouse"],
):
    day = resolve_day()

    @task(task_display_name="Resolve the model version")
    def resolve_model(params: dict[str, Any] | None = None) -> str:
        """``models:/<name>/<version>`` for the Param's version or alias; fails clearly if there is none."""
        from lifecycle.connection import connect
        from lifecycle.registry import ModelNotFound, ModelReference, resolve_version

        reference = str((params or {}).get("model") or "champion")
        try:
            version = resolve_version(connect(settings), reference, settings.model_name)
        except ModelNotFound as exc:
            raise AirflowFailException(f"{exc}; train one with gru4rec_train or pass an existing version") from exc
        return str(ModelReference(settings.model_name, version=version))

    model_uri = resolve_model()

    score = spark_job(settings, "score", "score", "Score the sessions (Spark)",
                      ["--lake", settings.lake, "--ds", day, "--model-uri", model_uri,
                       "--top-k", "{{ params.top_k }}"])

    @task(outlets=[recommendations], task_display_name="Check the warehouse partition")
    def check_partition(day: str, outlet_events: Any = None) -> dict[str, Any]:
        """Compare partition D of the warehouse with the scoring run's record."""
        from jobs.warehouse import connect

        record_location = settings.layout.score_stats(day)
        with connect(settings.warehouse_url) as warehouse:
            partition = warehouse.read_partition(date.fromisoformat(day))
        source = f"{redact(settings.warehouse_url)} session_recommendations ds={day}"
        try:
            summary = check_recommendations(partition, read_json(record_location), source)
        except DataCheckError as exc:
            raise AirflowFailException(str(exc)) from exc
        outlet_events[recommendations].extra = {"ds": day, **summary}
        return summary

    score >> check_partition(day)
