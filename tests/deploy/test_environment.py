"""Every environment variable the deployed code reads is set by the stack or has a safe default.

The deployed code is the project's packages, the DAG folder and the init scripts of docker/. Reads with a
literal name (``os.environ[...]``, ``os.environ.get``, ``os.getenv``, ``os.environ.setdefault``) are found
by parsing the code; the settings' own variables are ``sessionrec.config.env_names()``.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

from deploy_support import DOCKER, ROOT, environment

from sessionrec.config import Settings, env_names, load_settings

DEPLOYED_CODE = [ROOT / "sessionrec", ROOT / "jobs", ROOT / "model", ROOT / "dags", DOCKER]
# Services whose processes run the project's code, and so load its settings.
PROJECT_CODE_SERVICES = {"airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                         "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "airflow-worker-train-cpu",
                         "spark-worker"}
# Settings whose embedded defaults (files under the repository) are wrong in containers: the stack sets them.
STACK_SETTINGS = {"SESSIONREC_HOME", "SESSIONREC_LAKE", "SESSIONREC_SPARK_MASTER", "SESSIONREC_MLFLOW_TRACKING_URI",
                  "SESSIONREC_MLFLOW_ARTIFACT_ROOT", "SESSIONREC_WAREHOUSE_URL", "SESSIONREC_GPU_QUEUE",
                  "SESSIONREC_GPU_POOL"}
# Variables read with a default in the code that is right for the stack, and why.
CODE_DEFAULTS = {
    # jobs/spark.py sets 127.0.0.1 only when unset, for sessions it starts itself (python -m jobs.*); under
    # spark-submit the driver JVM has already bound the container's own address (docker/README.md).
    "SPARK_LOCAL_IP": "setdefault in jobs/spark.py",
}
# Inputs of docker/bootstrap_airflow.py, read through its required(env, NAME).
BOOTSTRAP_SCRIPT = DOCKER / "bootstrap_airflow.py"


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_os_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name)
            and node.value.id == "os")


def environment_reads(source: str) -> set[str]:
    """Names read from the environment with a literal key in ``source``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            names.add(_literal(node.slice))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            func = node.func
            is_environ_method = _is_os_environ(func.value) and func.attr in {"get", "setdefault", "pop"}
            is_getenv = func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"
            if is_environ_method or is_getenv:
                names.add(_literal(node.args[0]))
    return names - {None}


def required_inputs(source: str) -> set[str]:
    """The names docker/bootstrap_airflow.py reads with ``required(env, NAME)``."""
    return {_literal(node.args[1]) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "required"
            and len(node.args) == 2} - {None}


def deployed_sources() -> dict[Path, str]:
    return {path: path.read_text() for folder in DEPLOYED_CODE for path in sorted(folder.rglob("*.py"))}


def test_the_scan_finds_literal_reads() -> None:
    source = ("import os\nos.environ['A']\nos.environ.get('B')\nos.getenv('C', 'x')\n"
              "os.environ.setdefault('D', '1')\nos.environ.get(name)\n")
    assert environment_reads(source) == {"A", "B", "C", "D"}
    assert required_inputs("required(env, 'E')\nrequired(env, name)\n") == {"E"}


def test_every_variable_the_code_reads_is_set_or_defaulted(stack: dict[str, Any]) -> None:
    read = set().union(*(environment_reads(source) for source in deployed_sources().values()))
    settings = {name for name in read if name.startswith("SESSIONREC_")}
    assert settings <= set(env_names()), f"read outside sessionrec/config.py: {settings - set(env_names())}"
    for name in read - settings:
        unset = [service for service in PROJECT_CODE_SERVICES if name not in environment(stack[service])]
        assert not unset or name in CODE_DEFAULTS, f"{name} is read by the code but not set in {sorted(unset)}"


def test_every_setting_is_set_by_the_stack_or_has_a_default(stack: dict[str, Any]) -> None:
    defaults = {f"SESSIONREC_{f.name.upper()}" for f in dataclasses.fields(Settings)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    for service in PROJECT_CODE_SERVICES:
        env = environment(stack[service])
        missing = set(env_names()) - set(env) - defaults
        assert missing == set(), f"{service}: settings without a value: {missing}"
        assert STACK_SETTINGS <= set(env), f"{service} lacks {STACK_SETTINGS - set(env)}"


def test_the_stack_sets_only_real_settings(stack: dict[str, Any], remote_worker: dict[str, Any]) -> None:
    for name, service in [*stack.items(), ("remote airflow-worker-gpu", remote_worker)]:
        unknown = {key for key in environment(service) if key.startswith("SESSIONREC_")} - set(env_names())
        assert unknown == set(), f"{name} sets variables no setting reads: {unknown}"


def test_every_project_service_loads_production_settings(stack: dict[str, Any]) -> None:
    for service in PROJECT_CODE_SERVICES:
        settings = load_settings(environment(stack[service]))
        assert settings.warehouse_url.startswith("postgresql://"), service
        assert settings.mlflow_tracking_uri.startswith("http://"), service
        assert not settings.lake.startswith(str(ROOT)), service
        assert settings.spark_master.startswith("spark://"), service


def test_the_init_service_gets_the_bootstrap_inputs(stack: dict[str, Any]) -> None:
    inputs = required_inputs(BOOTSTRAP_SCRIPT.read_text()) | environment_reads(BOOTSTRAP_SCRIPT.read_text())
    assert {"AIRFLOW_ADMIN_PASSWORD", "GPU_POOL_SLOTS"} <= inputs
    assert inputs <= set(environment(stack["airflow-init"]))
