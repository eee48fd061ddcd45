"""Warm start (training/warm.py): a network for a grown vocabulary from a saved model's weights."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifacts import save_model
from model.data import Vocabulary
from model.network import GRU4Rec, GRU4RecConfig
from tests.model.test_trainer import N_ITEMS, chains
from training.families import trainer_for
from training.train import main
from training.trainer import TrainParams, train
from training.warm import WarmStart, warm_start

INPUT_MODES = {"tied": {}, "embedding": {"constrained_embedding": False, "embedding": 6},
               "one-hot": {"constrained_embedding": False}}


def vocabulary(ids: list[str]) -> Vocabulary:
    return Vocabulary(np.asarray(ids, dtype=object), np.ones(len(ids), dtype=np.int64))


def saved_champion(folder: Path, config: GRU4RecConfig, ids: list[str]) -> GRU4Rec:
    torch.manual_seed(0)
    champion = GRU4Rec(config)
    with torch.no_grad():
        for p in champion.parameters():  # biases start at zero: make every value tell where it came from
            p.add_(torch.randn_like(p))
    save_model(folder, champion, vocabulary(ids), {})
    return champion


@pytest.mark.parametrize("mode", INPUT_MODES.values(), ids=INPUT_MODES.keys())
def test_known_items_keep_their_rows_and_new_items_get_fresh_ones(tmp_path: Path, mode: dict) -> None:
    old_ids, new_ids = ["a", "b", "c", "d"], ["c", "e", "a", "f", "b"]  # d left, e and f are new, reordered
    config = GRU4RecConfig(n_items=len(old_ids), layers=(8,), **mode)
    champion = saved_champion(tmp_path, config, old_ids)
    new_config = replace(config, n_items=len(new_ids))
    torch.manual_seed(5)
    fresh = GRU4Rec(new_config)
    torch.manual_seed(5)
    model = warm_start(tmp_path, vocabulary(new_ids), new_config)
    assert model.n_items == 5
    item_names = model.item_parameter_names()
    old, new, initial = champion.state_dict(), model.state_dict(), fresh.state_dict()
    assert new.keys() == old.keys()
    for name in new:
        assert new[name].shape == initial[name].shape
        if name not in item_names:
            assert torch.equal(new[name], old[name]), name
            continue
        for row, item in enumerate(new_ids):
            expected = old[name][old_ids.index(item)] if item in old_ids else initial[name][row]
            assert torch.equal(new[name][row], expected), (name, item)


def test_refuses_another_architecture(tmp_path: Path) -> None:
    saved_champion(tmp_path, GRU4RecConfig(n_items=3, layers=(8,)), ["a", "b", "c"])
    with pytest.raises(ValueError, match=rf"{tmp_path}: cannot warm-start .*layers \(8,\) vs \(16,\)"):
        warm_start(tmp_path, vocabulary(["a", "b"]), GRU4RecConfig(n_items=2, layers=(16,)))
    with pytest.raises(ValueError, match="the network has 3 items but the vocabulary 2"):
        WarmStart.from_model_dir(tmp_path, vocabulary(["a", "b"])).apply(GRU4Rec(GRU4RecConfig(n_items=3, layers=(8,))))


def test_training_starts_from_the_champion(tmp_path: Path) -> None:
    """The first epoch of a warm start already has the loss a cold start reaches after several."""
    data = chains(300, seed=4)
    ids = [f"item{i}" for i in range(N_ITEMS)]
    params = TrainParams(layers=(24,), batch_size=16, epochs=3, n_sample=16, learning_rate=0.1, dropout_hidden=0.0)
    champion, cold = train(data, params)
    save_model(tmp_path, champion, vocabulary(ids), params.to_dict())
    grown = vocabulary([*ids, "new0", "new1"])
    grown_data = replace(data, n_items=len(grown))
    _, warm = train(grown_data, params.replace(epochs=1), warm_start=WarmStart.from_model_dir(tmp_path, grown))
    assert warm[0].loss < cold[1].loss < cold[0].loss


CLI_TINY = ["--no-mlflow", "--device", "cpu", "--baselines", "pop", "--layers", "16", "--batch-size", "16",
            "--n-sample", "8", "--learning-rate", "0.1"]


def test_cli_warm_starts_a_family_from_a_saved_model(training_dir: Path, tmp_path: Path) -> None:
    cold, warm = tmp_path / "cold.json", tmp_path / "warm.json"
    assert main(["--training-dir", str(training_dir), "--family", "gru4rec", "--epochs", "3", *CLI_TINY,
                 "--output-dir", str(tmp_path / "champion"), "--report", str(cold)]) == 0
    assert main(["--training-dir", str(training_dir), "--family", "gru4rec", "--epochs", "1", *CLI_TINY,
                 "--warm-start-from", str(tmp_path / "champion"), "--report", str(warm)]) == 0
    cold_losses = [epoch["loss"] for epoch in json.loads(cold.read_text())["epochs"]]
    assert json.loads(warm.read_text())["epochs"][0]["loss"] < cold_losses[0]


def test_cli_refuses_a_warm_start_without_its_family(training_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--training-dir", str(training_dir), *CLI_TINY, "--warm-start-from", str(tmp_path)])
    assert "--warm-start-from needs --family" in capsys.readouterr().err


def test_one_pass_families_have_no_warm_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sr is fitted in one pass over the data and has no warm start"):
        trainer_for("sr").warm_start(tmp_path, vocabulary(["a"]))
    with pytest.raises(ValueError, match="narm has no warm start"):
        trainer_for("narm").warm_start(tmp_path, vocabulary(["a"]))
