"""Every night is scored, whatever its training does, and the scoring's health is checked, with real
``airflow dags test`` runs on the pipeline of the other DAG tests (its lake, MLflow store, warehouse).

A day after the pipeline's day is landed and sessionized. Its training fails (the GPU it asks for is not
there), yet the score DAG, which the sessions asset starts without waiting for training (the schedule
``clickstream_sessions | champion`` is checked in test_dag_definitions.py), serves the day with the
champion of the moment. A later training of the day is promoted; the champion asset event it emits starts
the score DAG again, which replaces the day's partition with the new champion's recommendations. Each
score run is started the way those asset events start it: for the event's day.

Then a champion that knows none of the catalogue's items (trained elsewhere) serves the most-popular
fallback to every session: the check task fails naming the figure, and the failure notifier is called.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from dag_test_support import DAY, DAYS, EVENTS, ITEMS, TOP_K, TRAINING_CONF, PipelineRun, sessionize_in_process

from sessionrec import airflow_env
from sessionrec.config import Settings
from sessionrec.run import run_dag

NEXT = DAY + timedelta(days=1)
# Four DAG runs after the shared pipeline's three (which the first test may have to wait for).
# Slow, and they promote new champions in the shared pipeline run's registry: after the tests that check
# that run's state (tests/dags/conftest.py orders slow tests last).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def champion_version(settings: Settings) -> str | None:
    from lifecycle.connection import connect
    from lifecycle.resolver import aliased_version

    return aliased_version(connect(settings), settings.model_name, "champion")


def served_versions(settings: Settings, day: date) -> tuple[set[str], int]:
    from jobs.warehouse import connect

    with connect(settings.warehouse_url) as warehouse:
        partition = warehouse.read_partition(day)
    return set(partition.column("model_version").to_pylist()), partition.num_rows


def run_record(settings: Settings, day: date) -> dict:
    return json.loads(Path(settings.layout.score_stats(day)).read_text())


@pytest.fixture(scope="module")
def next_day(pipeline_run: PipelineRun, spark: object) -> date:
    from jobs.generate import generate_clickstream, write_landing_zone

    settings = pipeline_run.settings
    # The pipeline's seed: the same catalogue and popularity (drawn first), other sessions on another day.
    write_landing_zone(generate_clickstream(NEXT, 1, EVENTS // DAYS, n_items=ITEMS, seed=7), settings.raw)
    sessionize_in_process(spark, settings, NEXT)
    return NEXT


def test_a_night_whose_training_fails_is_scored_and_rescored_when_a_champion_is_promoted(
        pipeline_run: PipelineRun, next_day: date) -> None:
    settings, ds = pipeline_run.settings, next_day.isoformat()
    logs = settings.home / "nightly-logs"
    champion = champion_version(settings)
    assert champion is not None

    no_gpu = airflow_env.airflow_env(settings.replace(device="cuda:99"), retry_delay_s=1)
    with pytest.raises(RuntimeError, match="DAG gru4rec_train failed"):
        run_dag("gru4rec_train", {"ds": ds, **TRAINING_CONF}, no_gpu, logs)
    assert champion_version(settings) == champion

    env = airflow_env.airflow_env(settings, retry_delay_s=1)
    run_dag("gru4rec_score", {"ds": ds, "top_k": TOP_K}, env, logs)  # started by the sessions event of D
    record = run_record(settings, next_day)
    assert record["model_version"] == champion
    assert served_versions(settings, next_day) == ({champion}, record["sessions"] * TOP_K)

    train_log = run_dag("gru4rec_train", {"ds": ds, **TRAINING_CONF}, env, logs)  # force_promote: promoted
    promoted = champion_version(settings)
    assert promoted not in (None, champion)
    assert "end task task_id=announce_champion" in train_log.read_text()
    run_dag("gru4rec_score", {"ds": ds, "top_k": TOP_K}, env, logs)  # started by the champion event of D
    assert served_versions(settings, next_day) == ({promoted}, record["sessions"] * TOP_K)
    assert run_record(settings, next_day)["model_version"] == promoted


def register_foreign_champion(settings: Settings, tmp_path: Path) -> str:
    """A GRU4Rec of another catalogue (item ids no day here has), registered and made champion."""
    import mlflow
    import torch

    from lifecycle.connection import connect
    from model.artifacts import save_model
    from model.data import Vocabulary
    from model.network import GRU4Rec, GRU4RecConfig
    from model.packaging import log_session_model
    from training.trainer import TrainParams

    client = connect(settings)
    torch.manual_seed(0)
    vocabulary = Vocabulary(np.array([f"other-{i}" for i in range(40)], dtype=object),
                            np.arange(400, 0, -10, dtype=np.int64))
    save_model(tmp_path / "foreign", GRU4Rec(GRU4RecConfig(n_items=40, layers=(8,))), vocabulary,
               TrainParams(layers=(8,)).to_dict())
    experiment = client.get_experiment_by_name(settings.model_name)
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="foreign-catalogue"):
        info = log_session_model(tmp_path / "foreign", registered_model_name=settings.model_name)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(settings.model_name, "champion", version)
    return version


def test_a_champion_serving_fallbacks_fails_the_check_with_the_figure_and_notifies(
        pipeline_run: PipelineRun, next_day: date, tmp_path: Path) -> None:
    from lifecycle.connection import connect

    settings, ds = pipeline_run.settings, next_day.isoformat()
    previous = champion_version(settings)
    foreign = register_foreign_champion(settings, tmp_path)
    try:
        env = airflow_env.airflow_env(settings, retry_delay_s=1)
        with pytest.raises(RuntimeError, match="DAG gru4rec_score failed") as failed:
            run_dag("gru4rec_score", {"ds": ds, "top_k": TOP_K}, env, tmp_path / "logs")
    finally:
        connect(settings).set_registered_model_alias(settings.model_name, "champion", previous)
    log = Path(str(failed.value).rsplit("the task logs are in ", 1)[1]).read_text()
    record = run_record(settings, next_day)
    assert record["model_version"] == foreign and record["fallback_share"] == 1.0
    sessions = record["sessions"]
    assert (f"fallback_share 1.000 is above the limit 0.200 (max_fallback_share): {sessions} of {sessions} "
            "sessions got the most-popular fallback") in log
    assert "sessionrec: task check_partition of DAG gru4rec_score failed" in log  # the log notifier's line
