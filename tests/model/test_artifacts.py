"""The model folder (model/artifacts.py): round trip, and clear refusals of anything but plain data."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifacts import CONFIG_FILE, VOCABULARY_FILE, WEIGHTS_FILE, load_model, save_model
from model.data import Vocabulary, write_vocabulary
from model.network import GRU4Rec, GRU4RecConfig

PARAMS = {"loss": "cross-entropy", "layers": [12], "epochs": 3}


class Payload:
    """Any pickled object: loading it would mean running code from the artifact."""


def vocabulary(n: int) -> Vocabulary:
    return Vocabulary.from_counts(np.array([f"i{k}" for k in range(n)], dtype=object), np.arange(n, 0, -1))


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, GRU4Rec, Vocabulary]:
    torch.manual_seed(0)
    model = GRU4Rec(GRU4RecConfig(n_items=15, layers=(12, 10), dropout_hidden=0.3))
    items = vocabulary(15)
    save_model(tmp_path / "model", model, items, PARAMS)
    return tmp_path / "model", model, items


def test_round_trip(saved: tuple[Path, GRU4Rec, Vocabulary]) -> None:
    directory, model, items = saved
    assert sorted(p.name for p in directory.iterdir()) == [CONFIG_FILE, VOCABULARY_FILE, WEIGHTS_FILE]
    loaded, loaded_items, params = load_model(directory)
    assert params == PARAMS
    assert loaded.config == model.config and not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded_items.item_ids.tolist() == items.item_ids.tolist()
    assert loaded_items.counts.tolist() == items.counts.tolist()
    config = json.loads((directory / CONFIG_FILE).read_text())
    assert config["format_version"] == 2 and config["family"] == "gru4rec"
    assert config["network"]["layers"] == [12, 10]
    state = torch.load(directory / WEIGHTS_FILE, weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())


def test_refuses_a_pickled_object(saved: tuple[Path, GRU4Rec, Vocabulary]) -> None:
    directory, model, _ = saved
    torch.save({**model.state_dict(), "extra": Payload()}, directory / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE}: not a plain state_dict .*refusing"):
        load_model(directory)


def test_refuses_a_pickled_module(saved: tuple[Path, GRU4Rec, Vocabulary]) -> None:
    directory, model, _ = saved
    torch.save(model, directory / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE}: not a plain state_dict"):
        load_model(directory)


def test_refuses_weights_of_the_wrong_shape(saved: tuple[Path, GRU4Rec, Vocabulary]) -> None:
    directory, _, _ = saved
    config = json.loads((directory / CONFIG_FILE).read_text())
    config["network"]["layers"] = [12, 11]
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{WEIGHTS_FILE}: weights have the wrong shape .*item_embedding"):
        load_model(directory)


def test_refuses_missing_or_extra_weights(saved: tuple[Path, GRU4Rec, Vocabulary]) -> None:
    directory, model, _ = saved
    state = OrderedDict(model.state_dict())
    state.pop("item_bias")
    state["surprise"] = torch.zeros(1)
    torch.save(state, directory / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=r"missing \['item_bias'\], unexpected \['surprise'\]"):
        load_model(directory)


def test_refuses_a_vocabulary_of_another_size(saved: tuple[Path, GRU4Rec, Vocabulary]) -> None:
    directory, _, _ = saved
    write_vocabulary(vocabulary(14), directory / VOCABULARY_FILE)
    with pytest.raises(ValueError, match=rf"{VOCABULARY_FILE}: 14 items, but {CONFIG_FILE} says .* 15"):
        load_model(directory)


def test_a_folder_written_before_families_loads_as_gru4rec(saved: tuple[Path, GRU4Rec, Vocabulary]) -> None:
    """Format 1 (no family key) is what versions already in registries hold."""
    directory, model, _ = saved
    config = json.loads((directory / CONFIG_FILE).read_text())
    del config["family"]
    config["format_version"] = 1
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    loaded, _, params = load_model(directory)
    assert isinstance(loaded, GRU4Rec) and loaded.family == "gru4rec" and loaded.config == model.config
    assert params == PARAMS


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ('{"network": {"n_items": 15}}', "expected an object with exactly the keys"),
    ('{"network": {"n_items": 15}, "params": {}, "format_version": 1, "code": "x"}', "found \\['code', "),
    ('{"network": {"n_items": 15}, "params": {}, "format_version": 9}', "format_version 9"),
    ('{"network": {"n_items": 15, "units": 3}, "params": {}, "format_version": 1}', "unknown key"),
    ('{"network": {"n_items": 15}, "params": {}, "format_version": 2}', "exactly the keys family"),
    ('{"family": "os.system", "network": {"n_items": 15}, "params": {}, "format_version": 2}',
     "unknown model family 'os.system'"),
])
def test_refuses_a_bad_configuration(saved: tuple[Path, GRU4Rec, Vocabulary], text: str, message: str) -> None:
    directory, _, _ = saved
    (directory / CONFIG_FILE).write_text(text)
    with pytest.raises(ValueError, match=rf"{CONFIG_FILE}: .*{message}"):
        load_model(directory)


def test_missing_file_is_named(saved: tuple[Path, GRU4Rec, Vocabulary]) -> None:
    directory, _, _ = saved
    (directory / VOCABULARY_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{VOCABULARY_FILE}: missing"):
        load_model(directory)


def test_save_refuses_a_vocabulary_that_does_not_fit(tmp_path: Path) -> None:
    model = GRU4Rec(GRU4RecConfig(n_items=5, layers=(4,)))
    with pytest.raises(ValueError, match="vocabulary has 6 items but the network scores 5"):
        save_model(tmp_path, model, vocabulary(6), {})


def test_save_overwrites_a_previous_model(saved: tuple[Path, GRU4Rec, Vocabulary]) -> None:
    directory, _, items = saved
    torch.manual_seed(1)
    other = GRU4Rec(GRU4RecConfig(n_items=15, layers=(6,)))
    save_model(directory, other, items, {"epochs": 1})
    loaded, _, params = load_model(directory)
    assert loaded.config.layers == (6,) and params == {"epochs": 1}
    assert not list(directory.glob("*.partial"))
