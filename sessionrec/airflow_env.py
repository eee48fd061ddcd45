"""An isolated, embedded Airflow for ``make run``, ``make ui`` and the DAG tests.

Everything Airflow keeps (SQLite metadata database, logs, generated admin password) lives under
``<Settings.home>/airflow``, so the project never touches ``~/airflow`` and tests get their own home by
giving Settings a temporary ``home``. Airflow is only ever started as a subprocess with the environment
built here: importing Airflow reads its configuration once, at import time.

:func:`airflow_env` builds that environment; :func:`prepare` creates or migrates the database and, the
first time, the connections (``spark_default``, ``fs_default``) and the GPU pool the DAGs use.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from sessionrec.config import ENV_PREFIX, PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

DAGS_FOLDER = PROJECT_ROOT / "dags"
DEFAULT_API_PORT = 8080
# One LocalExecutor worker process per slot; Airflow's default of 32 swamps a 2-core machine.
PARALLELISM = 4
GPU_POOL_SLOTS = 1
# Written by `make ui` while its scheduler runs on this home (a second runner would race it for runs).
SERVICES_PID_FILE = "services.pid"


def airflow_home(settings: Settings) -> Path:
    """Airflow's home for these settings: ``<home>/airflow``."""
    return settings.home / "airflow"


def services_running(settings: Settings) -> int | None:
    """The pid of the live process that started Airflow services on this home (``make ui``), if any."""
    pid_file = airflow_home(settings) / SERVICES_PID_FILE
    if not pid_file.is_file():
        return None
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def settings_env(settings: Settings) -> dict[str, str]:
    """``SESSIONREC_*`` variables that make a child process load exactly these settings."""
    return {f"{ENV_PREFIX}{f.name.upper()}": str(getattr(settings, f.name)) for f in fields(Settings)}


def airflow_env(settings: Settings, api_port: int = DEFAULT_API_PORT, retry_delay_s: int | None = None,
                base: Mapping[str, str] | None = None,
                log_server_ports: tuple[int, int] | None = None) -> dict[str, str]:
    """The environment for every Airflow subprocess (CLI, ``dags test``, ``standalone``).

    Starts from ``base`` (default: this process's environment) so a user's own ``AIRFLOW__*`` settings
    still apply, except those that would break isolation (home, database, DAG folder), which are set here.
    ``retry_delay_s`` replaces Airflow's default wait of 300 s before a failed task is retried (the DAGs
    leave the delay to the deployment); interactive runs use a short one. ``log_server_ports`` (worker,
    triggerer) replace the log servers' fixed defaults (8793, 8794) for services started from here, so
    they never collide with another Airflow on the same machine.
    """
    env = dict(os.environ if base is None else base)
    home = airflow_home(settings)
    venv_bin = str(Path(sys.executable).parent)
    env.update(settings_env(settings))
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__BASE_URL": f"http://localhost:{api_port}",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        # Where Airflow's own Python lives is where spark-submit and the jobs' interpreter live.
        "PATH": os.pathsep.join([venv_bin, env.get("PATH", "")]),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": env.get("SPARK_LOCAL_IP", "127.0.0.1"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    })
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(PARALLELISM))
    if retry_delay_s is not None:
        env["AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY"] = str(retry_delay_s)
    if log_server_ports is not None:
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(log_server_ports[0])
        env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(log_server_ports[1])
    return env


def airflow_command(args: Sequence[str]) -> list[str]:
    """The command line running the Airflow CLI of this interpreter's environment."""
    return [sys.executable, "-m", "airflow", *args]


def run_airflow(args: Sequence[str], env: Mapping[str, str], check: bool = True,
                capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one Airflow CLI command in the Airflow home (stray files of Spark or Derby land there, not in the
    repository); on failure raise with the command and the end of its output."""
    command = airflow_command(args)
    result = subprocess.run(command, env=dict(env), cwd=env["AIRFLOW_HOME"], text=True,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.STDOUT if capture else None, check=False)
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout or "").splitlines()[-40:])
        raise RuntimeError(f"`airflow {' '.join(args)}` exited with {result.returncode}\n{tail}")
    return result


def bootstrap_objects(settings: Settings) -> tuple[dict[str, object], dict[str, object]]:
    """The connections and pools an embedded Airflow needs, in ``airflow ... import`` file format."""
    connections = {
        # A Spark connection whose host is the master URL: local[*] here, spark://, yarn or k8s://
        # in production (edit it in the UI or point the secrets backend at another one).
        "spark_default": {"conn_type": "spark", "host": settings.spark_master, "extra": "{}"},
        # Paths in the file sensor are absolute, so the base path is empty.
        "fs_default": {"conn_type": "fs", "extra": "{}"},
    }
    pools = {
        settings.gpu_pool: {
            "slots": GPU_POOL_SLOTS,
            "description": "GPU training slots: one training run per GPU at a time",
            "include_deferred": False,
        },
    }
    return connections, pools


def prepare(settings: Settings, env: Mapping[str, str]) -> Path:
    """Create or migrate the metadata database; on first use add connections and pools. Idempotent.

    A marker file records the Airflow version the database was prepared with, so reruns skip the
    migration (about 9 s) until Airflow is upgraded. Connections and pools are added only when the
    database is new, so changes made later in the UI (another Spark master, more GPU slots) survive.
    """
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    marker = home / "prepared-for-airflow"
    version = importlib.metadata.version("apache-airflow-core")
    database = home / "airflow.db"
    prepared_for = marker.read_text().strip() if marker.exists() and database.exists() else None
    if prepared_for == version:
        return home
    log.info("Airflow home %s: %s the metadata database for Airflow %s", home,
             "creating" if prepared_for is None else "migrating", version)
    run_airflow(["db", "migrate"], env)
    if prepared_for is None:
        _add_connections_and_pools(settings, env, home)
    marker.write_text(version)
    return home


def _add_connections_and_pools(settings: Settings, env: Mapping[str, str], home: Path) -> None:
    connections, pools = bootstrap_objects(settings)
    with tempfile.TemporaryDirectory(dir=home) as scratch:
        connections_file = Path(scratch) / "connections.json"
        pools_file = Path(scratch) / "pools.json"
        connections_file.write_text(json.dumps(connections))
        pools_file.write_text(json.dumps(pools))
        run_airflow(["connections", "import", str(connections_file)], env)
        run_airflow(["pools", "import", str(pools_file)], env)
    log.info("added connections %s and pool %r (%d slot)", sorted(connections), settings.gpu_pool,
             GPU_POOL_SLOTS)
