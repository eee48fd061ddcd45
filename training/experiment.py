"""One training experiment: load a training set split, train GRU4Rec, evaluate it beside the baselines.

``run`` is what ``python -m training.train`` and the MLflow pipeline (lifecycle/pipeline.py) both call; it
knows nothing about tracking, the registry or the command line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from model.artifacts import save_model
from model.data import VOCABULARY_FILE, SessionDataset, Vocabulary, load_split, read_vocabulary
from model.device import resolve_device
from model.network import GRU4Rec, GRU4RecScorer
from training.baselines import BASELINES, fit_baselines
from training.evaluate import evaluate
from training.trainer import CPU_THREADS, EpochStats, TrainParams, torch_threads, train
from training.warm import WarmStart

logger = logging.getLogger(__name__)

KS = (1, 5, 10, 20)
SPLITS = {"full": ("train", "test"), "tuning": ("train_tr", "valid")}
STATS_FILE = "stats.json"
EVALUATION_SLOTS = 512


@dataclass
class TrainingResult:
    """Everything a training run produced, for the report and for experiment tracking."""

    model: GRU4Rec
    vocabulary: Vocabulary
    params: TrainParams
    device: torch.device
    split: str
    epochs: list[EpochStats]
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    train_seconds: float
    n_unknown_test_events: int | None
    model_dir: Path | None = None
    baseline_seconds: dict[str, float] = field(default_factory=dict)  # fitting and evaluation

    @property
    def throughput_events_per_s(self) -> float:
        """Training pairs per second over all epochs (evaluation time excluded)."""
        return sum(s.pairs for s in self.epochs) / self.train_seconds

    def report(self) -> dict:
        return {"metrics": self.metrics, "baselines": self.baselines,
                "throughput_events_per_s": self.throughput_events_per_s, "train_seconds": self.train_seconds,
                "n_unknown_test_events": self.n_unknown_test_events, "split": self.split,
                "device": str(self.device), "params": self.params.to_dict(),
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
                       seed: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Each baseline fitted on ``train_data`` and evaluated on ``eval_data``: (metrics, seconds) by name."""
    metrics, seconds = {}, {}
    for name in names:
        start = time.perf_counter()
        scorer = fit_baselines(train_data, names=[name], seed=seed)[name]
        metrics[name] = evaluate(scorer, eval_data, ks=KS, batch_size=EVALUATION_SLOTS)
        seconds[name] = time.perf_counter() - start
    return metrics, seconds


def run(training_dir: Path, params: TrainParams, split: str = "full", device: str = "auto",
        output_dir: Path | None = None, checkpoint_dir: Path | None = None,
        baselines: Sequence[str] = tuple(BASELINES),
        on_epoch_end: Callable[[EpochStats], None] | None = None,
        on_progress: Callable[[int, int, int], None] | None = None,
        cpu_threads: int | None = CPU_THREADS, warm_start_from: Path | None = None) -> TrainingResult:
    """Train on the split's training part, evaluate each epoch on its evaluation part, then the baselines.

    ``cpu_threads`` (torch intra-op threads) applies to training, evaluation and the baselines.
    ``warm_start_from``: a saved model folder (same architecture) to start from (training/warm.py).
    """
    training_dir = Path(training_dir)
    target = resolve_device(device)
    vocabulary, train_data, eval_data = load_training_set(training_dir, split)

    def evaluate_fn(network: GRU4Rec) -> dict[str, float]:
        return evaluate(GRU4RecScorer(network, target), eval_data, ks=KS, batch_size=EVALUATION_SLOTS)

    warm = WarmStart.from_model_dir(warm_start_from, vocabulary) if warm_start_from is not None else None
    model, stats = train(train_data, params, device=target, checkpoint_dir=checkpoint_dir,
                         on_epoch_end=on_epoch_end, evaluate_fn=evaluate_fn, on_progress=on_progress,
                         cpu_threads=cpu_threads, warm_start=warm)
    if output_dir is not None:
        save_model(output_dir, model, vocabulary, params.to_dict())
    with torch_threads(cpu_threads):
        metrics = stats[-1].eval_metrics or evaluate_fn(model)
        baseline_metrics, baseline_seconds = evaluate_baselines(train_data, eval_data, baselines, params.seed)
    return TrainingResult(model=model, vocabulary=vocabulary, params=params, device=target, split=split,
                          epochs=stats, metrics=metrics, baselines=baseline_metrics,
                          train_seconds=sum(s.seconds for s in stats),
                          n_unknown_test_events=unknown_events(training_dir, SPLITS[split][1]),
                          model_dir=Path(output_dir) if output_dir is not None else None,
                          baseline_seconds=baseline_seconds)
