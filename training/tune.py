"""Hyperparameter search: Optuna TPE with per-epoch pruning, trained on ``train_tr``, measured on ``valid``.

    python -m training.tune --training-dir var/lake/training/ds=2026-11-21 [--trials 30]
        [--timeout-minutes 30] [--family gru4rec] [--workers N] [--metric mrr@20] [--seed 1]
        [--device auto] [--no-mlflow]

- Only the training set's ``items.parquet``, ``train_tr`` and ``valid`` are read: the test split is never
  looked at while searching.
- The study lives in a database (``Settings.tune_storage``: SQLite under ``<home>/optuna`` by default, the
  stack's PostgreSQL in production), named after the family, the training set and a digest of its tuning
  data, so rerunning the command resumes it: it runs trials until ``--trials`` of them have finished
  (completed or pruned). Workers (``--workers``/``Settings.tune_workers`` processes here, or mapped
  Airflow tasks) share the study through the database, Optuna's distributed mode; a worker that dies
  leaves a trial whose heartbeat stops, which the others fail and replace.
- Sampling is deterministic for a seed: each trial's TPE sampler is seeded from the seed, the number of
  trials finished before it and the worker's index, so a search killed and resumed proposes the same
  trials as one that ran through (with one worker; parallel workers race by nature).
- Each trial reports the validation metric after every epoch; the median pruner stops trials behind the
  median of earlier ones at the same epoch. A trial's value is its metric after its last epoch.
- With MLflow, the search is one parent run (best-so-far as the ``best_value`` metric and ``best_*``
  tags) and every trial a nested run with its parameters and per-epoch validation metrics.
- The search space is the family's ``search_space`` (training/families.py), its ranges documented there.
- The best trial becomes the data set's tuned preset (training/tuned.py), which nightly training uses by
  default when present (:func:`load_tuned_params`). A new search starts by measuring the current tuned
  preset on its own validation data (an enqueued first trial), so the preset is replaced only by a
  trial that does better on the same data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sessionrec.config import Settings, load_settings
from training.tuned import TunedPreset, load_tuned, store_tuned, tuned_path

logger = logging.getLogger(__name__)

EXPERIMENT_SUFFIX = "-search"
TUNING_SPLITS = ("train_tr", "valid")
# Median pruning: no pruning until this many trials finished, nor before this epoch in any trial.
PRUNER_STARTUP_TRIALS = 5
PRUNER_WARMUP_EPOCHS = 2
TPE_STARTUP_TRIALS = 8
VALID_KS = (20,)
METRICS = ("mrr@20", "recall@20", "ndcg@20")

# --- the study ---

def _optuna() -> Any:
    """Optuna, quiet: warnings only, and no notice for the experimental features used (heartbeats, grouped
    multivariate TPE)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage_url(settings: Settings) -> str:
    """The study database: ``Settings.tune_storage`` or SQLite under ``<home>/optuna``."""
    return settings.tune_storage or f"sqlite:///{settings.home / 'optuna' / 'optuna.db'}"


