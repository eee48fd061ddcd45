"""The nightly training stages as plain functions: train and log, register, gate.

The ``gru4rec_train`` DAG runs each as its own task (so a failed gate does not retrain) and ``python -m
training.train`` runs all three. They pass small values between them (a run id, a version number), never
data: the training set and the model live in the lake and in MLflow.

Nightly training (:func:`train_and_log`) fits every family of ``Settings.families`` and keeps the one
best on the validation split (training/experiment.py ``select``), logging the leaderboard; a family
starts from its tuned preset when the hyperparameter search left one in the lake
(``tuned/<family>/params.json``, read by training/tuned.py), else from its defaults. The gate always
evaluates on the production lake's training set of the day (:func:`gate`).

A retried training task resumes from the last complete epoch: checkpoints live in the local work area
(``WorkArea.checkpoints``, ``<home>/models/ds=D/checkpoints``) and are removed once the run is logged.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import mlflow.models
import torch

from lifecycle.leaderboard import log_leaderboard
from lifecycle.registry import FAMILY_TAG, force_promote, gate_and_promote, record_not_gated, register_version
from lifecycle.resolver import CHAMPION, aliased_version
from lifecycle.tracking import TrainingRun, connect, training_run
from model.device import resolve_device
from sessionrec.config import Settings
from sessionrec.layout import local_path, training_items
from training.experiment import Selection, TrainingResult, run, select
from training.families import DEFAULT_FAMILY, OnEpoch, epoch_stats, trainer_for
from training.presets import PRESETS
from training.tuned import TUNED, TunedPreset, load_tuned

logger = logging.getLogger(__name__)

MODEL_URI_TAG = "model_uri"
# Family choice meaning "fit every family of Settings.families and select on the validation split".
AUTO = "auto"
# The family whose named presets training/presets.py holds.
PRESET_FAMILY = "gru4rec"


def training_dir_for(settings: Settings, ds: date) -> Path:
    """Day D's training set in the lake, as the local folder training reads (a remote lake is refused)."""
    return local_path(settings.layout.training_set(ds))


def family_params(settings: Settings, family: str, overrides: Mapping[str, Any] | None = None,
                  preset: str = TUNED) -> tuple[dict[str, Any], TunedPreset | None]:
    """(the family's parameters; the tuned preset they started from, or None).

    ``preset`` "tuned" starts from the family's tuned preset in the production lake (training/tuned.py), or
    from its defaults when no search stored one; the name of one of GRU4Rec's presets (training/presets.py)
    starts GRU4Rec from it instead (other families keep their tuned preset). ``overrides`` apply last.
    """
    if preset != TUNED and family == PRESET_FAMILY:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: expected {TUNED!r} or one of {sorted(PRESETS)}")
        return trainer_for(family).params({**PRESETS[preset], **(overrides or {})}), None
    tuned = load_tuned(settings, family)
    base = tuned.params if tuned is not None else {}
    return trainer_for(family).params({**base, **(overrides or {})}), tuned


def preset_source(family: str, preset: str, tuned: TunedPreset | None) -> str:
    """What a family's parameters started from, as recorded with a run: a named preset, the tuned preset
    (with its study and trial) or the family's defaults."""
    if preset != TUNED and family == PRESET_FAMILY:
        return preset
    return f"tuned (study {tuned.study}, trial {tuned.trial})" if tuned is not None else "defaults"


def _log_presets(tracked: TrainingRun, preset: str, tuned: Mapping[str, TunedPreset | None]) -> None:
    """The preset choice and, per family started from its tuned preset, where that came from."""
    records = {name: record.provenance() for name, record in tuned.items() if record is not None}
    tracked.log_params({"preset": preset, **({"tuned": records} if records else {})})


def _tracked_epochs(tracked: TrainingRun, on_epoch: OnEpoch | None) -> OnEpoch:
    def epoch_done(epoch: int, metrics: Mapping[str, float]) -> None:
        tracked.on_epoch_end(epoch_stats(epoch, metrics))
        if on_epoch is not None:
            on_epoch(epoch, metrics)

    return epoch_done


