"""The project's Spark jobs as Airflow tasks: one place for how they are submitted."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from sessionrec.config import PROJECT_ROOT, Settings

RUN_DAY = "{{ ti.xcom_pull(task_ids='resolve_day') }}"


def spark_job(settings: Settings, task_id: str, job: str, task_display_name: str,
              application_args: list[str]) -> SparkSubmitOperator:
    """``jobs/<job>.py`` submitted on the ``spark_default`` connection, named after the job and the run's day."""
    return SparkSubmitOperator(
        task_id=task_id,
        task_display_name=task_display_name,
        conn_id="spark_default",
        application=str(PROJECT_ROOT / "jobs" / f"{job}.py"),
        name=f"{job.replace('_', '-')}-{RUN_DAY}",
        application_args=application_args,
        driver_memory=settings.spark_driver_memory,
        conf={"spark.ui.showConsoleProgress": "false", "spark.log.level": "WARN"},
        # The job inherits the worker's environment (SESSIONREC_* settings, PYSPARK_PYTHON) and imports
        # the project's modules.
        env_vars={"PYTHONPATH": str(PROJECT_ROOT)},
        execution_timeout=timedelta(hours=2),
    )
