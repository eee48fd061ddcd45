"""Fixtures for the MLflow-facing model tests: a tiny training set, small real models, a real MLflow server.

The training set holds "chain" sessions over 60 items: each session walks item j, j+1, j+2, ... (mod 60)
from a random start, so the next item is fully determined by the last one. A GRU4Rec trained for one
epoch learns it (Recall@1 close to 1); a randomly initialised one does not, and the most-popular baseline
gets about 20/60 Recall@20.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from model.artifacts import save_model
from model.data import Vocabulary, load_split, read_vocabulary, write_vocabulary
from model.network import GRU4Rec
from sessionrec.config import Settings, load_settings
from tests.net import free_port, stop_process_group, wait_healthy
from training.trainer import EpochStats, TrainParams, train

N_ITEMS = 60
SPLIT_TIME = np.datetime64("2026-11-21T00:00:00", "us")
SERVER_START_TIMEOUT_S = 90


def item_id(index: int) -> str:
    return f"item{index:03d}"


def chain_events(n_sessions: int, seed: int, start_time: np.datetime64, prefix: str) -> pa.Table:
    """Events of ``n_sessions`` chain sessions of 2 to 7 events, one minute apart, sessions one second apart."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 8, n_sessions)
    starts = rng.integers(0, N_ITEMS, n_sessions)
    session = np.repeat(np.arange(n_sessions), lengths)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = (np.repeat(starts, lengths) + position) % N_ITEMS
    times = start_time + session.astype("timedelta64[s]") + (position * 60).astype("timedelta64[s]")
    return pa.table({
        "session_id": pa.array([f"{prefix}{s:05d}" for s in session], pa.string()),
        "item_id": pa.array([item_id(i) for i in items], pa.string()),
        "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
    })


def write_split(events: pa.Table, vocabulary: Vocabulary, path: Path) -> None:
    """A split folder as docs/CONTRACTS.md section 3 describes it (sorted by session, time; item_idx)."""
    idx = vocabulary.lookup(events.column("item_id")).astype(np.int32)
    table = events.append_column("item_idx", pa.array(idx, pa.int32()))
    table = table.select(["session_id", "item_id", "item_idx", "event_time"])
    path.mkdir(parents=True)
    pq.write_table(table.sort_by([("session_id", "ascending"), ("event_time", "ascending")]),
                   path / "part-00000.parquet")


@pytest.fixture(scope="session")
def training_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training set folder ``<lake>/training/ds=2026-11-21`` with the four splits, items.parquet and
    stats.json (the lake root is ``training_dir.parent.parent``)."""
    root = tmp_path_factory.mktemp("lake") / "training" / "ds=2026-11-21"
    train = chain_events(400, seed=1, start_time=SPLIT_TIME - np.timedelta64(2, "D"), prefix="train-")
    test = chain_events(100, seed=2, start_time=SPLIT_TIME, prefix="test-")
    train_tr = chain_events(300, seed=3, start_time=SPLIT_TIME - np.timedelta64(2, "D"), prefix="train_tr-")
    valid = chain_events(80, seed=4, start_time=SPLIT_TIME - np.timedelta64(1, "D"), prefix="valid-")
    ids, counts = np.unique(np.asarray(train.column("item_id").to_pylist(), dtype=object), return_counts=True)
    vocabulary = Vocabulary.from_counts(ids, counts)
    root.mkdir(parents=True)
    write_vocabulary(vocabulary, root / "items.parquet")
    for name, events in (("train", train), ("test", test), ("train_tr", train_tr), ("valid", valid)):
        write_split(events, vocabulary, root / name)
    stats = {"train": {"rows": train.num_rows}, "test": {"rows": test.num_rows}, "split_time": str(SPLIT_TIME)}
    (root / "stats.json").write_text(json.dumps(stats))
    return root


@pytest.fixture(scope="session")
def foreign_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training set of another clickstream, outside the lake: chain sessions whose item ids the
    production training set never has (``other-item000``...)."""
    root = tmp_path_factory.mktemp("elsewhere") / "ds=2026-11-21"
    splits = {"train": chain_events(200, seed=7, start_time=SPLIT_TIME - np.timedelta64(2, "D"), prefix="x-"),
              "test": chain_events(50, seed=8, start_time=SPLIT_TIME, prefix="y-")}
    splits = {name: events.set_column(1, "item_id", pa.array([f"other-{i}" for i in events["item_id"].to_pylist()]))
              for name, events in splits.items()}
    ids, counts = np.unique(np.asarray(splits["train"].column("item_id").to_pylist(), dtype=object),
                            return_counts=True)
    vocabulary = Vocabulary.from_counts(ids, counts)
    root.mkdir(parents=True)
    write_vocabulary(vocabulary, root / "items.parquet")
    for name, events in splits.items():
        write_split(events, vocabulary, root / name)
    (root / "stats.json").write_text(json.dumps({name: {"rows": events.num_rows} for name, events in splits.items()}))
    return root


@pytest.fixture(scope="session")
def chain_items() -> list[str]:
    """The item ids in chain order: a session ``chain_items[j], chain_items[j+1], ...`` (mod N_ITEMS)."""
    return [item_id(i) for i in range(N_ITEMS)]


TINY_PARAMS = {"layers": (32,), "batch_size": 64, "epochs": 1, "n_sample": 64, "learning_rate": 0.1,
               "momentum": 0.0, "dropout_hidden": 0.0, "seed": 3}


