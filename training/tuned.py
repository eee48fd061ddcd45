"""The data set's tuned presets: the best settings a hyperparameter search (training/tune.py) found per model
family, stored as JSON in the lake beside the training sets, for nightly training and the train DAG's form.

Light on purpose (no numpy, torch or Optuna): DAG files read it while they are parsed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sessionrec.config import Settings
from sessionrec.layout import local_path


@dataclass(frozen=True)
class TunedPreset:
    """The best trial of a search: what nightly training uses and where it came from."""

    family: str
    params: dict[str, Any]         # the family's parameters (for GRU4Rec: TrainParams field values)
    search_params: dict[str, Any]  # the trial's Optuna parameters (to measure it again in a later study)
    metric: str
    value: float
    valid_metrics: dict[str, float]
    study: str
    trial: int
    training_dir: str
    data_digest: str
    mlflow_run_id: str | None
    created_at: str


def tuned_path(settings: Settings, family: str) -> Path:
    """``<lake>/tuned/<family>/params.json`` (sessionrec/layout.py): the data set's tuned preset, beside the
    training sets. Local lakes only, like the training sets the trainers read."""
    return local_path(settings.layout.tuned_params(family))


def load_tuned(settings: Settings, family: str) -> TunedPreset | None:
    """The data set's tuned preset of ``family``, or None when no search has stored one."""
    path = tuned_path(settings, family)
    if not path.is_file():
        return None
    try:
        return TunedPreset(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path}: not a tuned preset written by training.tune ({exc}); remove it or rerun "
                         "the search") from exc


def load_tuned_params(settings: Settings, family: str = "gru4rec") -> dict[str, Any] | None:
    """The family's parameters from the data set's tuned preset (what nightly training uses by default), or
    None without one. Where they came from (to record with a training run): ``load_tuned(...).study`` and
    ``.trial``."""
    tuned = load_tuned(settings, family)
    return dict(tuned.params) if tuned is not None else None


def store_tuned(settings: Settings, preset: TunedPreset) -> Path:
    """Write the preset atomically (temporary file, then rename)."""
    path = tuned_path(settings, preset.family)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(asdict(preset), indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
    return path


