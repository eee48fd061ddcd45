"""The nightly training stages as plain functions: train and log, register, gate.

The ``gru4rec_train`` DAG runs each as its own task (so a failed gate does not retrain) and ``python -m
training.train`` runs all three. They pass small values between them (a run id, a version number), never
data: the training set and the model live in the lake and in MLflow.

Nightly training (:func:`train_and_log`) fits every family of ``Settings.families`` and keeps the one
best on the validation split (training/experiment.py ``select``), logging the leaderboard; a family
starts from its tuned preset when the hyperparameter search left one in the lake
(``tuned/<family>/params.json``), else from its defaults. The gate always evaluates on the production
lake's training set of the day (:func:`gate`).

A retried training task resumes from the last complete epoch: checkpoints live in the local work area
(``WorkArea.checkpoints``, ``<home>/models/ds=D/checkpoints``) and are removed once the run is logged.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import mlflow.models

from lifecycle.leaderboard import log_leaderboard
from lifecycle.registry import (
    CHAMPION,
    aliased_version,
    force_promote,
    gate_and_promote,
    record_not_gated,
    register_version,
)
from lifecycle.tracking import TrainingRun, connect, training_run
from model.device import resolve_device
from sessionrec.config import Settings
from sessionrec.layout import local_path, training_items
from training.experiment import Selection, TrainingResult, run, select
from training.families import DEFAULT_FAMILY, OnEpoch, epoch_stats, trainer_for

logger = logging.getLogger(__name__)

MODEL_URI_TAG = "model_uri"
FAMILY_TAG = "family"
# Family choice meaning "fit every family of Settings.families and select on the validation split".
AUTO = "auto"


def training_dir_for(settings: Settings, ds: date) -> Path:
    """Day D's training set in the lake, as the local folder training reads (a remote lake is refused)."""
    return local_path(settings.layout.training_set(ds))


def tuned_params(settings: Settings, family: str) -> dict[str, Any] | None:
    """The family's tuned preset in the production lake, or None when no search has left one.

    The file (``Lake.tuned_params``) is a JSON object with the parameter values under ``params`` and,
    optionally, where they came from (``study``, ``trial``, ``value``...); the whole object is returned.
    """
    path = local_path(settings.layout.tuned_params(family))
    if not path.is_file():
        return None
    try:
        tuned = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(tuned, dict) or not isinstance(tuned.get("params"), dict):
        raise ValueError(f"{path}: expected an object with the {family} parameters under 'params'")
    return tuned


def family_params(settings: Settings, family: str,
                  overrides: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the family's parameters: tuned preset or defaults, then ``overrides``; the tuned preset record)."""
    tuned = tuned_params(settings, family)
    base = tuned["params"] if tuned is not None else {}
    return trainer_for(family).params({**base, **(overrides or {})}), tuned


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


def track_experiment(settings: Settings, ds: date, training_dir: Path, params: Mapping[str, Any] | None,
                     device: str | None = None, output_dir: Path | None = None, checkpoint_dir: Path | None = None,
                     on_epoch: OnEpoch | None = None, family: str = DEFAULT_FAMILY,
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

    settings_of_family = trainer_for(family).params(params)
    with training_run(settings, ds, target) as tracked:
        tracked.client.set_tag(tracked.run_id, FAMILY_TAG, family)
        tracked.log_params(settings_of_family)
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
                    params: Mapping[str, Mapping[str, Any]] | None = None,
                    tuned: Mapping[str, Mapping[str, Any] | None] | None = None, device: str | None = None,
                    output_dir: Path | None = None, checkpoint_dir: Path | None = None,
                    on_epoch: OnEpoch | None = None, **select_options: Any) -> tuple[Selection, str, str]:
    """``experiment.select`` inside one MLflow run: the candidate's params (and the tuned preset they came
    from), its epochs, test and baseline metrics, plots and model, and the leaderboard of all families.
    Returns (selection, run id, model URI). ``select_options`` go to ``experiment.select``."""
    training_dir = Path(training_dir)
    if not Path(training_items(training_dir)).is_file():
        raise FileNotFoundError(f"{training_dir}: no training set (run jobs.training_set first)")
    target = resolve_device(device or settings.device)
    work = settings.work_area
    output_dir = Path(output_dir) if output_dir is not None else work.saved_model(ds)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else work.checkpoints(ds)
    params = {family: trainer_for(family).params((params or {}).get(family)) for family in families}
    with training_run(settings, ds, target) as tracked:
        tracked.log_training_data(training_dir)

        def selected(family: str, validation: dict[str, dict[str, float]]) -> None:
            tracked.client.set_tag(tracked.run_id, FAMILY_TAG, family)
            tracked.client.set_tag(tracked.run_id, "selection_metric", select_options.get("metric", "recall@20"))
            tracked.log_params({**params[family], "families": {name: params[name] for name in families}})
            records = {name: {k: v for k, v in record.items() if k != "params"}
                       for name, record in (tuned or {}).items() if record is not None}
            if records:
                tracked.log_params({"tuned": records})

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
                  overrides: Mapping[str, Mapping[str, Any]] | None = None, **options: Any) -> dict[str, Any]:
    """Nightly training on the production lake's ``training/ds=D``, tracked; the summary for XCom.

    ``family`` "auto" fits every family of ``Settings.families`` and keeps the best on the validation
    split; a family name fits that one only. ``overrides`` maps family names to parameter overrides
    applied over each family's tuned preset (or defaults).
    """
    families = settings.family_names if family == AUTO else (family,)
    chosen = {name: family_params(settings, name, (overrides or {}).get(name)) for name in families}
    training_dir = training_dir_for(settings, ds)
    if family != AUTO:
        result, run_id, model_uri = track_experiment(settings, ds, training_dir, chosen[family][0], family=family,
                                                     **options)
        return summary(result, run_id, model_uri)
    selection, run_id, model_uri = track_selection(
        settings, ds, training_dir, families, {name: values for name, (values, _) in chosen.items()},
        tuned={name: record for name, (_, record) in chosen.items()}, metric=settings.selection_metric, **options)
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
