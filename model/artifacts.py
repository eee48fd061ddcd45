"""The model folder (docs/CONTRACTS.md section 4): the model's data files, vocabulary and configuration.

``config.json`` names the model's ``family`` (model/families.py), whose spec writes and reads the data
files (GRU4Rec: ``model.pt``, a ``state_dict`` read with ``weights_only=True``; SR and V-SKNN: Parquet
tables); the vocabulary is ``items.parquet``. Loading never unpickles objects or runs code from the
artifact, and checks that the files agree before building the model. A folder written before families
existed (``format_version`` 1, no ``family``) is a GRU4Rec model and still loads.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from model.data import Vocabulary, read_vocabulary, write_vocabulary
from model.families import FAMILIES, LEGACY_FAMILY, WEIGHTS_FILE, SessionModel, family_spec
from model.storage import replace_atomically

logger = logging.getLogger(__name__)

VOCABULARY_FILE = "items.parquet"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 2
# The keys of config.json by format version: 1 is GRU4Rec before families existed.
CONFIG_KEYS = {1: {"network", "params", "format_version"}, 2: {"family", "network", "params", "format_version"}}

__all__ = ["CONFIG_FILE", "FORMAT_VERSION", "VOCABULARY_FILE", "WEIGHTS_FILE", "load_model", "model_family",
           "save_model"]


def save_model(directory: Path, model: SessionModel, vocabulary: Vocabulary, params: dict) -> None:
    """Write the family's data files, ``items.parquet`` and ``config.json`` into ``directory`` (created)."""
    if len(vocabulary) != model.n_items:
        raise ValueError(f"vocabulary has {len(vocabulary)} items but the network scores {model.n_items}")
    spec = family_spec(getattr(model, "family", None), source=type(model).__name__)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in set().union(*(other.files for other in FAMILIES.values())) - set(spec.files):
        (directory / stale).unlink(missing_ok=True)  # another family's files, from an overwritten model
    network = spec.write(model, directory)
    config = {"family": spec.name, "network": network, "params": params, "format_version": FORMAT_VERSION}
    text = json.dumps(config, indent=2, sort_keys=True)
    replace_atomically(directory / VOCABULARY_FILE, lambda path: write_vocabulary(vocabulary, path))
    replace_atomically(directory / CONFIG_FILE, lambda path: path.write_text(text + "\n"))
    logger.info("saved %s (%d items) to %s", spec.name, model.n_items, directory)


def _read_config(path: Path) -> tuple[str, dict, dict]:
    """(family, network configuration, training params) of ``config.json``."""
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    version = config.get("format_version") if isinstance(config, dict) else None
    if isinstance(config, dict) and "format_version" in config and version not in CONFIG_KEYS:
        raise ValueError(f"{path}: format_version {version!r} is not supported "
                         f"(expected one of {sorted(CONFIG_KEYS)})")
    if not isinstance(config, dict) or set(config) != CONFIG_KEYS.get(version):
        found = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path}: expected an object with exactly the keys family, network, params and "
                         f"format_version (format 1: without family); found {found}")
    if not isinstance(config["params"], dict):
        raise ValueError(f"{path}: params must be an object")
    if not isinstance(config["network"], dict) or not isinstance(config["network"].get("n_items"), int):
        raise ValueError(f"{path}: network must be an object holding the number of items n_items")
    return config.get("family", LEGACY_FAMILY), config["network"], config["params"]


def model_family(directory: Path | str) -> str:
    """The family named by a model folder's ``config.json`` (GRU4Rec for a format 1 folder)."""
    family, _, _ = _read_config(Path(directory) / CONFIG_FILE)
    family_spec(family, source=str(Path(directory) / CONFIG_FILE))
    return family


def load_model(directory: Path, device: torch.device | str = "cpu") -> tuple[SessionModel, Vocabulary, dict]:
    """Read a model folder: (model in eval mode on ``device``, vocabulary, training params)."""
    directory = Path(directory)
    for name in (VOCABULARY_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: missing; a model folder holds {VOCABULARY_FILE}, "
                                    f"{CONFIG_FILE} and its family's data files")
    family, network, params = _read_config(directory / CONFIG_FILE)
    spec = family_spec(family, source=str(directory / CONFIG_FILE))
    for name in spec.files:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: missing; a {family} model folder holds "
                                    f"{', '.join(spec.files)}, {VOCABULARY_FILE} and {CONFIG_FILE}")
    vocabulary = read_vocabulary(directory / VOCABULARY_FILE)
    if len(vocabulary) != network["n_items"]:
        raise ValueError(f"{directory / VOCABULARY_FILE}: {len(vocabulary)} items, but {CONFIG_FILE} says the "
                         f"network scores {network['n_items']}")
    model = spec.read(directory, network, torch.device(device))
    return model, vocabulary, params
