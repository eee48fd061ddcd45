"""NARM's part of the training benchmark (bench/train.py runs it; kept apart so the two files merge easily).

- ``narm``: NARM (training/narm_trainer.py) on the Yoochoose sample as bench/train.py reads it, and GRU4Rec
  (rsc15 preset) measured the same way right after it (each in a fresh process), so both see about the
  same machine load: Recall@20, MRR@20, NDCG@20, training seconds, training pairs/s, peak memory, and
  scoring sessions/s (the test sessions through model/recommender.py's Recommender, top 20 of all items;
  both saved models loaded in one more process and taking turns, best of 5 rounds each).
- ``narm-softmax``: training pairs/s of the full and the sampled softmax at 10k and 100k items
  (generated sessions: random walks over the items), a fixed number of mini-batches each.
- ``narm-intent``: NARM, GRU4Rec, SR and V-SKNN on intent-driven generated data with a known ceiling
  (bench/search.py's data set: ``jobs.generate --mode intent`` through the pipeline's jobs, prepared once
  under ``--intent-scratch`` and reused), each as a share of the exact Bayes-optimal Recall@20 / MRR@20 of
  the test split and beside the last-item oracle (``jobs.intents``, conditioned on the vocabulary). Each
  family's settings are chosen on ``train_tr`` / ``valid`` only: every candidate of ``INTENT_CANDIDATES``
  is trained for up to ``--intent-epochs`` epochs with ``valid`` measured after each, and the best
  (candidate, epoch count) by validation MRR@20 is then trained on ``train`` and evaluated once on ``test``.

NARM's settings come from ``NARM_TUNED`` (chosen on the sample's validation split: the last day of the
train file, made by :func:`tuning_split`; never on the test file), or from the paper's defaults with
``--narm-paper``. Early stopping is off here: the epoch count is part of the tuned settings.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from model.artifacts import save_model
from model.data import SessionDataset, Vocabulary, dataset_from_table
from model.narm import NARMScorer
from model.network import GRU4RecScorer
from model.recommender import Recommender
from training.evaluate import evaluate, metrics_from_ranks, session_ranks
from training.narm_trainer import NARMParams
from training.narm_trainer import train as train_narm
from training.presets import PRESETS
from training.trainer import TrainParams, torch_threads
from training.trainer import train as train_gru4rec

KS = (1, 5, 10, 20)
VALIDATION_SECONDS = 24 * 3600
SCORING_CHUNK = 512
# Chosen on the sample's validation split (tuning_split), see the report of issue 13.
NARM_TUNED: dict[str, Any] = {"learning_rate": 0.005, "batch_size": 256, "epochs": 11, "dropout_embed": 0.4,
                              "dropout_context": 0.6, "patience": 0}


# The settings tried on the intent data's validation split, per family (each candidate's epoch count, up to
# --intent-epochs, is chosen on validation too): NARM with the paper's defaults and two faster learning
# schedules; GRU4Rec with the rsc15 preset (cross-entropy), a lower learning rate, and BPR-max.
INTENT_CANDIDATES: dict[str, list[dict[str, Any]]] = {
    "narm": [{"patience": 0}, {"patience": 0, "learning_rate": 0.003, "batch_size": 128},
             {"patience": 0, "learning_rate": 0.01, "batch_size": 128}],
    "gru4rec": [dict(PRESETS["rsc15"]), {**PRESETS["rsc15"], "learning_rate": 0.1},
                {**PRESETS["rsc15"], "loss": "bpr-max", "elu_param": 0.5, "bpreg": 1.0, "learning_rate": 0.05,
                 "logq": 0.0}],
    "sr": [{}],
    "vsknn": [{}],
}
INTENT_EPOCHS = 30
INTENT_SELECTION_METRIC = "mrr@20"


# --- data ---

def tuning_split(train_events: pa.Table) -> tuple[SessionDataset, SessionDataset]:
    """(train_tr, valid) of the sample's train file, as its authors made theirs: sessions ending in the last
    24 hours are validation; vocabulary from train_tr, unknown validation items dropped."""
    ends = train_events.group_by("session_id").aggregate([("event_time", "max")])
    cutoff = pc.subtract(pc.max(ends.column("event_time_max")), pa.scalar(VALIDATION_SECONDS * 10**6,
                                                                          pa.duration("us")))
    late = ends.filter(pc.greater(ends.column("event_time_max"), cutoff)).column("session_id")
    in_valid = pc.is_in(train_events.column("session_id"), value_set=late)
    train_tr, valid = train_events.filter(pc.invert(in_valid)), train_events.filter(in_valid)
    vocabulary = vocabulary_of(train_tr)
    return dataset_from_table(train_tr, vocabulary)[0], dataset_from_table(valid, vocabulary)[0]


def vocabulary_of(events: pa.Table) -> Vocabulary:
    counts = pc.value_counts(events.column("item_id"))
    return Vocabulary.from_counts(np.asarray(counts.field("values").to_pylist(), dtype=object),
                                  counts.field("counts").to_numpy())


def ndcg_from_ranks(ranks: np.ndarray, k: int = 20) -> float:
    """NDCG@k of one relevant item per case: 1 / log2(rank + 1) within the top k, else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return float(np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0).mean())


