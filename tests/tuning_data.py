"""A tiny tuning split for the search tests (tests/model/test_tune.py, tests/dags/test_tune_dag.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.data import Vocabulary, write_vocabulary

N_ITEMS = 40
DAY = np.datetime64("2026-11-21T00:00:00", "us")


def noisy_chain_events(n_sessions: int, seed: int, start: np.datetime64, prefix: str) -> pa.Table:
    """Sessions that mostly walk item j -> j + 1 (mod N_ITEMS), else jump anywhere: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    sessions, items, times = [], [], []
    for s in range(n_sessions):
        item = int(rng.integers(N_ITEMS))
        for position in range(int(rng.integers(2, 7))):
            sessions.append(f"{prefix}{s:05d}")
            items.append(f"item{item:03d}")
            times.append(start + np.timedelta64(s, "s") + np.timedelta64(60 * position, "s"))
            item = (item + 1) % N_ITEMS if rng.random() < 0.6 else int(rng.integers(N_ITEMS))
    return pa.table({"session_id": sessions, "item_id": items,
                     "event_time": pa.array(np.array(times), pa.timestamp("us", tz="UTC"))})


def write_split(events: pa.Table, vocabulary: Vocabulary, path: Path) -> None:
    idx = vocabulary.lookup(events.column("item_id")).astype(np.int32)
    path.mkdir(parents=True)
    pq.write_table(events.append_column("item_idx", pa.array(idx, pa.int32()))
                   .select(["session_id", "item_id", "item_idx", "event_time"]), path / "part-00000.parquet")


def make_tuning_dir(root: Path, seed: int) -> Path:
    """A training set folder with items.parquet, train_tr and valid only, and a test split that no reader can
    parse: reading it would fail."""
    training_dir = root / "training" / "ds=2026-11-21"
    train = noisy_chain_events(250, seed, DAY - np.timedelta64(3, "D"), "tr-")
    valid = noisy_chain_events(80, seed + 100, DAY - np.timedelta64(1, "D"), "va-")
    ids, counts = np.unique(np.asarray(train.column("item_id").to_pylist(), dtype=object), return_counts=True)
    vocabulary = Vocabulary.from_counts(ids, counts)
    training_dir.mkdir(parents=True)
    write_vocabulary(vocabulary, training_dir / "items.parquet")
    write_split(train, vocabulary, training_dir / "train_tr")
    write_split(valid, vocabulary, training_dir / "valid")
    (training_dir / "test").mkdir()
    (training_dir / "test" / "part-00000.parquet").write_bytes(b"the test split must never be read")
    return training_dir
