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

# The preset choice meaning "each family's tuned preset, or its defaults when no search stored one" (the train
# DAG's form and nightly training; the alternatives are GRU4Rec's named presets of training/presets.py).
TUNED = "tuned"
# What a training run records of the tuned preset it started from (see TunedPreset.provenance).
PROVENANCE_FIELDS = ("study", "trial", "metric", "value", "created_at", "mlflow_run_id")


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

    def provenance(self) -> dict[str, Any]:
        """Where the preset came from (study, trial, its validation value...), for a training run's params;
        fields without a value (no MLflow run) left out."""
        return {name: getattr(self, name) for name in PROVENANCE_FIELDS if getattr(self, name) is not None}


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
        preset = TunedPreset(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path}: not a tuned preset written by training.tune ({exc}); remove it or rerun "
                         "the search") from exc
    if not isinstance(preset.params, dict) or preset.family != family:
        raise ValueError(f"{path}: not a tuned preset of {family} written by training.tune (expected its "
                         "parameters as an object under 'params'); remove it or rerun the search")
    return preset


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


