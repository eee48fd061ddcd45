"""The model artifact folder (docs/CONTRACTS.md section 4): weights, vocabulary and configuration as data.

``model.pt`` holds only the network's ``state_dict`` and is read with ``weights_only=True``; the
vocabulary is Parquet and the configuration JSON. Loading never unpickles objects or runs code from
the artifact, and checks that the three files agree before building the network.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from model.data import Vocabulary, read_vocabulary, write_vocabulary
from model.network import GRU4Rec, GRU4RecConfig

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.pt"
VOCABULARY_FILE = "items.parquet"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
CONFIG_KEYS = {"network", "params", "format_version"}


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)


def save_model(directory: Path, model: GRU4Rec, vocabulary: Vocabulary, params: dict) -> None:
    """Write ``model.pt``, ``items.parquet`` and ``config.json`` into ``directory`` (created if needed)."""
    if len(vocabulary) != model.n_items:
        raise ValueError(f"vocabulary has {len(vocabulary)} items but the network scores {model.n_items}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    config = {"network": model.config.to_dict(), "params": params, "format_version": FORMAT_VERSION}
    text = json.dumps(config, indent=2, sort_keys=True)
    _replace_atomically(directory / WEIGHTS_FILE, lambda path: torch.save(state, path))
    _replace_atomically(directory / VOCABULARY_FILE, lambda path: write_vocabulary(vocabulary, path))
    _replace_atomically(directory / CONFIG_FILE, lambda path: path.write_text(text + "\n"))
    logger.info("saved GRU4Rec (%d items, layers %s) to %s", model.n_items, list(model.config.layers), directory)


def _read_config(path: Path) -> tuple[GRU4RecConfig, dict]:
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or set(config) != CONFIG_KEYS:
        found = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path}: expected an object with exactly the keys network, params and format_version; "
                         f"found {found}")
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {config['format_version']!r} is not supported "
                         f"(expected {FORMAT_VERSION})")
    if not isinstance(config["params"], dict):
        raise ValueError(f"{path}: params must be an object")
    try:
        network = GRU4RecConfig.from_dict(config["network"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid network configuration: {exc}") from exc
    return network, config["params"]


def _read_state_dict(path: Path, device: torch.device | str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, weights_only=True, map_location=device)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: not a plain state_dict of tensors; refusing to load objects from it "
                         f"({str(exc).splitlines()[0]})") from exc
    except (RuntimeError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable weights file ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (a mapping of names to tensors), got {type(state).__name__}")
    return state


def _check_state_dict(path: Path, state: dict[str, torch.Tensor], model: GRU4Rec) -> None:
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the configuration: missing {missing}, unexpected {unexpected}")
    wrong = [f"{name} {tuple(state[name].shape)} (expected {tuple(tensor.shape)})"
             for name, tensor in expected.items() if state[name].shape != tensor.shape]
    if wrong:
        raise ValueError(f"{path}: weights have the wrong shape for the configuration: {', '.join(wrong)}")


def load_model(directory: Path, device: torch.device | str = "cpu") -> tuple[GRU4Rec, Vocabulary, dict]:
    """Read an artifact folder: (network in eval mode on ``device``, vocabulary, training params)."""
    directory = Path(directory)
    for name in (WEIGHTS_FILE, VOCABULARY_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: missing; a model folder holds {WEIGHTS_FILE}, "
                                    f"{VOCABULARY_FILE} and {CONFIG_FILE}")
    network, params = _read_config(directory / CONFIG_FILE)
    vocabulary = read_vocabulary(directory / VOCABULARY_FILE)
    if len(vocabulary) != network.n_items:
        raise ValueError(f"{directory / VOCABULARY_FILE}: {len(vocabulary)} items, but {CONFIG_FILE} says the "
                         f"network scores {network.n_items}")
    state = _read_state_dict(directory / WEIGHTS_FILE, device)
    model = GRU4Rec(network)
    _check_state_dict(directory / WEIGHTS_FILE, state, model)
    model.load_state_dict(state)
    return model.to(device).eval(), vocabulary, params
