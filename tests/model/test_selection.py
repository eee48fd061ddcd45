"""Nightly selection and the gate against a real MLflow store on tiny data: the test split is never read to
choose, a model of another clickstream never becomes @champion, and a baseline that beats the candidate
on the day's data blocks its promotion."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from lifecycle.pipeline import gate, register, train_and_log
from lifecycle.registry import force_promote, gate_and_promote, register_version
from lifecycle.resolver import CHALLENGER, CHAMPION
from lifecycle.tracking import connect, training_run
from model.data import load_split, read_vocabulary
from sessionrec.config import Settings
from training.experiment import choose, select
from training.families import TRAINERS
from training.train import main
from training.tuned import TunedPreset, store_tuned

DAY = date(2026, 11, 21)
FAMILIES = ("gru4rec", "sr", "vsknn")
# A small GRU4Rec (as the conftest's trained model) for one epoch.
TINY = {"layers": (32,), "batch_size": 64, "epochs": 1, "n_sample": 64, "learning_rate": 0.1, "momentum": 0.0,
        "dropout_hidden": 0.0, "seed": 3}
FAST = {"gru4rec": TINY}


def production_settings(mlflow_settings: Settings, training_dir: Path) -> Settings:
    """The test's settings with the fixture's lake as the production lake."""
    return mlflow_settings.replace(lake=str(training_dir.parent.parent))


def fit_and_register(settings: Settings, training_dir: Path, family: str, params: dict | None = None) -> int:
    """Fit ``family`` on the folder's train split, log it in a run and register it (no gate)."""
    trainer = TRAINERS[family]
    values = trainer.params(params)
    vocabulary = read_vocabulary(training_dir / "items.parquet")
    fitted = trainer.fit(load_split(training_dir, "train", vocabulary), values, torch.device("cpu"))
    folder = settings.home / f"{family}-{training_dir.parent.name}"
    trainer.save(fitted, folder, vocabulary, values)
    with training_run(settings, DAY, device="cpu", system_metrics=False) as run:
        info = run.log_model(folder)
    return int(register_version(connect(settings), info, settings.model_name, DAY).version)


