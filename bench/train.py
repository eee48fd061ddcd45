"""Training benchmark: GRU4Rec and the baselines on the Yoochoose sample, and throughput at scale.

    .venv/bin/python -m bench.train [--quick] [--only gru4rec,bpr-max,baselines,pipeline,generated]
        [--epochs 10] [--threads 1] [--events 1000000]

Parts (all by default):

- ``gru4rec``: GRU4Rec with the rsc15 preset (cross-entropy with logQ, 2048 extra negatives, 100 units,
  batch 32, 10 epochs) on ``shared/data/yoochoose-rsc15-100k``, read directly (the project's
  ``yoochoose-prepared`` reader, vocabulary from the train file's item counts, unknown test items dropped),
  with accidental hits removed (the trainer's default);
- ``original``: the same, keeping accidental hits as the original implementation does
  (``remove_accidental_hits`` false): the like-for-like comparison with the authors' figures;
- ``bpr-max``: the same with the BPR-max loss (elu 0.5, bpreg 1, learning rate 0.05 as in the authors'
  BPR-max presets; not tuned on this data);
- ``baselines``: every baseline of ``training/baselines.py`` on the same split;
- ``pipeline``: the sample through the pipeline instead: ``jobs.landing --format yoochoose-prepared``,
  ``jobs.sessionize --keep-repeats`` per day and ``jobs.training_set --ds 2014-04-07`` (its own time split:
  test = sessions starting on 2014-04-07), then GRU4Rec (rsc15) and the baselines via ``training.experiment.run``;
- ``generated``: training throughput on ``--events`` generated events (``jobs.generate``, sessions by the
  30-minute gap per visitor) for one epoch of the rsc15 preset;
- ``narm``, ``narm-softmax``: NARM beside GRU4Rec on the sample, and NARM's full vs sampled softmax at
  10k and 100k items (bench/train_narm.py);
- ``narm-intent``: NARM, GRU4Rec, SR and V-SKNN on intent-generated data against its exact ceiling, each
  family's settings chosen on the validation split (bench/train_narm.py);
- ``step``: the hand-written training step (training/step.py) against the autograd step side by side on
  the sample (rsc15 preset, ``--epochs``, seeds 1-3, each pair of runs interleaved so both see the same
  machine load): pairs/s, Recall@20, MRR@20, peak memory, and the speed-up per seed;
- ``scale``: pairs/s of both steps (one epoch of the rsc15 preset) on generated sessions over catalogues
  of 10k, 100k and 1M items;
- ``warm``: nightly warm start against a full retrain over 3 simulated nights of generated days (a
  5-day window sliding by a day; night 0 trains the first champion in full): Recall@20, MRR@20 on the
  next day and wall time per night.

Each measurement runs in a fresh process, so its peak memory (largest summed RSS of the process and its
children, sampled every 0.1 s) is its own. The machine is shared: load averages are recorded with every
number. Prints a table and writes bench/results/train.json. ``--quick``: 2 epochs, 100k generated events,
no pipeline part.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from bench.common import in_fresh_process, machine, write_results
from bench.train_narm import (
    INTENT_EPOCHS,
    NARM_TUNED,
    print_intent_table,
    print_narm_table,
    run_intent_part,
    run_narm_parts,
)
from jobs.readers import iter_events
from model.data import SessionDataset, Vocabulary, dataset_from_table
from model.network import GRU4RecScorer
from training.baselines import BASELINES, fit_baselines
from training.evaluate import evaluate
from training.presets import PRESETS
from training.trainer import TrainParams, torch_threads, train

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "yoochoose-rsc15-100k"
TRAIN_FILE, TEST_FILE = "yoochoose-clicks-100k_train_full.txt", "yoochoose-clicks-100k_test.txt"
RESULTS = ROOT / "bench" / "results" / "train.json"
PARTS = ("gru4rec", "original", "bpr-max", "baselines", "pipeline", "generated", "narm", "narm-softmax",
         "narm-intent", "step", "scale", "warm")
KS = (1, 5, 10, 20)
PIPELINE_DAYS = [dt.date(2014, 4, 1) + dt.timedelta(days=d) for d in range(7)]
BPR_MAX = {**PRESETS["rsc15"], "loss": "bpr-max", "elu_param": 0.5, "bpreg": 1.0, "learning_rate": 0.05}
# What the GRU4Rec authors' PyTorch code reaches on this sample (GRU4REC.md), for comparison.
REFERENCE = {"recall@20": 0.678, "mrr@20": 0.358, "pairs_per_s": "4,200-5,500"}


# --- data ---

def read_prepared(path: Path) -> pa.Table:
    return pa.concat_tables(iter_events(path, "yoochoose-prepared"))


def load_sample(root: Path = SAMPLE) -> tuple[Vocabulary, SessionDataset, SessionDataset, int]:
    """(vocabulary of the train file, train, test, test events dropped as unknown)."""
    train_events, test_events = read_prepared(root / TRAIN_FILE), read_prepared(root / TEST_FILE)
    counts = pc.value_counts(train_events.column("item_id"))
    vocabulary = Vocabulary.from_counts(np.asarray(counts.field("values").to_pylist(), dtype=object),
                                        counts.field("counts").to_numpy())
    train_data, _ = dataset_from_table(train_events, vocabulary, source=str(root / TRAIN_FILE))
    test_data, unknown = dataset_from_table(test_events, vocabulary, source=str(root / TEST_FILE))
    return vocabulary, train_data, test_data, unknown


def gap_sessions(events: pa.Table, gap_minutes: int = 30) -> SessionDataset:
    """Sessions of generated events: a visitor's events split where they pause longer than the gap."""
    visitor = np.asarray(events.column("visitor_id").to_pylist(), dtype=object)
    millis = pc.cast(events.column("event_time"), pa.timestamp("ms")).cast(pa.int64()).to_numpy()
    order = np.lexsort((millis, visitor))
    visitor, millis = visitor[order], millis[order]
    new = np.r_[True, (visitor[1:] != visitor[:-1]) | (np.diff(millis) > gap_minutes * 60_000)]
    session = np.cumsum(new)
    items = events.column("item_id").take(pa.array(order))
    counts = pc.value_counts(items)
    vocabulary = Vocabulary.from_counts(np.asarray(counts.field("values").to_pylist(), dtype=object),
                                        counts.field("counts").to_numpy())
    return SessionDataset.from_events(session, vocabulary.lookup(items), millis, len(vocabulary))


