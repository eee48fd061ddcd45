"""What the DAG tests share: the tiny pipeline they run once, and parsing the DAG folder cold."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sessionrec import airflow_env
from sessionrec.config import Settings
from sessionrec.run import run_dag

DESCRIBE_SCRIPT = Path(__file__).with_name("describe_dags.py")

DAY = date(2026, 10, 14)  # not "yesterday" on any day the tests run, so a wrong fallback shows
DAYS = 3
TOP_K = 5
# A few hundred sessions a day, and a network small enough to train in seconds.
EVENTS = 6000
ITEMS = 300
TRAINING_CONF = {"training_days": DAYS, "epochs": 2, "hidden_size": 32, "batch_size": 16, "n_sample": 64,
                 "force_promote": True}
# The lake's tuned preset of GRU4Rec: the run's form fills in some fields; the others (learning rate,
# dropout) must come from here, not from the form's defaults.
TUNED_PARAMS = {"learning_rate": 0.11, "dropout_hidden": 0.1, "momentum": 0.1, "n_sample": 2048}
TUNED_STUDY = "gru4rec-dag-test"


@dataclass(frozen=True)
class PipelineRun:
    settings: Settings
    day: date
    logs: dict[str, Path]


def sessionize_in_process(spark: object, settings: Settings, day: date) -> None:
    from jobs.sessionize import CrawlerRules, sessionize

    sessionize(spark, settings.raw, settings.lake, day, gap_minutes=settings.gap_minutes,
               max_quarantine_share=settings.max_quarantine_share, crawlers=CrawlerRules.from_settings(settings))


def run_pipeline(settings: Settings, spark: object) -> PipelineRun:
    """The three DAGs with ``airflow dags test`` for the last day of a tiny generated clickstream.

    Real spark-submit, MLflow store and registry, DuckDB warehouse, in an Airflow home of their own, and a
    tuned preset of GRU4Rec in the lake (that the form's filled-in fields override, field by field). The
    earlier days of the training window are sessionized in-process with the shared Spark session (their
    DAG runs would repeat what the last day's run checks).
    """
    from jobs.generate import generate_clickstream, write_landing_zone
    from training.tuned import TunedPreset, store_tuned

    write_landing_zone(generate_clickstream(DAY, DAYS, EVENTS, n_items=ITEMS, seed=7), settings.raw)
    store_tuned(settings, TunedPreset(
        family="gru4rec", params=TUNED_PARAMS, search_params={}, metric="recall@20", value=0.3, valid_metrics={},
        study=TUNED_STUDY, trial=4, training_dir="elsewhere", data_digest="0", mlflow_run_id=None,
        created_at="2026-10-13T00:00:00+00:00"))
    for offset in range(DAYS - 1, 0, -1):
        sessionize_in_process(spark, settings, DAY - timedelta(days=offset))
    env = airflow_env.airflow_env(settings, retry_delay_s=1)
    airflow_env.prepare(settings, env)
    log_dir = settings.home / "dag-test-logs"
    ds = DAY.isoformat()
    logs = {
        "clickstream_sessionize": run_dag("clickstream_sessionize", {"ds": ds}, env, log_dir),
        "gru4rec_train": run_dag("gru4rec_train", {"ds": ds, **TRAINING_CONF}, env, log_dir),
        "gru4rec_score": run_dag("gru4rec_score", {"ds": ds, "top_k": TOP_K}, env, log_dir),
    }
    return PipelineRun(settings, DAY, logs)


def describe_dags(settings: Settings, confs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """tests/dags/describe_dags.py in a fresh interpreter (cold imports) with the settings' Airflow env."""
    output = settings.home / "describe.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, str(DESCRIBE_SCRIPT), str(output), json.dumps(confs)],
                            env=airflow_env.airflow_env(settings), capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(output.read_text())
