"""The hyperparameter search (training/tune.py): search space, determinism, resuming after a kill, the test
split never read, MLflow parent and nested runs, the tuned preset and when it is replaced, parallel workers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

import model.data
from model.data import Vocabulary
from sessionrec.config import PROJECT_ROOT, Settings, load_settings
from tests.tuning_data import make_tuning_dir
from training import tune
from training.trainer import TrainParams
from training.tuned import load_tuned, load_tuned_params, store_tuned, tuned_path


@pytest.fixture(scope="module")
def tuning_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tuning_dir(tmp_path_factory.mktemp("lake"), seed=1)


def quick_settings(home: Path, **changes: Any) -> Settings:
    return load_settings(env={}, home=home, tune_heartbeat_s=1, **changes)


def finished_trials(settings: Settings, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(tune.storage_url(settings))
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    return [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


def finished_count(database: Path) -> int:
    """Finished trials in a study database another process is writing, read without touching its schema."""
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as connection:
            query = "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')"
            (count,) = connection.execute(query).fetchone()
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0
    return count


@pytest.fixture(scope="module")
def uninterrupted(tuning_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, Any]]:
    """Three trials of a seeded search, straight through, without MLflow."""
    settings = quick_settings(tmp_path_factory.mktemp("straight") / "var")
    return settings, tune.search(settings, tuning_dir, trials=3, seed=5, mlflow=False)


def test_the_families_search_space_stays_in_the_published_ranges() -> None:
    from training.families import TRAINERS

    trainer = TRAINERS["gru4rec"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_losses = set()
    for _ in range(300):
        trial = study.ask()
        params = TrainParams.from_dict(trainer.params(trainer.search_space(trial, 700)))  # always valid
        study.tell(trial, 0.0)
        seen_losses.add(params.loss)
        assert 64 <= params.layers[0] <= 512 and len(params.layers) == 1
        assert 32 <= params.batch_size <= 256 and 0.01 <= params.learning_rate <= 0.25
        assert 0 <= params.momentum <= 0.9 and 0 <= params.dropout_embed <= 0.5 and 0 <= params.dropout_hidden <= 0.7
        assert 0 <= params.n_sample <= 700 and 0 <= params.sample_alpha <= 1
        if params.loss == "bpr-max":
            assert 0 <= params.bpreg <= 2 and params.elu_param in (0.0, 0.5, 1.0) and params.logq == 0
        else:
            assert params.logq == 1.0 and params.elu_param == 0.0
    assert seen_losses == {"cross-entropy", "bpr-max"}


def test_derived_seeds_are_stable_and_distinct() -> None:
    assert tune.derived_seed(5, 0, 0) == tune.derived_seed(5, 0, 0)
    assert len({tune.derived_seed(5, n, w) for n in range(50) for w in range(4)}) == 200
    assert tune.worker_count(load_settings(env={}, tune_workers=0), None) == (os.cpu_count() or 1)
    assert tune.worker_count(load_settings(env={}, tune_workers=3), 2) == 2
    with pytest.raises(ValueError, match="workers must be >= 0"):
        tune.worker_count(load_settings(env={}), -1)


def test_search_never_reads_the_test_split(tuning_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    real = model.data.load_split

    def spy(training_dir: Path, split: str, vocabulary: Vocabulary | None = None) -> model.data.SessionDataset:
        read.append(split)
        return real(training_dir, split, vocabulary)

    monkeypatch.setattr(model.data, "load_split", spy)
    summary = tune.search(quick_settings(tmp_path / "var"), tuning_dir, trials=1, seed=2, mlflow=False)
    assert summary["complete"] + summary["pruned"] == 1
    assert set(read) == {"train_tr", "valid"}  # and test/ holds bytes no reader could parse


def test_search_is_deterministic_and_resumes_after_a_kill(tuning_dir: Path, tmp_path: Path,
                                                          uninterrupted: tuple[Settings, dict[str, Any]]) -> None:
    straight_settings, straight = uninterrupted
    reference = [(t.params, t.state, t.value) for t in finished_trials(straight_settings, straight["study"])]
    assert len(reference) == 3
    settings = quick_settings(tmp_path / "var")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "SESSIONREC_HOME": str(settings.home),
           "SESSIONREC_TUNE_HEARTBEAT_S": "1"}
    process = subprocess.Popen([sys.executable, "-m", "training.tune", "--training-dir", str(tuning_dir),
                                "--trials", "3", "--seed", "5", "--no-mlflow"], env=env, cwd=PROJECT_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            if finished_count(settings.home / "optuna" / "optuna.db"):
                break
        assert process.poll() is None, "the search ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    done_before = len(finished_trials(settings, straight["study"]))
    assert 1 <= done_before < 3
    resumed = tune.search(settings, tuning_dir, trials=3, seed=5, mlflow=False)
    assert resumed["study"] == straight["study"]
    trials = finished_trials(settings, straight["study"])
    assert len(trials) == 3
    # The same trials as the uninterrupted search, in the same order, with the same results.
    assert [(t.params, t.state) for t in trials] == [(p, s) for p, s, _ in reference]
    assert [t.value for t in trials] == pytest.approx([v for _, _, v in reference])


def test_rerun_of_a_finished_search_runs_nothing(tuning_dir: Path,
                                                 uninterrupted: tuple[Settings, dict[str, Any]]) -> None:
    settings, first = uninterrupted
    again = tune.search(settings, tuning_dir, trials=3, seed=5, mlflow=False)
    assert again["trials"] == first["trials"] == 3 and not again["replaced"]
    with pytest.raises(ValueError, match="resume it with those"):
        tune.prepare(settings, tuning_dir, trials=3, seed=6, mlflow=False)


def test_tracked_search_and_the_tuned_preset(tuning_dir: Path, tmp_path: Path, mlflow_store: Any) -> None:
    settings = mlflow_store(tmp_path / "var").replace(tune_heartbeat_s=1)
    lines: list[str] = []
    summary = tune.search(settings, tuning_dir, trials=2, seed=3, echo=lines.append)
    assert lines[0].startswith(f"study {summary['study']} (sqlite): 2 trials, 1 worker(s), mrr@20 on valid")
    assert lines[1].startswith("trial 1/2") and "best mrr@20" in lines[-1] and "min left" in lines[-1]

    client = MlflowClient(settings.mlflow_tracking_uri)
    (experiment,) = client.search_experiments(filter_string="name = 'gru4rec-search'")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(summary["best"]["value"])
    assert parent.data.tags["best_trial"] == str(summary["best"]["trial"])
    for child in children:
        assert child.data.params["loss"] in ("cross-entropy", "bpr-max")
        assert client.get_metric_history(child.info.run_id, "valid_mrr_20")

    tuned = load_tuned(settings, "gru4rec")
    assert summary["replaced"] and tuned is not None and tuned.study == summary["study"]
    assert tuned.value == pytest.approx(summary["best"]["value"]) and tuned.trial == summary["best"]["trial"]
    assert tuned_path(settings, "gru4rec") == Path(settings.lake) / "tuned" / "gru4rec" / "params.json"
    params = load_tuned_params(settings, "gru4rec")
    assert TrainParams.from_dict(params).to_dict() == params
    assert json.loads(Path(client.download_artifacts(parent.info.run_id, "tuned/gru4rec.json")).read_text()) \
        == json.loads(tuned_path(settings, "gru4rec").read_text())

    # A search on other validation data measures the current preset first (the enqueued trial 0), and
    # replaces it only with a trial that does better there.
    other_dir = make_tuning_dir(tmp_path / "other", seed=7)
    second = tune.search(settings, other_dir, trials=2, seed=3)
    trials = finished_trials(settings, second["study"])
    assert trials[0].user_attrs["incumbent_of"] == summary["study"]
    assert trials[0].params == tuned.search_params
    incumbent_best = second["best"]["trial"] == trials[0].number
    assert second["replaced"] is (not incumbent_best)
    assert load_tuned(settings, "gru4rec").study == (summary["study"] if incumbent_best else second["study"])


def test_a_preset_not_measured_on_this_data_is_kept(uninterrupted: tuple[Settings, dict[str, Any]],
                                                    tmp_path: Path) -> None:
    straight_settings, straight = uninterrupted
    settings = straight_settings.replace(lake=str(tmp_path / "lake"))
    kept = load_tuned(straight_settings, "gru4rec")
    store_tuned(settings, kept.__class__(**{**kept.__dict__, "study": "gru4rec-elsewhere", "value": 0.0}))
    spec = tune.SearchSpec(straight["study"], kept.training_dir, "gru4rec", "mrr@20", 5, 3, None, "cpu", None, None)
    summary = tune.finish(settings.replace(tune_storage=tune.storage_url(straight_settings)), spec)
    assert not summary["replaced"] and "not measured on this validation data" in summary["reason"]
    assert load_tuned(settings, "gru4rec").study == "gru4rec-elsewhere"


def test_a_broken_tuned_preset_is_named(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path / "var")
    assert load_tuned_params(settings, "gru4rec") is None
    tuned_path(settings, "gru4rec").parent.mkdir(parents=True)
    tuned_path(settings, "gru4rec").write_text("{}")
    with pytest.raises(ValueError, match="params.json: not a tuned preset"):
        load_tuned(settings, "gru4rec")


def test_parallel_workers_share_one_study(tuning_dir: Path, tmp_path: Path) -> None:
    settings = quick_settings(tmp_path / "var")
    summary = tune.search(settings, tuning_dir, trials=3, workers=2, seed=9, mlflow=False)
    trials = finished_trials(settings, summary["study"])
    assert len(trials) == 3 == summary["complete"] + summary["pruned"]
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3
    assert {t.user_attrs["worker"] for t in trials} <= {0, 1}
