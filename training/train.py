"""Train session models on a training set folder, evaluate them beside the baselines, and save the model.

    python -m training.train --training-dir var/lake/training/ds=2026-11-21 [--family gru4rec|sr|vsknn|...]
        [--params JSON] [--split full|tuning] [--preset rsc15] [--loss cross-entropy] [--layers 100] ...
        [--device auto|cpu|cuda] [--output-dir DIR] [--checkpoint-dir DIR] [--report report.json]
        [--register [--force-promote]]

Without ``--family`` it runs the nightly selection: every family of ``Settings.families`` is fitted on
``train_tr`` and measured on ``valid``, the best by ``Settings.selection_metric`` is the candidate, and
all are then fitted on ``train`` and evaluated on ``test`` (the leaderboard); the test split is never
used to choose. With ``--family`` only that family is fitted: ``--split full`` trains on ``train`` and
evaluates on ``test``; ``--split tuning`` trains on ``train_tr`` and evaluates on ``valid``.
GRU4Rec's hyperparameters start from ``--preset`` (training/presets.py, default ``default``) and the
flags given explicitly override it; other families use their defaults; ``--params '{"epochs": 5}'``
overrides the parameters of the ``--family`` chosen.

By default the run is tracked in MLflow (``Settings.mlflow_tracking_uri``) with the model, and nothing
is registered: an ad hoc run never moves ``@champion``. ``--register`` registers the model as a new
version of ``Settings.model_name``; it goes through the promotion gate (on the production lake's test
split of the day) only when the training folder is the production lake's training set of that day
(``Settings.lake``/training/ds=D). A folder anywhere else is registered but never gated, recorded on
the version as ``gate_decision=not gated``. ``--force-promote`` skips the gate, recorded as such, and
is refused for a folder outside the production lake. ``--no-mlflow`` only trains, evaluates and reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TextIO

from lifecycle.pipeline import gate, is_production_training_set, not_gated, register, track_experiment, track_selection
from sessionrec.config import Settings, load_settings
from sessionrec.layout import partition_day
from training.baselines import BASELINES
from training.experiment import SPLITS, Selection, TrainingResult, run, select
from training.families import TRAINERS, epoch_stats
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
    rows = [(result.family, result.metrics), *result.baselines.items()]
    lines = [f"{'model':<10}{'recall@20':>11}{'mrr@20':>9}"]
    lines += [f"{name:<10}{m['recall@20']:>11.4f}{m['mrr@20']:>9.4f}" for name, m in rows]
    lines.append(f"training: {result.train_seconds:.1f} s, {result.throughput_events_per_s:,.0f} pairs/s on "
                 f"{result.device}; unknown evaluation events dropped: {result.n_unknown_test_events}")
    return "\n".join(lines)


def format_leaderboard(selection: Selection) -> str:
    metric = selection.metric
    lines = [f"selected {selection.family} by validation {metric}",
             f"{'model':<10}{'kind':<10}{'valid ' + metric:>17}{'test recall@20':>16}{'test mrr@20':>13}"]
    for row in selection.leaderboard():
        valid = row.get(f"valid_{metric}")
        lines.append(f"{row['model'] + (' *' if row['selected'] else ''):<10}{row['kind']:<10}"
                     f"{'-' if valid is None else f'{valid:.4f}':>17}{row['test_recall@20']:>16.4f}"
                     f"{row['test_mrr@20']:>13.4f}")
    return "\n".join(lines)


def selection_report(selection: Selection) -> dict:
    """The selected model's report (``metrics`` on test, ``family``) plus the leaderboard of all."""
    return {**selection.result.report(), "selection_metric": selection.metric, "validation": selection.validation,
            "leaderboard": selection.leaderboard()}


