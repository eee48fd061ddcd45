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
- no web UI and no console progress bar (a batch job on a shared machine; the bar is off from the JVM's
  launch, :data:`LOCAL_LAUNCH_DEFAULTS`);
- the parallel (throughput) garbage collector for the driver JVM (:data:`LOCAL_DRIVER_GC`), and its optimizing
  compiler kept for the code that runs per row (:data:`LOCAL_DRIVER_JIT`);
- with ``Settings.spark_class_archive`` set (``SESSIONREC_SPARK_CLASS_ARCHIVE``, off by default), a Java
  class-data-sharing archive of the classes the driver loaded: the first run writes it when its JVM exits
  (:func:`stop_session`), later runs map it instead of loading and verifying Spark's classes again. Each
  job and Spark version has its own file; after a Java upgrade the JVM warns and runs without it (delete
  the folder then);
- Spark's warehouse, Derby's home and Spark's temporary files under a scratch folder (``Settings.home``),
  never in the working directory.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    from sessionrec.config import Settings

logger = logging.getLogger(__name__)

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
}
# Set on the launched JVM's command line, not as a default afterwards: the pyspark-shell launcher turns the
# console progress bar on before this code sees the configuration. Being on the command line, it outranks
# spark-defaults.conf; PYSPARK_SUBMIT_ARGS, which comes after it, still turns the bar back on.
LOCAL_LAUNCH_DEFAULTS = {"spark.ui.showConsoleProgress": "false"}
DRIVER_MEMORY_KEY = "spark.driver.memory"
# Java's default collector on a server-class machine is G1, built for short pauses; a batch job whose driver
# runs every task on a few cores gets more of them for its work from the throughput collector.
LOCAL_DRIVER_GC = "-XX:+UseParallelGC"
# A local driver shares a few cores with the Python workers. With the JVM's default thresholds its optimizing
# compiler (C2) recompiles every method run some thousands of times, which in a nightly job is most of
# Spark's start-up and query-planning code, run once and done; that compiling takes cores from the scoring
# (measured by bench/score.py, profiled per thread). Higher thresholds leave such code to the quick compiler
# (C1) and keep C2 for the loops that run once per row or batch, which reach any of these counts early.
LOCAL_DRIVER_JIT = ("-XX:Tier4InvocationThreshold=100000", "-XX:Tier4MinInvocationThreshold=20000",
                    "-XX:Tier4CompileThreshold=300000", "-XX:Tier4BackEdgeThreshold=1000000")

# How long a JVM may take to write its class archive and exit before it is killed (and no archive kept).
ARCHIVE_WRITE_TIMEOUT_S = 300
# The class archive being written by this process's JVM at its exit, and where it goes once complete.
_archive_in_progress: tuple[Path, Path] | None = None


def build_session(app_name: str, master: str | None = None, scratch: Path | None = None,
                  driver_memory: str = "2g", class_archive: Path | None = None) -> SparkSession:
    """The session of a job: :data:`REQUIRED` always; the local defaults only when this call starts Spark.

    ``master`` None keeps whatever spark-submit configured (so ``--master`` on the command line wins), or
    Spark's local[*] when this process starts Spark itself; a value sets it. An already running session (a
    test's shared one) is returned with :data:`REQUIRED` applied. ``class_archive`` is the driver's
    class-data-sharing archive for a local JVM this call starts (stop the session with :func:`stop_session`
    so that a first run puts it in place).
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
    launch_settings = _launch_settings(scratch, starts_local, class_archive) if starts_spark else {}
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


def _launch_settings(scratch: Path | None, local: bool, class_archive: Path | None = None) -> dict[str, str]:
    """What the JVM this process starts needs from the beginning: the driver's Java options (UTC; for a
    local master, whose driver runs every task, :data:`LOCAL_DRIVER_GC`, :data:`LOCAL_DRIVER_JIT` and the
    class archive), the scratch folders and, for a local master, :data:`LOCAL_LAUNCH_DEFAULTS`."""
    driver_options = ["-Duser.timezone=UTC", *([LOCAL_DRIVER_GC, *LOCAL_DRIVER_JIT] if local else [])]
    if local and class_archive is not None:
        driver_options.append(_class_archive_option(Path(class_archive).resolve()))
    scratch_settings: dict[str, str] = {}
    if scratch is not None:
        scratch = Path(scratch).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        driver_options.append(f"-Dderby.system.home={scratch / 'derby'}")
        scratch_settings = {"spark.sql.warehouse.dir": str(scratch / "spark-warehouse"),
                            "spark.local.dir": str(scratch / "spark-local"),
                            "spark.executor.extraJavaOptions": "-Duser.timezone=UTC"}
    return {**(LOCAL_LAUNCH_DEFAULTS if local else {}), **scratch_settings,
            "spark.driver.extraJavaOptions": " ".join(driver_options)}


def _class_archive_option(archive: Path) -> str:
    """Map ``archive`` when it exists; else have the JVM write its classes at exit to a file of this
    process's own, which :func:`stop_session` renames to ``archive`` once the JVM is gone (so a reader
    never maps a half-written archive, and two first runs never write the same file)."""
    global _archive_in_progress
    if archive.exists():
        return f"-XX:SharedArchiveFile={archive}"
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f"{archive.name}.{os.getpid()}.partial")
    _archive_in_progress = (partial, archive)
    return f"-XX:ArchiveClassesAtExit={partial}"


def class_archive(settings: Settings, app_name: str) -> Path | None:
    """The class archive of job ``app_name`` and this Spark version in the settings' archive folder (a Spark
    upgrade starts a new one); None when archives are off."""
    import pyspark

    if not settings.spark_class_archive:
        return None
    return Path(settings.spark_class_archive) / f"{app_name}-spark-{pyspark.__version__}.jsa"


def stop_session(spark: SparkSession) -> None:
    """Stop ``spark``; when its JVM is writing a class archive, end the JVM, wait until the archive is
    written and put it in place. A later session in this process then starts a new JVM."""
    global _archive_in_progress
    from pyspark import SparkContext

    spark.stop()
    if _archive_in_progress is None or SparkContext._gateway is None:
        return
    partial, archive = _archive_in_progress
    _archive_in_progress = None
    jvm = SparkContext._gateway.proc
    jvm.stdin.close()  # the driver JVM exits when its Python side closes the pipe
    try:
        jvm.wait(timeout=ARCHIVE_WRITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        jvm.kill()
        jvm.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if jvm.returncode == 0 and partial.exists():
        partial.replace(archive)
        logger.info("class archive of the driver JVM written to %s", archive)
    else:
        partial.unlink(missing_ok=True)
        logger.warning("no class archive written to %s (the JVM ended with %s)", archive, jvm.returncode)


@contextmanager
def job_session(app_name: str, master: str | None, settings: Settings) -> Iterator[SparkSession]:
    """The session of a job's ``main``: scratch in the settings' work area, their driver memory.

    It is stopped at the end only if this call started it, so a caller's running session (a test's
    shared one) survives.
    """
    from pyspark.sql import SparkSession

    reusing = SparkSession.getActiveSession() is not None
    spark = build_session(app_name, master=master, scratch=settings.work_area.spark_scratch,
                          driver_memory=settings.spark_driver_memory,
                          class_archive=class_archive(settings, app_name))
    try:
        yield spark
    finally:
        if not reusing:
            stop_session(spark)