def accuracy(scorer: object, data: SessionDataset) -> dict[str, float]:
    """Recall@20, MRR@20, NDCG@20 of the evaluator's conservative full-ranking ranks."""
    with torch.no_grad():
        ranks = session_ranks(scorer, data)
    metrics = metrics_from_ranks(ranks, KS)
    return {"recall@20": round(metrics["recall@20"], 4), "mrr@20": round(metrics["mrr@20"], 4),
            "ndcg@20": round(ndcg_from_ranks(ranks), 4)}


def session_lists(data: SessionDataset, vocabulary: Vocabulary) -> list[list[str]]:
    return [vocabulary.item_ids[data.session(s)].tolist() for s in range(data.n_sessions)]


def random_walk_sessions(n_items: int, n_pairs: int, seed: int = 0) -> SessionDataset:
    """Generated sessions of 2 to 10 events over ``n_items`` items (popularity Zipf-like), about ``n_pairs``
    training pairs: only a throughput workload, no structure to learn."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 11, max(1, n_pairs // 5))
    popularity = 1.0 / np.arange(1, n_items + 1)
    items = rng.choice(n_items, size=int(lengths.sum()), p=popularity / popularity.sum())
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return SessionDataset(items.astype(np.int64), offsets, np.arange(len(lengths)).astype(str), n_items)


# --- measurements (each runs in a fresh process: bench.common.in_fresh_process) ---

def measure_narm(values: dict[str, Any], threads: int, model_dir: str) -> dict[str, Any]:
    from bench.train import load_sample

    vocabulary, train_data, test_data, unknown = load_sample()
    params = NARMParams.from_dict(values)
    result = train_narm(train_data, params, device="cpu", cpu_threads=threads)
    seconds = sum(s.seconds for s in result.epochs)
    with torch_threads(threads):
        metrics = accuracy(NARMScorer(result.model, "cpu"), test_data)
    save_model(Path(model_dir), result.model, vocabulary, params.to_dict())
    return {"part": "narm", "model": f"narm ({'full' if params.uses_full_softmax(len(vocabulary)) else 'sampled'}"
                                     " softmax)", "data": "sample", **metrics,
            "train_seconds": round(seconds, 1), "pairs_per_s": round(sum(s.pairs for s in result.epochs) / seconds),
            "epoch_loss": [round(s.loss, 4) for s in result.epochs],
            "unknown_test_events": unknown, "params": params.to_dict()}


def measure_gru4rec_beside(epochs: int, threads: int, model_dir: str) -> dict[str, Any]:
    """GRU4Rec (rsc15 preset) measured exactly as :func:`measure_narm`, for the side-by-side rows."""
    from bench.train import load_sample

    vocabulary, train_data, test_data, unknown = load_sample()
    params = TrainParams.from_dict({**PRESETS["rsc15"], "epochs": epochs})
    model, stats = train_gru4rec(train_data, params, device="cpu", cpu_threads=threads)
    seconds = sum(s.seconds for s in stats)
    with torch_threads(threads):
        metrics = accuracy(GRU4RecScorer(model, "cpu"), test_data)
    save_model(Path(model_dir), model, vocabulary, params.to_dict())
    return {"part": "narm", "model": "gru4rec (rsc15, same run)", "data": "sample", **metrics,
            "train_seconds": round(seconds, 1), "pairs_per_s": round(sum(s.pairs for s in stats) / seconds),
            "unknown_test_events": unknown, "params": params.to_dict()}


def measure_scoring(model_dirs: list[str], threads: int, rounds: int = 5) -> dict[str, Any]:
    """Sessions/s of each saved model scoring the sample's test sessions through the Recommender (top 20 of
    all items), the models taking turns for ``rounds`` rounds so they see the same machine load; best round."""
    from bench.train import load_sample

    vocabulary, _, test_data, _ = load_sample()
    sessions = session_lists(test_data, vocabulary)
    best = dict.fromkeys(model_dirs, math.inf)
    with torch_threads(threads):
        recommenders = {d: Recommender.from_directory(d, device="cpu") for d in model_dirs}
        for _ in range(rounds):
            for directory, recommender in recommenders.items():
                start = time.perf_counter()
                recommender.recommend(sessions, k=20)
                best[directory] = min(best[directory], time.perf_counter() - start)
    return {"sessions_per_s": {d: round(len(sessions) / seconds) for d, seconds in best.items()}}


def measure_softmax(n_items: int, softmax: str, threads: int, n_pairs: int) -> dict[str, Any]:
    data = random_walk_sessions(n_items, n_pairs)
    params = NARMParams(epochs=1, patience=0, softmax=softmax)
    result = train_narm(data, params, device="cpu", cpu_threads=threads)
    stats = result.epochs[0]
    label = "full softmax" if softmax == "full" else f"sampled softmax ({params.n_sample})"
    return {"part": "narm-softmax", "model": f"narm ({label})", "data": f"generated, {n_items:,} items",
            "train_seconds": round(stats.seconds, 1), "pairs_per_s": round(stats.pairs_per_s)}


def _intent_training_dir(scratch: str) -> Path:
    from bench.search import INTENT, _settings, intent_home
    from sessionrec.layout import local_path

    return local_path(_settings(intent_home(scratch)).layout.training_set(INTENT["end_day"]))


def prepare_intent(scratch: str) -> dict[str, Any]:
    """bench/search.py's intent data set and the exact ceilings of its test split (bench.search.prepare_intent)."""
    from bench.search import INTENT
    from bench.search import prepare_intent as prepare

    started = time.perf_counter()
    _, bound = prepare(scratch)
    return {"ceiling": bound, "prepare_seconds": round(time.perf_counter() - started, 1),
            "data": {key: str(value) for key, value in INTENT.items()}}


