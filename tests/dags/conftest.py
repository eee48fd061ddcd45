"""Fixtures of the DAG tests: settings (so an Airflow home) of their own, and the pipeline run once.

Airflow reads its configuration once, when it is imported, so these tests never import it in the pytest
process: every Airflow step runs as a subprocess with the environment of :mod:`sessionrec.airflow_env`.
The helper package of the DAG folder (``dag_support``) has modules free of Airflow imports (days,
checks, lake), which the unit tests import directly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from dag_test_support import PipelineRun, run_pipeline

from sessionrec import airflow_env
from sessionrec.config import Settings, load_settings

if str(airflow_env.DAGS_FOLDER) not in sys.path:
    sys.path.append(str(airflow_env.DAGS_FOLDER))

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests of this folder last: they run the pipeline again on the state the others check."""
    def runs_again(item: pytest.Item) -> bool:
        return item.path.is_relative_to(HERE) and item.get_closest_marker("slow") is not None

    items.sort(key=runs_again)


@pytest.fixture(scope="session")
def dag_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings (and so an Airflow home, a lake, MLflow and a warehouse) of their own for these tests."""
    return load_settings(env={}, home=tmp_path_factory.mktemp("dags") / "var")


@pytest.fixture(scope="session")
def pipeline_run(dag_settings: Settings, spark: object) -> PipelineRun:
    """sessionize -> train -> score through Airflow for the last day of a tiny clickstream, once."""
    return run_pipeline(dag_settings, spark)