# --- measurements (each runs in a fresh process) ---

def measure_gru4rec(label: str, values: dict[str, Any], threads: int) -> dict[str, Any]:
    _, train_data, test_data, unknown = load_sample()
    params = TrainParams.from_dict(values)
    start = time.perf_counter()
    model, stats = train(train_data, params, device="cpu", cpu_threads=threads)
    wall = time.perf_counter() - start
    with torch_threads(threads):
        metrics = evaluate(GRU4RecScorer(model, "cpu"), test_data, ks=KS)
    seconds = sum(s.seconds for s in stats)
    hits = "" if params.remove_accidental_hits else ", hits kept"
    return {"part": label, "model": f"gru4rec ({params.loss}{hits})", "data": "sample", **_accuracy(metrics),
            "train_seconds": round(seconds, 1), "train_wall_seconds": round(wall, 1),
            "pairs_per_s": round(sum(s.pairs for s in stats) / seconds),
            "epoch_pairs_per_s": [round(s.pairs_per_s) for s in stats], "epoch_loss": [round(s.loss, 4) for s in stats],
            "unknown_test_events": unknown, "params": params.to_dict()}


def measure_baseline(name: str, threads: int) -> dict[str, Any]:
    _, train_data, test_data, _ = load_sample()
    with torch_threads(threads):
        start = time.perf_counter()
        scorer = fit_baselines(train_data, names=[name])[name]
        seconds = time.perf_counter() - start
        metrics = evaluate(scorer, test_data, ks=KS)
    return {"part": "baselines", "model": name, "data": "sample", **_accuracy(metrics),
            "train_seconds": round(seconds, 1)}