def tune_on_validation(family: str, candidates: list[dict[str, Any]], max_epochs: int, threads: int,
                       scratch: str) -> dict[str, Any]:
    """Every candidate of ``family`` fitted on ``train_tr`` and measured on ``valid`` (after each epoch for an
    iterative family); the best (candidate, epoch count) by validation MRR@20. The test split is not read."""
    from training.experiment import fit_family, load_training_set

    vocabulary, train_tr, valid = load_training_set(_intent_training_dir(scratch), "tuning")
    trials = []
    for candidate in candidates:
        values = {**candidate, "epochs": max_epochs} if family in ("narm", "gru4rec") else dict(candidate)
        fit = fit_family(family, values, vocabulary, train_tr, valid, torch.device("cpu"), cpu_threads=threads)
        if fit.epochs:
            curve = [round(s.eval_metrics[INTENT_SELECTION_METRIC], 4) for s in fit.epochs]
            best = int(np.argmax(curve))
            trials.append({"params": {**candidate, "epochs": fit.epochs[best].epoch}, "valid": curve[best],
                           "valid_curve": curve})
        else:
            trials.append({"params": dict(candidate), "valid": round(fit.metrics[INTENT_SELECTION_METRIC], 4)})
    chosen = max(trials, key=lambda trial: trial["valid"])  # first of the best on ties
    return {"family": family, "chosen": chosen["params"], "valid": chosen["valid"], "trials": trials}


def measure_intent(family: str, values: dict[str, Any], threads: int, scratch: str) -> dict[str, Any]:
    """``family`` with ``values`` fitted on ``train`` (no evaluation during fitting) and evaluated on ``test``."""
    from training.experiment import load_training_set
    from training.families import EVALUATION_SLOTS, trainer_for

    vocabulary, train_data, test_data = load_training_set(_intent_training_dir(scratch), "full")
    trainer = trainer_for(family)
    settings = trainer.params(values)
    fitted = trainer.fit(train_data, settings, torch.device("cpu"), cpu_threads=threads)
    with torch_threads(threads):
        metrics = evaluate(trainer.scorer(fitted.model), test_data, ks=KS, batch_size=EVALUATION_SLOTS)
    return {"part": "narm-intent", "model": family, "data": "intent (generated)",
            **{key: round(metrics[key], 4) for key in ("recall@20", "mrr@20", "ndcg@20")},
            "train_seconds": round(fitted.seconds, 2),
            "pairs_per_s": round(fitted.pairs_per_s) if fitted.history else None, "params": settings}


