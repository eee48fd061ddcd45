"""The jobs' SparkSession (jobs/spark.py): correctness settings always, nothing else over what the user set.

Each case starts Spark in a fresh process (the test session's own JVM is already configured), about 10 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyspark

PROJECT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
from jobs.spark import build_session

spark = build_session("probe", master=None, scratch=sys.argv[1], driver_memory="900m")
conf = spark.sparkContext.getConf()
keys = ["spark.sql.session.timeZone", "spark.sql.parquet.outputTimestampType",
        "spark.sql.execution.arrow.pyspark.enabled", "spark.sql.shuffle.partitions", "spark.sql.adaptive.enabled",
        "spark.sql.adaptive.coalescePartitions.enabled", "spark.ui.showConsoleProgress", "spark.ui.enabled",
        "spark.sql.warehouse.dir", "spark.driver.memory", "spark.app.name", "spark.master"]
management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
collectors = management.getGarbageCollectorMXBeans()
hotspot = management.getPlatformMXBean(spark.sparkContext._jvm.java.lang.Class.forName(
    "com.sun.management.HotSpotDiagnosticMXBean"))
found = {key: conf.get(key, spark.conf.get(key, None)) for key in keys}
print("PROBE " + json.dumps({**found, "gc": sorted(bean.getName() for bean in collectors),
                             "c2_invocations": hotspot.getVMOption("Tier4InvocationThreshold").getValue()}))
spark.stop()
"""


def probe(tmp_path: Path, command: list[str], env: dict[str, str]) -> dict[str, str]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    scratch = tmp_path / "scratch"
    environment = {**os.environ, "PYTHONPATH": str(PROJECT), "PYSPARK_PYTHON": sys.executable, **env}
    environment.pop("PYSPARK_GATEWAY_PORT", None)
    result = subprocess.run([*command, str(script), str(scratch)], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    return json.loads(line.removeprefix("PROBE "))


def test_spark_submit_settings_are_kept_and_only_correctness_is_set(tmp_path: Path) -> None:
    spark_submit = Path(sys.executable).parent / "spark-submit"
    conf = probe(tmp_path, [str(spark_submit), "--master", "local[1]", "--name", "submitted", "--driver-memory",
                            "700m", "--conf", "spark.sql.shuffle.partitions=3", "--conf",
                            "spark.sql.adaptive.enabled=false", "--conf", "spark.ui.enabled=false",
                            "--conf", "spark.sql.session.timeZone=America/New_York"], {})
    assert conf["spark.sql.shuffle.partitions"] == "3"
    assert conf["spark.sql.adaptive.enabled"] == "false"
    assert conf["spark.driver.memory"] == "700m"
    assert (conf["spark.app.name"], conf["spark.master"]) == ("submitted", "local[1]")
    # Correctness is not negotiable: the lake's days and timestamps are UTC.
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.sql.parquet.outputTimestampType"] == "TIMESTAMP_MICROS"
    assert conf["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    # No local defaults under spark-submit: the scratch folder is the job's only when it starts Spark.
    assert not (conf["spark.sql.warehouse.dir"] or "").startswith(str(tmp_path / "scratch"))
    assert not any(name.startswith("PS ") for name in conf["gc"])  # the JVM's own collector, not ours
    assert conf["c2_invocations"] == "5000"  # and its own compiler thresholds


def test_a_job_starting_its_own_local_master_gets_the_local_defaults_under_the_users(tmp_path: Path) -> None:
    user = "--conf spark.sql.shuffle.partitions=5 --conf spark.ui.showConsoleProgress=true pyspark-shell"
    conf = probe(tmp_path, [sys.executable], {"PYSPARK_SUBMIT_ARGS": user})
    assert conf["spark.sql.shuffle.partitions"] == "5"  # the user's
    assert conf["spark.ui.showConsoleProgress"] == "true"  # the user's
    assert conf["spark.sql.adaptive.enabled"] == conf["spark.sql.adaptive.coalescePartitions.enabled"] == "true"
    assert conf["spark.ui.enabled"] == "false"
    assert conf["spark.driver.memory"] == "900m"  # the settings' (SESSIONREC_SPARK_DRIVER_MEMORY)
    assert conf["spark.sql.warehouse.dir"].endswith(str(tmp_path / "scratch" / "spark-warehouse"))
    assert (conf["spark.app.name"], conf["spark.master"]) == ("probe", "local[*]")
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["gc"] == ["PS MarkSweep", "PS Scavenge"]  # the throughput collector (jobs.spark.LOCAL_DRIVER_GC)
    assert conf["c2_invocations"] == "100000"  # C2 for per-row code only (jobs.spark.LOCAL_DRIVER_JIT)


def test_a_local_job_draws_no_console_progress_bar(tmp_path: Path) -> None:
    # pyspark-shell turns the bar on at launch; a batch job's log must not fill with it.
    conf = probe(tmp_path, [sys.executable], {"PYSPARK_SUBMIT_ARGS": "pyspark-shell"})
    assert conf["spark.ui.showConsoleProgress"] == "false"


ARCHIVE_PROBE = """
import json
from pathlib import Path
from jobs.spark import job_session
from sessionrec.config import load_settings

def mapped_archives(spark):
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return sorted({line.split()[-1] for line in maps if line.endswith(".jsa")})

runs = []
for _ in range(2):
    with job_session("probe", "local[1]", load_settings()) as spark:
        runs.append({"rows": spark.range(1000).count(), "archives": mapped_archives(spark)})
print("PROBE " + json.dumps(runs))
"""


def test_the_first_local_run_writes_the_class_archive_and_the_next_maps_it(tmp_path: Path) -> None:
    script = tmp_path / "archive_probe.py"
    script.write_text(ARCHIVE_PROBE)
    archives = tmp_path / "archives"
    environment = {**os.environ, "PYTHONPATH": str(PROJECT), "PYSPARK_PYTHON": sys.executable,
                   "SESSIONREC_HOME": str(tmp_path / "home"), "SESSIONREC_SPARK_CLASS_ARCHIVE": str(archives)}
    environment.pop("PYSPARK_GATEWAY_PORT", None)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    first, second = json.loads(line.removeprefix("PROBE "))
    archive = str(archives / f"probe-spark-{pyspark.__version__}.jsa")
    # The first session loads its classes and writes them when its JVM ends; the second (a new JVM in the
    # same process) maps that archive, and nothing half-written is left beside it.
    assert first["rows"] == second["rows"] == 1000
    assert archive not in first["archives"]
    assert archive in second["archives"]
    assert [str(path) for path in archives.iterdir()] == [archive]