def measure_pipeline(epochs: int, threads: int) -> dict[str, Any]:
    from jobs.landing import land_file
    from jobs.sessionize import sessionize
    from jobs.spark import build_session
    from jobs.training_set import build_training_set
    from training.experiment import run

    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        raw, lake = f"{scratch}/raw", f"{scratch}/lake"
        start = time.perf_counter()
        for name in (TRAIN_FILE, TEST_FILE):
            land_file(SAMPLE / name, "yoochoose-prepared", raw)
        spark = build_session("bench-train", master="local[2]", scratch=Path(scratch) / "spark")
        try:
            for day in PIPELINE_DAYS:
                sessionize(spark, raw, lake, day, keep_repeats=True)
            stats = build_training_set(spark, lake, PIPELINE_DAYS[-1], days=len(PIPELINE_DAYS))
        finally:
            spark.stop()
        prepare = time.perf_counter() - start
        params = TrainParams.from_dict({**PRESETS["rsc15"], "epochs": epochs})
        result = run(Path(lake) / "training" / f"ds={PIPELINE_DAYS[-1]}", params.to_dict(), device="cpu",
                     cpu_threads=threads)
    rows = [{"part": "pipeline", "model": "gru4rec (cross-entropy)", "data": "pipeline", **_accuracy(result.metrics),
             "train_seconds": round(result.train_seconds, 1), "pairs_per_s": round(result.throughput_events_per_s),
             "unknown_test_events": result.n_unknown_test_events}]
    rows += [{"part": "pipeline", "model": name, "data": "pipeline", **_accuracy(metrics)}
             for name, metrics in result.baselines.items()]
    return {"rows": rows, "prepare_seconds": round(prepare, 1), "splits": stats["splits"]}


def measure_generated(n_events: int, threads: int) -> dict[str, Any]:
    from jobs.generate import generate_clickstream

    events = generate_clickstream(dt.date(2026, 11, 21), days=7, n_events=n_events, dirty_share=0.0)
    data = gap_sessions(events)
    params = TrainParams.from_dict({**PRESETS["rsc15"], "epochs": 1})
    _, stats = train(data, params, device="cpu", cpu_threads=threads)
    return {"part": "generated", "model": "gru4rec (cross-entropy)", "data": f"generated {n_events:,} events",
            "events": data.n_events, "sessions": data.n_sessions, "items": data.n_items,
            "train_seconds": round(stats[0].seconds, 1), "pairs_per_s": round(stats[0].pairs_per_s)}


def _accuracy(metrics: dict[str, float]) -> dict[str, float]:
    return {key: round(metrics[key], 4) for key in ("recall@20", "mrr@20", "recall@5", "mrr@5")}


# --- the run ---

def run_parts(parts: list[str], epochs: int, threads: int, n_events: int) -> tuple[list[dict], dict]:
    rows: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if "gru4rec" in parts:
        rows.append(in_fresh_process(measure_gru4rec, "gru4rec", {**PRESETS["rsc15"], "epochs": epochs}, threads))
    if "original" in parts:
        original = {**PRESETS["rsc15"], "epochs": epochs, "remove_accidental_hits": False}
        rows.append(in_fresh_process(measure_gru4rec, "original", original, threads))
    if "bpr-max" in parts:
        rows.append(in_fresh_process(measure_gru4rec, "bpr-max", {**BPR_MAX, "epochs": epochs}, threads))
    if "baselines" in parts:
        rows += [in_fresh_process(measure_baseline, name, threads) for name in BASELINES]
    if "pipeline" in parts:
        pipeline = in_fresh_process(measure_pipeline, epochs, threads)
        shared = {k: pipeline[k] for k in ("peak_rss_mb", "load_avg_before", "load_avg_after")}
        rows += [{**row, **shared} for row in pipeline["rows"]]
        extra["pipeline"] = {"prepare_seconds": pipeline["prepare_seconds"], "splits": pipeline["splits"]}
    if "generated" in parts:
        rows.append(in_fresh_process(measure_generated, n_events, threads))
    extra.update(run_speed_parts(parts, epochs, threads))
    return rows, extra


def _cell(row: dict[str, Any], key: str, width: int, spec: str = "") -> str:
    return f"{row[key]:>{width}{spec}}" if row.get(key) is not None else " " * (width - 1) + "-"


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'part':<10} {'model':<35} {'data':<26} {'recall@20':>9} {'mrr@20':>7} {'train s':>8} "
              f"{'pairs/s':>8} {'peak MB':>8}  load (1 min, before/after)")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['part']:<10} {row['model']:<35} {row['data']:<26} {_cell(row, 'recall@20', 9, '.4f')} "
              f"{_cell(row, 'mrr@20', 7, '.4f')} {_cell(row, 'train_seconds', 8)} "
              f"{_cell(row, 'pairs_per_s', 8, ',')} {_cell(row, 'peak_rss_mb', 8)}  "
              f"{row['load_avg_before'][0]:.1f}/{row['load_avg_after'][0]:.1f}")
    print(f"reference (authors' PyTorch code, this sample, 2-core CPU): recall@20 {REFERENCE['recall@20']}, "
          f"mrr@20 {REFERENCE['mrr@20']}, {REFERENCE['pairs_per_s']} pairs/s")


