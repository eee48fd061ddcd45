"""NARM through the one model interface: the model folder, the trainer registry, the Recommender, the pyfunc
and the training CLI, on the tiny chain training set of tests/model/conftest.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from lifecycle.tracking import training_run
from model.artifacts import CONFIG_FILE, WEIGHTS_FILE, load_model, save_model
from model.data import Vocabulary, load_split, read_vocabulary
from model.families import FAMILIES
from model.narm import NARM, NARMConfig
from model.recommender import Recommender
from sessionrec.config import Settings
from tests.model.conftest import NARM_TINY as TINY
from training.families import TRAINERS, evaluate_model
from training.narm_trainer import EARLY_STOPPING_KEY, holdout_split

ROOT = Path(__file__).resolve().parents[2]


def test_registered_for_loading_and_fitting() -> None:
    assert "narm" in FAMILIES and "narm" in TRAINERS
    assert TRAINERS["narm"].default_params()["hidden"] == 100
    with pytest.raises(ValueError, match="unknown NARM parameter"):
        TRAINERS["narm"].params({"layers": [100]})


def test_fitted_model_learns_the_chains(narm_model_dir: Path, training_dir: Path) -> None:
    model, vocabulary, params = load_model(narm_model_dir)
    assert isinstance(model, NARM) and model.family == "narm" and params["hidden"] == 32
    metrics = evaluate_model(TRAINERS["narm"], model, load_split(training_dir, "test", vocabulary))
    assert metrics["recall@1"] > 0.9


def test_folder_round_trip_keeps_the_scores(narm_model_dir: Path, tmp_path: Path) -> None:
    model, vocabulary, params = load_model(narm_model_dir)
    save_model(tmp_path, model, vocabulary, params)
    again, _, _ = load_model(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["family"] == "narm" and NARMConfig.from_dict(config["network"]) == model.config
    items, lengths = torch.tensor([[1, 2, 3], [4, 0, 0]]), torch.tensor([3, 1])
    torch.testing.assert_close(again.score_sessions(items, lengths), model.score_sessions(items, lengths),
                               rtol=0, atol=0)


class Payload:
    """An object a pickle would rebuild (and could run code through); a NARM folder must never load it."""


def test_a_pickled_object_in_the_weights_is_refused(narm_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in (WEIGHTS_FILE, "items.parquet", CONFIG_FILE):
        (folder / name).write_bytes((narm_model_dir / name).read_bytes())
    torch.save({"item_embedding": Payload()}, folder / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="refusing to load objects"):
        load_model(folder)


@pytest.mark.parametrize(("change", "message"), [
    (lambda config: config["network"].update(hidden=64), "wrong shape"),
    (lambda config: config["network"].update(layers=[32]), "unknown key"),
    (lambda config: config.update(family="gru4rec"), "do not match the configuration|unknown key"),
    (lambda config: config["network"].update(dropout_context=2.0), "dropout_context"),
])
def test_a_tampered_configuration_is_refused(narm_model_dir: Path, tmp_path: Path, change: Callable[[dict], None],
                                             message: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in (WEIGHTS_FILE, "items.parquet"):
        (folder / name).write_bytes((narm_model_dir / name).read_bytes())
    config = json.loads((narm_model_dir / CONFIG_FILE).read_text())
    change(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_model(folder)


def test_recommender_serves_a_narm_folder(narm_model_dir: Path, chain_items: list[str]) -> None:
    recommender = Recommender.from_directory(narm_model_dir, device="cpu")
    assert recommender.family == "narm"
    result = recommender.recommend([[chain_items[10], chain_items[11]], ["never-seen"]], k=3)
    assert result.item_id[0] == chain_items[12]
    assert result.fallback.tolist() == [False] * 3 + [True] * 3


def test_narm_logs_and_predicts_through_the_pyfunc(narm_model_dir: Path, chain_items: list[str],
                                                   mlflow_store: Callable[[Path], Settings], tmp_path: Path) -> None:
    settings = mlflow_store(tmp_path / "var")
    with training_run(settings, date(2026, 11, 21), device="cpu", system_metrics=False) as run:
        info = run.log_model(narm_model_dir)
    model = mlflow.pyfunc.load_model(info.model_uri, model_config={"device": "cpu"})
    frame = pd.DataFrame({"session_id": ["a", "b"], "item_ids": [[chain_items[20], chain_items[21]],
                                                                 [chain_items[33]]]})
    result = model.predict(frame, params={"k": 2})
    first = result[result["rank"] == 1].set_index("session_id")["item_id"]
    assert first.to_dict() == {"a": chain_items[22], "b": chain_items[34]}


def test_holdout_is_the_latest_sessions(training_dir: Path) -> None:
    data = load_split(training_dir, "train")
    earlier, latest = holdout_split(data, 0.1)
    assert latest.n_sessions == 40 and earlier.n_sessions + latest.n_sessions == data.n_sessions
    assert latest.session_ids.tolist() == data.session_ids[-40:].tolist()
    assert latest.session(0).tolist() == data.session(data.n_sessions - 40).tolist()
    with pytest.raises(ValueError, match="patience 0"):
        holdout_split(load_split(training_dir, "train"), 0.9999)


def test_early_stopping_watches_the_holdout_and_reports_the_evaluation_data(training_dir: Path) -> None:
    trainer = TRAINERS["narm"]
    vocabulary = read_vocabulary(training_dir / "items.parquet")
    train_data = load_split(training_dir, "train", vocabulary)
    seen: list[dict[str, float]] = []
    fitted = trainer.fit(train_data, trainer.params({**TINY, "epochs": 2, "patience": 1}), torch.device("cpu"),
                         eval_data=load_split(training_dir, "test", vocabulary),
                         on_epoch=lambda epoch, metrics: seen.append(dict(metrics)))
    assert len(seen) == 2 and {"recall@20", "mrr@20", EARLY_STOPPING_KEY, "pairs_per_s"} <= set(seen[0])
    assert fitted.pairs == 2 * holdout_split(train_data, 0.1)[0].n_pairs


def test_training_cli_fits_narm(training_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "model"
    overrides = json.dumps({**TINY, "epochs": 2})
    completed = subprocess.run(
        [sys.executable, "-m", "training.train", "--family", "narm", "--params", overrides,
         "--training-dir", str(training_dir), "--no-mlflow", "--device", "cpu", "--baselines", "",
         "--output-dir", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "epoch 2/2" in completed.stdout
    model, vocabulary, params = load_model(output)
    assert isinstance(model, NARM) and isinstance(vocabulary, Vocabulary) and params["epochs"] == 2


def test_training_cli_takes_narm_params_and_refuses_gru4rec_flags(training_dir: Path) -> None:
    from training.train import build_parser, family_overrides

    parser = build_parser("cpu")
    args = parser.parse_args(["--training-dir", str(training_dir), "--family", "narm", "--params", '{"hidden": 8}'])
    assert family_overrides(args)["narm"]["hidden"] == 8 and family_overrides(args)["narm"]["embedding"] == 50
    with pytest.raises(ValueError, match="GRU4Rec's"):
        family_overrides(parser.parse_args(["--training-dir", str(training_dir), "--family", "narm",
                                            "--loss", "bpr"]))
    with pytest.raises(ValueError, match="unknown NARM parameter"):
        family_overrides(parser.parse_args(["--training-dir", str(training_dir), "--family", "narm",
                                            "--params", '{"layers": [3]}']))
