"""Scoring throughput: the Spark scoring job end to end and the Recommender alone, against a cost floor.

    .venv/bin/python -m bench.score [--sessions 100000 1000000] [--rounds 3] [--quick]

For each day size N a day of N sessions is generated with numpy (lengths geometric with mean 3.3, at most 50;
items drawn from a Zipf-like popularity over the vocabulary, 2% of events with an item the model does
not know), and a random-init GRU4Rec (hidden 100, 50k items, CPU) is registered in a throwaway MLflow
store. These measurements, each in a fresh process so its peak memory is its own:

- floor: N hidden states times the item-embedding matrix in torch matmuls plus top-k, in chunks of as
  many rows as the Recommender puts in one chunk on the CPU (``model.recommender.rows_per_chunk``: the
  work no scorer of this model can skip, done the fastest way the Recommender knows);
- recommender: what the job's Python workers do, in one process: the day's events grouped into sessions
  (``jobs.session_groups``) and scored 10,000 sessions at a time (``jobs.model_cache.score_batches``);
- spark job: the job as ``python -m jobs.score`` runs it (``jobs.score.run_job``) into a DuckDB file
  (local[2]), from before its imports to its Spark session's stop;
  again with the driver's class-data-sharing archive (``SESSIONREC_SPARK_CLASS_ARCHIVE``, jobs/spark.py),
  the steady state of a nightly job: the first such run writes the archive when its JVM exits (its own
  row, the writing in its stop seconds) and the runs after it map the archive;
- spark job, warm session: the job run again in the Spark session of a first run, timed alone (its CPU
  seconds too; its peak memory covers both runs): the job's cost once the JVM's code is compiled and the
  Python workers are up, as with a long-running Spark (a Spark Connect server); the first run's seconds
  are in the JSON;
- warehouse reload: the day's recommendations loaded again into the first job's warehouse, which holds the
  day already (a rerun's load: delete, insert, key check, commit).

The floor and the spark job take turns for ``--rounds`` rounds, each job compared with the floor measured
just before it, so that both see the same load on a shared machine (the floor's two threads feel another
user's load at once); the summary gives each round's share of the floor's speed (floor seconds / job
seconds) and their median. The other rows are compared with the median of the rounds' floors.

Peak memory is the largest summed RSS of the process and its children (the JVM and Python workers for
Spark), sampled every 0.1 s, as is their CPU time (start-up and imports included). The machine is
shared, so wall-clock ratios move with other people's load: the CPU-time ratio is the steadier
comparison, and load averages are recorded with each number.
Prints a table and writes bench/results/score.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import in_fresh_process, machine, process_tree_cpu_seconds, write_results
from sessionrec.layout import Lake

RESULTS = Path(__file__).resolve().parent / "results" / "score.json"
DAY = date(2026, 11, 21)
MODEL_NAME = "gru4rec-bench"
UNKNOWN_SHARE = 0.02


# --- inputs ---

def item_ids(n_items: int) -> np.ndarray:
    return np.array([f"item-{i:06d}" for i in range(n_items)], dtype=object)


def generate_sessions(n_sessions: int, n_items: int, seed: int = 7) -> pa.Table:
    """One row per event (contract section 2): session_id, visitor_id, position, item_id, event_time, event_type."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.3, n_sessions), 50)
    n_events = int(lengths.sum())
    popularity = 1.0 / (np.arange(n_items) + 10.0) ** 0.9
    items = item_ids(n_items)[rng.choice(n_items, n_events, p=popularity / popularity.sum())]
    unknown = rng.random(n_events) < UNKNOWN_SHARE
    items[unknown] = [f"new-item-{i}" for i in range(int(unknown.sum()))]
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = (np.arange(n_events) - starts).astype(np.int32)
    session = np.repeat(np.arange(n_sessions), lengths)
    base = datetime.combine(DAY, datetime.min.time())
    seconds = rng.integers(0, 86_000, n_sessions)[session] + position * 30
    return pa.table({
        "session_id": pa.array([f"s{i:08d}" for i in session], pa.string()),
        "visitor_id": pa.nulls(n_events, pa.string()),
        "position": pa.array(position),
        "item_id": pa.array(items, pa.string()),
        "event_time": pa.array(np.datetime64(base, "us") + seconds.astype("timedelta64[s]"),
                               pa.timestamp("us", tz="UTC")),
        "event_type": pa.array(["click"] * n_events, pa.string()),
    })


