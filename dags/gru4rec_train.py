"""
### Train GRU4Rec on a window of session days and decide on promotion

Runs whenever `clickstream_sessionize` updates the **clickstream_sessions** asset (for the latest day
among the triggering events), or by hand with the form below (any day, other hyperparameters).

1. **build_training_set**: `jobs/training_set.py` through `spark-submit`: the `training_days` days of
   sessions ending with D, split in time (D is the test day), filtered, with an item vocabulary.
2. **train**: the GPU task. With the family `auto` (default) it fits every family of
   `Settings.families` (GRU4Rec with its tuned preset when a search left one, SR, V-SKNN, ...) on the
   validation split, keeps the best as the candidate, evaluates all of them on the test day beside the
   baselines with full ranking, and logs the candidate, its model and the leaderboard to MLflow; with a
   family chosen in the form it fits that one only. The GRU4Rec hyperparameters of the form override its
   preset. It runs in the pool and queue named by `Settings.gpu_pool` /
   `Settings.gpu_queue`, so on Celery or Kubernetes it lands on a GPU worker and one GPU trains one
   model at a time. A retry resumes from the last epoch checkpoint.
3. **register**: a new version of the registered model (`Settings.model_name`).
4. **gate**: on the test split of this day's training set in the lake, refuses a version whose vocabulary
   covers too little of the day's events (`Settings.gate_min_coverage`), and promotes it to `@champion`
   if it is not worse than the champion of any family (within `Settings.gate_tolerance`) and not beaten
   by the best baseline, or if `force_promote` is set. The decision
   updates the **model** asset with `{"ds", "version", "promoted", "champion_version"}`, which starts
   `gru4rec_score`.

**Inputs**: `sessions/ds=D-N+1 .. D` in the lake. **Outputs**: `training/ds=D/` in the lake (replaced
as a whole on rerun), an MLflow run, a model version, maybe a new champion.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task
from dag_support.assets import model_asset, sessions_asset
from dag_support.params import AUTO_FAMILY, training_overrides, training_params
from dag_support.spark import spark_job
from dag_support.tasks import resolve_day

from sessionrec.config import load_settings

settings = load_settings()
model = model_asset(settings)

with DAG(
    dag_id="gru4rec_train",
    description="Sessions window -> training set -> GRU4Rec in MLflow -> registered version -> gate",
    doc_md=__doc__,
    schedule=[sessions_asset(settings)],
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "recsys-ml", "retries": 1, "execution_timeout": timedelta(hours=1)},
    params=training_params(settings),
    tags=["sessionrec", "gru4rec", "mlflow", "gpu"],
):
    day = resolve_day()

    training_set = spark_job(settings, "build_training_set", "training_set", "Build the training set (Spark)",
                             ["--lake", settings.lake, "--ds", day, "--days", "{{ params.training_days }}",
                              "--min-item-support", str(settings.min_item_support),
                              "--min-session-length", str(settings.min_session_length)])

    @task(pool=settings.gpu_pool, queue=settings.gpu_queue, retries=2,
          execution_timeout=timedelta(hours=8), task_display_name="Train, select and evaluate")
    def train(day: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fit the families, select on validation (the candidate resumes from a checkpoint on retry),
        evaluate with baselines, log the MLflow run and the leaderboard."""
        from lifecycle.pipeline import train_and_log

        params = params or {}
        return train_and_log(settings, date.fromisoformat(day), family=params.get("family", AUTO_FAMILY),
                             overrides=training_overrides(params))

    @task(task_display_name="Register the model version")
    def register(trained: dict[str, Any], day: str) -> int:
        from lifecycle.pipeline import register as register_version

        return register_version(settings, trained["run_id"], date.fromisoformat(day))

    @task(outlets=[model], task_display_name="Promotion gate")
    def gate(version: int, day: str, params: dict[str, Any] | None = None,
             outlet_events: Any = None) -> dict[str, Any]:
        """Promote or not; record the decision with the model asset event."""
        from lifecycle.pipeline import gate as decide

        decision = decide(settings, version, date.fromisoformat(day),
                          force=bool((params or {}).get("force_promote")))
        outlet_events[model].extra = {"ds": day, "version": version, "promoted": decision["promoted"],
                                      "champion_version": decision["champion_version"]}
        return decision

    trained = train(day)
    training_set >> trained
    gate(register(trained, day), day)
