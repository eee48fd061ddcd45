"""Fixtures of the deployment checks: the compose files as written and as Compose renders them."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from deploy_support import (
    COMPOSE_FILE,
    DOCKER,
    ENV_EXAMPLE,
    GPU_WORKER_FILE,
    REMOTE_WORKER_VALUES,
    interpolate,
    load_yaml,
    read_env_file,
)

# docker/*.py are scripts, not a package: the tests import them from their folder.
sys.path.insert(0, str(DOCKER))

@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="session")
def filled_env(env_example: dict[str, str]) -> dict[str, str]:
    """docker/.env as an operator fills it in: .env.example with every empty value set."""
    filled = {name: value or f"test-{name.lower().replace('_', '-')}" for name, value in env_example.items()}
    return {**filled, **REMOTE_WORKER_VALUES}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="session")
def gpu_worker_compose() -> dict[str, Any]:
    return load_yaml(GPU_WORKER_FILE)


@pytest.fixture(scope="session")
def stack(compose: dict[str, Any], filled_env: dict[str, str]) -> dict[str, Any]:
    """The main stack's services as Compose renders them from a filled-in docker/.env."""
    return interpolate(compose, filled_env)["services"]


@pytest.fixture(scope="session")
def remote_worker(gpu_worker_compose: dict[str, Any], filled_env: dict[str, str]) -> dict[str, Any]:
    return interpolate(gpu_worker_compose, filled_env)["services"]["airflow-worker-gpu"]
