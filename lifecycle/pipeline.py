"""The nightly training stages as plain functions: train and log, register, gate.

The ``gru4rec_train`` DAG runs each as its own task (so a failed gate does not retrain) and ``python -m
training.train`` runs all three. They pass small values between them (a run id, a version number), never
data: the training set and the model live in the lake and in MLflow.

A retried training task resumes from the last complete epoch: checkpoints live in the local work area
(``WorkArea.checkpoints``, ``<home>/models/ds=D/checkpoints``) and are removed once the run is logged.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import mlflow.models

from lifecycle.registry import CHAMPION, aliased_version, force_promote, gate_and_promote, register_version
from lifecycle.tracking import connect, training_run
from model.device import resolve_device
from sessionrec.config import Settings
from sessionrec.layout import local_path, training_items
from training.experiment import TrainingResult, run
from training.presets import PRESETS
from training.trainer import EpochStats, TrainParams

logger = logging.getLogger(__name__)

MODEL_URI_TAG = "model_uri"


def training_dir_for(settings: Settings, ds: date) -> Path:
    """Day D's training set in the lake, as the local folder training reads (a remote lake is refused)."""
    return local_path(settings.layout.training_set(ds))


def params_with(overrides: Mapping[str, Any] | None, preset: str = "default") -> TrainParams:
    """The preset's hyperparameters with ``overrides`` (TrainParams field names) applied and validated."""
    unknown = set(overrides or {}) - set(TrainParams.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown training parameter(s) {sorted(unknown)}; "
                         f"expected some of {sorted(TrainParams.__dataclass_fields__)}")
    return TrainParams.from_dict({**PRESETS[preset], **(overrides or {})})


def track_experiment(settings: Settings, ds: date, training_dir: Path, params: TrainParams,
                     device: str | None = None, output_dir: Path | None = None, checkpoint_dir: Path | None = None,
                     on_epoch_end: Callable[[EpochStats], None] | None = None,
                     **run_options: Any) -> tuple[TrainingResult, str, str]:
    """``experiment.run`` inside one MLflow run: params, lineage, epochs, test and baseline metrics, plots
    and the model. Returns (result, run id, model URI). ``run_options`` go to ``experiment.run``."""
    training_dir = Path(training_dir)
    if not Path(training_items(training_dir)).is_file():
        raise FileNotFoundError(f"{training_dir}: no training set (run jobs.training_set first)")
    target = resolve_device(device or settings.device)
    work = settings.work_area
    output_dir = Path(output_dir) if output_dir is not None else work.saved_model(ds)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else work.checkpoints(ds)

    with training_run(settings, ds, target) as tracked:
        tracked.log_params(params.to_dict())
        tracked.log_training_data(training_dir)

        def epoch_done(stats: EpochStats) -> None:
            tracked.on_epoch_end(stats)
            if on_epoch_end is not None:
                on_epoch_end(stats)

        result = run(training_dir, params, device=str(target), output_dir=output_dir,
                     checkpoint_dir=checkpoint_dir, on_epoch_end=epoch_done, **run_options)
        tracked.log_test_metrics(result.metrics)
        tracked.log_baselines(result.baselines)
        tracked.log_plots()
        tracked.client.log_metric(tracked.run_id, "train_seconds", result.train_seconds)
        tracked.client.log_metric(tracked.run_id, "train_pairs_per_s", result.throughput_events_per_s)
        info = tracked.log_model(output_dir)
        tracked.client.set_tag(tracked.run_id, MODEL_URI_TAG, info.model_uri)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    logger.info("run %s logged model %s: recall@20 %.4f, mrr@20 %.4f", tracked.run_id, info.model_uri,
                result.metrics["recall@20"], result.metrics["mrr@20"])
    return result, tracked.run_id, info.model_uri


def train_and_log(settings: Settings, ds: date, overrides: Mapping[str, Any] | None = None,
                  preset: str = "default", **run_options: Any) -> dict[str, Any]:
    """Train on ``training/ds=D`` with the preset plus ``overrides``, tracked; the summary for XCom."""
    params = params_with(overrides, preset)
    result, run_id, model_uri = track_experiment(settings, ds, training_dir_for(settings, ds), params,
                                                 **run_options)
    return summary(result, run_id, model_uri)


def summary(result: TrainingResult, run_id: str, model_uri: str) -> dict[str, Any]:
    """What the next task and the operator need, JSON-safe (it travels through XCom)."""
    return {"run_id": run_id, "model_uri": model_uri, "device": str(result.device),
            "metrics": result.metrics, "baselines": result.baselines,
            "train_seconds": result.train_seconds, "pairs_per_s": result.throughput_events_per_s}


def register(settings: Settings, run_id: str, ds: date) -> int:
    """Register the model logged by ``run_id`` as a new version of ``Settings.model_name``."""
    client = connect(settings)
    tags = client.get_run(run_id).data.tags
    if MODEL_URI_TAG not in tags:
        raise ValueError(f"MLflow run {run_id} has no {MODEL_URI_TAG!r} tag: it did not finish logging a model")
    info = mlflow.models.get_model_info(tags[MODEL_URI_TAG])
    return int(register_version(client, info, settings.model_name, ds).version)


def gate(settings: Settings, version: int, ds: date, force: bool = False,
         training_dir: Path | None = None) -> dict[str, Any]:
    """Run the promotion gate for ``version`` on the test split of day D's training set (default
    ``training/ds=D`` in the lake), or force the promotion, recorded as such."""
    client = connect(settings)
    if force:
        decision = force_promote(client, settings.model_name, version, reason=f"force_promote for {ds}")
    else:
        decision = gate_and_promote(client, settings.model_name, version,
                                    training_dir or training_dir_for(settings, ds),
                                    tolerance=settings.gate_tolerance, baseline_margin=settings.gate_baseline_margin,
                                    device=settings.device)
    champion = aliased_version(client, settings.model_name, CHAMPION)
    return {"promoted": decision.promote, "reason": decision.reason,
            "champion_version": int(champion) if champion is not None else None}
