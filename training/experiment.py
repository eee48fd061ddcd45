"""One training experiment: load a training set split, fit a model family, evaluate it beside the baselines.

``run`` is what ``python -m training.train`` and the MLflow pipeline (lifecycle/pipeline.py) both call; it
knows nothing about tracking, the registry or the command line, and reaches a family only through
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


def run(training_dir: Path, params: Mapping[str, Any] | None = None, split: str = "full", device: str = "auto",
        output_dir: Path | None = None, checkpoint_dir: Path | None = None,
        baselines: Sequence[str] = tuple(BASELINES), on_epoch: OnEpoch | None = None,
        on_progress: Callable[[int, int, int], None] | None = None,
        cpu_threads: int | None = CPU_THREADS, family: str = DEFAULT_FAMILY) -> TrainingResult:
    """Fit ``family`` with its defaults plus ``params`` on the split's training part (evaluating every epoch
    on its evaluation part), save it to ``output_dir`` when given, then evaluate the baselines.

    ``cpu_threads`` (torch intra-op threads) applies to fitting, evaluation and the baselines.
    """
    training_dir = Path(training_dir)
    trainer = trainer_for(family)
    settings = trainer.params(params)
    target = resolve_device(device)
    vocabulary, train_data, eval_data = load_training_set(training_dir, split)
    with torch_threads(cpu_threads):
        fitted = trainer.fit(train_data, settings, target, eval_data=eval_data, on_epoch=on_epoch,
                             checkpoint_dir=checkpoint_dir, on_progress=on_progress, cpu_threads=cpu_threads)
        if output_dir is not None:
            trainer.save(fitted, Path(output_dir), vocabulary, settings)
        # Evaluated once more (not the last epoch's metrics) for the popularity bias, which needs the counts.
        metrics = evaluate(trainer.scorer(fitted.model), eval_data, ks=KS, batch_size=EVALUATION_SLOTS,
                           popularity=vocabulary.counts)
        baseline_metrics, baseline_seconds = evaluate_baselines(train_data, eval_data, baselines,
                                                                int(settings.get("seed", 1)), vocabulary.counts)
    return TrainingResult(family=family, model=fitted.model, vocabulary=vocabulary, params=settings, device=target,
                          split=split, epochs=fitted.history, metrics=metrics, baselines=baseline_metrics,
                          train_seconds=fitted.seconds, train_pairs=fitted.pairs,
                          n_unknown_test_events=unknown_events(training_dir, SPLITS[split][1]),
                          model_dir=Path(output_dir) if output_dir is not None else None,
                          baseline_seconds=baseline_seconds)