# --- the hand-written step against the autograd one, at scale, and warm starts (issue 14) ---

STEP_SEEDS = (1, 2, 3)
SCALE_ITEMS = (10_000, 100_000, 1_000_000)
SCALE_EVENTS = 200_000
WARM = {"days_per_night": 20_000, "window_days": 5, "nights": 3, "items": 5000, "warm_epochs": 3}


def measure_step(step: str, seed: int, epochs: int, threads: int) -> dict[str, Any]:
    _, train_data, test_data, _ = load_sample()
    params = TrainParams.from_dict({**PRESETS["rsc15"], "epochs": epochs, "seed": seed})
    cpu_start = time.process_time()
    model, stats = train(train_data, params, device="cpu", cpu_threads=threads, step=step)
    cpu_seconds = time.process_time() - cpu_start
    with torch_threads(threads):
        metrics = evaluate(GRU4RecScorer(model, "cpu"), test_data, ks=KS)
    seconds, pairs = sum(s.seconds for s in stats), sum(s.pairs for s in stats)
    return {"step": step, "seed": seed, **_accuracy(metrics), "train_seconds": round(seconds, 1),
            "pairs_per_s": round(pairs / seconds), "pairs_per_cpu_s": round(pairs / cpu_seconds),
            "final_loss": round(stats[-1].loss, 4)}


