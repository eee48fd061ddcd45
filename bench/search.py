"""Search benchmark: the hyperparameter search against a known ceiling, and its cost on the Yoochoose sample.

    .venv/bin/python -m bench.search [--only intent,yoochoose] [--scratch var/bench-search]
        [--intent-trials 20] [--intent-timeout-minutes 20] [--trials 30] [--timeout-minutes 30] [--workers 1]

Parts:

- ``intent``: 400,000 events over 8 days, 300 items (``--intent-events``, ``--intent-items``; about 1,100
  training transitions per item: with 40,000 events over 2,000 items no model got near even the last-item
  oracle), sessions driven by a latent intent (``jobs.generate --mode intent``, seed 1), through the
  pipeline's jobs (landing zone, ``jobs.sessionize``,
  ``jobs.training_set`` for the last day with an 8-day window). The exact Bayes-optimal Recall@20 / MRR@20
  of its test split and the last-item oracle's (``jobs.intents``) against: GRU4Rec with the default preset
  (no search), the default path (``training.tune`` search, then GRU4Rec trained on ``train`` with the tuned
  preset), and every baseline, each as a share of the ceiling.
- ``yoochoose``: ``shared/data/yoochoose-rsc15-100k`` through ``jobs.landing --format yoochoose-prepared``,
  ``jobs.sessionize --keep-repeats`` and ``jobs.training_set --ds 2014-04-07``, then a search of
  ``--trials`` trials with a ``--timeout-minutes`` budget: trials finished, pruned, time per trial, then the
  tuned preset trained on ``train`` and evaluated on ``test`` beside the baselines.

Prepared data, the study database and MLflow live under ``--scratch`` (never committed), so a rerun reuses
the data and resumes the searches. Each part runs in a fresh process (peak memory and CPU time are its
own; load averages are recorded: the machine may be shared). Prints tables and writes
bench/results/search-<parts>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from bench.common import in_fresh_process, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "yoochoose-rsc15-100k"
SAMPLE_FILES = ("yoochoose-clicks-100k_train_full.txt", "yoochoose-clicks-100k_test.txt")
SAMPLE_DAYS = [dt.date(2014, 4, 1) + dt.timedelta(days=d) for d in range(7)]
RESULTS = ROOT / "bench" / "results"
PARTS = ("intent", "yoochoose")
INTENT = {"items": 300, "days": 8, "events": 400_000, "seed": 1, "end_day": dt.date(2026, 11, 21)}


def _settings(home: Path) -> Any:
    from sessionrec.config import load_settings

    return load_settings(env={}, home=home)


def _echo(line: str) -> None:
    print(line, flush=True)


def _accuracy(metrics: dict[str, float]) -> dict[str, float]:
    return {key: round(metrics[key], 4) for key in ("recall@20", "mrr@20")}


def _sessionize_and_build(settings: Any, days: list[dt.date], keep_repeats: bool) -> dict[str, Any]:
    from jobs.sessionize import sessionize
    from jobs.spark import build_session
    from jobs.training_set import build_training_set

    spark = build_session("bench-search", master="local[2]", scratch=settings.home / "spark")
    try:
        for day in days:
            sessionize(spark, settings.raw, settings.lake, day, keep_repeats=keep_repeats)
        return build_training_set(spark, settings.lake, days[-1], days=len(days))
    finally:
        spark.stop()


def _train_full(training_dir: Path, params: dict[str, Any] | None) -> Any:
    from training.experiment import run

    return run(training_dir, params, split="full", device="cpu")


def _rows_of(label: str, result: Any, ceiling: dict[str, float] | None) -> list[dict[str, Any]]:
    rows = [{"model": label, **_accuracy(result.metrics), "train_seconds": round(result.train_seconds, 1)}]
    rows += [{"model": name, **_accuracy(metrics)} for name, metrics in result.baselines.items()]
    if ceiling:
        for row in rows:
            row["share_recall"] = round(row["recall@20"] / ceiling["recall@20"], 3)
            row["share_mrr"] = round(row["mrr@20"] / ceiling["mrr@20"], 3)
    return rows


def intent_home(scratch: str, items: int = INTENT["items"], events: int = INTENT["events"]) -> Path:
    """Where the intent data set of this size lives under ``scratch`` (the default size in ``intent/``)."""
    default = items == INTENT["items"] and events == INTENT["events"]
    return Path(scratch) / ("intent" if default else f"intent-{items}-items-{events}-events")


def prepare_intent(scratch: str, items: int = INTENT["items"], events: int = INTENT["events"]
                   ) -> tuple[Path, dict[str, float]]:
    """The intent data set through the pipeline (kept under ``scratch``, reused when there): its training
    set folder and the exact ceilings of its test split, over the items its vocabulary holds (the split
    keeps only known targets, so the ceiling is conditioned on them, as ``python -m jobs.intents``)."""
    import numpy as np

    from jobs.generate import generate_clickstream, write_landing_zone
    from jobs.intents import build_intent_model, ceiling, read_known_items, read_split_sessions
    from sessionrec.layout import local_path

    settings = _settings(intent_home(scratch, items, events))
    end = INTENT["end_day"]
    training_dir = local_path(settings.layout.training_set(end))
    if not (training_dir / "items.parquet").is_file():
        table = generate_clickstream(end, INTENT["days"], events, n_items=items,
                                     seed=INTENT["seed"], dirty_share=0.0, mode="intent")
        write_landing_zone(table, settings.raw)
        _sessionize_and_build(settings, [end - dt.timedelta(days=d) for d in range(INTENT["days"] - 1, -1, -1)],
                              keep_repeats=False)
    model = build_intent_model(np.random.default_rng(INTENT["seed"]), items)
    bound = ceiling(model, *read_split_sessions(training_dir, "test"),
                    known=read_known_items(training_dir, items)).to_dict()
    return training_dir, bound


def measure_intent(scratch: str, trials: int, timeout_minutes: float, workers: int, items: int,
                   events: int) -> dict[str, Any]:
    from training import tune

    settings = _settings(intent_home(scratch, items, events))
    started = time.perf_counter()
    training_dir, bound = prepare_intent(scratch, items, events)
    prepare_seconds = time.perf_counter() - started
    reference = {"recall@20": bound["bayes_recall@20"], "mrr@20": bound["bayes_mrr@20"]}
    rows = [{"model": "Bayes-optimal (ceiling)", **_accuracy(reference), "share_recall": 1.0, "share_mrr": 1.0},
            {"model": "last-item oracle", "recall@20": round(bound["last_item_oracle_recall@20"], 4),
             "mrr@20": round(bound["last_item_oracle_mrr@20"], 4),
             "share_recall": round(bound["last_item_oracle_recall@20"] / reference["recall@20"], 3),
             "share_mrr": round(bound["last_item_oracle_mrr@20"] / reference["mrr@20"], 3)}]
    default = _train_full(training_dir, None)
    rows += _rows_of("gru4rec, default preset", default, reference)
    search_started = time.perf_counter()
    summary = tune.search(settings, training_dir, trials=trials, timeout_minutes=timeout_minutes,
                          workers=workers, seed=1, device="cpu", echo=_echo)
    search_seconds = time.perf_counter() - search_started
    tuned = tune.load_tuned(settings, "gru4rec")
    rows += _rows_of("gru4rec, tuned (default path)", _train_full(training_dir, tuned.params), reference)[:1]
    return {"part": "intent", "items": items, "events": events, "rows": rows, "ceiling": bound,
            "prepare_seconds": round(prepare_seconds, 1),
            "search_seconds": round(search_seconds, 1), "search": _search_figures(summary),
            "tuned_params": tuned.params}


def measure_yoochoose(scratch: str, trials: int, timeout_minutes: float, workers: int) -> dict[str, Any]:
    from jobs.landing import land_file
    from sessionrec.layout import local_path
    from training import tune

    settings = _settings(Path(scratch) / "yoochoose")
    training_dir = local_path(settings.layout.training_set(SAMPLE_DAYS[-1]))
    started = time.perf_counter()
    if not (training_dir / "items.parquet").is_file():
        for name in SAMPLE_FILES:
            land_file(SAMPLE / name, "yoochoose-prepared", settings.raw)
        _sessionize_and_build(settings, SAMPLE_DAYS, keep_repeats=True)
    prepare_seconds = time.perf_counter() - started
    search_started = time.perf_counter()
    summary = tune.search(settings, training_dir, trials=trials, timeout_minutes=timeout_minutes,
                          workers=workers, seed=1, device="cpu", echo=_echo)
    search_seconds = time.perf_counter() - search_started
    tuned = tune.load_tuned(settings, "gru4rec")
    rows = _rows_of("gru4rec, tuned", _train_full(training_dir, tuned.params), None)
    return {"part": "yoochoose", "rows": rows, "prepare_seconds": round(prepare_seconds, 1),
            "search_seconds": round(search_seconds, 1), "search": _search_figures(summary),
            "tuned_params": tuned.params}


def _search_figures(summary: dict[str, Any]) -> dict[str, Any]:
    seconds = summary["trial_seconds"]
    return {"study": summary["study"], "finished": summary["complete"] + summary["pruned"],
            "complete": summary["complete"], "pruned": summary["pruned"], "failed": summary["failed"],
            "trial_seconds": seconds, "mean_trial_seconds": round(sum(seconds) / len(seconds), 1) if seconds else None,
            "best": summary["best"], "replaced": summary["replaced"]}


def print_part(result: dict[str, Any]) -> None:
    print(f"\n== {result['part']} (prepare {result['prepare_seconds']} s, search {result['search_seconds']} s, "
          f"peak {result['peak_rss_mb']} MB, load {result['load_avg_before']} -> {result['load_avg_after']})")
    shares = any("share_recall" in row for row in result["rows"])
    header = f"{'model':<32}{'recall@20':>10}{'mrr@20':>9}" + (f"{'share R':>9}{'share M':>9}" if shares else "")
    print(header)
    for row in result["rows"]:
        line = f"{row['model']:<32}{row['recall@20']:>10.4f}{row['mrr@20']:>9.4f}"
        if shares:
            line += f"{row.get('share_recall', float('nan')):>9.3f}{row.get('share_mrr', float('nan')):>9.3f}"
        print(line)
    search = result["search"]
    print(f"search: {search['finished']} finished ({search['complete']} complete, {search['pruned']} pruned, "
          f"{search['failed']} failed), mean {search['mean_trial_seconds']} s per trial; "
          f"trial seconds {search['trial_seconds']}")
    print(f"tuned preset: {json.dumps(result['tuned_params'], sort_keys=True)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    parser.add_argument("--scratch", default=str(ROOT / "var" / "bench-search"),
                        help="prepared data, study database and MLflow (reused by reruns)")
    parser.add_argument("--intent-trials", type=int, default=20)
    parser.add_argument("--intent-timeout-minutes", type=float, default=20)
    parser.add_argument("--intent-items", type=int, default=INTENT["items"], help="catalogue of the intent data")
    parser.add_argument("--intent-events", type=int, default=INTENT["events"],
                        help="events of the intent data over its 8 days")
    parser.add_argument("--trials", type=int, default=30, help="trials of the Yoochoose search")
    parser.add_argument("--timeout-minutes", type=float, default=30, help="budget of the Yoochoose search")
    parser.add_argument("--workers", type=int, default=1, help="trials at once (processes)")
    args = parser.parse_args(argv)
    parts = [part for part in args.only.split(",") if part]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; expected some of {PARTS}")
    results = []
    for part in parts:
        if part == "intent":
            result = in_fresh_process(measure_intent, args.scratch, args.intent_trials, args.intent_timeout_minutes,
                                      args.workers, args.intent_items, args.intent_events)
        else:
            result = in_fresh_process(measure_yoochoose, args.scratch, args.trials, args.timeout_minutes, args.workers)
        print_part(result)
        results.append(result)
    write_results(RESULTS / f"search-{'-'.join(parts)}.json", {"machine": machine(), "args": vars(args),
                                                               "parts": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
