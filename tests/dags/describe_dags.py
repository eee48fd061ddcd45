"""Parse the DAG folder the way the DAG processor does and describe the result as JSON.

Run in a fresh interpreter with the environment of sessionrec.airflow_env (the tests do), so imports are
cold and Airflow reads its configuration from the test's own home::

    python tests/dags/describe_dags.py OUTPUT.json '{"gru4rec_score": [{"top_k": 0}]}'

The second argument maps DAG ids to run confs to validate as the REST API does (against the serialized
DAG). Written to OUTPUT.json (stdout carries Airflow's logs): parse times, import errors, heavy modules
loaded by parsing, per DAG its schedule, params and tasks, and the validation outcomes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

HEAVY_MODULES = ("torch", "pyspark", "mlflow", "pandas", "numpy", "pyarrow", "duckdb", "matplotlib")


def describe_task(task: Any) -> dict[str, Any]:
    timeout = task.execution_timeout
    return {
        "type": type(task).__name__,
        "pool": task.pool,
        "queue": task.queue,
        "retries": task.retries,
        "execution_timeout_s": timeout.total_seconds() if timeout else None,
        "outlets": [getattr(asset, "name", None) for asset in task.outlets],
        "upstream": sorted(task.upstream_task_ids),
        "deferrable": getattr(task, "deferrable", None),
        "sensor_timeout_s": getattr(task, "timeout", None),
        "poke_interval_s": getattr(task, "poke_interval", None),
        "conn_id": getattr(task, "_conn_id", None),
        "application": getattr(task, "application", None),
        "application_args": [str(arg) for arg in getattr(task, "application_args", None) or []],
        "filepath": getattr(task, "filepath", None),
        "failure_callbacks": [type(callback).__name__ for callback in task.on_failure_callback or []],
    }


def describe_schedule(dag: Any, serialized: Any) -> dict[str, Any]:
    assets = getattr(serialized.timetable, "asset_condition", None)
    return {
        "timetable": type(dag.timetable).__name__,
        "summary": serialized.timetable.summary,
        "assets": sorted(asset.name for _, asset in assets.iter_assets()) if assets is not None else [],
        "condition": type(assets).__name__ if assets is not None else None,
    }


def main() -> int:
    output = sys.argv[1]
    confs: dict[str, list[dict[str, Any]]] = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    started = time.perf_counter()
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.serialization.serialized_objects import DagSerialization

    imported = time.perf_counter()
    before = set(sys.modules)
    folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    bag = BundleDagBag(dag_folder=folder, bundle_path=folder, bundle_name="dags-folder")
    parsed = time.perf_counter()
    loaded = {name.split(".")[0] for name in set(sys.modules) - before}
    result: dict[str, Any] = {
        "airflow_import_s": imported - started,
        "dagbag_fill_s": parsed - imported,
        "file_parse_s": {stat.file: stat.duration.total_seconds() for stat in bag.dagbag_stats},
        "import_errors": {str(path): error for path, error in bag.import_errors.items()},
        "heavy_modules": sorted(loaded & set(HEAVY_MODULES)),
        "dags": {},
        "validation": {},
    }
    serialized = {dag_id: DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
                  for dag_id, dag in bag.dags.items()}
    for dag_id, dag in bag.dags.items():
        result["dags"][dag_id] = {
            "schedule": describe_schedule(dag, serialized[dag_id]),
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "tags": sorted(dag.tags),
            "owner": dag.owner,
            "doc_md": dag.doc_md,
            "params": {name: {**param.schema, "description": param.description}
                       for name, param in dag.params.items()},
            "param_defaults": {name: dag.params[name] for name in dag.params},
            "tasks": {task.task_id: describe_task(task) for task in dag.tasks},
        }
    for dag_id, run_confs in confs.items():
        outcomes = []
        for conf in run_confs:
            try:
                serialized[dag_id].params.deep_merge(conf).validate()
                outcomes.append(None)
            except Exception as exc:  # the API turns any of these into a 400
                outcomes.append(f"{type(exc).__name__}: {exc}")
        result["validation"][dag_id] = outcomes
    with open(output, "w") as out:
        json.dump(result, out, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
