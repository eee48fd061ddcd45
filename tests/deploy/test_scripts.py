"""The Python scripts of docker/: the init service's Airflow objects, the dependency list the image build
reads, and the lock files' computation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import bootstrap_airflow
import lock_requirements
import pytest
from deploy_support import ROOT
from project_requirements import project_dependencies

from sessionrec.airflow_env import bootstrap_objects
from sessionrec.config import load_settings

STACK_SETTINGS = {
    "SESSIONREC_SPARK_MASTER": "spark://spark-master:7077",
    "SESSIONREC_MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "SESSIONREC_WAREHOUSE_URL": "postgresql://warehouse:p%40ss%2Fword@postgres:5432/warehouse",
    "SESSIONREC_GPU_POOL": "gpu",
}


def test_project_dependencies_are_pyprojects() -> None:
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert project_dependencies(ROOT / "pyproject.toml") == expected


def test_project_dependencies_name_the_file_when_the_table_is_missing(tmp_path: Path) -> None:
    broken = tmp_path / "pyproject.toml"
    broken.write_text('[project]\nname = "x"\n')
    with pytest.raises(ValueError, match=r"pyproject.toml: expected \[project\].dependencies"):
        project_dependencies(broken)


def test_stack_connections_come_from_the_settings(tmp_path: Path) -> None:
    settings = load_settings(STACK_SETTINGS, home=tmp_path)
    connections = bootstrap_airflow.stack_connections(settings)
    embedded, _ = bootstrap_objects(settings)
    assert {name: connections[name] for name in embedded} == embedded
    assert connections["spark_default"]["host"] == "spark://spark-master:7077"
    warehouse = connections["sessionrec_warehouse"]
    assert (warehouse["conn_type"], warehouse["host"], warehouse["port"], warehouse["schema"]) == (
        "postgres", "postgres", 5432, "warehouse")
    assert (warehouse["login"], warehouse["password"]) == ("warehouse", "p@ss/word")
    assert connections["mlflow_default"]["host"] == "http://mlflow:5000"


@pytest.mark.parametrize("url", ["duckdb:///var/warehouse.duckdb", "postgresql://user@/warehouse",
                                 "postgresql://user@postgres:5432/"])
def test_a_warehouse_url_the_stack_cannot_use_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="SESSIONREC_WAREHOUSE_URL"):
        bootstrap_airflow.warehouse_connection(url)


def test_a_local_mlflow_store_is_refused() -> None:
    with pytest.raises(ValueError, match="SESSIONREC_MLFLOW_TRACKING_URI"):
        bootstrap_airflow.mlflow_connection("sqlite:///var/mlflow/mlflow.db")


def test_the_gpu_pool_gets_the_configured_slots(tmp_path: Path) -> None:
    settings = load_settings({"SESSIONREC_GPU_POOL": "gpus"}, home=tmp_path)
    pools = bootstrap_airflow.stack_pools(settings, bootstrap_airflow.pool_slots("4"))
    assert list(pools) == ["gpus"] and pools["gpus"]["slots"] == 4


@pytest.mark.parametrize("text", ["0", "-1", "two", ""])
def test_pool_slots_must_be_a_positive_integer(text: str) -> None:
    with pytest.raises(ValueError, match="GPU_POOL_SLOTS"):
        bootstrap_airflow.pool_slots(text)


def test_a_missing_init_input_is_named() -> None:
    with pytest.raises(SystemExit, match="AIRFLOW_ADMIN_PASSWORD is not set"):
        bootstrap_airflow.required({"AIRFLOW_ADMIN_PASSWORD": ""}, "AIRFLOW_ADMIN_PASSWORD")


def test_the_landing_zone_of_a_local_lake_is_created(tmp_path: Path) -> None:
    settings = load_settings({"SESSIONREC_LAKE": str(tmp_path / "lake")}, home=tmp_path)
    bootstrap_airflow.create_landing_zone(settings)
    assert (tmp_path / "lake" / "raw" / "clicks").is_dir()


def metadata(name: str, version: str, *requires: str) -> dict:
    return {"name": name, "version": version, "requires_dist": list(requires)}


# A resolution shaped like PyPI's torch (CUDA stack marked platform_system == "Linux") next to a provider.
RESOLVED = {
    "torch": metadata("torch", "2.13.0", "filelock", "setuptools>=77", 'nvidia-cudnn-cu13==9.20; platform_system == '
                      '"Linux"', 'triton==3.7.1; platform_system == "Linux"', 'optree; extra == "optree"'),
    "filelock": metadata("filelock", "4.2.11"),
    "setuptools": metadata("setuptools", "84.2.1"),
    "nvidia-cudnn-cu13": metadata("nvidia-cudnn-cu13", "9.20", "nvidia-cublas"),
    "nvidia-cublas": metadata("nvidia-cublas", "13.1"),
    "triton": metadata("triton", "3.7.1", "setuptools"),
    "apache-airflow-providers-celery": metadata("apache-airflow-providers-celery", "3.26.0", "celery", "filelock"),
    "celery": metadata("celery", "5.7.0"),
}


def test_locks_split_the_cuda_stack_from_what_every_image_needs() -> None:
    everywhere, cuda = lock_requirements.lock_sets(RESOLVED, ["torch", "apache-airflow-providers-celery"],
                                                   already_pinned={"filelock"})
    assert everywhere == {"setuptools", "apache-airflow-providers-celery", "celery"}
    assert cuda == {"nvidia-cudnn-cu13", "nvidia-cublas", "triton"}


def test_a_cpu_torch_in_the_resolution_is_refused() -> None:
    cpu = {**RESOLVED, "torch": metadata("torch", "2.13.0+cpu", "filelock", "setuptools")}
    with pytest.raises(SystemExit, match="not the CUDA build"):
        lock_requirements.lock_sets(cpu, ["torch"], already_pinned=set())


def test_rendered_lock_lists_sorted_pins() -> None:
    text = lock_requirements.render("What.", {"triton", "nvidia-cublas"}, RESOLVED)
    assert text.startswith("# What.\n")
    assert [line for line in text.splitlines() if not line.startswith("#")] == ["nvidia-cublas==13.1",
                                                                                 "triton==3.7.1"]
