"""Train GRU4Rec on a training set folder, evaluate it beside the baselines, and save the model.

    python -m training.train --training-dir var/lake/training/ds=2026-11-21 [--split full|tuning]
        [--preset rsc15] [--loss cross-entropy] [--layers 100] ... [--device auto|cpu|cuda]
        [--output-dir DIR] [--checkpoint-dir DIR] [--report report.json]

``--split full`` trains on ``train`` and evaluates on ``test``; ``--split tuning`` trains on ``train_tr``
and evaluates on ``valid``. Hyperparameters start from ``--preset`` (training/presets.py, default
``default``); flags given explicitly override it. Every epoch prints its loss, training pairs per second
and the evaluation metrics; the baselines are evaluated on the same split at the end.

By default the run is tracked in MLflow (``Settings.mlflow_tracking_uri``) with the model, and with
``--split full`` the model is registered and goes through the promotion gate (``--force-promote`` skips
the gate, recorded as such). ``--no-mlflow`` only trains, evaluates and reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TextIO

from lifecycle.pipeline import gate, register, track_experiment
from sessionrec.config import load_settings
from training.baselines import BASELINES
from training.experiment import SPLITS, TrainingResult, run
from training.losses import LOSSES
from training.optim import OPTIMIZERS
from training.presets import PRESETS
from training.trainer import CPU_THREADS, EpochStats, TrainParams

logger = logging.getLogger(__name__)

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
# TrainParams switches given as --name/--no-name; None default means "not given: keep the preset's".
SWITCHES = ("constrained_embedding", "remove_accidental_hits")


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
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--training-dir", type=Path, required=True, help="training set folder (training/ds=D)")
    parser.add_argument("--split", choices=sorted(SPLITS), default="full",
                        help="full: train on train, evaluate on test; tuning: train_tr and valid")
    parser.add_argument("--report", type=Path, help="write the results as JSON here")
    parser.add_argument("--device", default=default_device, help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, help="save the trained model folder here")
    parser.add_argument("--checkpoint-dir", type=Path, help="checkpoint every epoch here; resume from it")
    parser.add_argument("--warm-start-from", type=Path, metavar="MODEL_DIR",
                        help="start from the weights of the model saved in MODEL_DIR (same architecture; items "
                             "new to it get fresh rows); usually with fewer --epochs")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default", help="hyperparameter preset")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help="comma-separated baselines to evaluate ('' for none; default: all)")
    parser.add_argument("--threads", type=int, default=CPU_THREADS,
                        help="torch intra-op threads for CPU training (default: %(default)s)")
    for flag, (name, kind) in HYPERPARAMETER_FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, choices=CHOICES.get(flag), default=None,
                            help=f"overrides the preset's {name}")
    parser.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True,
                        help="track the run in MLflow (Settings.mlflow_tracking_uri) and log the model")
    parser.add_argument("--register", action=argparse.BooleanOptionalAction, default=True,
                        help="with --mlflow and --split full: register the model and run the promotion gate")
    parser.add_argument("--force-promote", action="store_true", help="promote to @champion without the gate")
    parser.add_argument("--ds", type=date.fromisoformat,
                        help="logical date of the run (default: from a training folder named ds=YYYY-MM-DD)")
    parser.add_argument("--constrained-embedding", dest="constrained_embedding",
                        action=argparse.BooleanOptionalAction, default=None,
                        help="tie the input embedding to the output item matrix")
    parser.add_argument("--remove-accidental-hits", dest="remove_accidental_hits",
                        action=argparse.BooleanOptionalAction, default=None,
                        help="never score a row's own target item as one of its negatives (default: on; "
                             "--no-remove-accidental-hits trains as the original implementation does)")
    return parser


def params_from_args(args: argparse.Namespace) -> TrainParams:
    """The preset's values, overridden by every hyperparameter flag given explicitly."""
    values = dict(PRESETS[args.preset])
    for name in [name for name, _ in HYPERPARAMETER_FLAGS.values()] + list(SWITCHES):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return TrainParams.from_dict(values)


def logical_date(args: argparse.Namespace, parser: argparse.ArgumentParser) -> date:
    """``--ds``, else the day in the training folder's name (``training/ds=YYYY-MM-DD``)."""
    if args.ds is not None:
        return args.ds
    name = Path(args.training_dir).resolve().name
    try:
        return date.fromisoformat(name.removeprefix("ds="))
    except ValueError:
        parser.error(f"--ds is needed: {args.training_dir} is not named ds=YYYY-MM-DD")
        raise


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    parser = build_parser(settings.device)
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

    options = {"split": args.split, "device": args.device, "output_dir": args.output_dir,
               "checkpoint_dir": args.checkpoint_dir, "baselines": baselines, "on_epoch_end": print_epoch,
               "on_progress": progress, "cpu_threads": args.threads, "warm_start_from": args.warm_start_from}
    if args.mlflow:
        day = logical_date(args, parser)
        result, run_id, model_uri = track_experiment(settings, day, args.training_dir, params, **options)
        print(format_summary(result))
        print(f"MLflow run {run_id} ({settings.mlflow_tracking_uri}); model {model_uri}")
        if args.register and args.split == "full":
            version = register(settings, run_id, day)
            decision = gate(settings, version, day, force=args.force_promote, training_dir=args.training_dir)
            print(f"registered {settings.model_name} version {version}: "
                  f"{'promoted to @champion' if decision['promoted'] else 'not promoted'} ({decision['reason']})")
    else:
        result = run(args.training_dir, params, **options)
        print(format_summary(result))
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result.report(), indent=2) + "\n")
        print(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