def build_parser(default_device: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n", 1)[0],
                                     epilog=__doc__.rsplit("\n\n", 1)[1].replace("``", ""))
    parser.add_argument("--training-dir", type=Path, required=True, help="training set folder (training/ds=D)")
    parser.add_argument("--family", choices=sorted(TRAINERS), default=None,
                        help="fit this model family only (default: select among Settings.families on the "
                             "validation split)")
    parser.add_argument("--params", type=json_object, default={},
                        help="with --family: JSON object of parameter overrides for that family (after GRU4Rec's "
                             "preset and flags)")
    parser.add_argument("--split", choices=sorted(SPLITS), default=None,
                        help="with --family: full (default) trains on train and evaluates on test; tuning "
                             "trains on train_tr and evaluates on valid")
    parser.add_argument("--report", type=Path, help="write the results as JSON here")
    parser.add_argument("--device", default=default_device, help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, help="save the trained model folder here")
    parser.add_argument("--checkpoint-dir", type=Path, help="checkpoint every epoch here; resume from it")
    parser.add_argument("--warm-start-from", type=Path, metavar="MODEL_DIR",
                        help="with --family gru4rec: start from the weights of the model saved in MODEL_DIR (same "
                             "architecture; items new to it get fresh rows); usually with fewer --epochs")
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
    parser.add_argument("--register", action=argparse.BooleanOptionalAction, default=False,
                        help="with --mlflow and the full split: register the model as a new version (default: "
                             "off, so an ad hoc run never moves @champion); it is gated only when the training "
                             "folder is the production lake's training set of the day, else never gated")
    parser.add_argument("--force-promote", action="store_true",
                        help="with --register: promote to @champion without the gate (refused for a training "
                             "folder outside the production lake)")
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


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def family_overrides(args: argparse.Namespace) -> dict[str, dict]:
    """Parameter overrides by family: GRU4Rec's from the preset and flags (:func:`params_from_args`), then
    ``--params`` for ``--family`` (validated). The preset and flags are refused for another single family."""
    overrides = {"gru4rec": params_from_args(args).to_dict()}
    if args.family is None:
        if args.params:
            raise ValueError("--params needs --family (without it every family is fitted)")
        return overrides
    if args.family not in overrides:
        given = [name for name, _ in HYPERPARAMETER_FLAGS.values() if getattr(args, name) is not None]
        given += [name for name in SWITCHES if getattr(args, name) is not None]
        if given or args.preset != "default":
            raise ValueError(f"--preset and the hyperparameter flags are GRU4Rec's; for --family {args.family} "
                             f"use --params (given: {given or ['preset']})")
    overrides[args.family] = TRAINERS[args.family].params({**overrides.get(args.family, {}), **args.params})
    return overrides


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
    try:
        return partition_day(Path(args.training_dir).resolve().name)
    except ValueError:
        parser.error(f"--ds is needed: {args.training_dir} is not named ds=YYYY-MM-DD")
        raise


def register_and_gate(settings: Settings, args: argparse.Namespace, run_id: str, day: date) -> None:
    """Register the run's model; gate it only when it was trained on the production lake's training set."""
    version = register(settings, run_id, day)
    if is_production_training_set(settings, args.training_dir, day):
        decision = gate(settings, version, day, force=args.force_promote)
        verdict = "promoted to @champion" if decision["promoted"] else "not promoted"
        reason = decision["reason"]
    else:
        reason = not_gated(settings, version, args.training_dir)
        verdict = "not gated"
    print(f"registered {settings.model_name} version {version}: {verdict} ({reason})")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    parser = build_parser(settings.device)
    args = parser.parse_args(argv)
    try:
        overrides = family_overrides(args)
    except ValueError as exc:
        parser.error(str(exc))
    baselines = [name for name in args.baselines.split(",") if name]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        parser.error(f"unknown baseline(s) {unknown}; expected some of {sorted(BASELINES)}")
    if args.family is None and args.split is not None:
        parser.error("--split needs --family: without it the run selects on train_tr/valid and evaluates on test")
    if args.family is None and args.warm_start_from is not None:
        parser.error("--warm-start-from needs --family (the saved model's family)")
    split = args.split or "full"
    if args.force_promote and not args.register:
        parser.error("--force-promote needs --register")
    day = logical_date(args, parser) if args.mlflow else None
    if day is not None and args.force_promote and not is_production_training_set(settings, args.training_dir, day):
        parser.error(f"--force-promote: {args.training_dir} is not the production lake's training set for {day} "
                     f"({settings.lake}); a model of another folder never becomes @champion")
    epochs = int(overrides[args.family or "gru4rec"].get("epochs", 1))
    progress = ProgressLine(epochs)

    def print_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
        progress.clear()
        print(format_epoch(epoch_stats(epoch, metrics), epochs), flush=True)

    options = {"device": args.device, "output_dir": args.output_dir, "checkpoint_dir": args.checkpoint_dir,
               "baselines": baselines, "on_epoch": print_epoch, "on_progress": progress, "cpu_threads": args.threads}
    if args.family is None:
        families = settings.family_names
        if args.mlflow:
            selection, run_id, model_uri = track_selection(settings, day, args.training_dir, families, overrides,
                                                           metric=settings.selection_metric,
                                                           tolerance=settings.selection_tolerance, **options)
        else:
            selection = select(args.training_dir, families, overrides, metric=settings.selection_metric,
                               tolerance=settings.selection_tolerance, **options)
        result, report = selection.result, selection_report(selection)
        print(format_leaderboard(selection))
    else:
        if args.mlflow:
            result, run_id, model_uri = track_experiment(settings, day, args.training_dir, overrides[args.family],
                                                         family=args.family, split=split,
                                                         warm_start_from=args.warm_start_from, **options)
        else:
            result = run(args.training_dir, overrides[args.family], split=split, family=args.family,
                         warm_start_from=args.warm_start_from, **options)
        report = result.report()
    print(format_summary(result))
    if args.mlflow:
        print(f"MLflow run {run_id} ({settings.mlflow_tracking_uri}); model {model_uri}")
        if args.register and split == "full":
            register_and_gate(settings, args, run_id, day)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
