"""A real Spark standalone cluster for the tests (pytest plugin, ``-p tests.spark_cluster``).

``spark_cluster`` starts, once per test session, a master and two workers from the installed pyspark
(its ``bin/spark-class``; the pip package has no ``sbin/`` scripts), all on 127.0.0.1 with ports found
free at run time, and waits until the master's JSON status lists both workers alive. Every daemon runs
in a process group of its own and is stopped by its PID at the end, also when the tests fail.

Each worker offers one core and a small memory, so a job's two executors run on different workers.
The workers' environment is what a cluster node would have: this interpreter as ``PYSPARK_PYTHON`` and
the project on ``PYTHONPATH`` (the executors' Python workers import ``jobs`` and ``model``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from sessionrec.config import PROJECT_ROOT
from tests.net import free_port, log_tail, stop_process_group

WORKERS = 2
WORKER_CORES = 1
WORKER_MEMORY = "1g"
EXECUTOR_MEMORY = "512m"
# The daemons only schedule; their default heap (1 GB each) would be wasted on this machine.
DAEMON_MEMORY = "256m"
START_TIMEOUT_S = 120


def spark_home() -> Path:
    """The installed pyspark package folder: it holds ``bin/`` and ``jars/``, which is all SPARK_HOME needs."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass(frozen=True)
class SparkCluster:
    """A running standalone cluster: where to submit, where its status is, and its daemons' logs."""

    master_url: str
    web_url: str
    home: Path
    root: Path

    def status(self) -> dict:
        """The master's state as its web UI serves it at ``/json/``."""
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=5) as response:
            return json.load(response)

    def worker_states(self) -> list[dict]:
        """Each worker's own state (its executors, running and finished) from its web UI's ``/json/``."""
        states = []
        for worker in self.status()["workers"]:
            with urllib.request.urlopen(f"{worker['webuiaddress']}/json/", timeout=5) as response:
                states.append(json.load(response))
        return states

    def submit_command(self, application: Path, args: Sequence[str]) -> list[str]:
        """``spark-submit --master spark://...`` of a job file, with executors that fit one worker each."""
        return [str(self.home / "bin" / "spark-submit"), "--master", self.master_url,
                "--conf", f"spark.executor.memory={EXECUTOR_MEMORY}",
                "--conf", f"spark.executor.cores={WORKER_CORES}",
                "--conf", "spark.ui.showConsoleProgress=false",
                str(application), *args]

    def submit(self, application: Path, args: Sequence[str], env: Mapping[str, str],
               log: Path) -> float:
        """Run ``spark-submit`` of ``application`` on this cluster; its output goes to ``log``.

        Returns the seconds it took; raises with the end of the log if it failed.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with log.open("w") as out:
            result = subprocess.run(self.submit_command(application, args), env=dict(env), cwd=self.root,
                                    stdout=out, stderr=subprocess.STDOUT, check=False, timeout=600)
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise AssertionError(f"spark-submit {application.name} {' '.join(args)} on {self.master_url} "
                                 f"exited with {result.returncode}:\n{log_tail(log)}")
        return elapsed


def daemon_env(root: Path) -> dict[str, str]:
    """Environment of the master and workers: loopback only, an empty conf folder, scratch under ``root``."""
    conf = root / "conf"
    conf.mkdir(exist_ok=True)
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_CONF_DIR": str(conf),
           "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOCAL_DIRS": str(root / "local"),
           "SPARK_DAEMON_MEMORY": DAEMON_MEMORY, "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("PYSPARK_DRIVER_PYTHON", None)
    return env


def start_daemon(name: str, arguments: list[str], env: Mapping[str, str], root: Path) -> subprocess.Popen:
    """``spark-class <arguments>`` in a process group of its own, its output in ``root/<name>.log``."""
    with (root / f"{name}.log").open("w") as out:
        return subprocess.Popen([str(spark_home() / "bin" / "spark-class"), *arguments], env=dict(env),
                                cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_workers(cluster: SparkCluster, daemons: dict[str, subprocess.Popen]) -> None:
    """Until the master lists every worker ALIVE; raises with the daemons' logs if one dies or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    alive = 0
    while time.monotonic() < deadline:
        for name, process in daemons.items():
            if process.poll() is not None:
                raise RuntimeError(f"Spark {name} exited with {process.returncode}:\n"
                                   f"{log_tail(cluster.root / f'{name}.log')}")
        try:
            alive = sum(worker["state"] == "ALIVE" for worker in cluster.status()["workers"])
        except OSError:
            alive = 0
        if alive == WORKERS:
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {name}\n{log_tail(cluster.root / f'{name}.log', 20)}" for name in daemons)
    raise RuntimeError(f"{alive} of {WORKERS} Spark workers registered with {cluster.master_url} after "
                       f"{START_TIMEOUT_S} s:\n{logs}")


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """A standalone master and two workers on 127.0.0.1 for the whole test session."""
    root = tmp_path_factory.mktemp("spark-cluster")
    env = daemon_env(root)
    port, web_port = free_port(), free_port()
    cluster = SparkCluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{web_port}", spark_home(), root)
    daemons: dict[str, subprocess.Popen] = {}
    try:
        daemons["master"] = start_daemon("master", [
            "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
            "--webui-port", str(web_port)], env, root)
        for index in range(1, WORKERS + 1):
            work_dir = root / f"worker-{index}"
            work_dir.mkdir()
            daemons[f"worker-{index}"] = start_daemon(f"worker-{index}", [
                "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(free_port()),
                "--webui-port", str(free_port()), "--cores", str(WORKER_CORES), "--memory", WORKER_MEMORY,
                "--work-dir", str(work_dir), cluster.master_url], env, root)
        wait_for_workers(cluster, daemons)
        yield cluster
    finally:
        for name in sorted(daemons, key=lambda n: n == "master"):  # workers first, then the master
            stop_process_group(daemons[name])  # a worker's group holds its executors too