def write_model(directory: Path, n_items: int, hidden: int) -> None:
    """A random-init GRU4Rec (the throughput does not depend on the weights' values)."""
    import torch

    from model.artifacts import save_model
    from model.data import Vocabulary
    from model.network import GRU4Rec, GRU4RecConfig
    from training.trainer import TrainParams

    torch.manual_seed(0)
    counts = np.maximum(1, (1e6 / (np.arange(n_items) + 10.0) ** 0.9).astype(np.int64))
    vocabulary = Vocabulary(item_ids(n_items), counts)
    network = GRU4Rec(GRU4RecConfig(n_items=n_items, layers=(hidden,)))
    save_model(directory, network, vocabulary, TrainParams(layers=(hidden,)).to_dict())


def register_model(model_dir: Path, tracking_uri: str, artifact_root: Path) -> str:
    """Log and register the model folder; returns its models:/name@champion URI."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from model.packaging import log_session_model

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.create_experiment("bench", artifact_location=artifact_root.as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_session_model(model_dir, registered_model_name=MODEL_NAME)
    client.set_registered_model_alias(MODEL_NAME, "champion", str(info.registered_model_version))
    return f"models:/{MODEL_NAME}@champion"


# --- measurements (each runs in a fresh process) ---

def measure_floor(n_sessions: int, n_items: int, hidden: int, top_k: int) -> dict[str, Any]:
    """N hidden states times a [hidden, items] matrix plus top-k, chunked like the Recommender: the cost floor."""
    import torch

    from model.recommender import DEFAULT_CHUNK_SIZE, rows_per_chunk

    chunk = rows_per_chunk(DEFAULT_CHUNK_SIZE, n_items, torch.device("cpu"))
    with torch.inference_mode():
        items = torch.randn(hidden, n_items)
        states = torch.randn(min(n_sessions, chunk), hidden)
        start = time.perf_counter()
        for begin in range(0, n_sessions, chunk):
            rows = states[: min(chunk, n_sessions - begin)]
            torch.topk(rows @ items, top_k, dim=1)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "torch_threads": torch.get_num_threads(), "chunk_rows": chunk}


def measure_recommender(events_file: str, model_dir: str, top_k: int) -> dict[str, Any]:
    import torch
    from pyspark.accumulators import Accumulator

    from jobs.day_counts import CountsParam, no_counts
    from jobs.model_cache import ServedModel, score_batches, worker_recommender
    from lifecycle.connection import MlflowStore
    from sessionrec.config import Settings

    model = ServedModel(MODEL_NAME, "1", MlflowStore(""), Path(model_dir), f"models:/{MODEL_NAME}/1")
    load_start = time.perf_counter()
    worker_recommender(model)
    load_seconds = time.perf_counter() - load_start
    events = pq.read_table(events_file, columns=["session_id", "item_id", "position"])
    counts = Accumulator(0, no_counts(), CountsParam())
    start = time.perf_counter()
    rows = sum(batch.num_rows for batch in score_batches(iter(events.to_batches()), model, top_k, True,
                                                         Settings.crawler_max_events, counts))
    return {"seconds": time.perf_counter() - start, "load_seconds": load_seconds, "rows": rows,
            "torch_threads": torch.get_num_threads()}


def measure_spark_job(lake: str, model_uri: str, tracking_uri: str, warehouse_url: str, scratch: str,
                      top_k: int, class_archive: str | None = None, warm: bool = False) -> dict[str, Any]:
    """The scoring job as ``python -m jobs.score`` runs it (``jobs.score.run_job``: its imports, the model
    fetched while its local[2] Spark session starts, the scoring, the session's stop), timed from before
    its imports. ``warm``: a Spark session is started first and the job run twice in it; only the second
    run is timed, what the job costs once the JVM, its compiled code and the Python workers are warm (a
    long-running Spark such as a Spark Connect server); then ``cpu_seconds_of_run`` is the CPU time of that
    run alone (the process, the JVM, the workers) and ``first_run_seconds`` the first run's time."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    start = time.perf_counter()
    from jobs.score import parse_args, run_job
    from sessionrec.config import load_settings

    imports = round(time.perf_counter() - start, 3)
    settings = load_settings(env={}, home=Path(scratch), mlflow_tracking_uri=tracking_uri,
                             spark_class_archive=class_archive or "")
    args = parse_args(["--lake", lake, "--ds", DAY.isoformat(), "--model-uri", model_uri, "--top-k", str(top_k),
                       "--warehouse", warehouse_url, "--master", "local[2]"], settings)
    if not warm:
        record = run_job(args, settings)
        return {"seconds": time.perf_counter() - start,
                "phase_seconds": {"imports": imports, **record["phase_seconds"]},
                "model_fetch_seconds": record["model_fetch_seconds"], "rows": record["rows_written"]}
    from jobs.spark import job_session

    with job_session("bench-score", "local[2]", settings):
        run_job(args, settings)  # in the session above: job_session reuses it
        first_run_seconds = round(time.perf_counter() - start, 3)
        cpu_before, start = process_tree_cpu_seconds(), time.perf_counter()
        record = run_job(args, settings)
        seconds = time.perf_counter() - start
        cpu_seconds_of_run = round(process_tree_cpu_seconds() - cpu_before, 1)
    return {"seconds": seconds, "first_run_seconds": first_run_seconds, "cpu_seconds_of_run": cpu_seconds_of_run,
            "phase_seconds": record["phase_seconds"], "model_fetch_seconds": record["model_fetch_seconds"],
            "rows": record["rows_written"]}


def measure_warehouse_reload(lake: str, warehouse_url: str) -> dict[str, Any]:
    from jobs import warehouse

    source = Lake(lake).recommendations(DAY)
    with warehouse.connect(warehouse_url) as target:
        start = time.perf_counter()
        rows = target.replace_partition(DAY, warehouse.read_rows(source), source=source)
        return {"seconds": time.perf_counter() - start, "rows": rows}


# --- the run ---

def bench_day(n_sessions: int, n_items: int, hidden: int, top_k: int, model_dir: Path, model_uri: str,
              tracking_uri: str, root: Path, rounds: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of one day size, and its summary: the spark job's share of the floor in each round and the
    median round's."""
    events = generate_sessions(n_sessions, n_items)
    lake = root / f"lake-{n_sessions}"
    day_dir = Path(Lake(str(lake)).sessions(DAY))
    day_dir.mkdir(parents=True)
    events_file = day_dir / "part-00000.parquet"
    pq.write_table(events, events_file, row_group_size=500_000)
    del events

    def warehouse_url(tag: str) -> str:
        return f"duckdb://{root / f'warehouse-{n_sessions}-{tag}.duckdb'}"

    def spark_job(tag: str, class_archive: Path | None = None, warm: bool = False) -> dict[str, Any]:
        return in_fresh_process(measure_spark_job, str(lake), model_uri, tracking_uri, warehouse_url(tag),
                                str(root / f"spark-{n_sessions}-{tag}"), top_k,
                                str(class_archive) if class_archive else None, warm)

    rows, floors, shares = [], [], []
    for number in range(1, rounds + 1):
        floor = in_fresh_process(measure_floor, n_sessions, n_items, hidden, top_k)
        job = spark_job(f"round-{number}")
        floors.append(floor)
        shares.append(round(floor["seconds"] / job["seconds"], 3))
        rows += [compared(n_sessions, "floor: matmul + top-k", floor, floor, number),
                 compared(n_sessions, "spark job", job, floor, number)]
    median_floor = {key: statistics.median(run[key] for run in floors) for key in ("seconds", "cpu_seconds")}
    runs = [("recommender", in_fresh_process(measure_recommender, str(events_file), str(model_dir), top_k))]
    archive = root / "class-archive"
    if not any(archive.glob("*.jsa")):
        runs.append(("spark job, writes archive", spark_job("writes-archive", archive)))
    runs.append(("spark job, class archive", spark_job("class-archive", archive)))
    warm = spark_job("warm", warm=True)
    runs.append(("spark job, warm session", {**warm, "cpu_seconds": warm["cpu_seconds_of_run"]}))
    runs.append(("warehouse reload", in_fresh_process(measure_warehouse_reload, str(lake), warehouse_url("round-1"))))
    rows += [compared(n_sessions, name, result, median_floor) for name, result in runs]
    return rows, {"sessions": n_sessions, "rounds": rounds, "spark_job_share_of_floor": shares,
                  "median_share_of_floor": statistics.median(shares)}


def compared(n_sessions: int, name: str, result: dict[str, Any], floor: dict[str, Any],
             round_number: int | None = None) -> dict[str, Any]:
    """A row of the table: ``result`` against ``floor`` (its own round's, or the rounds' median)."""
    return {"sessions": n_sessions, "measurement": name, "round": round_number, **result,
            "sessions_per_s": round(n_sessions / result["seconds"]),
            "vs_floor": round(result["seconds"] / floor["seconds"], 2),
            "cpu_vs_floor": round(result["cpu_seconds"] / floor["cpu_seconds"], 2)}


def print_table(rows: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> None:
    header = (f"{'sessions':>9}  {'measurement':<26} {'round':>5} {'seconds':>8} {'sessions/s':>11} {'x floor':>8} "
              f"{'CPU s':>8} {'CPU x floor':>11} {'peak RSS MB':>11}  load avg 1m before/after")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['sessions']:>9}  {row['measurement']:<26} {row['round'] or '':>5} {row['seconds']:>8.1f} "
              f"{row['sessions_per_s']:>11} "
              f"{row['vs_floor']:>8.2f} {row['cpu_seconds']:>8.1f} {row['cpu_vs_floor']:>11.2f} "
              f"{row['peak_rss_mb']:>11}  {row['load_avg_before'][0]:.2f} / {row['load_avg_after'][0]:.2f}")
        if "phase_seconds" in row:
            phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in row["phase_seconds"].items())
            rest = row["seconds"] - sum(row["phase_seconds"].values())
            print(f"{'':>11}{'':<32} phases: {phases}; run record and stop {rest:.1f} s; model fetched in "
                  f"{row['model_fetch_seconds']:.1f} s while Spark started")
    for summary in summaries:
        shares = ", ".join(f"{share:.0%}" for share in summary["spark_job_share_of_floor"])
        rounds = f"median of {summary['rounds']} rounds: {shares}" if summary["rounds"] > 1 else "one round"
        print(f"spark job at {summary['sessions']} sessions: {summary['median_share_of_floor']:.0%} of the floor's "
              f"speed ({rounds})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="day sizes to measure (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="one small day of 10,000 sessions (a smoke run)")
    parser.add_argument("--items", type=int, default=50_000, help="vocabulary size (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=100, help="GRU hidden size (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=20, help="recommendations per session (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the floor and the spark job, taking turns, per day size; the other rows "
                             "are compared with the rounds' median floor (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    return args


def main(argv: list[str] | None = None) -> int:
    from jobs.model_cache import SESSIONS_PER_BATCH

    args = parse_args(argv)
    sizes = [10_000] if args.quick else args.sessions
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    started = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-score-") as scratch:
        root = Path(scratch)
        model_dir = root / "model"
        write_model(model_dir, args.items, args.hidden)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        model_uri = register_model(model_dir, tracking_uri, root / "artifacts")
        for n_sessions in sizes:
            day_rows, summary = bench_day(n_sessions, args.items, args.hidden, args.top_k, model_dir, model_uri,
                                          tracking_uri, root, args.rounds)
            rows += day_rows
            summaries.append(summary)
    print_table(rows, summaries)
    result = {
        "benchmark": "score", "started": started.isoformat(),
        "wall_seconds": round((datetime.now(UTC) - started) / timedelta(seconds=1), 1),
        "config": {"items": args.items, "hidden": args.hidden, "top_k": args.top_k, "device": "cpu",
                   "spark_master": "local[2]", "recommender_batch_sessions": SESSIONS_PER_BATCH,
                   "unknown_item_share": UNKNOWN_SHARE, "rounds": args.rounds},
        "machine": machine(), "summary": summaries, "results": rows,
    }
    write_results(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
