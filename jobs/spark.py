"""Building the SparkSession the jobs run in, with the settings that keep local runs quiet and contained."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from sessionrec.config import Settings

# Parquet timestamps as UTC-adjusted INT64 microseconds: Spark's default, INT96, reads back without a zone
# in pyarrow (docs/CONTRACTS.md wants UTC timestamps).
PARQUET_TIMESTAMP_TYPE_KEY = "spark.sql.parquet.outputTimestampType"
PARQUET_TIMESTAMP_TYPE = "TIMESTAMP_MICROS"


def build_session(app_name: str, master: str | None = None, scratch: Path | None = None,
                  driver_memory: str = "2g") -> SparkSession:
    """A session in UTC with Derby, warehouse and temp files under ``scratch`` (never the working dir).

    Parquet timestamps are written as TIMESTAMP_MICROS for every job, so no writer has to switch it.

    ``master`` None keeps whatever spark-submit configured (so ``--master`` on the command line wins);
    a value sets it, which is what ``python -m jobs.<job>`` uses.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if master is None or master.startswith("local"):
        # Local Python workers must run this interpreter (with pyarrow, torch and the project), not
        # whatever `python3` is first on PATH. Cluster runs set PYSPARK_PYTHON in their environment.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    builder = (
        builder.config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config(PARQUET_TIMESTAMP_TYPE_KEY, PARQUET_TIMESTAMP_TYPE)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    if scratch is not None:
        scratch = Path(scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        builder = (
            builder.config("spark.sql.warehouse.dir", str(scratch / "spark-warehouse"))
            .config("spark.local.dir", str(scratch / "spark-local"))
            .config("spark.driver.extraJavaOptions",
                    f"-Duser.timezone=UTC -Dderby.system.home={scratch / 'derby'}")
        )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


@contextmanager
def job_session(app_name: str, master: str | None, settings: Settings) -> Iterator[SparkSession]:
    """The session of a job's ``main``: scratch under the settings' home, their driver memory.

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
