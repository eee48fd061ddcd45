"""Training-run tracking against a real MLflow store (SQLite): params, step metrics, test and baseline
metrics, lineage, plots, tags, system metrics and the model, as a reader of the run finds them."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lifecycle.tracking import (
    artifact_location,
    ensure_experiment,
    flatten_params,
    metric_key,
    training_run,
)
from model.data import load_split
from model.network import GRU4RecScorer
from model.recommender import Recommender
from sessionrec.config import PROJECT_ROOT, Settings
from training.baselines import fit_baselines
from training.evaluate import evaluate
from training.trainer import EpochStats, TrainParams

LOGICAL_DATE = date(2026, 11, 21)


def epoch(n: int, loss: float, recall: float) -> EpochStats:
    return EpochStats(epoch=n, loss=loss, pairs=1000, seconds=2.0, pairs_per_s=500.0 + n,
                      eval_metrics={"recall@20": recall, "mrr@20": recall / 2, "n_events": 99, "n_sessions": 30})


def test_metric_names_are_mlflow_safe() -> None:
    assert metric_key("recall@20") == "recall_20"
    assert metric_key("mrr@5", "test") == "test_mrr_5"
    assert metric_key("recall@20", "baseline_pop") == "baseline_pop_recall_20"


def test_params_are_flattened_with_dotted_keys() -> None:
    flat = flatten_params({"network": {"layers": [100, 50], "n_items": 7}, "train": {"loss": "bpr-max"}})
    assert flat == {"network.layers": "[100, 50]", "network.n_items": "7", "train.loss": "bpr-max"}


def test_artifact_location_is_explicit(tmp_path: Path) -> None:
    assert artifact_location(str(tmp_path), "gru4rec") == (tmp_path / "gru4rec").as_uri()
    assert artifact_location("s3://bucket/mlflow/", "gru4rec") == "s3://bucket/mlflow/gru4rec"
    assert artifact_location("mlflow-artifacts:/", "gru4rec") == "mlflow-artifacts:/gru4rec"


def test_a_training_run_records_everything(mlflow_settings: Settings, training_dir: Path,
                                           trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    recommender = Recommender.from_directory(trained_model_dir, device="cpu")
    train, test = load_split(training_dir, "train"), load_split(training_dir, "test")
    test_metrics = evaluate(GRU4RecScorer(recommender.model, "cpu"), test)
    baselines = {name: evaluate(scorer, test) for name, scorer in fit_baselines(train, ["pop", "spop"]).items()}
    params = TrainParams(layers=(32,), epochs=3)
    with training_run(mlflow_settings, LOGICAL_DATE, device="cpu") as run:
        run.log_params({"network": params.network_config(60).to_dict(), "train": params.to_dict()})
        run.log_training_data(training_dir)
        for stats in (epoch(1, 3.0, 0.2), epoch(2, 2.0, 0.4), epoch(3, 1.5, 0.5)):
            run.on_epoch_end(stats)
        run.log_test_metrics(test_metrics)
        run.log_baselines(baselines)
        run.log_plots()
        info = run.log_model(trained_model_dir)
    client = MlflowClient(mlflow_settings.mlflow_tracking_uri)
    logged = client.get_run(run.run_id)

    assert logged.info.run_name == "gru4rec-2026-11-21" and logged.info.status == "FINISHED"
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.name == "gru4rec"
    assert experiment.artifact_location == (Path(mlflow_settings.mlflow_artifact_root) / "gru4rec").as_uri()

    assert logged.data.params["train.layers"] == "[32]" and logged.data.params["train.epochs"] == "3"
    assert logged.data.params["network.n_items"] == "60"

    history = client.get_metric_history(run.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 3.0), (2, 2.0), (3, 1.5)]
    assert [m.value for m in client.get_metric_history(run.run_id, "valid_recall_20")] == [0.2, 0.4, 0.5]
    assert [m.value for m in client.get_metric_history(run.run_id, "train_pairs_per_s")] == [501, 502, 503]
    metrics = logged.data.metrics
    for k in (1, 5, 10, 20):
        assert metrics[f"test_recall_{k}"] == pytest.approx(test_metrics[f"recall@{k}"])
        assert metrics[f"test_mrr_{k}"] == pytest.approx(test_metrics[f"mrr@{k}"])
        assert metrics[f"baseline_pop_recall_{k}"] == pytest.approx(baselines["pop"][f"recall@{k}"])
        assert metrics[f"baseline_spop_mrr_{k}"] == pytest.approx(baselines["spop"][f"mrr@{k}"])
    assert metrics["test_n_events"] == test_metrics["n_events"]
    assert not any(key.startswith("valid_n_") for key in metrics)
    assert any(key.startswith("system/cpu_utilization") for key in metrics), sorted(metrics)

    tags = logged.data.tags
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert tags["git_commit"] == commit.stdout.strip()
    assert tags["logical_date"] == "2026-11-21" and tags["device"] == "cpu" and tags["device_name"]
    assert tags["training_dir"] == str(training_dir.resolve())

    (dataset_input,) = logged.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "training/ds=2026-11-21"
    expected = hashlib.sha256((training_dir / "items.parquet").read_bytes()
                              + (training_dir / "stats.json").read_bytes()).hexdigest()[:16]
    assert dataset.digest == expected
    profile = json.loads(dataset.profile)
    assert (profile["train_rows"], profile["test_rows"]) == (train.n_events, test.n_events)
    assert set(profile) == {"train_rows", "test_rows", "train_tr_rows", "valid_rows"}
    assert str(training_dir.resolve()) in dataset.source
    assert {(t.key, t.value) for t in dataset_input.tags} == {("mlflow.data.context", "training")}

    artifacts = {a.path for a in client.list_artifacts(run.run_id, "plots")}
    assert artifacts == {"plots/loss.png", "plots/recall_at_k.png"}
    local = Path(client.download_artifacts(run.run_id, "plots/loss.png"))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(client.download_artifacts(run.run_id, "comparison/metrics.csv"))
    assert table["model"].tolist() == ["gru4rec", "pop", "spop"]
    assert table.loc[0, "recall@20"] == pytest.approx(test_metrics["recall@20"])

    assert info.run_id == run.run_id
    model = mlflow.pyfunc.load_model(info.model_uri, model_config={"device": "cpu"})
    frame = model.predict(pd.DataFrame({"session_id": ["s"], "item_ids": [["item001"]]}), params={"k": 3})
    assert len(frame) == 3


def test_a_failing_run_is_marked_failed(mlflow_settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="training blew up"):
        with training_run(mlflow_settings, LOGICAL_DATE, device="cpu", system_metrics=False) as run:
            raise RuntimeError("training blew up")
    assert MlflowClient(mlflow_settings.mlflow_tracking_uri).get_run(run.run_id).info.status == "FAILED"


def test_lineage_needs_the_training_set_files(mlflow_settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "training" / "ds=2026-11-21"
    (folder / "train").mkdir(parents=True)
    with training_run(mlflow_settings, LOGICAL_DATE, device="cpu", system_metrics=False) as run:
        with pytest.raises(FileNotFoundError, match="items.parquet"):
            run.log_training_data(folder)


def test_a_deleted_experiment_is_not_reused_silently(mlflow_settings: Settings) -> None:
    client = MlflowClient(mlflow_settings.mlflow_tracking_uri)
    client.delete_experiment(ensure_experiment(client, "old", mlflow_settings.mlflow_artifact_root))
    with pytest.raises(ValueError, match="'old' .* is deleted"):
        ensure_experiment(client, "old", mlflow_settings.mlflow_artifact_root)


def test_model_logging_needs_the_run_to_be_active(mlflow_settings: Settings, trained_model_dir: Path) -> None:
    with training_run(mlflow_settings, LOGICAL_DATE, device="cpu", system_metrics=False) as run:
        pass
    with pytest.raises(RuntimeError, match="not the active MLflow run"):
        run.log_model(trained_model_dir)

