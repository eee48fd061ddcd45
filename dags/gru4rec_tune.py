"""
### Search GRU4Rec's hyperparameters on a training set and keep the best as the tuned preset

Manual by default (the form below); a weekly schedule when `Settings.tune_cron` is set.

1. **prepare**: creates the Optuna study for `training/ds=D` (or resumes it: the study is named after the
   family, the training set and a digest of its tuning data) in the study database
   (`Settings.tune_storage`), and the MLflow parent run. The current tuned preset is measured first.
2. **search**: as many mapped tasks as the form's *workers*, on the GPU pool and queue, each running
   trials of the shared study until the requested number have finished (Optuna's distributed mode: a
   deployment with several GPU workers searches that many times faster; locally they run one by one).
   Every trial trains on `train_tr` and is measured on `valid` after each epoch; trials behind the
   median of earlier ones are pruned. The test split is never read.
3. **finish**: makes the best trial the data set's tuned preset (`<lake>/tuned/<family>/params.json`, and the
   parent MLflow run's artifact) if it beats the current one on this validation data; nightly training
   uses it by default.

**Inputs**: `training/ds=D/` in the lake (`items.parquet`, `train_tr/`, `valid/`). **Outputs**: the study
in the study database, an MLflow parent run with one nested run per trial, maybe a new tuned preset.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from dag_support.params import day_param
from dag_support.tasks import resolve_day

from sessionrec.config import load_settings
from training.tune import METRICS

settings = load_settings()
SEARCH = "Search"

with DAG(
    dag_id="gru4rec_tune",
    description="Training set -> Optuna search (mapped GPU tasks sharing one study) -> tuned preset",
    doc_md=__doc__,
    schedule=settings.tune_cron or None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "recsys-ml", "retries": 1, "execution_timeout": timedelta(hours=1)},
    params={
        "ds": day_param(),
        "trials": Param(settings.tune_trials, type="integer", minimum=1, maximum=1000, title="Trials",
                        description="Finished (complete or pruned) trials the study should reach; a rerun "
                                    "resumes the study up to this number.", section=SEARCH),
        "workers": Param(max(1, settings.tune_workers), type="integer", minimum=1, maximum=64,
                         title="Workers", description="Mapped search tasks sharing the study (one GPU each).",
                         section=SEARCH),
        "timeout_minutes": Param(None, type=["null", "number"], exclusiveMinimum=0, title="Time budget (min)",
                                 description="No trial starts after this many minutes. Empty: no limit.",
                                 section=SEARCH),
        "metric": Param(settings.tune_metric, type="string", enum=list(METRICS), title="Validation metric",
                        section=SEARCH),
        "family": Param("gru4rec", type="string", pattern=r"^[a-z][a-z0-9_]*$", title="Model family",
                        description="A family of training/families.py (its search_space is searched).",
                        section=SEARCH),
        "seed": Param(1, type="integer", minimum=0, title="Sampler seed", section=SEARCH),
    },
    tags=["sessionrec", "gru4rec", "optuna", "mlflow", "gpu"],
):
    day = resolve_day()

    @task(task_display_name="Create or resume the study")
    def prepare(day: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        from dataclasses import asdict

        from sessionrec.layout import local_path
        from training.tune import prepare as prepare_study

        params = params or {}
        spec = prepare_study(settings, local_path(settings.layout.training_set(day)), params["family"],
                             params["trials"], params.get("timeout_minutes"), params["metric"], params["seed"])
        return asdict(spec)

    @task(task_display_name="Worker indexes")
    def workers(params: dict[str, Any] | None = None) -> list[int]:
        return list(range((params or {})["workers"]))

    @task(pool=settings.gpu_pool, queue=settings.gpu_queue, execution_timeout=timedelta(hours=12),
          task_display_name="Search (one worker of the study)")
    def search(spec: dict[str, Any], worker: int) -> int:
        """Run trials of the shared study until enough have finished; returns how many this worker ran."""
        from training.tune import SearchSpec, run_worker

        return run_worker(SearchSpec(**spec), worker, settings, parallel=True)

    @task(task_display_name="Keep the best trial as the tuned preset")
    def finish(spec: dict[str, Any]) -> dict[str, Any]:
        from training.tune import SearchSpec
        from training.tune import finish as finish_search

        return finish_search(settings, SearchSpec(**spec))

    prepared = prepare(day)
    searched = search.partial(spec=prepared).expand(worker=workers())
    searched >> finish(prepared)