@pytest.fixture(scope="session")
def _trained(training_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[EpochStats]]:
    """Trains once for the whole test session (about 3 s)."""
    vocabulary = read_vocabulary(training_dir / "items.parquet")
    params = TrainParams(**TINY_PARAMS)
    network, stats = train(load_split(training_dir, "train", vocabulary), params, device="cpu")
    directory = tmp_path_factory.mktemp("trained") / "model"
    save_model(directory, network, vocabulary, params.to_dict())
    return directory, stats


@pytest.fixture(scope="session")
def trained_model_dir(_trained: tuple[Path, list[EpochStats]]) -> Path:
    """A small GRU4Rec trained one epoch on the chain sessions, saved as a model folder."""
    return _trained[0]


@pytest.fixture(scope="session")
def training_stats(_trained: tuple[Path, list[EpochStats]]) -> list[EpochStats]:
    """The per-epoch statistics of that training."""
    return _trained[1]


@pytest.fixture(scope="session")
def fitted(training_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each table family (fitted in one pass, no training loop) fitted on the chain training set with its
    defaults and saved: family -> folder."""
    from training.families import TRAINERS, BaselineTrainer

    vocabulary = read_vocabulary(training_dir / "items.parquet")
    train_split = load_split(training_dir, "train", vocabulary)
    folders = {}
    for name, trainer in TRAINERS.items():
        if not isinstance(trainer, BaselineTrainer):
            continue
        params = trainer.params()
        result = trainer.fit(train_split, params, torch.device("cpu"))
        folders[name] = tmp_path_factory.mktemp(name) / "model"
        trainer.save(result, folders[name], vocabulary, params)
    return folders


NARM_TINY = {"embedding": 16, "hidden": 32, "batch_size": 64, "learning_rate": 0.01, "dropout_embed": 0.0,
             "dropout_context": 0.0, "epochs": 6, "patience": 0, "seed": 2}


@pytest.fixture(scope="session")
def narm_model_dir(training_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NARM fitted through TRAINERS on the chain sessions and saved as a model folder."""
    from training.families import TRAINERS

    trainer = TRAINERS["narm"]
    vocabulary = read_vocabulary(training_dir / "items.parquet")
    params = trainer.params(NARM_TINY)
    fitted = trainer.fit(load_split(training_dir, "train", vocabulary), params, torch.device("cpu"))
    directory = tmp_path_factory.mktemp("narm") / "model"
    trainer.save(fitted, directory, vocabulary, params)
    return directory


@pytest.fixture(scope="session")
def random_model_dir(training_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same network shape with random weights (a deliberately bad model), saved as a model folder."""
    vocabulary = read_vocabulary(training_dir / "items.parquet")
    params = TrainParams(**TINY_PARAMS)
    torch.manual_seed(11)
    network = GRU4Rec(params.network_config(len(vocabulary))).eval()
    directory = tmp_path_factory.mktemp("random") / "model"
    save_model(directory, network, vocabulary, params.to_dict())
    return directory


StoreFactory = Callable[[Path], Settings]


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> StoreFactory:
    """Makes Settings whose MLflow store is a fresh SQLite file under a given home folder.

    Creating MLflow's tables takes several seconds, so it happens once: each store starts as a copy of
    a freshly migrated empty database.
    """
    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()

    def make(home: Path) -> Settings:
        settings = load_settings(env={}, home=home)
        database = Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, database)
        return settings

    return make


@pytest.fixture
def mlflow_settings(mlflow_store: StoreFactory, tmp_path: Path) -> Settings:
    """Settings under ``tmp_path`` with an empty SQLite MLflow store of their own."""
    return mlflow_store(tmp_path / "var")


@pytest.fixture
def cli_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """``SESSIONREC_HOME`` for a CLI run under ``tmp_path / "var"``: its MLflow store is the home's own (the
    store variables are cleared for every test by tests/conftest.py)."""
    monkeypatch.setenv("SESSIONREC_HOME", str(tmp_path / "var"))
    return tmp_path / "var"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) on localhost; yields its URL."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [str(Path(sys.executable).parent / "mlflow"), "server",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"),
               "--default-artifact-root", "mlflow-artifacts:/",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                   start_new_session=True)
    try:
        wait_healthy(f"{url}/health", process, log, SERVER_START_TIMEOUT_S)
        yield url
    finally:
        stop_process_group(process)


ChampionFactory = Callable[[Path, str], str]


@pytest.fixture(scope="session")
def server_champion(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> ChampionFactory:
    """``server_champion(model_dir, name)`` logs a model folder to the MLflow server, registers it as a new
    version of ``name``, points ``@champion`` at it and returns ``models:/<name>@champion``."""
    from lifecycle.registry import register_version, set_champion
    from lifecycle.tracking import connect, training_run

    def register(model_dir: Path, name: str) -> str:
        settings = load_settings(env={}, home=tmp_path_factory.mktemp(name) / "var",
                                 mlflow_tracking_uri=mlflow_server, mlflow_artifact_root="mlflow-artifacts:/",
                                 model_name=name)
        day = date(2026, 11, 21)
        with training_run(settings, day, device="cpu", system_metrics=False) as run:
            info = run.log_model(model_dir)
        client = connect(settings)
        set_champion(client, name, register_version(client, info, name, day).version)
        return f"models:/{name}@champion"

    return register