def _log_result(tracked: TrainingRun, result: TrainingResult, output_dir: Path) -> str:
    """Test and baseline metrics, plots, timings and the model of the family kept; returns the model URI."""
    tracked.log_test_metrics(result.metrics, label=f"{result.family} (candidate)")
    tracked.log_baselines(result.baselines)
    tracked.log_plots()
    tracked.client.log_metric(tracked.run_id, "train_seconds", result.train_seconds)
    tracked.client.log_metric(tracked.run_id, "train_pairs_per_s", result.throughput_events_per_s)
    info = tracked.log_model(output_dir)
    tracked.client.set_tag(tracked.run_id, MODEL_URI_TAG, info.model_uri)
    return info.model_uri


def _run_places(settings: Settings, ds: date, training_dir: Path, device: str | None, output_dir: Path | None,
                checkpoint_dir: Path | None) -> tuple[Path, torch.device, Path, Path]:
    """The checked training folder, the device, and the model and checkpoint folders (the work area's by
    default) of a tracked training run."""
    training_dir = Path(training_dir)
    if not Path(training_items(training_dir)).is_file():
        raise FileNotFoundError(f"{training_dir}: no training set (run jobs.training_set first)")
    work = settings.work_area
    return (training_dir, resolve_device(device or settings.device),
            Path(output_dir) if output_dir is not None else work.saved_model(ds),
            Path(checkpoint_dir) if checkpoint_dir is not None else work.checkpoints(ds))


def track_experiment(settings: Settings, ds: date, training_dir: Path, params: Mapping[str, Any] | None,
                     device: str | None = None, output_dir: Path | None = None, checkpoint_dir: Path | None = None,
                     on_epoch: OnEpoch | None = None, family: str = DEFAULT_FAMILY,
                     preset: str | None = None, tuned: TunedPreset | None = None,
                     **run_options: Any) -> tuple[TrainingResult, str, str]:
    """``experiment.run`` inside one MLflow run: params (and the preset they started from, when given),
    lineage, epochs, test and baseline metrics, plots and the model. Returns (result, run id, model URI).
    ``run_options`` go to ``experiment.run``."""
    training_dir, target, output_dir, checkpoint_dir = _run_places(settings, ds, training_dir, device, output_dir,
                                                                   checkpoint_dir)

    settings_of_family = trainer_for(family).params(params)
    with training_run(settings, ds, target) as tracked:
        tracked.client.set_tag(tracked.run_id, FAMILY_TAG, family)
        tracked.log_params(settings_of_family)
        if preset is not None:
            _log_presets(tracked, preset, {family: tuned})
        tracked.log_training_data(training_dir)
        result = run(training_dir, settings_of_family, device=str(target), output_dir=output_dir,
                     checkpoint_dir=checkpoint_dir, on_epoch=_tracked_epochs(tracked, on_epoch), family=family,
                     **run_options)
        model_uri = _log_result(tracked, result, output_dir)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    logger.info("run %s logged %s model %s: recall@20 %.4f, mrr@20 %.4f", tracked.run_id, family, model_uri,
                result.metrics["recall@20"], result.metrics["mrr@20"])
    return result, tracked.run_id, model_uri


def track_selection(settings: Settings, ds: date, training_dir: Path, families: Sequence[str],
                    params: Mapping[str, Mapping[str, Any]] | None = None, preset: str | None = None,
                    tuned: Mapping[str, TunedPreset | None] | None = None, device: str | None = None,
                    output_dir: Path | None = None, checkpoint_dir: Path | None = None,
                    on_epoch: OnEpoch | None = None, **select_options: Any) -> tuple[Selection, str, str]:
    """``experiment.select`` inside one MLflow run: the candidate's params (and, when ``preset`` is given, the
    preset choice and the tuned presets the families started from), its epochs, test and baseline metrics,
    plots and model, and the leaderboard of all families. Returns (selection, run id, model URI).
    ``select_options`` go to ``experiment.select``."""
    training_dir, target, output_dir, checkpoint_dir = _run_places(settings, ds, training_dir, device, output_dir,
                                                                   checkpoint_dir)
    params = {family: trainer_for(family).params((params or {}).get(family)) for family in families}
    with training_run(settings, ds, target) as tracked:
        tracked.log_training_data(training_dir)

        def selected(family: str, validation: dict[str, dict[str, float]]) -> None:
            tracked.client.set_tag(tracked.run_id, FAMILY_TAG, family)
            tracked.client.set_tag(tracked.run_id, "selection_metric", select_options.get("metric", "recall@20"))
            tracked.client.set_tag(tracked.run_id, "selection_tolerance", str(select_options.get("tolerance", 0.0)))
            tracked.log_params({**params[family], "families": {name: params[name] for name in families}})
            if preset is not None:
                _log_presets(tracked, preset, tuned or {})

        selection = select(training_dir, families, params, device=str(target), output_dir=output_dir,
                           checkpoint_dir=checkpoint_dir, on_epoch=_tracked_epochs(tracked, on_epoch),
                           on_selected=selected, **select_options)
        model_uri = _log_result(tracked, selection.result, output_dir)
        log_leaderboard(tracked.client, tracked.run_id, selection.leaderboard())
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    logger.info("run %s selected %s (%s): test recall@20 %.4f, mrr@20 %.4f", tracked.run_id, selection.family,
                model_uri, selection.result.metrics["recall@20"], selection.result.metrics["mrr@20"])
    return selection, tracked.run_id, model_uri


