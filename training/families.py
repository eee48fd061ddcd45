"""The one place a model family is registered for fitting: :data:`TRAINERS`.

A :class:`FamilyTrainer` fits its family's :class:`model.families.SessionModel` on a
:class:`~model.data.SessionDataset`, saves it as a model folder (model/artifacts.py), gives the
evaluator a scorer for it and Optuna a search space. Training, evaluation, tracking, the registry and
the gate only go through this table (and ``model.families.FAMILIES`` for loading); adding a family is
its module(s) plus one entry here and one there.

Parameters are plain JSON-serialisable dicts: ``params(overrides)`` is the family's defaults with
``overrides`` applied and validated. An iterative family's ``fit`` calls ``on_epoch(epoch, metrics)``
after each epoch, where ``metrics`` holds the validation metrics on ``eval_data`` (``recall@20``,
``mrr@20``, ...; none without ``eval_data``) and the epoch's training figures under :data:`EPOCH_KEYS`;
an Optuna pruning callback may raise from it to stop the fit. A family fitted in one pass (SR, V-SKNN)
has no epochs and does not call it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from inspect import signature
from pathlib import Path
from typing import Any, Protocol

import torch

from model.artifacts import save_model
from model.data import SessionDataset, Vocabulary
from model.families import SessionModel
from model.network import GRU4Rec, GRU4RecScorer
from training.baselines import VSKNN, ModelBackedScorer, SequentialRules, SessionModelScorer
from training.evaluate import SessionScorer, evaluate
from training.presets import PRESETS
from training.trainer import CPU_THREADS, EpochStats, TrainParams, train

logger = logging.getLogger(__name__)

KS = (1, 5, 10, 20)
EVALUATION_SLOTS = 512
# Training figures of an epoch in on_epoch's metrics, beside the validation metrics.
EPOCH_KEYS = ("loss", "pairs", "seconds", "pairs_per_s")
OnEpoch = Callable[[int, Mapping[str, float]], None]


@dataclass
class FitResult:
    """A fitted model with what fitting it took."""

    model: SessionModel
    history: list[EpochStats] = field(default_factory=list)  # one per epoch; empty for one-pass families
    seconds: float = 0.0  # fitting time, per-epoch evaluation excluded
    pairs: int = 0  # training pairs processed over all epochs

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0


class FamilyTrainer(Protocol):
    name: str

    def default_params(self) -> dict[str, Any]: ...

    def params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults with ``overrides`` applied; a ValueError names an unknown or invalid parameter."""
        ...

    def fit(self, train: SessionDataset, params: Mapping[str, Any], device: torch.device, *,
            eval_data: SessionDataset | None = None, on_epoch: OnEpoch | None = None,
            checkpoint_dir: Path | None = None, on_progress: Callable[[int, int, int], None] | None = None,
            cpu_threads: int | None = CPU_THREADS) -> FitResult: ...

    def save(self, result: FitResult, directory: Path, vocabulary: Vocabulary, params: Mapping[str, Any]) -> None:
        ...

    def scorer(self, model: SessionModel) -> SessionScorer:
        """The evaluator's scorer (training/evaluate.py) over a fitted or loaded model of this family."""
        ...

    def search_space(self, trial: Any, n_items: int) -> dict[str, Any]:
        """Parameter overrides suggested by an Optuna ``trial`` for data of ``n_items`` items."""
        ...


def epoch_metrics(stats: EpochStats) -> dict[str, float]:
    """What ``on_epoch`` receives for an epoch: its training figures and its validation metrics."""
    figures = {"loss": stats.loss, "pairs": stats.pairs, "seconds": stats.seconds, "pairs_per_s": stats.pairs_per_s}
    return {**figures, **(stats.eval_metrics or {})}


def epoch_stats(epoch: int, metrics: Mapping[str, float]) -> EpochStats:
    """The EpochStats of an ``on_epoch`` call (for tracking and printing)."""
    evaluation = {key: value for key, value in metrics.items() if key not in EPOCH_KEYS}
    return EpochStats(epoch=epoch, loss=float(metrics["loss"]), pairs=int(metrics["pairs"]),
                      seconds=float(metrics["seconds"]), pairs_per_s=float(metrics["pairs_per_s"]),
                      eval_metrics=evaluation or None)


def evaluate_model(trainer: FamilyTrainer, model: SessionModel, data: SessionDataset) -> dict[str, float]:
    """Full-ranking metrics of a model on ``data`` (the project's one evaluation protocol)."""
    return evaluate(trainer.scorer(model), data, ks=KS, batch_size=EVALUATION_SLOTS)