def open_storage(settings: Settings) -> Any:
    optuna = _optuna()

    url = storage_url(settings)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}  # workers write to one file
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                      heartbeat_interval=settings.tune_heartbeat_s,
                                      grace_period=2 * settings.tune_heartbeat_s)


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from integers: the same parts, the same seed, on every machine."""
    digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def make_sampler(seed: int, finished: int, worker: int, parallel: bool) -> Any:
    optuna = _optuna()

    return optuna.samplers.TPESampler(seed=derived_seed(seed, finished, worker), n_startup_trials=TPE_STARTUP_TRIALS,
                                      multivariate=True, group=True, constant_liar=parallel)


def make_pruner() -> Any:
    optuna = _optuna()

    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS)


@dataclass
class TuningData:
    """What a worker trains and measures on: the tuning split only."""

    training_dir: Path
    n_items: int
    train: Any   # SessionDataset (train_tr)
    valid: Any   # SessionDataset (valid)
    digest: str


def load_tuning_data(training_dir: Path) -> TuningData:
    """``items.parquet``, ``train_tr`` and ``valid`` of a training set folder (never ``test``)."""
    from model.data import VOCABULARY_FILE, load_split, read_vocabulary
    from training.trainer import data_fingerprint

    training_dir = Path(training_dir)
    if not (training_dir / VOCABULARY_FILE).is_file():
        raise FileNotFoundError(f"{training_dir / VOCABULARY_FILE}: not found; is {training_dir} a training set "
                                "folder (items.parquet, train_tr/, valid/)?")
    vocabulary = read_vocabulary(training_dir / VOCABULARY_FILE)
    train, valid = (load_split(training_dir, split, vocabulary) for split in TUNING_SPLITS)
    if not (valid.lengths() >= 2).any():
        raise ValueError(f"{training_dir / 'valid'}: no session with two or more events to measure trials on")
    digest = hashlib.blake2b(json.dumps([data_fingerprint(train), data_fingerprint(valid)],
                                        sort_keys=True).encode(), digest_size=6).hexdigest()
    return TuningData(training_dir, len(vocabulary), train, valid, digest)


def study_name(family: str, data: TuningData) -> str:
    """One study per family and tuning data: ``gru4rec-ds=2026-11-21-<digest of train_tr and valid>``."""
    return f"{family}-{data.training_dir.name}-{data.digest}"


@dataclass(frozen=True)
class SearchSpec:
    """What every worker of one search needs (small and picklable: it crosses processes and XCom)."""

    study: str
    training_dir: str
    family: str
    metric: str
    seed: int
    trials: int
    deadline: float | None       # epoch seconds after which no trial starts
    device: str
    parent_run_id: str | None    # MLflow parent run; None without tracking
    experiment_id: str | None


def prepare(settings: Settings, training_dir: Path, family: str = "gru4rec", trials: int | None = None,
            timeout_minutes: float | None = None, metric: str | None = None, seed: int = 1,
            device: str | None = None, mlflow: bool = True) -> SearchSpec:
    """Create or resume the study (and its MLflow parent run); enqueue the current tuned preset first."""
    optuna = _optuna()

    from training.families import trainer_for

    trainer_for(family)  # an unknown family is refused before anything is created
    metric = metric or settings.tune_metric
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: expected one of {METRICS}")
    trials = trials or settings.tune_trials
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    data = load_tuning_data(training_dir)
    name = study_name(family, data)
    study = optuna.create_study(study_name=name, storage=open_storage(settings), direction="maximize",
                                load_if_exists=True)
    attrs = study.user_attrs
    if attrs.get("metric", metric) != metric or attrs.get("seed", seed) != seed:
        raise ValueError(f"study {name!r} searches {attrs.get('metric')} with seed {attrs.get('seed')}; "
                         f"resume it with those, or delete it to search {metric} with seed {seed}")
    if not attrs:
        for key, value in {"family": family, "metric": metric, "seed": seed, "n_items": data.n_items,
                           "training_dir": str(Path(training_dir).resolve()), "data_digest": data.digest}.items():
            study.set_user_attr(key, value)
        incumbent = load_tuned(settings, family)
        if incumbent is not None:
            study.enqueue_trial(incumbent.search_params, user_attrs={"incumbent_of": incumbent.study})
            logger.info("measuring the current tuned preset (study %s, trial %d) first", incumbent.study,
                        incumbent.trial)
    parent_run_id = experiment_id = None
    if mlflow:
        parent_run_id, experiment_id = _parent_run(settings, study, data)
    deadline = time.time() + timeout_minutes * 60 if timeout_minutes else None
    return SearchSpec(name, str(training_dir), family, metric, seed, trials, deadline,
                      device or settings.device, parent_run_id, experiment_id)


def _parent_run(settings: Settings, study: Any, data: TuningData) -> tuple[str, str]:
    """The search's MLflow run: created once per study, reopened when the study resumes."""
    from lifecycle.tracking import connect, ensure_experiment

    client = connect(settings)
    experiment_id = ensure_experiment(client, settings.model_name + EXPERIMENT_SUFFIX, settings.mlflow_artifact_root)
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id, experiment_id
    run = client.create_run(experiment_id, run_name=study.study_name, tags={
        "study": study.study_name, "training_dir": str(data.training_dir.resolve()),
        "family": study.user_attrs["family"], "metric": study.user_attrs["metric"],
        "storage": storage_url(settings).split(":", 1)[0]})  # the dialect only: URLs can hold passwords
    study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
    return run.info.run_id, experiment_id


# --- one worker ---