def run_intent_part(threads: int, max_epochs: int, scratch: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``narm-intent`` rows (with their shares of the ceiling) and the preparation and tuning details."""
    from bench.common import in_fresh_process

    prepared = in_fresh_process(prepare_intent, scratch)
    bound = prepared["ceiling"]
    ceiling_row = {"recall@20": bound["bayes_recall@20"], "mrr@20": bound["bayes_mrr@20"]}
    oracle_row = {"recall@20": bound["last_item_oracle_recall@20"], "mrr@20": bound["last_item_oracle_mrr@20"]}
    computed = {key: prepared[key] for key in ("load_avg_before", "load_avg_after")}
    rows = [{"part": "narm-intent", "model": "Bayes-optimal (ceiling)", "data": "intent (generated)",
             **{k: round(v, 4) for k, v in ceiling_row.items()}, **computed},
            {"part": "narm-intent", "model": "last-item oracle", "data": "intent (generated)",
             **{k: round(v, 4) for k, v in oracle_row.items()}, **computed}]
    tuning = {}
    for family, candidates in INTENT_CANDIDATES.items():
        tuning[family] = in_fresh_process(tune_on_validation, family, candidates, max_epochs, threads, scratch)
        rows.append(in_fresh_process(measure_intent, family, tuning[family]["chosen"], threads, scratch))
    for row in rows:
        for metric in ("recall@20", "mrr@20"):
            name = metric.split("@")[0]
            row[f"share_{name}_ceiling"] = round(row[metric] / ceiling_row[metric], 3)
            row[f"share_{name}_oracle"] = round(row[metric] / oracle_row[metric], 3)
    return rows, {"intent": {**{k: prepared[k] for k in ("ceiling", "prepare_seconds", "data")},
                             "selection_metric": INTENT_SELECTION_METRIC, "max_epochs": max_epochs,
                             "tuning": tuning}}


def print_intent_table(rows: list[dict[str, Any]]) -> None:
    """The intent rows: accuracy, cost, and each one's share of the Bayes-optimal ceiling and of the oracle."""
    rows = [row for row in rows if row["part"] == "narm-intent"]
    if not rows:
        return
    header = (f"{'model (intent data)':<26} {'recall@20':>9} {'mrr@20':>7} {'ndcg@20':>7} {'train s':>8} "
              f"{'pairs/s':>8} {'peak MB':>8} {'R/bayes':>7} {'M/bayes':>7} {'R/oracle':>8} {'M/oracle':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [f"{row[key]:>{width}{spec}}" if row.get(key) is not None else " " * (width - 1) + "-"
                 for key, width, spec in (("recall@20", 9, ".4f"), ("mrr@20", 7, ".4f"), ("ndcg@20", 7, ".4f"),
                                          ("train_seconds", 8, ""), ("pairs_per_s", 8, ","), ("peak_rss_mb", 8, ""),
                                          ("share_recall_ceiling", 7, ".3f"), ("share_mrr_ceiling", 7, ".3f"),
                                          ("share_recall_oracle", 8, ".3f"), ("share_mrr_oracle", 8, ".3f"))]
        print(f"{row['model']:<26} {' '.join(cells)}")


def run_narm_parts(parts: list[str], epochs: int, threads: int, narm_values: dict[str, Any],
                   softmax_pairs: int) -> list[dict[str, Any]]:
    """The NARM rows of bench/train.py's table, each measured in a fresh process."""
    from bench.common import in_fresh_process

    rows: list[dict[str, Any]] = []
    if "narm" in parts:
        with tempfile.TemporaryDirectory(prefix="bench-narm-") as scratch:
            narm_dir, gru4rec_dir = f"{scratch}/narm", f"{scratch}/gru4rec"
            rows.append(in_fresh_process(measure_narm, narm_values, threads, narm_dir))
            rows.append(in_fresh_process(measure_gru4rec_beside, epochs, threads, gru4rec_dir))
            rates = in_fresh_process(measure_scoring, [narm_dir, gru4rec_dir], threads)["sessions_per_s"]
        rows[-2]["scoring_sessions_per_s"], rows[-1]["scoring_sessions_per_s"] = rates[narm_dir], rates[gru4rec_dir]
    if "narm-softmax" in parts:
        rows += [in_fresh_process(measure_softmax, n_items, softmax, threads, softmax_pairs)
                 for n_items in (10_000, 100_000) for softmax in ("full", "sampled")]
    return rows


def print_narm_table(rows: list[dict[str, Any]]) -> None:
    """NARM beside GRU4Rec: the columns bench/train.py's table has not (NDCG@20, scoring sessions/s)."""
    rows = [row for row in rows if row["part"] in ("narm", "narm-softmax")]
    if not rows:
        return
    header = (f"{'model':<34} {'data':<24} {'recall@20':>9} {'mrr@20':>7} {'ndcg@20':>7} {'train s':>8} "
              f"{'pairs/s':>8} {'peak MB':>8} {'score sess/s':>12}")
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = [f"{row[key]:>{width}{spec}}" if row.get(key) is not None else " " * (width - 1) + "-"
                 for key, width, spec in (("recall@20", 9, ".4f"), ("mrr@20", 7, ".4f"), ("ndcg@20", 7, ".4f"),
                                          ("train_seconds", 8, ""), ("pairs_per_s", 8, ","),
                                          ("peak_rss_mb", 8, ""), ("scoring_sessions_per_s", 12, ","))]
        print(f"{row['model']:<34} {row['data']:<24} {' '.join(cells)}")
