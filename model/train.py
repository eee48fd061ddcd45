"""Train GRU4Rec on a training set folder, evaluate it beside the baselines, and save the model.

    python -m model.train --training-dir var/lake/training/ds=2026-11-21 [--split full|tuning]
        [--preset rsc15] [--loss cross-entropy] [--layers 100] ... [--device auto|cpu|cuda]
        [--output-dir DIR] [--checkpoint-dir DIR] [--report report.json]

``--split full`` trains on ``train`` and evaluates on ``test``; ``--split tuning`` trains on ``train_tr``
and evaluates on ``valid``. Hyperparameters start from ``--preset`` (model/presets.py, default
``default``); flags given explicitly override it. Every epoch prints its loss, training pairs per second
and the evaluation metrics; the baselines are evaluated on the same split at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import torch

from model.artifacts import save_model
from model.baselines import BASELINES, fit_baselines
from model.data import VOCABULARY_FILE, SessionDataset, Vocabulary, load_split, read_vocabulary
from model.evaluate import evaluate
from model.losses import LOSSES
from model.network import GRU4Rec, GRU4RecScorer
from model.optim import OPTIMIZERS
from model.presets import PRESETS
from model.trainer import CPU_THREADS, EpochStats, TrainParams, resolve_device, torch_threads, train
from sessionrec.config import load_settings

logger = logging.getLogger(__name__)

KS = (1, 5, 10, 20)
SPLITS = {"full": ("train", "test"), "tuning": ("train_tr", "valid")}
STATS_FILE = "stats.json"
EVALUATION_SLOTS = 512
# Flag name -> (TrainParams field, argparse type); None default means "not given: keep the preset's".
HYPERPARAMETER_FLAGS: dict[str, tuple[str, Callable[[str], object]]] = {
    "--loss": ("loss", str), "--layers": ("layers", lambda text: tuple(int(v) for v in text.split(","))),
    "--batch-size": ("batch_size", int), "--epochs": ("epochs", int), "--learning-rate": ("learning_rate", float),
    "--momentum": ("momentum", float), "--dropout-embed": ("dropout_embed", float),
    "--dropout-hidden": ("dropout_hidden", float), "--n-sample": ("n_sample", int),
    "--sample-alpha": ("sample_alpha", float), "--logq": ("logq", float), "--bpreg": ("bpreg", float),
    "--elu-param": ("elu_param", float), "--embedding": ("embedding", int), "--optimizer": ("optimizer", str),
    "--seed": ("seed", int),
}
CHOICES = {"--loss": LOSSES, "--optimizer": OPTIMIZERS}


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
        cpu_threads: int | None = CPU_THREADS) -> TrainingResult:
    """Train on the split's training part, evaluate each epoch on its evaluation part, then the baselines.

    ``cpu_threads`` (torch intra-op threads) applies to training, evaluation and the baselines.
    """
    training_dir = Path(training_dir)
    target = resolve_device(device)
    vocabulary, train_data, eval_data = load_training_set(training_dir, split)

    def evaluate_fn(network: GRU4Rec) -> dict[str, float]:
        return evaluate(GRU4RecScorer(network, target), eval_data, ks=KS, batch_size=EVALUATION_SLOTS)

    model, stats = train(train_data, params, device=target, checkpoint_dir=checkpoint_dir,
                         on_epoch_end=on_epoch_end, evaluate_fn=evaluate_fn, on_progress=on_progress,
                         cpu_threads=cpu_threads)
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


class ProgressLine:
    """An in-place progress line (epoch, share done, pairs per second), drawn only on a terminal."""

    def __init__(self, epochs: int, stream: TextIO | None = None, enabled: bool | None = None,
                 width: int = 30) -> None:
        self.epochs, self.stream, self.width = epochs, stream or sys.stderr, width
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._epoch, self._start, self._done = 0, 0.0, 0

    def __call__(self, epoch: int, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if epoch != self._epoch:
            self._epoch, self._start, self._done = epoch, now, done
        rate = f"{(done - self._done) / (now - self._start):,.0f} pairs/s" if done > self._done else ""
        filled = self.width * done // total
        self.stream.write(f"\repoch {epoch}/{self.epochs} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{100 * done // total:3d}% {rate}")
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (self.width + 60) + "\r")
            self.stream.flush()


def format_epoch(stats: EpochStats, epochs: int) -> str:
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in (stats.eval_metrics or {}).items() if k.endswith("@20"))
    return (f"epoch {stats.epoch}/{epochs}  loss {stats.loss:.4f}  {stats.pairs_per_s:,.0f} pairs/s  "
            f"{stats.seconds:.1f} s  {metrics}")


def format_summary(result: TrainingResult) -> str:
    rows = [("gru4rec", result.metrics), *result.baselines.items()]
    lines = [f"{'model':<10}{'recall@20':>11}{'mrr@20':>9}"]
    lines += [f"{name:<10}{m['recall@20']:>11.4f}{m['mrr@20']:>9.4f}" for name, m in rows]
    lines.append(f"training: {result.train_seconds:.1f} s, {result.throughput_events_per_s:,.0f} pairs/s on "
                 f"{result.device}; unknown evaluation events dropped: {result.n_unknown_test_events}")
    return "\n".join(lines)


def build_parser(default_device: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--training-dir", type=Path, required=True, help="training set folder (training/ds=D)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="full",
                        help="full: train on train, evaluate on test; tuning: train_tr and valid")
    parser.add_argument("--report", type=Path, help="write the results as JSON here")
    parser.add_argument("--device", default=default_device, help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, help="save the trained model folder here")
    parser.add_argument("--checkpoint-dir", type=Path, help="checkpoint every epoch here; resume from it")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="hyperparameter preset")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help="comma-separated baselines to evaluate ('' for none; default: all)")
    parser.add_argument("--threads", type=int, default=CPU_THREADS,
                        help="torch intra-op threads for CPU training (default: %(default)s)")
    for flag, (name, kind) in HYPERPARAMETER_FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, choices=CHOICES.get(flag), default=None,
                            help=f"overrides the preset's {name}")
    parser.add_argument("--constrained-embedding", dest="constrained_embedding",
                        action=argparse.BooleanOptionalAction, default=None,
                        help="tie the input embedding to the output item matrix")
    return parser


def params_from_args(args: argparse.Namespace) -> TrainParams:
    """The preset's values, overridden by every hyperparameter flag given explicitly."""
    values = dict(PRESETS[args.preset])
    for name in [name for name, _ in HYPERPARAMETER_FLAGS.values()] + ["constrained_embedding"]:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return TrainParams.from_dict(values)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser(load_settings().device)
    args = parser.parse_args(argv)
    try:
        params = params_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    baselines = [name for name in args.baselines.split(",") if name]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        parser.error(f"unknown baseline(s) {unknown}; expected some of {sorted(BASELINES)}")
    progress = ProgressLine(params.epochs)

    def print_epoch(stats: EpochStats) -> None:
        progress.clear()
        print(format_epoch(stats, params.epochs), flush=True)

    result = run(args.training_dir, params, split=args.split, device=args.device, output_dir=args.output_dir,
                 checkpoint_dir=args.checkpoint_dir, baselines=baselines, on_epoch_end=print_epoch,
                 on_progress=progress, cpu_threads=args.threads)
    print(format_summary(result))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result.report(), indent=2) + "\n")
        print(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