class Objective:
    """Trains one trial on ``train_tr``, reporting the validation metric per epoch (pruning hooks in)."""

    def __init__(self, spec: SearchSpec, data: TuningData, settings: Settings, worker: int = 0) -> None:
        from model.device import resolve_device

        self.spec, self.data, self.settings, self.worker = spec, data, settings, worker
        self.device = resolve_device(spec.device)
        self.client = None
        if spec.parent_run_id is not None:
            from lifecycle.tracking import connect

            self.client = connect(settings)

    def __call__(self, trial: Any) -> float:
        optuna = _optuna()

        from training.evaluate import evaluate
        from training.families import EVALUATION_SLOTS, KS, trainer_for

        trainer = trainer_for(self.spec.family)
        params = trainer.params(trainer.search_space(trial, self.data.n_items))
        trial.set_user_attr("train_params", params)
        trial.set_user_attr("worker", self.worker)
        run_id = self._start_run(trial, params)
        last: dict[str, float] = {}

        def on_epoch(epoch: int, metrics: Mapping[str, float]) -> None:
            last.clear()
            last.update({k: v for k, v in metrics.items() if "@" in k})
            trial.report(metrics[self.spec.metric], epoch)
            self._log(run_id, {f"valid_{k.replace('@', '_')}": v for k, v in last.items()}
                      | {"train_loss": metrics["loss"], "train_pairs_per_s": metrics["pairs_per_s"]}, epoch)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", epoch)
                raise optuna.TrialPruned(f"{self.spec.metric} {metrics[self.spec.metric]:.4f} after epoch "
                                         f"{epoch} is below the median of earlier trials")

        start = time.perf_counter()
        try:
            fitted = trainer.fit(self.data.train, params, self.device, eval_data=self.data.valid, on_epoch=on_epoch)
        except optuna.TrialPruned:
            self._end_run(run_id, "PRUNED", time.perf_counter() - start, last)
            raise
        except FloatingPointError as exc:  # a diverging setting is a bad setting, not a broken search
            trial.set_user_attr("diverged", str(exc))
            self._end_run(run_id, "PRUNED", time.perf_counter() - start, last)
            raise optuna.TrialPruned(str(exc)) from exc
        except BaseException:
            self._end_run(run_id, "FAIL", time.perf_counter() - start, last)
            raise
        if not fitted.history:  # fitted in one pass: measured once
            last.update({k: v for k, v in evaluate(trainer.scorer(fitted.model), self.data.valid, ks=KS,
                                                   batch_size=EVALUATION_SLOTS).items() if "@" in k})
        seconds = time.perf_counter() - start
        trial.set_user_attr("valid_metrics", dict(last))
        trial.set_user_attr("seconds", seconds)
        self._end_run(run_id, "COMPLETE", seconds, last)
        return float(last[self.spec.metric])

    def _start_run(self, trial: Any, params: dict[str, Any]) -> str | None:
        if self.client is None:
            return None
        from mlflow.entities import Param

        from lifecycle.tracking import flatten_params

        run = self.client.create_run(self.spec.experiment_id, run_name=f"trial-{trial.number}", tags={
            "mlflow.parentRunId": self.spec.parent_run_id, "study": self.spec.study, "trial": str(trial.number)})
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten_params(params).items()])
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        return run.info.run_id

    def _log(self, run_id: str | None, values: Mapping[str, float], step: int = 0) -> None:
        if run_id is None:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in values.items()])

    def _end_run(self, run_id: str | None, state: str, seconds: float, metrics: Mapping[str, float]) -> None:
        if run_id is None:
            return
        self._log(run_id, {"trial_seconds": seconds} | {k.replace("@", "_"): v for k, v in metrics.items()
                                                       if "@" in k})
        self.client.set_tag(run_id, "optuna_state", state)
        self.client.set_terminated(run_id, status="FAILED" if state == "FAIL" else "FINISHED")


