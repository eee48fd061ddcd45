"""One training experiment: load a training set split, fit a model family, evaluate it beside the baselines.

``run`` fits one family; ``select`` fits several and picks the candidate:

1. selection: every family is fitted on ``train_tr`` and measured on ``valid``; the best by the
   selection metric (ties: MRR@20, then the order given) is the candidate. Only ``train_tr``, ``valid``
   and the vocabulary are read in this phase: the test split is never used to choose;
2. evaluation: every family is fitted on ``train`` and evaluated on ``test`` (day D) beside the
   baselines; the candidate's fit is the model saved, and all of it makes the leaderboard.

``python -m training.train`` and the MLflow pipeline (lifecycle/pipeline.py) call these; they know nothing
about tracking, the registry or the command line, and reach a family only through
``training.families.TRAINERS``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.data import VOCABULARY_FILE, SessionDataset, Vocabulary, load_split, read_vocabulary
from model.device import resolve_device
from model.families import SessionModel
from training.baselines import BASELINES, fit_baselines
from training.evaluate import evaluate
from training.families import DEFAULT_FAMILY, EVALUATION_SLOTS, KS, OnEpoch, trainer_for
from training.trainer import CPU_THREADS, EpochStats, torch_threads

logger = logging.getLogger(__name__)

SPLITS = {"full": ("train", "test"), "tuning": ("train_tr", "valid")}
STATS_FILE = "stats.json"


@dataclass
class TrainingResult:
    """Everything a training run produced, for the report and for experiment tracking."""

    family: str
    model: SessionModel
    vocabulary: Vocabulary
    params: dict[str, Any]
    device: torch.device
    split: str
    epochs: list[EpochStats]
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    train_seconds: float
    train_pairs: int
    n_unknown_test_events: int | None
    model_dir: Path | None = None
    baseline_seconds: dict[str, float] = field(default_factory=dict)  # fitting and evaluation

    @property
    def throughput_events_per_s(self) -> float:
        """Training pairs per second over all epochs (evaluation time excluded)."""
        return self.train_pairs / self.train_seconds if self.train_seconds > 0 else 0.0

    def report(self) -> dict:
        return {"family": self.family, "metrics": self.metrics, "baselines": self.baselines,
                "throughput_events_per_s": self.throughput_events_per_s, "train_seconds": self.train_seconds,
                "n_unknown_test_events": self.n_unknown_test_events, "split": self.split,
                "device": str(self.device), "params": self.params,
                "epochs": [asdict(s) for s in self.epochs], "baseline_seconds": self.baseline_seconds,
                "model_dir": str(self.model_dir) if self.model_dir else None}


def unknown_events(training_dir: Path, split: str) -> int | None:
    """Events of ``split`` dropped by the training-set job because their item is not in the training data."""
    path = training_dir / STATS_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())["splits"][split]["unknown_events_dropped"]
    except (json.JSONDecodeError, KeyError, TypeError):
        logger.warning("%s: no splits.%s.unknown_events_dropped; not reporting unknown test events", path, split)
        return None
    return int(value)


def load_training_set(training_dir: Path, split: str) -> tuple[Vocabulary, SessionDataset, SessionDataset]:
    """(vocabulary, training part, evaluation part) of a training set folder for ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    if not (training_dir / VOCABULARY_FILE).is_file():
        raise FileNotFoundError(f"{training_dir / VOCABULARY_FILE}: not found; is {training_dir} a training set "
                                "folder (train/, test/, train_tr/, valid/, items.parquet)?")
    train_split, eval_split = SPLITS[split]
    vocabulary = read_vocabulary(training_dir / VOCABULARY_FILE)
    train_data = load_split(training_dir, train_split, vocabulary)
    eval_data = load_split(training_dir, eval_split, vocabulary)
    logger.info("%s: %d events in %d sessions; %s: %d events; %d items", train_split, train_data.n_events,
                train_data.n_sessions, eval_split, eval_data.n_events, len(vocabulary))
    return vocabulary, train_data, eval_data


