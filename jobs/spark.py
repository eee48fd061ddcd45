"""The SparkSession the jobs run in: what their correctness needs, and defaults only for a local master they
start themselves.

Always set, whoever started Spark (:data:`REQUIRED`): UTC as the session time zone (landing-zone times
without a zone are UTC, days are UTC days), Parquet timestamps as UTC-adjusted TIMESTAMP_MICROS (Spark's
default, INT96, reads back without a zone in pyarrow; docs/CONTRACTS.md wants UTC timestamps) and Arrow
(scoring exchanges Arrow batches with the Python workers).

Everything else (shuffle partitions, adaptive execution, memory, executors) belongs to whoever runs the
job: ``spark-submit --conf`` / ``--driver-memory``, the Airflow connection's conf, the cluster's
spark-defaults.conf. A job started with spark-submit gets nothing else from here.

A job that starts its own JVM (``python -m jobs.<job>``, ``make run``, the tests) runs a local master, and
gets these defaults for every key nobody set (spark-defaults.conf, ``PYSPARK_SUBMIT_ARGS``):

- ``spark.driver.memory``: ``Settings.spark_driver_memory`` (``SESSIONREC_SPARK_DRIVER_MEMORY``, 2g);
- adaptive query execution on, partitions coalesced after a shuffle (:data:`LOCAL_DEFAULTS`), so a small
  local day does not run Spark's 200 shuffle partitions as 200 mostly empty tasks;
- no web UI and no console progress bar (a batch job on a shared machine);
- the parallel (throughput) garbage collector for the driver JVM (:data:`LOCAL_DRIVER_GC`);
- Spark's warehouse, Derby's home and Spark's temporary files under a scratch folder (``Settings.home``),
  never in the working directory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    from sessionrec.config import Settings

PARQUET_TIMESTAMP_TYPE_KEY = "spark.sql.parquet.outputTimestampType"
PARQUET_TIMESTAMP_TYPE = "TIMESTAMP_MICROS"
REQUIRED = {
    "spark.sql.session.timeZone": "UTC",
    PARQUET_TIMESTAMP_TYPE_KEY: PARQUET_TIMESTAMP_TYPE,
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
LOCAL_DEFAULTS = {
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}
DRIVER_MEMORY_KEY = "spark.driver.memory"
# Java's default collector on a server-class machine is G1, built for short pauses; a batch job whose driver
# runs every task on a few cores gets more of them for its work from the throughput collector.
LOCAL_DRIVER_GC = "-XX:+UseParallelGC"


def build_session(app_name: str, master: str | None = None, scratch: Path | None = None,
                  driver_memory: str = "2g") -> SparkSession:
    """The session of a job: :data:`REQUIRED` always; the local defaults only when this call starts Spark.

    ``master`` None keeps whatever spark-submit configured (so ``--master`` on the command line wins), or
    Spark's local[*] when this process starts Spark itself; a value sets it. An already running session (a
    test's shared one) is returned with :data:`REQUIRED` applied.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    active = SparkSession.getActiveSession()
    if active is not None:
        for key, value in REQUIRED.items():
            active.conf.set(key, value)
        return active
    starts_spark = SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ
    starts_local = starts_spark and (master is None or master.startswith("local"))
    if starts_local:
        # Local Python workers must run this interpreter (with pyarrow, torch and the project), not
        # whatever `python3` is first on PATH. Cluster runs set PYSPARK_PYTHON in their environment.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    launch_settings = _launch_settings(scratch, starts_local) if starts_spark else {}
    launch = {DRIVER_MEMORY_KEY: driver_memory, **launch_settings} if starts_spark else None
    conf = _configuration(app_name, master, launch)
    if starts_spark and conf.get("spark.master", "local[*]").startswith("local"):
        for key, value in {**LOCAL_DEFAULTS, **launch_settings}.items():
            conf.setIfMissing(key, value)
    session = SparkSession.builder.config(conf=conf).getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def _configuration(app_name: str, master: str | None, launch: dict[str, str] | None) -> SparkConf:
    """What Spark is configured with (spark-submit's or the launched JVM's properties) plus :data:`REQUIRED`,
    the app name unless spark-submit gave one, and ``master`` when one is given.

    The JVM is started (``launch``: the driver settings it needs at start) or, under spark-submit, reached
    first, so the SparkConf read afterwards holds what was configured outside this code. A value given in
    PYSPARK_SUBMIT_ARGS comes later on the JVM's command line than ``launch`` and wins.
    """
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized(conf=SparkConf(loadDefaults=False).setAll(launch.items()) if launch else None)
    conf = SparkConf()
    if launch is not None:  # the launched JVM calls itself pyspark-shell
        conf.setAppName(app_name)
    conf.setIfMissing("spark.app.name", app_name)
    if master:
        conf.setMaster(master)
    for key, value in REQUIRED.items():
        conf.set(key, value)
    return conf


def _launch_settings(scratch: Path | None, local: bool) -> dict[str, str]:
    """What the JVM this process starts needs from the beginning: the driver's Java options (UTC; for a
    local master, whose driver runs every task, :data:`LOCAL_DRIVER_GC`) and the scratch folders."""
    driver_options = ["-Duser.timezone=UTC", *([LOCAL_DRIVER_GC] if local else [])]
    scratch_settings: dict[str, str] = {}
    if scratch is not None:
        scratch = Path(scratch).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        driver_options.append(f"-Dderby.system.home={scratch / 'derby'}")
        scratch_settings = {"spark.sql.warehouse.dir": str(scratch / "spark-warehouse"),
                            "spark.local.dir": str(scratch / "spark-local"),
                            "spark.executor.extraJavaOptions": "-Duser.timezone=UTC"}
    return {**scratch_settings, "spark.driver.extraJavaOptions": " ".join(driver_options)}


@contextmanager
def job_session(app_name: str, master: str | None, settings: Settings) -> Iterator[SparkSession]:
    """The session of a job's ``main``: scratch in the settings' work area, their driver memory.

    It is stopped at the end only if this call started it, so a caller's running session (a test's
    shared one) survives.
    """
    from pyspark.sql import SparkSession

    reusing = SparkSession.getActiveSession() is not None
    spark = build_session(app_name, master=master, scratch=settings.work_area.spark_scratch,
                          driver_memory=settings.spark_driver_memory)
    try:
        yield spark
    finally:
        if not reusing:
            spark.stop()