def _counts(study: Any) -> tuple[int, int]:
    """(finished trials, running trials) of the study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    return finished, sum(t.state == TrialState.RUNNING for t in trials)


def run_worker(spec: SearchSpec, worker: int = 0, settings: Settings | None = None,
               parallel: bool = False, echo: Callable[[str], None] | None = None) -> int:
    """Run trials of the study until ``spec.trials`` have finished or the deadline passed; returns how many
    trials this worker ran. Any number of workers, anywhere, may run at once on one study."""
    optuna = _optuna()

    settings = settings or load_settings()
    data = load_tuning_data(Path(spec.training_dir))
    if study_name(spec.family, data) != spec.study:
        raise ValueError(f"{spec.training_dir}: its tuning data changed since study {spec.study} was prepared")
    storage = open_storage(settings)
    objective = Objective(spec, data, settings, worker)
    ran = 0
    started = time.time()
    while True:
        study = optuna.load_study(study_name=spec.study, storage=storage)
        optuna.storages.fail_stale_trials(study)
        finished, running = _counts(study)
        if finished >= spec.trials or (spec.deadline is not None and time.time() >= spec.deadline):
            break
        if finished + running >= spec.trials:  # the last trials are running elsewhere: wait for them
            time.sleep(min(5.0, settings.tune_heartbeat_s))
            continue
        study = optuna.load_study(study_name=spec.study, storage=storage,
                                  sampler=make_sampler(spec.seed, finished, worker, parallel), pruner=make_pruner())
        done: list[Any] = []
        study.optimize(objective, n_trials=1, gc_after_trial=True, callbacks=[_collect(done)])
        ran += 1
        _report_progress(settings, study, spec, started, ran, echo, done[0] if done else None)
    return ran


def _collect(into: list[Any]) -> Callable[[Any, Any], None]:
    """An Optuna callback that keeps the trials this worker finished."""
    return lambda _study, trial: into.append(trial)


def _report_progress(settings: Settings, study: Any, spec: SearchSpec, started: float, ran: int,
                     echo: Callable[[str], None] | None, latest: Any) -> None:
    """One progress line (trial k/N, best so far, time left) and the parent run's best-so-far."""
    from optuna.trial import TrialState

    finished, _ = _counts(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    elapsed = time.time() - started
    if spec.deadline is not None:
        left = f"{max(0.0, spec.deadline - time.time()) / 60:.1f} min left"
    else:
        left = f"about {elapsed / ran * max(0, spec.trials - finished) / 60:.1f} min left"
    state = ""
    if latest is not None:
        state = f" (trial {latest.number} {latest.state.name.lower()}"
        state += f" at epoch {latest.user_attrs['pruned_at_epoch']})" if "pruned_at_epoch" in latest.user_attrs \
            else ")"
    best_text = f"best {spec.metric} {best.value:.4f} (trial {best.number})" if best else "no trial complete yet"
    line = f"trial {finished}/{spec.trials}{state}: {best_text}; {elapsed / 60:.1f} min, {left}"
    logger.info(line)
    if echo is not None:
        echo(line)
    if spec.parent_run_id is not None and best is not None:
        from lifecycle.tracking import connect

        client = connect(settings)
        client.log_metric(spec.parent_run_id, "best_value", best.value, step=finished)
        client.set_tag(spec.parent_run_id, "best_trial", str(best.number))
        client.set_tag(spec.parent_run_id, "best_params", json.dumps(best.params, sort_keys=True))


def _worker_process(spec: SearchSpec, worker: int, settings: Settings) -> None:
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(asctime)s worker {worker} %(levelname)s %(name)s: %(message)s")
    run_worker(spec, worker, settings, parallel=True)


def worker_count(settings: Settings, workers: int | None) -> int:
    """``workers`` or ``Settings.tune_workers``; 0 means one per CPU core."""
    count = settings.tune_workers if workers is None else workers
    if count < 0:
        raise ValueError(f"workers must be >= 0 (0: one per CPU core), got {count}")
    return count or os.cpu_count() or 1


def run_local(spec: SearchSpec, settings: Settings, workers: int = 1,
              echo: Callable[[str], None] | None = None) -> None:
    """``workers`` processes on this machine share the study: this one plus ``workers - 1`` spawned."""
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_worker_process, args=(spec, index, settings), daemon=False)
                for index in range(1, workers)]
    for child in children:
        child.start()
    try:
        run_worker(spec, 0, settings, parallel=workers > 1, echo=echo)
    finally:
        for child in children:
            child.join()
    failed = [child.exitcode for child in children if child.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {workers - 1} worker processes failed (exit codes {failed})")


# --- the end of a search ---

def finish(settings: Settings, spec: SearchSpec) -> dict[str, Any]:
    """Make the best trial the tuned preset (if it beats the current one on this validation data), close the
    parent run, and summarise the search (JSON-safe, for XCom and ``--report``)."""
    optuna = _optuna()
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=spec.study, storage=open_storage(settings))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary: dict[str, Any] = {
        "study": spec.study, "metric": spec.metric, "trials": len(trials),
        "complete": len(complete), "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "trial_seconds": [round(t.duration.total_seconds(), 1) for t in trials
                          if t.duration is not None and t.state in (TrialState.COMPLETE, TrialState.PRUNED)],
        "best": None, "tuned_preset": None, "replaced": False}
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params,
                           "valid_metrics": best.user_attrs.get("valid_metrics", {})}
        summary["tuned_preset"], summary["replaced"], summary["reason"] = _update_tuned(settings, spec, study, best)
    if spec.parent_run_id is not None:
        from lifecycle.tracking import connect

        client = connect(settings)
        for key in ("complete", "pruned", "failed"):
            client.log_metric(spec.parent_run_id, f"trials_{key}", summary[key])
        client.log_dict(spec.parent_run_id, summary, "search/summary.json")
        client.set_terminated(spec.parent_run_id, status="FINISHED")
    return summary


