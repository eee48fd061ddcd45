"""The pieces of ``make run`` / ``make ui`` that need no Airflow process: the isolated environment, the
bootstrap objects, which days a run works on, the guard against a second scheduler and the choice of
ports."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from sessionrec import airflow_env
from sessionrec.config import Settings, load_settings
from sessionrec.run import Timings, landing_days, plan_days
from sessionrec.ui import choose_ports, free_ports, port_free


def test_settings_travel_to_subprocesses_unchanged(settings: Settings) -> None:
    tuned = settings.replace(top_k=7, gpu_pool="a100", max_quarantine_share=0.2)
    assert load_settings(env=airflow_env.settings_env(tuned)) == tuned


def test_airflow_env_isolates_home_database_and_dag_folder(settings: Settings) -> None:
    env = airflow_env.airflow_env(settings, api_port=18080, base={"AIRFLOW_HOME": "/elsewhere", "PATH": "/bin",
                                                                   "AIRFLOW__CORE__PARALLELISM": "8"})
    home = settings.home / "airflow"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(airflow_env.DAGS_FOLDER)
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:18080"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "8"  # the user's own Airflow settings still apply
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # spark-submit, airflow
    assert env["SESSIONREC_HOME"] == str(settings.home)
    assert "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY" not in env
    quick = airflow_env.airflow_env(settings, retry_delay_s=10, base={})
    assert quick["AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY"] == "10"
    assert airflow_env.airflow_env(settings, base={})["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT" not in quick  # `dags test` starts no log server
    served = airflow_env.airflow_env(settings, base={}, log_server_ports=(41001, 41002))
    assert served["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "41001"
    assert served["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "41002"


def test_bootstrap_objects_follow_the_settings(settings: Settings) -> None:
    connections, pools = airflow_env.bootstrap_objects(settings.replace(spark_master="spark://m:7077",
                                                                        gpu_pool="a100"))
    assert connections["spark_default"]["host"] == "spark://m:7077"
    assert connections["fs_default"]["conn_type"] == "fs"
    assert pools == {"a100": {"slots": 1, "description": pools["a100"]["description"], "include_deferred": False}}


def land(settings: Settings, day: str, name: str) -> None:
    folder = Path(settings.layout.raw_day(day))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("x")


def test_landing_days_ignore_folders_with_only_hidden_files(settings: Settings) -> None:
    assert landing_days(settings) == []
    land(settings, "2026-11-20", "events.parquet")
    land(settings, "2026-11-18", "events.csv")
    land(settings, "2026-11-21", ".events.parquet.1234.tmp")  # still being written
    assert landing_days(settings) == [date(2026, 11, 18), date(2026, 11, 20)]


def test_plan_sessionizes_only_unsessionized_earlier_days_of_the_window(settings: Settings) -> None:
    days = [date(2026, 11, d) for d in (15, 17, 18, 19, 20, 21)]
    stats = Path(settings.layout.sessionize_stats(date(2026, 11, 18)))
    stats.parent.mkdir(parents=True)
    stats.write_text("{}")
    plan = plan_days(settings, days, window=5)
    assert plan.latest == date(2026, 11, 21)
    assert plan.earlier == [date(2026, 11, 17), date(2026, 11, 19), date(2026, 11, 20)]


def test_a_live_services_pid_blocks_a_second_runner_and_a_dead_one_does_not(settings: Settings) -> None:
    home = airflow_env.airflow_home(settings)
    home.mkdir(parents=True)
    pid_file = home / airflow_env.SERVICES_PID_FILE
    assert airflow_env.services_running(settings) is None
    pid_file.write_text(str(os.getpid()))
    assert airflow_env.services_running(settings) == os.getpid()
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    pid_file.write_text(finished.stdout.strip())
    assert airflow_env.services_running(settings) is None


def test_timings_add_up_stages_in_order() -> None:
    timings = Timings()
    for name in ("b", "a", "b"):
        with timings.stage(name):
            pass
    assert list(timings.stages) == ["b", "a"]
    assert timings.table().splitlines()[-1].split()[0] == "total"


@pytest.fixture
def listening() -> Iterator[int]:
    """A port of 127.0.0.1 that a server listens on for the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_a_busy_preferred_port_is_replaced_by_a_free_one(listening: int) -> None:
    assert not port_free(listening)
    airflow, logs, mlflow = choose_ports([(None, listening), (None, None), (None, listening)])
    assert len({airflow, logs, mlflow, listening}) == 4
    assert all(port_free(port) for port in (airflow, logs, mlflow))


def test_a_free_preferred_port_is_kept_and_a_busy_requested_port_is_refused(listening: int) -> None:
    (free,) = free_ports(1)
    assert choose_ports([(None, free), (None, None)])[0] == free
    assert choose_ports([(free, None)]) == [free]
    with pytest.raises(RuntimeError, match=f"port {listening} on 127.0.0.1 is in use"):
        choose_ports([(listening, None)])
    with pytest.raises(RuntimeError, match=f"port {free} on 127.0.0.1 is in use"):
        choose_ports([(free, None), (free, None)])


def test_make_run_completes_the_nightly_pipeline_on_the_embedded_defaults(tmp_path: Path) -> None:
    """The README's first command (``make run`` is ``python -m sessionrec.run``) in a fresh work area: it
    generates the demo clickstream, runs the three DAGs and ends with a champion serving every session.
    Only a run on the demo data catches a default that lets its own pipeline refuse every model."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SESSIONREC_", "MLFLOW_", "AIRFLOW"))}
    env["SESSIONREC_HOME"] = str(tmp_path / "var")
    result = subprocess.run([sys.executable, "-m", "sessionrec.run"], cwd=Path(__file__).resolve().parents[2],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout
    assert "Gate on version 1: promoted" in summary and "Champion: gru4rec version 1" in summary
    sessions = re.search(r"^Day \S+: (\d+) sessions", summary, re.MULTILINE)
    rows = re.search(r": (\d+) rows in session_recommendations", summary)
    assert sessions and rows, summary
    assert int(sessions[1]) > 0 and int(rows[1]) == 20 * int(sessions[1])
