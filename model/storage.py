"""Writing and reading a model folder's data files: atomically replaced files, state_dicts, Parquet tables.

Everything here reads data only: weights with ``torch.load(weights_only=True)`` (tensors, no objects),
tables with pyarrow. A family module (model/families.py) builds its model from what these return.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(partial path)`` and rename over ``path``: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)


def save_state_dict(module: nn.Module, path: Path) -> None:
    """The module's parameters and buffers as CPU tensors, nothing else."""
    state = {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
    replace_atomically(path, lambda partial: torch.save(state, partial))


def read_state_dict(path: Path, device: torch.device | str) -> dict[str, torch.Tensor]:
    """A plain mapping of names to tensors, loaded with ``weights_only=True``; anything else is refused."""
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


def load_state_dict(path: Path, module: nn.Module, device: torch.device | str) -> None:
    """Fill ``module`` from ``path`` after checking the names and shapes match its configuration."""
    state = read_state_dict(path, device)
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the configuration: missing {missing}, unexpected {unexpected}")
    wrong = [f"{name} {tuple(state[name].shape)} (expected {tuple(tensor.shape)})"
             for name, tensor in expected.items() if state[name].shape != tensor.shape]
    if wrong:
        raise ValueError(f"{path}: weights have the wrong shape for the configuration: {', '.join(wrong)}")
    module.load_state_dict(state)


def write_table(table: pa.Table, path: Path) -> None:
    replace_atomically(path, lambda partial: pq.write_table(table, partial))


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    """A Parquet table with exactly the columns of ``schema``, cast to its types (a clear error otherwise)."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{path}: not a readable Parquet table ({exc})") from exc
    missing = sorted(set(schema.names) - set(table.column_names))
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {schema.names}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{path}: columns do not have the expected types {schema} ({exc})") from exc


def check_indexes(path: Path, name: str, values: torch.Tensor, bound: int) -> None:
    """Every value of column ``name`` must lie in [0, bound)."""
    if len(values) and (int(values.min()) < 0 or int(values.max()) >= bound):
        raise ValueError(f"{path}: column {name} must hold indexes in [0, {bound}), found "
                         f"{int(values.min())}..{int(values.max())}")


def network_fields(config_class: type, values: object) -> dict:
    """``values`` as keyword arguments of the network configuration dataclass ``config_class``, or a
    ValueError naming what is wrong (not a mapping, unknown keys, no ``n_items``)."""
    if not isinstance(values, dict):
        raise ValueError(f"network configuration must be a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(config_class)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"network configuration has unknown key(s) {sorted(unknown)}; expected {sorted(known)}")
    if "n_items" not in values:
        raise ValueError("network configuration lacks n_items")
    return dict(values)
