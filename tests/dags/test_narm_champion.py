"""The score DAG serves a NARM champion end to end (issue 13).

A tiny generated clickstream is sessionized and turned into the lake's training set in-process (shared
Spark session); NARM is trained on it, tracked, registered and promoted to ``@champion`` by the same
functions the train DAG's tasks call; then ``gru4rec_score`` runs with ``airflow dags test`` for the day
and the champion alias. The test checks only the DAG's public behaviour: the warehouse partition of the
day holds, row for row, what the registered NARM version's pyfunc recommends for the day's sessions.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
from dag_test_support import sessionize_in_process

from sessionrec import airflow_env
from sessionrec.config import load_settings
from sessionrec.run import run_dag

DAY = date(2026, 10, 21)
DAYS = 2
EVENTS = 3000
ITEMS = 150
# Small and fast: one epoch of a small network (the point is the serving path, not accuracy).
NARM_SETTINGS = {"epochs": 1, "embedding": 16, "hidden": 16, "batch_size": 64, "patience": 0}


def test_the_score_dag_serves_a_narm_champion(tmp_path: Path, spark: object) -> None:
    from jobs.generate import generate_clickstream, write_landing_zone
    from jobs.training_set import build_training_set
    from jobs.warehouse import connect as connect_warehouse
    from lifecycle.pipeline import gate, register, train_and_log
    from lifecycle.registry import FAMILY_TAG
    from lifecycle.resolver import CHAMPION
    from lifecycle.tracking import connect

    settings = load_settings(env={}, home=tmp_path / "var")
    write_landing_zone(generate_clickstream(DAY, DAYS, EVENTS, n_items=ITEMS, seed=13), settings.raw)
    for offset in range(DAYS - 1, -1, -1):
        sessionize_in_process(spark, settings, DAY - timedelta(days=offset))
    build_training_set(spark, settings.lake, DAY, days=DAYS)

    trained = train_and_log(settings, DAY, family="narm", overrides={"narm": NARM_SETTINGS}, device="cpu")
    assert trained["family"] == "narm"
    version = register(settings, trained["run_id"], DAY)
    assert gate(settings, version, DAY, force=True)["champion_version"] == version
    client = connect(settings)
    registered = client.get_model_version(settings.model_name, str(version))
    assert registered.tags[FAMILY_TAG] == "narm"
    assert str(client.get_model_version_by_alias(settings.model_name, CHAMPION).version) == str(version)

    env = airflow_env.airflow_env(settings, retry_delay_s=1)
    airflow_env.prepare(settings, env)
    run_dag("gru4rec_score", {"ds": DAY.isoformat(), "model": CHAMPION}, env, settings.home / "dag-test-logs")

    record = json.loads(Path(settings.layout.score_stats(DAY)).read_text())
    assert record["model_version"] == str(version)
    with connect_warehouse(settings.warehouse_url) as warehouse:
        partition = warehouse.read_partition(DAY)
    assert partition.num_rows == record["rows_written"] > 0
    assert set(partition.column("model_version").to_pylist()) == {str(version)}
    assert set(partition.column("model_name").to_pylist()) == {settings.model_name}

    # The rows are NARM's: the registered version's pyfunc recommends the same items, in the same order.
    events = ds.dataset(settings.layout.sessions(DAY), format="parquet").to_table(
        columns=["session_id", "item_id", "position"]).sort_by([("session_id", "ascending"),
                                                                ("position", "ascending")])
    sessions: dict[str, list[str]] = {}
    for session, item in zip(events.column("session_id").to_pylist(), events.column("item_id").to_pylist(),
                             strict=True):
        sessions.setdefault(session, []).append(item)
    connect(settings)  # this process's MLflow at the test's stores, for the models:/ URI
    pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.model_name}/{version}")
    assert pyfunc.metadata.metadata[FAMILY_TAG] == "narm"
    expected = pyfunc.predict(pd.DataFrame({"session_id": list(sessions), "item_ids": list(sessions.values())}),
                              params={"k": record["top_k"], "exclude_last": record["exclude_last_item"]})
    served = partition.sort_by([("session_id", "ascending"), ("rank", "ascending")])
    assert pc.count_distinct(served.column("session_id")).as_py() == len(sessions)
    expected = expected.sort_values(["session_id", "rank"])
    assert served.column("session_id").to_pylist() == expected["session_id"].tolist()
    assert served.column("item_id").to_pylist() == expected["item_id"].tolist()