def _update_tuned(settings: Settings, spec: SearchSpec, study: Any, best: Any) -> tuple[str, bool, str]:
    current = load_tuned(settings, spec.family)
    path = str(tuned_path(settings, spec.family))
    if current is not None and current.study == spec.study and current.value >= best.value:
        return path, False, f"the tuned preset (trial {current.trial}) is already this study's best"
    if current is not None and current.study != spec.study:
        measured = any(t.user_attrs.get("incumbent_of") == current.study for t in study.get_trials(deepcopy=False))
        if not measured:
            return path, False, (f"the tuned preset comes from study {current.study}, created after this one "
                                 "began, and was not measured on this validation data: rerun the search")
        if best.user_attrs.get("incumbent_of") == current.study:
            return path, False, "the current tuned preset, measured on this validation data, is still the best"
    preset = TunedPreset(family=spec.family, params=best.user_attrs["train_params"], search_params=dict(best.params),
                         metric=spec.metric, value=float(best.value),
                         valid_metrics=best.user_attrs.get("valid_metrics", {}), study=spec.study,
                         trial=best.number, training_dir=study.user_attrs["training_dir"],
                         data_digest=study.user_attrs["data_digest"],
                         mlflow_run_id=best.user_attrs.get("mlflow_run_id"),
                         created_at=datetime.now(UTC).isoformat(timespec="seconds"))
    stored = store_tuned(settings, preset)
    if spec.parent_run_id is not None:
        from lifecycle.tracking import connect

        connect(settings).log_dict(spec.parent_run_id, asdict(preset), f"tuned/{spec.family}.json")
    logger.info("tuned preset of %s: trial %d of %s, %s %.4f -> %s", spec.family, best.number, spec.study,
                spec.metric, best.value, stored)
    return str(stored), True, f"trial {best.number} is the best on this validation data"


def search(settings: Settings, training_dir: Path, family: str = "gru4rec", trials: int | None = None,
           timeout_minutes: float | None = None, workers: int | None = None, metric: str | None = None,
           seed: int = 1, device: str | None = None, mlflow: bool = True,
           echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole search on this machine: prepare, ``workers`` local processes, finish."""
    spec = prepare(settings, training_dir, family, trials, timeout_minutes, metric, seed, device, mlflow)
    count = worker_count(settings, workers)
    if echo is not None:
        echo(f"study {spec.study} ({storage_url(settings).split(':', 1)[0]}): {spec.trials} trials, "
             f"{count} worker(s), {spec.metric} on valid")
    try:
        run_local(spec, settings, count, echo)
    except BaseException:
        if spec.parent_run_id is not None:
            from lifecycle.tracking import connect

            connect(settings).set_terminated(spec.parent_run_id, status="KILLED")
        raise
    return finish(settings, spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tune", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--training-dir", type=Path, required=True, help="training set folder (training/ds=D)")
    parser.add_argument("--trials", type=int, help="finished trials to reach (default: Settings.tune_trials)")
    parser.add_argument("--timeout-minutes", type=float, help="start no trial after this many minutes")
    parser.add_argument("--family", default="gru4rec", help="a model family of training/families.py "
                                                               "(default: %(default)s)")
    parser.add_argument("--workers", type=int, help="trials at once (processes; 0: one per CPU core; default: "
                                                    "Settings.tune_workers)")
    parser.add_argument("--metric", choices=METRICS, help="validation metric to maximise "
                                                          "(default: Settings.tune_metric)")
    parser.add_argument("--seed", type=int, default=1, help="sampler seed (default: %(default)s)")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: Settings.device)")
    parser.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True,
                        help="track the search in MLflow (parent run + one nested run per trial)")
    parser.add_argument("--report", type=Path, help="write the search summary as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    summary = search(settings, args.training_dir, args.family, args.trials, args.timeout_minutes, args.workers,
                     args.metric, args.seed, args.device, args.mlflow, echo=lambda line: print(line, flush=True))
    best = summary["best"]
    print(f"{summary['complete']} complete, {summary['pruned']} pruned, {summary['failed']} failed trials; "
          + (f"best {summary['metric']} {best['value']:.4f} (trial {best['trial']}); "
             f"tuned preset {'replaced' if summary['replaced'] else 'kept'}: {summary['reason']}"
             if best else "no trial completed"))
    if args.report:
        args.report.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
