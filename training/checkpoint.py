"""Epoch checkpoints with exact resume, shared by the trainers: a plain dict of tensors and numbers
(run state, parameters, data fingerprint, random states, epoch stats), written atomically and read with
``weights_only=True``. A checkpoint of other parameters or other data is refused, never resumed."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

CHECKPOINT_VERSION = 1


class Resumable(Protocol):
    device: torch.device

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Params(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def derived_seed(seed: int, stream: str) -> int:
    """An independent seed per random stream, so the streams are not the same numbers."""
    entropy = int.from_bytes(hashlib.blake2b(stream.encode(), digest_size=8).digest(), "little")
    return int(np.random.SeedSequence([seed, entropy]).generate_state(1, dtype=np.uint64)[0] >> 1)


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(path: Path, run: Resumable, params: Params, fingerprint: dict, stats: list[Any]) -> None:
    """Write the state after ``len(stats)`` epochs (``stats``: dataclasses) to ``path``, atomically."""
    checkpoint = {"format_version": CHECKPOINT_VERSION, "epoch": len(stats), "params": params.to_dict(),
                  "data": fingerprint, "rng": rng_state(run.device), "stats": [asdict(s) for s in stats],
                  **run.state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def resume(path: Path, run: Resumable, params: Params, fingerprint: dict) -> list[dict[str, Any]]:
    """Restore ``run`` and the random states from ``path``; returns the finished epochs' stats as dicts.
    Refuses a checkpoint of another format, other parameters or other data."""
    checkpoint = torch.load(path, weights_only=True, map_location=run.device)
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format {checkpoint.get('format_version')!r} is not "
                         f"{CHECKPOINT_VERSION}; remove it or use another checkpoint directory")
    if checkpoint["params"] != params.to_dict():
        changed = sorted(k for k, v in params.to_dict().items() if checkpoint["params"].get(k) != v)
        raise ValueError(f"{path}: checkpoint of a run with other parameters (differs in {changed}); "
                         "use another checkpoint directory")
    if checkpoint["data"] != fingerprint:
        raise ValueError(f"{path}: checkpoint of a run on other data ({checkpoint['data']} vs {fingerprint}); "
                         "use another checkpoint directory")
    run.load_state_dict(checkpoint)
    set_rng_state(checkpoint["rng"], run.device)
    return checkpoint["stats"]
