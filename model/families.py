"""The one place a model family is registered for loading, and the contract every family's model keeps.

A family is a kind of session model (GRU4Rec, sequential rules, ...). Its model object implements
:class:`SessionModel`; its :class:`FamilySpec` in :data:`FAMILIES` writes the model's data files into a
model folder and reads them back (weights as a ``state_dict`` loaded with ``weights_only=True``,
statistics as Parquet tables) with the JSON configuration that ``config.json`` holds for it. Nothing
else (recommender, pyfunc, registry, gate, scoring job) knows which family it handles.

Adding a family: write its module in ``model/`` (a class implementing SessionModel, plus its
FamilySpec) and add one entry to :data:`FAMILIES` (and one to ``training/families.py`` to train it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from model.neighbours import RULES_FILE, SESSIONS_FILE, ItemNeighbours, VSKNNModel
from model.network import GRU4Rec, GRU4RecConfig
from model.storage import load_state_dict, save_state_dict

WEIGHTS_FILE = "model.pt"


@runtime_checkable
class SessionModel(Protocol):
    """A trained next-item model: scores every item after each session's last known event."""

    family: str

    @property
    def n_items(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def score_sessions(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores [n, n_items] (higher is better) for sessions ``items`` [n, L] (vocabulary indexes, right
        padded; any padding value) of ``lengths`` [n] (each >= 1). No grad; on ``device`` (inputs are moved
        there; the scores may be returned on it)."""
        ...

    def to(self, device: torch.device | str) -> SessionModel:
        """This model on ``device`` (a model that only runs on the CPU returns itself)."""
        ...

    def eval(self) -> SessionModel:
        """This model in inference mode (no dropout)."""
        ...


@dataclass(frozen=True)
class FamilySpec:
    """How a family's model is written into and read from a model folder.

    ``write(model, directory)`` writes ``files`` and returns the model's JSON configuration (an object
    holding at least ``n_items``); ``read(directory, configuration, device)`` builds the model from those
    files and that configuration, reading data only, and refuses files that do not fit the configuration.
    """

    name: str
    files: tuple[str, ...]
    write: Callable[[Any, Path], dict]
    read: Callable[[Path, dict, torch.device], SessionModel]


def module_family(name: str, config_type: Any, module_type: Callable[[Any], nn.Module]) -> FamilySpec:
    """A neural family: ``module_type(config_type.from_dict(configuration))`` filled from ``model.pt``."""

    def write(model: nn.Module, directory: Path) -> dict:
        save_state_dict(model, directory / WEIGHTS_FILE)
        return model.config.to_dict()

    def read(directory: Path, configuration: dict, device: torch.device) -> SessionModel:
        try:
            config = config_type.from_dict(configuration)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{directory / 'config.json'}: invalid network configuration: {exc}") from exc
        module = module_type(config)
        load_state_dict(directory / WEIGHTS_FILE, module, device)
        return module.to(device).eval()

    return FamilySpec(name=name, files=(WEIGHTS_FILE,), write=write, read=read)


def table_family(name: str, model_type: Any, files: tuple[str, ...]) -> FamilySpec:
    """A family kept as tables: ``model.save(directory)`` and ``model_type.load(directory, config, device)``."""
    return FamilySpec(name=name, files=files, write=lambda model, directory: model.save(directory),
                      read=model_type.load)


FAMILIES: dict[str, FamilySpec] = {
    "gru4rec": module_family("gru4rec", GRU4RecConfig, GRU4Rec),
    "sr": table_family("sr", ItemNeighbours, (RULES_FILE,)),
    "vsknn": table_family("vsknn", VSKNNModel, (SESSIONS_FILE,)),
}
# A model folder without a "family" (format 1) was written before families existed: GRU4Rec.
LEGACY_FAMILY = "gru4rec"


def family_spec(name: object, source: str = "model") -> FamilySpec:
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f"{source}: unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]
