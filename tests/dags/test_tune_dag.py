"""The gru4rec_tune DAG end to end: ``airflow dags test`` of a two-trial search with two mapped workers."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from sessionrec import airflow_env
from sessionrec.config import load_settings
from sessionrec.run import run_dag
from tests.tuning_data import make_tuning_dir
from training import tune
from training.tuned import load_tuned


@pytest.mark.slow  # about 50 s on a quiet machine (Airflow start-up, torch imports in three tasks, 2 trials)
def test_a_two_trial_search_through_airflow(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path / "var", tune_heartbeat_s=2)
    training_dir = make_tuning_dir(Path(settings.lake), seed=1)
    env = airflow_env.airflow_env(settings, retry_delay_s=1)
    airflow_env.prepare(settings, env)
    run_dag("gru4rec_tune", {"ds": "2026-11-21", "trials": 2, "workers": 2, "seed": 4}, env,
            settings.home / "dag-test-logs")

    tuned = load_tuned(settings, "gru4rec")
    assert tuned is not None and tuned.training_dir == str(training_dir.resolve())
    storage = optuna.storages.RDBStorage(tune.storage_url(settings))
    trials = optuna.load_study(study_name=tuned.study, storage=storage).get_trials()
    assert len(trials) == 2 and all(t.state.is_finished() for t in trials)
    client = MlflowClient(settings.mlflow_tracking_uri)
    (experiment,) = client.search_experiments(filter_string="name = 'gru4rec-search'")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.study = '{tuned.study}'"
                                   " and attributes.run_name = '" + tuned.study + "'")
    assert parent.info.status == "FINISHED"
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "search/summary.json")).read_text())
    assert summary["complete"] + summary["pruned"] == 2 and summary["replaced"]