def evaluate_baselines(train_data: SessionDataset, eval_data: SessionDataset, names: Sequence[str],
                       seed: int, popularity: np.ndarray | None = None,
                       ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Each baseline fitted on ``train_data`` and evaluated on ``eval_data``: (metrics, seconds) by name.
    ``popularity`` (training counts per item) adds the popularity bias of their lists."""
    metrics, seconds = {}, {}
    for name in names:
        start = time.perf_counter()
        scorer = fit_baselines(train_data, names=[name], seed=seed)[name]
        metrics[name] = evaluate(scorer, eval_data, ks=KS, batch_size=EVALUATION_SLOTS, popularity=popularity)
        seconds[name] = time.perf_counter() - start
    return metrics, seconds


@dataclass
class FamilyFit:
    """One family fitted on a training part and measured on an evaluation part."""

    family: str
    params: dict[str, Any]
    model: SessionModel
    epochs: list[EpochStats]
    metrics: dict[str, float]
    seconds: float
    pairs: int


def fit_family(family: str, params: Mapping[str, Any] | None, vocabulary: Vocabulary, train_data: SessionDataset,
               eval_data: SessionDataset, device: torch.device, output_dir: Path | None = None,
               checkpoint_dir: Path | None = None, on_epoch: OnEpoch | None = None,
               on_progress: Callable[[int, int, int], None] | None = None,
               cpu_threads: int | None = CPU_THREADS, warm_start_from: Path | None = None) -> FamilyFit:
    """Fit ``family`` (its defaults plus ``params``), save it to ``output_dir`` when given, and evaluate it.

    ``warm_start_from``: a saved model folder of the same family and architecture to start from.
    """
    trainer = trainer_for(family)
    settings = trainer.params(params)
    warm = {} if warm_start_from is None else {"warm_start": trainer.warm_start(Path(warm_start_from), vocabulary)}
    with torch_threads(cpu_threads):
        fitted = trainer.fit(train_data, settings, device, eval_data=eval_data, on_epoch=on_epoch,
                             checkpoint_dir=checkpoint_dir, on_progress=on_progress, cpu_threads=cpu_threads,
                             **warm)
        if output_dir is not None:
            trainer.save(fitted, Path(output_dir), vocabulary, settings)
        # Evaluated once more (not the last epoch's metrics) for the popularity bias, which needs the counts.
        metrics = evaluate(trainer.scorer(fitted.model), eval_data, ks=KS, batch_size=EVALUATION_SLOTS,
                           popularity=vocabulary.counts)
    logger.info("%s: recall@20 %.4f, mrr@20 %.4f in %.1f s", family, metrics["recall@20"], metrics["mrr@20"],
                fitted.seconds)
    return FamilyFit(family, settings, fitted.model, fitted.history, metrics, fitted.seconds, fitted.pairs)


def run(training_dir: Path, params: Mapping[str, Any] | None = None, split: str = "full", device: str = "auto",
        output_dir: Path | None = None, checkpoint_dir: Path | None = None,
        baselines: Sequence[str] = tuple(BASELINES), on_epoch: OnEpoch | None = None,
        on_progress: Callable[[int, int, int], None] | None = None,
        cpu_threads: int | None = CPU_THREADS, family: str = DEFAULT_FAMILY,
        warm_start_from: Path | None = None) -> TrainingResult:
    """Fit ``family`` with its defaults plus ``params`` on the split's training part (evaluating every epoch
    on its evaluation part), save it to ``output_dir`` when given, then evaluate the baselines.

    ``cpu_threads`` (torch intra-op threads) applies to fitting, evaluation and the baselines.
    """
    training_dir = Path(training_dir)
    target = resolve_device(device)
    vocabulary, train_data, eval_data = load_training_set(training_dir, split)
    fit = fit_family(family, params, vocabulary, train_data, eval_data, target, output_dir=output_dir,
                     checkpoint_dir=checkpoint_dir, on_epoch=on_epoch, on_progress=on_progress,
                     cpu_threads=cpu_threads, warm_start_from=warm_start_from)
    with torch_threads(cpu_threads):
        baseline_metrics, baseline_seconds = evaluate_baselines(train_data, eval_data, baselines,
                                                                int(fit.params.get("seed", 1)), vocabulary.counts)
    return result_of(fit, vocabulary, target, split, baseline_metrics, baseline_seconds,
                     unknown_events(training_dir, SPLITS[split][1]), output_dir)


def result_of(fit: FamilyFit, vocabulary: Vocabulary, device: torch.device, split: str,
              baselines: dict[str, dict[str, float]], baseline_seconds: dict[str, float],
              n_unknown: int | None, output_dir: Path | None) -> TrainingResult:
    return TrainingResult(family=fit.family, model=fit.model, vocabulary=vocabulary, params=fit.params,
                          device=device, split=split, epochs=fit.epochs, metrics=fit.metrics, baselines=baselines,
                          train_seconds=fit.seconds, train_pairs=fit.pairs, n_unknown_test_events=n_unknown,
                          model_dir=Path(output_dir) if output_dir is not None else None,
                          baseline_seconds=baseline_seconds)


@dataclass
class Selection:
    """What ``select`` found: the candidate's result on test, and every family's validation and test metrics."""

    result: TrainingResult  # the candidate, fitted on train, evaluated on test, with the baselines
    metric: str
    validation: dict[str, dict[str, float]]  # family -> metrics on valid (fitted on train_tr)
    test: dict[str, dict[str, float]]  # family -> metrics on test (fitted on train)
    fit_seconds: dict[str, float] = field(default_factory=dict)  # family -> fitting time on train

    @property
    def family(self) -> str:
        return self.result.family

    def leaderboard(self) -> list[dict[str, Any]]:
        """One row per family and baseline, best test metric first: every metric on test, and the
        validation metrics the selection used (families only)."""
        rows = [{"model": family, "kind": "family", "selected": family == self.family,
                 **{f"test_{k}": v for k, v in metrics.items() if "@" in k},
                 **{f"valid_{k}": v for k, v in self.validation[family].items() if "@" in k}}
                for family, metrics in self.test.items()]
        rows += [{"model": name, "kind": "baseline", "selected": False,
                  **{f"test_{k}": v for k, v in metrics.items() if "@" in k}}
                 for name, metrics in self.result.baselines.items()]
        return sorted(rows, key=lambda row: -row[f"test_{self.metric}"])


def choose(validation: Mapping[str, Mapping[str, float]], metric: str, tolerance: float = 0.0) -> str:
    """The family with the best validation ``metric``. Families within ``tolerance`` (absolute) of the best
    are tied; ties go to MRR@20, then to the better ``metric``, then to the first listed."""
    order = list(validation)
    best = max(validation[f][metric] for f in order)
    tied = [f for f in order if validation[f][metric] >= best - tolerance]
    return max(tied, key=lambda f: (validation[f]["mrr@20"], validation[f][metric], -order.index(f)))


def select(training_dir: Path, families: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None = None,
           metric: str = "recall@20", tolerance: float = 0.0, device: str = "auto", output_dir: Path | None = None,
           checkpoint_dir: Path | None = None, baselines: Sequence[str] = tuple(BASELINES),
           on_epoch: OnEpoch | None = None, on_progress: Callable[[int, int, int], None] | None = None,
           cpu_threads: int | None = CPU_THREADS,
           on_selected: Callable[[str, dict[str, dict[str, float]]], None] | None = None) -> Selection:
    """Choose among ``families`` on the validation split (:func:`choose`, with ``tolerance``), then evaluate
    all of them on the test split.

    ``params`` holds each family's parameter overrides. ``on_epoch`` and ``on_progress`` follow the
    candidate's fit on train; ``on_selected(family, validation metrics)`` is called once the choice is
    made, before the test split is read.
    """
    families = list(dict.fromkeys(families))
    if not families:
        raise ValueError("select needs at least one model family")
    for family in families:
        trainer_for(family)
    params = params or {}
    if metric not in {f"{name}@{k}" for name in ("recall", "mrr") for k in KS}:
        raise ValueError(f"unknown selection metric {metric!r}; expected recall@K or mrr@K with K in {KS}")
    training_dir = Path(training_dir)
    target = resolve_device(device)
    vocabulary, train_tr, valid = load_training_set(training_dir, "tuning")
    validation = {family: fit_family(family, params.get(family), vocabulary, train_tr, valid, target,
                                     cpu_threads=cpu_threads).metrics for family in families}
    chosen = choose(validation, metric, tolerance)
    logger.info("selected %s by validation %s (within %g of the best counts as tied; ties go to mrr@20): %s",
                chosen, metric, tolerance,
                {f: {metric: round(m[metric], 4), "mrr@20": round(m["mrr@20"], 4)} for f, m in validation.items()})
    if on_selected is not None:
        on_selected(chosen, validation)
    del train_tr, valid
    vocabulary, train_data, test_data = load_training_set(training_dir, "full")
    fits = {family: fit_family(family, params.get(family), vocabulary, train_data, test_data, target,
                               output_dir=output_dir if family == chosen else None,
                               checkpoint_dir=checkpoint_dir if family == chosen else None,
                               on_epoch=on_epoch if family == chosen else None,
                               on_progress=on_progress if family == chosen else None, cpu_threads=cpu_threads)
            for family in families}
    with torch_threads(cpu_threads):
        baseline_metrics, baseline_seconds = evaluate_baselines(train_data, test_data, baselines,
                                                                int(fits[chosen].params.get("seed", 1)),
                                                                vocabulary.counts)
    result = result_of(fits[chosen], vocabulary, target, "full", baseline_metrics, baseline_seconds,
                       unknown_events(training_dir, "test"), output_dir)
    return Selection(result, metric, validation, {f: fit.metrics for f, fit in fits.items()},
                     {f: fit.seconds for f, fit in fits.items()})