def test_selection_never_reads_the_test_split(training_dir: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """With the test split gone, the whole choice is made (and announced) before anything fails on it."""
    copy = tmp_path / "ds=2026-11-21"
    shutil.copytree(training_dir, copy)
    shutil.rmtree(copy / "test")
    chosen: list[tuple[str, dict]] = []
    with caplog.at_level(logging.INFO), pytest.raises(FileNotFoundError, match=r"test: split folder not found"):
        select(copy, FAMILIES, FAST, device="cpu", baselines=("pop",),
               on_selected=lambda family, validation: chosen.append((family, validation)))
    ((family, validation),) = chosen
    assert set(validation) == set(FAMILIES) and family in FAMILIES
    assert all(m["n_sessions"] == 80 for m in validation.values()), "measured on valid (80 sessions)"

    selection = select(training_dir, FAMILIES, FAST, device="cpu", baselines=("pop", "sr"))
    assert selection.family == family and selection.validation == validation
    assert selection.result.metrics == selection.test[family] and selection.result.metrics["n_sessions"] == 100


def test_a_sliver_of_recall_does_not_outweigh_a_far_worse_ranking() -> None:
    """Validation figures of a make-run night: V-SKNN led on Recall@20 by 0.002 with half of SR's MRR@20, was
    chosen, and the gate then refused it because the SR baseline beat it on both metrics of the test day."""
    validation = {"gru4rec": {"recall@20": 0.8266, "mrr@20": 0.5713},
                  "sr": {"recall@20": 0.8318, "mrr@20": 0.5873},
                  "vsknn": {"recall@20": 0.8341, "mrr@20": 0.3243}}
    assert choose(validation, "recall@20") == "vsknn"
    assert choose(validation, "recall@20", tolerance=0.01) == "sr"
    # Outside the tolerance the better recall wins, whatever the MRR.
    assert choose(validation, "recall@20", tolerance=0.001) == "vsknn"
    # Within it, equal MRR goes to the better recall, then to the first listed.
    tied = {"a": {"recall@20": 0.80, "mrr@20": 0.5}, "b": {"recall@20": 0.805, "mrr@20": 0.5},
            "c": {"recall@20": 0.805, "mrr@20": 0.5}}
    assert choose(tied, "recall@20", tolerance=0.01) == "b"
    with pytest.raises(ValueError, match="selection_tolerance must not be negative"):
        Settings(selection_tolerance=-0.1)


def test_a_model_of_another_clickstream_is_refused_by_coverage(
        mlflow_settings: Settings, training_dir: Path, foreign_dir: Path) -> None:
    settings = production_settings(mlflow_settings, training_dir)
    client = connect(settings)
    champion = fit_and_register(settings, training_dir, "sr")
    force_promote(client, settings.model_name, champion, reason="the incumbent")
    foreign = fit_and_register(settings, foreign_dir, "sr")

    decision = gate(settings, foreign, DAY)
    assert not decision["promoted"] and decision["champion_version"] == champion
    assert "its vocabulary covers 0.0% of the" in decision["reason"] and "at least 50.0% required" in decision["reason"]
    assert client.get_registered_model(settings.model_name).aliases == {CHAMPION: champion, CHALLENGER: foreign}
    tags = client.get_model_version(settings.model_name, str(foreign)).tags
    assert tags["gate_decision"] == "rejected" and tags["gate_reason"] == decision["reason"]
    assert float(tags["gate_coverage"]) == 0.0 and tags["gate_test_data"] == str(training_dir.resolve())

    # Even asked to gate on the foreign folder's own test split, the pipeline uses the production lake's.
    assert gate(settings.replace(gate_min_coverage=0.0), foreign, DAY)["champion_version"] == champion


def test_an_ad_hoc_cli_run_cannot_move_the_champion(mlflow_store: Callable[[Path], Settings], cli_home: Path,
                                                    training_dir: Path, foreign_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    settings = production_settings(mlflow_store(cli_home), training_dir)
    client = connect(settings)
    champion = fit_and_register(settings, training_dir, "sr")
    force_promote(client, settings.model_name, champion)
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # exported by connect(): the CLI's own
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SESSIONREC_LAKE", settings.lake)
    ad_hoc = ["--training-dir", str(foreign_dir), "--family", "sr", "--device", "cpu", "--baselines", "pop"]

    assert main(ad_hoc) == 0
    assert len(client.search_model_versions(f"name = '{settings.model_name}'")) == 1, "nothing registered"

    assert main([*ad_hoc, "--register"]) == 0
    assert "not gated (trained on" in capsys.readouterr().out
    latest = client.get_model_version(settings.model_name, str(champion + 1))
    assert latest.tags["gate_decision"] == "not gated" and "outside the production lake" in latest.tags["gate_reason"]

    with pytest.raises(SystemExit) as exit_info:
        main([*ad_hoc, "--register", "--force-promote"])
    assert exit_info.value.code == 2 and "never becomes @champion" in capsys.readouterr().err
    assert client.get_registered_model(settings.model_name).aliases == {CHAMPION: champion}


def test_a_baseline_that_beats_the_neural_candidate_blocks_promotion(mlflow_settings: Settings,
                                                                     training_dir: Path) -> None:
    """On chain sessions sequential rules are exact; a small GRU4Rec trained for one epoch is good, not exact."""
    settings = production_settings(mlflow_settings, training_dir)
    client = connect(settings)
    version = str(fit_and_register(settings, training_dir, "gru4rec", {**TINY, "layers": (8,), "n_sample": 0}))
    decision = gate_and_promote(client, settings.model_name, version, training_dir, settings.gate_tolerance,
                                settings.gate_baseline_margin, settings.gate_min_coverage, device="cpu",
                                baselines=("pop", "sr"))
    assert not decision.promote
    assert decision.reason.startswith("refused: no champion yet; the best baseline beats it on ")
    assert "sr 1.0000 against the candidate's 0." in decision.reason
    assert client.get_registered_model(settings.model_name).aliases == {CHALLENGER: int(version)}
    tags = client.get_model_version(settings.model_name, version).tags
    assert tags["gate_best_baseline"] == "sr" and tags["family"] == "gru4rec"
    assert float(tags["gate_best_baseline_mrr_20"]) > float(tags["gate_candidate_mrr_20"]) > 0.3


def test_nightly_training_selects_logs_the_leaderboard_and_starts_from_the_tuned_preset(
        mlflow_settings: Settings, training_dir: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(training_dir.parent.parent, lake)
    settings = mlflow_settings.replace(lake=str(lake), families="gru4rec,sr")
    store_tuned(settings, TunedPreset(
        family="gru4rec", params={**TINY, "layers": [24]}, search_params={"hidden": 24}, metric="recall@20",
        value=0.5, valid_metrics={"recall@20": 0.5}, study="nightly-test", trial=7, training_dir=str(lake),
        data_digest="0" * 16, mlflow_run_id=None, created_at="2026-11-21T00:00:00+00:00"))
    summary = train_and_log(settings, DAY, device="cpu", baselines=("pop",))
    assert summary["family"] in ("gru4rec", "sr")
    assert {(row["model"], row["kind"]) for row in summary["leaderboard"]} == {
        ("gru4rec", "family"), ("sr", "family"), ("pop", "baseline")}
    client = MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(summary["run_id"])
    assert run.data.tags["family"] == summary["family"] and run.data.tags["selection_metric"] == "recall@20"
    assert run.data.params["families.gru4rec.layers"] == "[24]"
    assert (run.data.params["tuned.gru4rec.study"], run.data.params["tuned.gru4rec.trial"]) == ("nightly-test", "7")
    assert run.data.params["preset"] == "tuned" and "tuned.sr.study" not in run.data.params
    assert {"family_gru4rec_valid_recall_20", "family_sr_test_mrr_20"} <= set(run.data.metrics)
    comparison = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/comparison/metrics.csv")
    assert f"\n{summary['family']} (candidate)," in comparison and "\npop," in comparison
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "leaderboard")}
    assert artifacts == {"leaderboard/leaderboard.json", "leaderboard/leaderboard.png"}
    version = register(settings, summary["run_id"], DAY)
    assert client.get_model_version(settings.model_name, str(version)).tags["family"] == summary["family"]
