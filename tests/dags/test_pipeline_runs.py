"""The three DAGs run end to end with ``airflow dags test`` (``DAG.test()``) on a tiny generated clickstream:
real spark-submit, real MLflow store and registry, real DuckDB warehouse, in an Airflow home of their own.

The ``pipeline_run`` fixture (conftest.py) runs them once; these tests check what each left behind.
"""

from __future__ import annotations

import json
from pathlib import Path

from dag_test_support import TOP_K, PipelineRun


def task_log_lines(log: Path, marker: str) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if marker in line]


def test_sessionize_dag_writes_and_checks_the_day(pipeline_run: PipelineRun) -> None:
    settings, ds = pipeline_run.settings, pipeline_run.day.isoformat()
    stats = json.loads(Path(settings.layout.sessionize_stats(ds)).read_text())
    assert stats["sessions"] > 100 and stats["rows_read"] > stats["rows_quarantined"]
    assert any(Path(settings.layout.sessions(ds)).glob("*.parquet"))
    log = pipeline_run.logs["clickstream_sessionize"]
    assert task_log_lines(log, f"processes the UTC day {ds}")
    for task in ("resolve_day", "wait_for_landing_zone", "sessionize", "check_stats"):
        assert task_log_lines(log, f"end task task_id={task}"), task


def test_train_dag_logs_registers_and_promotes_a_model(pipeline_run: PipelineRun) -> None:
    from lifecycle.tracking import connect

    settings, ds = pipeline_run.settings, pipeline_run.day.isoformat()
    assert Path(settings.layout.training_items(ds)).is_file()
    client = connect(settings)
    experiment = client.get_experiment_by_name(settings.model_name)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.logical_date = '{ds}'")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert 0.0 <= metrics["test_recall_20"] <= 1.0 and "baseline_pop_recall_20" in metrics
    assert runs[0].data.params  # the hyperparameters the Params chose are recorded
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert champion.run_id == runs[0].info.run_id
    assert champion.tags["gate_decision"] == "forced"


def test_score_dag_fills_the_warehouse_partition(pipeline_run: PipelineRun) -> None:
    from jobs.warehouse import connect

    settings, day = pipeline_run.settings, pipeline_run.day
    record = json.loads(Path(settings.layout.score_stats(day)).read_text())
    assert record["top_k"] == TOP_K and record["model_version"] == "1"
    with connect(settings.warehouse_url) as warehouse:
        partition = warehouse.read_partition(day)
    assert partition.num_rows == record["sessions"] * TOP_K > 0
    assert set(partition.column("rank").to_pylist()) == set(range(1, TOP_K + 1))
    assert task_log_lines(pipeline_run.logs["gru4rec_score"], "end task task_id=check_partition")