def generated_sessions(n_items: int, n_events: int, seed: int = 1) -> SessionDataset:
    """Sessions over a catalogue of ``n_items`` (Zipf-like popularity, next items mostly near the last one):
    enough structure for training to do its usual work; the catalogue size is what this part varies."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(1 / 4.5, size=n_events // 2) + 1, 60)
    lengths = lengths[:np.searchsorted(np.cumsum(lengths), n_events)]
    popular = np.minimum((rng.pareto(1.2, size=lengths.sum()) * n_items / 50).astype(np.int64), n_items - 1)
    step = rng.integers(1, 4, size=lengths.sum())
    first = np.r_[0, np.cumsum(lengths)[:-1]]
    jump = rng.random(lengths.sum()) < 0.3
    jump[first] = True
    # Within a session: jump to a popular item or walk a few items on.
    segment = np.cumsum(jump) - 1
    base = popular[np.flatnonzero(jump)][segment]
    walked = np.cumsum(np.where(jump, 0, step))
    items = (base + walked - walked[np.flatnonzero(jump)][segment]) % n_items
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return SessionDataset(items.astype(np.int64), offsets, np.arange(len(lengths)).astype(str).astype(object), n_items)


def measure_scale(step: str, n_items: int, threads: int) -> dict[str, Any]:
    data = generated_sessions(n_items, SCALE_EVENTS)
    params = TrainParams.from_dict({**PRESETS["rsc15"], "epochs": 1})
    cpu_start = time.process_time()
    _, stats = train(data, params, device="cpu", cpu_threads=threads, step=step)
    cpu_seconds = time.process_time() - cpu_start  # set-up (alias table, plan) included
    return {"step": step, "items": n_items, "pairs": stats[0].pairs, "seconds": round(stats[0].seconds, 1),
            "pairs_per_s": round(stats[0].pairs_per_s), "pairs_per_cpu_s": round(stats[0].pairs / cpu_seconds)}


def _generated_days() -> tuple[pa.Table, np.ndarray]:
    """Generated events with their session (30-minute gap per visitor) and the day each session starts."""
    from jobs.generate import generate_clickstream

    days = WARM["window_days"] + WARM["nights"] + 1
    events = generate_clickstream(dt.date(2026, 11, 1) + dt.timedelta(days=days - 1), days=days,
                                  n_events=WARM["days_per_night"] * days, n_items=WARM["items"], dirty_share=0.0)
    visitor = np.asarray(events.column("visitor_id").to_pylist(), dtype=object)
    millis = pc.cast(events.column("event_time"), pa.timestamp("ms")).cast(pa.int64()).to_numpy()
    order = np.lexsort((millis, visitor))
    visitor, millis = visitor[order], millis[order]
    new = np.r_[True, (visitor[1:] != visitor[:-1]) | (np.diff(millis) > 30 * 60_000)]
    session = np.cumsum(new)
    start_day = (millis[np.flatnonzero(new)][session - 1] - millis.min()) // 86_400_000
    table = pa.table({"session_id": pa.array(session.astype(str)),
                      "item_id": events.column("item_id").take(pa.array(order)),
                      "event_time": pa.array(millis, pa.int64())})
    return table, start_day


def measure_warm(epochs: int, threads: int) -> dict[str, Any]:
    """Night 0 trains in full; on nights 1-3 a full retrain and a warm start from the previous night's
    warm-started model (``warm_epochs`` epochs) train on the same window and are evaluated on the next day."""
    from training.warm import WarmStart

    params = TrainParams.from_dict({**PRESETS["rsc15"], "epochs": epochs})
    table, start_day = _generated_days()
    rows, previous = [], None
    for night in range(WARM["nights"] + 1):
        window = table.filter(pa.array((start_day >= night) & (start_day < night + WARM["window_days"])))
        next_day = table.filter(pa.array(start_day == night + WARM["window_days"]))
        counts = pc.value_counts(window.column("item_id"))
        vocabulary = Vocabulary.from_counts(np.asarray(counts.field("values").to_pylist(), dtype=object),
                                            counts.field("counts").to_numpy())
        train_data, _ = dataset_from_table(window, vocabulary)
        test_data, unknown = dataset_from_table(next_day, vocabulary)
        new_items = len(vocabulary) if previous is None else int((previous[1].lookup(vocabulary.item_ids) < 0).sum())
        modes = [("full", None)]
        if previous is not None:
            modes.append(("warm", WarmStart(previous[0], previous[1], vocabulary, source=f"night {night - 1}")))
        for mode, warm in modes:
            run_params = params if warm is None else params.replace(epochs=WARM["warm_epochs"])
            start = time.perf_counter()
            model, _ = train(train_data, run_params, device="cpu", cpu_threads=threads, warm_start=warm)
            wall = time.perf_counter() - start
            with torch_threads(threads):
                metrics = evaluate(GRU4RecScorer(model, "cpu"), test_data, ks=(20,))
            rows.append({"night": night, "mode": mode, "epochs": run_params.epochs, "items": len(vocabulary),
                         "new_items": new_items, "pairs": train_data.n_pairs,
                         "recall@20": round(metrics["recall@20"], 4), "mrr@20": round(metrics["mrr@20"], 4),
                         "train_wall_seconds": round(wall, 1), "unknown_test_events": unknown})
        previous = (model, vocabulary)  # the warm chain: night 0's full model, then each warm start
    return {"rows": rows, "settings": WARM}


def run_speed_parts(parts: list[str], epochs: int, threads: int) -> dict[str, Any]:
    """The step, scale and warm parts; prints their tables and returns them for the JSON file."""
    extra: dict[str, Any] = {}
    if "step" in parts:
        rows = [in_fresh_process(measure_step, step, seed, epochs, threads)
                for seed in STEP_SEEDS for step in ("autograd", "auto")]
        extra["step"] = rows
        print_step_table(rows)
    if "scale" in parts:
        rows = [in_fresh_process(measure_scale, step, n_items, threads)
                for n_items in SCALE_ITEMS for step in ("autograd", "auto")]
        extra["scale"] = rows
        print_scale_table(rows)
    if "warm" in parts:
        result = in_fresh_process(measure_warm, epochs, threads)
        extra["warm"] = result
        print_warm_table(result["rows"])
    return extra


def _step_name(step: str) -> str:
    return "hand-written" if step == "auto" else step


def print_step_table(rows: list[dict[str, Any]]) -> None:
    print("pairs/s: training pairs per second of wall time; per CPU s: per second of the process's CPU time")
    print("(less sensitive to other users of a shared machine). Speed-ups against the autograd run of the seed.")
    print(f"{'step':<13} {'seed':>4} {'recall@20':>9} {'mrr@20':>7} {'train s':>8} {'pairs/s':>8} {'per CPU s':>9} "
          f"{'peak MB':>8} {'speed-up':>8} {'CPU':>6}  load (1 min, before/after)")
    for row in rows:
        ratio = cpu_ratio = ""
        if row["step"] == "auto":
            reference = next(r for r in rows if r["seed"] == row["seed"] and r["step"] == "autograd")
            ratio = f"{row['pairs_per_s'] / reference['pairs_per_s']:.2f}x"
            cpu_ratio = f"{row['pairs_per_cpu_s'] / reference['pairs_per_cpu_s']:.2f}x"
        print(f"{_step_name(row['step']):<13} {row['seed']:>4} {row['recall@20']:>9.4f} {row['mrr@20']:>7.4f} "
              f"{row['train_seconds']:>8} {row['pairs_per_s']:>8,} {row['pairs_per_cpu_s']:>9,} "
              f"{row['peak_rss_mb']:>8} {ratio:>8} {cpu_ratio:>6}  "
              f"{row['load_avg_before'][0]:.1f}/{row['load_avg_after'][0]:.1f}")
    for step in ("autograd", "auto"):
        mine = [r for r in rows if r["step"] == step]
        pairs, cpu_pairs = (round(np.mean([r[key] for r in mine])) for key in ("pairs_per_s", "pairs_per_cpu_s"))
        print(f"{_step_name(step):<13} mean {np.mean([r['recall@20'] for r in mine]):>9.4f} "
              f"{np.mean([r['mrr@20'] for r in mine]):>7.4f} {'':>8} {pairs:>8,} {cpu_pairs:>9,}")


def print_scale_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'items':>9} {'step':<13} {'pairs':>8} {'seconds':>8} {'pairs/s':>8} {'per CPU s':>9} {'peak MB':>8}  "
          "load (1 min)")
    for row in rows:
        print(f"{row['items']:>9,} {_step_name(row['step']):<13} {row['pairs']:>8,} {row['seconds']:>8} "
              f"{row['pairs_per_s']:>8,} {row['pairs_per_cpu_s']:>9,} {row['peak_rss_mb']:>8}  "
              f"{row['load_avg_before'][0]:.1f}")


def print_warm_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'night':>5} {'mode':<5} {'epochs':>6} {'items':>6} {'new':>5} {'pairs':>7} {'recall@20':>9} "
          f"{'mrr@20':>7} {'wall s':>7}")
    for row in rows:
        print(f"{row['night']:>5} {row['mode']:<5} {row['epochs']:>6} {row['items']:>6} {row['new_items']:>5} "
              f"{row['pairs']:>7,} {row['recall@20']:>9.4f} {row['mrr@20']:>7.4f} {row['train_wall_seconds']:>7}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, 100k generated events, no pipeline")
    parser.add_argument("--only", help=f"comma-separated parts among {','.join(PARTS)}")
    parser.add_argument("--epochs", type=int, help="GRU4Rec epochs (default 10, 2 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    parser.add_argument("--events", type=int, help="generated events (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--narm-paper", action="store_true",
                        help="NARM with the paper's settings (30 epochs) instead of those tuned on the sample")
    parser.add_argument("--intent-epochs", type=int,
                        help=f"most epochs tried on the intent data's validation split (default {INTENT_EPOCHS}, "
                             "3 with --quick)")
    parser.add_argument("--intent-scratch", default=str(ROOT / "var" / "bench-search"),
                        help="the intent data set, prepared once and reused (bench/search.py's; default: %(default)s)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    parts = args.only.split(",") if args.only else [p for p in PARTS if not (args.quick and p == "pipeline")]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; expected some of {list(PARTS)}")
    args.parts = parts
    args.epochs = args.epochs or (2 if args.quick else 10)
    args.events = args.events or (100_000 if args.quick else 1_000_000)
    args.intent_epochs = args.intent_epochs or (3 if args.quick else INTENT_EPOCHS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    rows, extra = run_parts(args.parts, args.epochs, args.threads, args.events)
    narm_values = {"epochs": 30, "patience": 0} if args.narm_paper else NARM_TUNED
    rows += run_narm_parts(args.parts, args.epochs, args.threads, narm_values,
                           softmax_pairs=5_000 if args.quick else 20_000)
    if "narm-intent" in args.parts:
        intent_rows, intent = run_intent_part(args.threads, args.intent_epochs, args.intent_scratch)
        rows += intent_rows
        extra.update(intent)
    print_table(rows)
    print_narm_table(rows)
    print_intent_table(rows)
    result = {
        "started": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(), "seconds": round(time.time() - started),
        "settings": {"parts": args.parts, "epochs": args.epochs, "threads": args.threads, "events": args.events},
        "machine": {**machine(), "torch": torch.__version__},
        "reference": REFERENCE, "rows": rows, **extra,
    }
    write_results(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
