"""The three Spark jobs on a real standalone cluster (a master and two workers, tests/spark_cluster.py).

Each job runs as ``spark-submit --master spark://127.0.0.1:PORT``: the sessionize job through its DAG
(Airflow's SparkSubmitOperator on a ``spark://`` connection), the training set and the scoring directly.
Their outputs must equal those of the same jobs run locally (the tests' shared local session) on the
same input. The input is a tiny generated clickstream, so what is measured is the cluster's own overhead.

The cluster's training set reads the cluster's sessions of the last day and the local run's sessions of
the earlier days (one Spark application instead of three; the last day already compares the job).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from jobs.generate import generate_clickstream, write_landing_zone
from jobs.score import score_day
from jobs.sessionize import sessionize
from jobs.training_set import build_training_set
from jobs.warehouse import connect
from model.artifacts import save_model
from model.data import read_vocabulary
from model.network import GRU4Rec
from model.packaging import log_session_model
from sessionrec import airflow_env
from sessionrec.config import PROJECT_ROOT, Settings, load_settings
from sessionrec.layout import SPLITS, Lake
from sessionrec.run import run_dag
from tests.spark_cluster import SparkCluster
from training.trainer import TrainParams

DAY = date(2026, 10, 14)
DAYS = 3
EVENTS = 4000
ITEMS = 200
TOP_K = 5
MODEL_NAME = "gru4rec-cluster"
JOBS = PROJECT_ROOT / "jobs"
# Run-dependent entries of the stats files (timings, the lake the outputs went to).
VOLATILE = {"elapsed_s", "outputs", "phase_seconds", "duration_seconds", "model_fetch_seconds", "generated_at",
            "output", "run_record", "warehouse"}


def table_rows(folder: Path | str) -> list[dict[str, Any]]:
    """Every row of a Parquet folder (or file), in a canonical order."""
    table = pq.read_table(folder)
    return sorted(table.to_pylist(), key=lambda row: json.dumps(row, default=str, sort_keys=True))


def stable(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in VOLATILE}


@pytest.fixture(scope="module")
def cluster_settings(tmp_path_factory: pytest.TempPathFactory, spark_cluster: SparkCluster) -> Settings:
    """Settings whose Spark master is the cluster, with a landing zone of ``DAYS`` generated days."""
    home = tmp_path_factory.mktemp("cluster-jobs") / "var"
    settings = load_settings(env={}, home=home, spark_master=spark_cluster.master_url, top_k=TOP_K,
                             training_days=DAYS, raw=str(home / "raw"))
    write_landing_zone(generate_clickstream(DAY, DAYS, EVENTS, n_items=ITEMS, seed=11), settings.raw)
    return settings


@pytest.fixture(scope="module")
def submit_env(cluster_settings: Settings) -> dict[str, str]:
    """spark-submit's environment: the settings as SESSIONREC_*, this checkout and interpreter, and none of
    MLflow's store variables (an earlier test's would win over the settings' store)."""
    base = {key: value for key, value in os.environ.items()
            if key not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return {**base, **airflow_env.settings_env(cluster_settings), "PYTHONPATH": str(PROJECT_ROOT),
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1"}


@pytest.fixture(scope="module")
def local_lake(spark: object, cluster_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every day sessionized and the training set built with the local session."""
    settings, lake = cluster_settings, tmp_path_factory.mktemp("local") / "lake"
    for offset in range(DAYS - 1, -1, -1):
        sessionize(spark, settings.raw, str(lake), DAY - timedelta(days=offset), gap_minutes=settings.gap_minutes,
                   max_quarantine_share=settings.max_quarantine_share)
    build_training_set(spark, str(lake), DAY, days=DAYS, min_item_support=settings.min_item_support,
                       min_session_length=settings.min_session_length)
    return lake


@pytest.fixture(scope="module")
def registry(local_lake: Path, cluster_settings: Settings) -> str:
    """A random-weight GRU4Rec over the training set's items, registered as ``MODEL_NAME@champion``."""
    root = Path(cluster_settings.home) / "mlflow"
    vocabulary = read_vocabulary(Lake(str(local_lake)).training_items(DAY))
    params = TrainParams(layers=(16,))
    torch.manual_seed(0)
    save_model(root / "model", GRU4Rec(params.network_config(len(vocabulary))), vocabulary, params.to_dict())
    uri = cluster_settings.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("cluster-tests", artifact_location=(root / "artifacts").as_uri())
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            info = log_session_model(root / "model", registered_model_name=MODEL_NAME)
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    client.set_registered_model_alias(MODEL_NAME, "champion", str(info.registered_model_version))
    return uri


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, float]]:
    """Seconds of each cluster run, printed at the end of the module (``-s`` or ``-rA`` shows them)."""
    seconds: dict[str, float] = {}
    yield seconds
    print("cluster runs (s): " + ", ".join(f"{name} {value:.1f}" for name, value in seconds.items()))


@pytest.fixture(scope="module")
def cluster_lake(spark_cluster: SparkCluster, cluster_settings: Settings, local_lake: Path,
                 timings: dict[str, float]) -> Path:
    """The cluster's lake: day D sessionized on the cluster by the DAG (its SparkSubmitOperator on a
    ``spark://`` connection), the earlier days of the window copied from the local run."""
    lake, ds = Path(cluster_settings.lake), DAY.isoformat()
    for offset in range(1, DAYS):  # the earlier days of the window, as the local run wrote them
        earlier = DAY - timedelta(days=offset)
        shutil.copytree(Lake(str(local_lake)).sessions(earlier), cluster_settings.layout.sessions(earlier))
    env = {**airflow_env.airflow_env(cluster_settings, retry_delay_s=1), "PYTHONPATH": str(PROJECT_ROOT)}
    airflow_env.prepare(cluster_settings, env)
    logs = Path(cluster_settings.home) / "logs"
    started = time.monotonic()
    dag_log = run_dag("clickstream_sessionize", {"ds": ds}, env, logs)
    timings["sessionize (DAG)"] = time.monotonic() - started
    assert f"--master {spark_cluster.master_url}" in dag_log.read_text()
    return lake


@pytest.fixture(scope="module")
def cluster_training_set(spark_cluster: SparkCluster, cluster_settings: Settings, cluster_lake: Path,
                         submit_env: dict[str, str], timings: dict[str, float]) -> Path:
    """The cluster's lake with day D's training set built through spark-submit on the cluster."""
    timings["training_set"] = spark_cluster.submit(JOBS / "training_set.py", [
        "--lake", str(cluster_lake), "--ds", DAY.isoformat()], submit_env,
        Path(cluster_settings.home) / "logs" / "training_set.log")
    return cluster_lake


def test_cluster_has_two_workers_on_loopback(spark_cluster: SparkCluster) -> None:
    status = spark_cluster.status()
    assert status["status"] == "ALIVE" and status["url"] == spark_cluster.master_url
    assert [worker["state"] for worker in status["workers"]] == ["ALIVE", "ALIVE"]
    assert all(worker["host"] == "127.0.0.1" for worker in status["workers"])


def test_sessionize_on_the_cluster_equals_the_local_run(cluster_lake: Path, local_lake: Path,
                                                        spark_cluster: SparkCluster) -> None:
    cluster, local = Lake(str(cluster_lake)), Lake(str(local_lake))
    assert table_rows(cluster.sessions(DAY)) == table_rows(local.sessions(DAY))
    assert table_rows(cluster.quarantine(DAY)) == table_rows(local.quarantine(DAY))
    assert len(table_rows(cluster.sessions(DAY))) > 1000
    stats = [json.loads(Path(lake.sessionize_stats(DAY)).read_text()) for lake in (cluster, local)]
    assert stable(stats[0]) == stable(stats[1])
    assert stats[0]["rows_quarantined"] > 0 and stats[0]["sessions"] > 100
    # The job ran on the cluster, with an executor on each worker.
    apps = {app["id"]: app["name"] for app in spark_cluster.status()["completedapps"]}
    sessionize_apps = {app_id for app_id, name in apps.items() if name.startswith("sessionize")}
    assert len(sessionize_apps) == 1
    for worker in spark_cluster.worker_states():
        assert sessionize_apps <= {executor["appid"] for executor in worker["finishedexecutors"]}


def test_training_set_on_the_cluster_equals_the_local_run(cluster_training_set: Path, local_lake: Path) -> None:
    cluster, local = Lake(str(cluster_training_set)), Lake(str(local_lake))
    for split in SPLITS:
        assert table_rows(cluster.training_split(DAY, split)) == table_rows(local.training_split(DAY, split)), split
    assert pq.read_table(cluster.training_items(DAY)).equals(pq.read_table(local.training_items(DAY)))
    stats = [json.loads(Path(lake.training_stats(DAY)).read_text()) for lake in (cluster, local)]
    assert stable(stats[0]) == stable(stats[1])


def test_score_on_the_cluster_equals_the_local_run(spark: object, spark_cluster: SparkCluster,
                                                   cluster_settings: Settings, cluster_lake: Path,
                                                   local_lake: Path, registry: str, submit_env: dict[str, str],
                                                   timings: dict[str, float]) -> None:
    model_uri = f"models:/{MODEL_NAME}@champion"
    home = Path(cluster_settings.home)
    local_url = f"duckdb://{home / 'local.duckdb'}"
    local = score_day(spark, str(local_lake), DAY, model_uri, TOP_K, exclude_last=True,
                      warehouse_url=local_url, tracking_uri=registry)
    cluster_url = f"duckdb://{home / 'cluster.duckdb'}"
    timings["score"] = spark_cluster.submit(JOBS / "score.py", [
        "--lake", str(cluster_lake), "--ds", DAY.isoformat(), "--model-uri", model_uri,
        "--warehouse", cluster_url], submit_env, home / "logs" / "score.log")
    record = json.loads(Path(Lake(str(cluster_lake)).score_stats(DAY)).read_text())
    assert stable(record) == stable(local)
    assert record["rows_written"] == record["sessions"] * TOP_K > 0

    def partition(url: str) -> pa.Table:
        with connect(url) as warehouse:
            rows = warehouse.read_partition(DAY).drop_columns(["generated_at"])
        return rows.sort_by([("session_id", "ascending"), ("rank", "ascending")])

    got, expected = partition(cluster_url), partition(local_url)
    assert got.drop_columns(["score"]).equals(expected.drop_columns(["score"]))
    assert got.column("score").to_pylist() == pytest.approx(expected.column("score").to_pylist(), rel=1e-5)
