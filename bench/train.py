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
  30-minute gap per visitor) for one epoch of the rsc15 preset.

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
PARTS = ("gru4rec", "original", "bpr-max", "baselines", "pipeline", "generated")
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, 100k generated events, no pipeline")
    parser.add_argument("--only", help=f"comma-separated parts among {','.join(PARTS)}")
    parser.add_argument("--epochs", type=int, help="GRU4Rec epochs (default 10, 2 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    parser.add_argument("--events", type=int, help="generated events (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    parts = args.only.split(",") if args.only else [p for p in PARTS if not (args.quick and p == "pipeline")]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; expected some of {list(PARTS)}")
    args.parts = parts
    args.epochs = args.epochs or (2 if args.quick else 10)
    args.events = args.events or (100_000 if args.quick else 1_000_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    rows, extra = run_parts(args.parts, args.epochs, args.threads, args.events)
    print_table(rows)
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