class GRU4RecTrainer:
    """GRU4Rec (training/trainer.py); parameters are TrainParams fields, defaults the ``default`` preset."""

    name = "gru4rec"

    def default_params(self) -> dict[str, Any]:
        return TrainParams.from_dict(dict(PRESETS["default"])).to_dict()

    def params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return TrainParams.from_dict({**self.default_params(), **(overrides or {})}).to_dict()

    def fit(self, train_data: SessionDataset, params: Mapping[str, Any], device: torch.device, *,
            eval_data: SessionDataset | None = None, on_epoch: OnEpoch | None = None,
            checkpoint_dir: Path | None = None, on_progress: Callable[[int, int, int], None] | None = None,
            cpu_threads: int | None = CPU_THREADS) -> FitResult:
        settings = TrainParams.from_dict(dict(params))
        evaluate_fn = None
        if eval_data is not None:
            def evaluate_fn(network: GRU4Rec) -> dict[str, float]:
                return evaluate_model(self, network, eval_data)
        on_epoch_end = (lambda stats: on_epoch(stats.epoch, epoch_metrics(stats))) if on_epoch else None
        network, history = train(train_data, settings, device=device, checkpoint_dir=checkpoint_dir,
                                 on_epoch_end=on_epoch_end, evaluate_fn=evaluate_fn, on_progress=on_progress,
                                 cpu_threads=cpu_threads)
        return FitResult(network, history, seconds=sum(s.seconds for s in history),
                         pairs=sum(s.pairs for s in history))

    def save(self, result: FitResult, directory: Path, vocabulary: Vocabulary, params: Mapping[str, Any]) -> None:
        save_model(directory, result.model, vocabulary, dict(params))

    def scorer(self, model: SessionModel) -> SessionScorer:
        return GRU4RecScorer(model, model.device)

    def search_space(self, trial: Any, n_items: int) -> dict[str, Any]:
        """The GRU4Rec authors' tuning ranges (GRU4REC.md), one layer, extra negatives capped by n_items."""
        loss = trial.suggest_categorical("loss", ["cross-entropy", "bpr-max"])
        return {
            "loss": loss, "logq": 1.0 if loss == "cross-entropy" else 0.0,
            "layers": (trial.suggest_int("units", 64, 512, log=True),),
            "batch_size": trial.suggest_int("batch_size", 32, 256, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.25, log=True),
            "momentum": trial.suggest_float("momentum", 0.0, 0.9),
            "dropout_embed": trial.suggest_float("dropout_embed", 0.0, 0.5),
            "dropout_hidden": trial.suggest_float("dropout_hidden", 0.0, 0.7),
            "n_sample": trial.suggest_int("n_sample", 0, min(2048, n_items)),
            "sample_alpha": trial.suggest_float("sample_alpha", 0.0, 1.0),
            "bpreg": trial.suggest_float("bpreg", 0.0, 2.0) if loss == "bpr-max" else 0.0,
            "elu_param": trial.suggest_categorical("elu_param", [0.0, 0.5, 1.0]) if loss == "bpr-max" else 0.0,
            "epochs": trial.suggest_int("epochs", 3, 15),
        }


class BaselineTrainer:
    """A family fitted in one pass by a model-backed baseline of training/baselines.py; its parameters are
    the baseline's constructor arguments."""

    def __init__(self, name: str, baseline: Callable[..., ModelBackedScorer],
                 space: Callable[[Any, int], dict[str, Any]]) -> None:
        self.name, self._baseline, self._space = name, baseline, space
        self._defaults = {key: parameter.default for key, parameter in signature(baseline).parameters.items()}

    def default_params(self) -> dict[str, Any]:
        return dict(self._defaults)

    def params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        unknown = sorted(set(overrides or {}) - set(self._defaults))
        if unknown:
            raise ValueError(f"unknown {self.name} parameter(s) {unknown}; expected some of {sorted(self._defaults)}")
        values = {**self._defaults, **(overrides or {})}
        self._baseline(**values)  # validates
        return values

    def fit(self, train_data: SessionDataset, params: Mapping[str, Any], device: torch.device, *,
            eval_data: SessionDataset | None = None, on_epoch: OnEpoch | None = None,
            checkpoint_dir: Path | None = None, on_progress: Callable[[int, int, int], None] | None = None,
            cpu_threads: int | None = CPU_THREADS) -> FitResult:
        start = time.perf_counter()
        fitted = self._baseline(**self.params(params)).fit(train_data)
        return FitResult(fitted.model, seconds=time.perf_counter() - start, pairs=train_data.n_pairs)

    def save(self, result: FitResult, directory: Path, vocabulary: Vocabulary, params: Mapping[str, Any]) -> None:
        save_model(directory, result.model, vocabulary, dict(params))

    def scorer(self, model: SessionModel) -> SessionScorer:
        return SessionModelScorer(model)

    def search_space(self, trial: Any, n_items: int) -> dict[str, Any]:
        return self._space(trial, n_items)


def _sr_space(trial: Any, n_items: int) -> dict[str, Any]:
    return {"max_distance": trial.suggest_int("max_distance", 1, 20),
            "n_rules": trial.suggest_int("n_rules", 10, min(1000, max(10, n_items)), log=True)}


def _vsknn_space(trial: Any, n_items: int) -> dict[str, Any]:
    return {"k": trial.suggest_int("k", 20, 500, log=True),
            "sample_size": trial.suggest_int("sample_size", 200, 5000, log=True),
            "idf": trial.suggest_categorical("idf", [False, True])}


TRAINERS: dict[str, FamilyTrainer] = {
    "gru4rec": GRU4RecTrainer(),
    "sr": BaselineTrainer("sr", SequentialRules, _sr_space),
    "vsknn": BaselineTrainer("vsknn", VSKNN, _vsknn_space),
}
DEFAULT_FAMILY = "gru4rec"


def trainer_for(name: str) -> FamilyTrainer:
    if name not in TRAINERS:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(TRAINERS)}")
    return TRAINERS[name]

