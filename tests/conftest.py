"""Shared fixtures: one local SparkSession for the whole test session, and isolated settings per test."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionrec.config import Settings, load_settings

pytest_plugins = ["tests.postgres", "tests.spark_cluster"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
MLFLOW_STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def no_mlflow_store_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without MLflow's store variables, which the settings honour: neither a developer's
    shell nor an earlier test (``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in
    ``os.environ``) chooses where a test's runs land; each test makes its own store."""
    for variable in MLFLOW_STORE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture(scope="session", autouse=True)
def no_log_handler_outlives_the_capture() -> Iterator[None]:
    """Importing Airflow in-process (``dag_support.params`` does) gives the root logger a handler on the stream
    pytest captures output into, which pytest closes at the end; py4j logs from a finaliser after that, and
    the run would end with a logging error's traceback. Such handlers go while the stream is still open."""
    yield
    for handler in list(logging.root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream not in (sys.__stdout__, sys.__stderr__):
            logging.root.removeHandler(handler)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real clickstream samples (read in place, never copied into the project)."""
    root = Path(os.environ.get("SESSIONREC_SHARED_DATA", SHARED_DATA))
    if not root.is_dir():
        reason = (f"real clickstream samples not found: no folder {root} (the team's shared/data folder "
                  "beside the clone, holding yoochoose-rsc15-100k/ and diginetica-sample/, not "
                  "redistributable); set SESSIONREC_SHARED_DATA to where they are")
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have them")
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One local[2] SparkSession shared by every Spark test (start-up costs about 9 s)."""
    from jobs.spark import build_session

    session = build_session("sessionrec-tests", master="local[2]",
                            scratch=tmp_path_factory.mktemp("spark"))
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings rooted in a fresh temporary folder, ignoring the caller's SESSIONREC_* environment."""
    return load_settings(env={}, home=tmp_path / "var")