def train_and_log(settings: Settings, ds: date, family: str = AUTO,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None, preset: str = TUNED,
                  **options: Any) -> dict[str, Any]:
    """Nightly training on the production lake's ``training/ds=D``, tracked; the summary for XCom.

    ``family`` "auto" fits every family of ``Settings.families`` and keeps the best on the validation
    split; a family name fits that one only. Each family starts from ``preset`` (:func:`family_params`:
    its tuned preset or defaults, or a named GRU4Rec preset), then ``overrides`` (family name -> parameter
    overrides) apply. The resolved parameters and where they started from are logged and recorded in the run.
    """
    families = settings.family_names if family == AUTO else (family,)
    chosen = {name: family_params(settings, name, (overrides or {}).get(name), preset) for name in families}
    for name, (values, tuned) in chosen.items():
        logger.info("%s starts from %s, overrides %s: %s", name, preset_source(name, preset, tuned),
                    dict((overrides or {}).get(name) or {}), values)
    training_dir = training_dir_for(settings, ds)
    if family != AUTO:
        values, tuned = chosen[family]
        result, run_id, model_uri = track_experiment(settings, ds, training_dir, values, family=family,
                                                     preset=preset, tuned=tuned, **options)
        return summary(result, run_id, model_uri)
    selection, run_id, model_uri = track_selection(
        settings, ds, training_dir, families, {name: values for name, (values, _) in chosen.items()},
        preset=preset, tuned={name: record for name, (_, record) in chosen.items()},
        metric=settings.selection_metric, tolerance=settings.selection_tolerance, **options)
    return {**summary(selection.result, run_id, model_uri), "leaderboard": selection.leaderboard()}


def summary(result: TrainingResult, run_id: str, model_uri: str) -> dict[str, Any]:
    """What the next task and the operator need, JSON-safe (it travels through XCom)."""
    return {"run_id": run_id, "model_uri": model_uri, "family": result.family, "device": str(result.device),
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


def is_production_training_set(settings: Settings, training_dir: Path | str, ds: date) -> bool:
    """Whether ``training_dir`` is the production lake's training set of day ``ds`` (Settings.lake)."""
    try:
        production = training_dir_for(settings, ds)
    except ValueError:  # a remote lake: no local folder can be it
        return False
    return Path(training_dir).resolve() == production.resolve()


def not_gated(settings: Settings, version: int, training_dir: Path | str) -> str:
    """Record that ``version``, trained on a folder outside the production lake, is never gated; the reason."""
    reason = (f"trained on {Path(training_dir).resolve()}, outside the production lake {settings.lake}: never "
              "gated against the production champion (register it from the lake's training set to gate it)")
    record_not_gated(connect(settings), settings.model_name, version, reason)
    return reason


def gate(settings: Settings, version: int, ds: date, force: bool = False) -> dict[str, Any]:
    """Run the promotion gate for ``version`` on the test split of the production lake's training set of
    day D (never on data the candidate brought), or force the promotion, recorded as such."""
    client = connect(settings)
    if force:
        decision = force_promote(client, settings.model_name, version, reason=f"force_promote for {ds}")
    else:
        decision = gate_and_promote(client, settings.model_name, version, training_dir_for(settings, ds),
                                    tolerance=settings.gate_tolerance, baseline_margin=settings.gate_baseline_margin,
                                    min_coverage=settings.gate_min_coverage, device=settings.device)
    champion = aliased_version(client, settings.model_name, CHAMPION)
    return {"promoted": decision.promote, "reason": decision.reason,
            "champion_version": int(champion) if champion is not None else None}
