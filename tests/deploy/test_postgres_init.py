"""docker/postgres/init-databases.sh against a real PostgreSQL server (tests/postgres.py), as the postgres
image runs it: psql over the server's socket or TCP, with the service's environment."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from deploy_support import DOCKER

SCRIPT = DOCKER / "postgres" / "init-databases.sh"
PREFIXES = ("AIRFLOW", "MLFLOW", "WAREHOUSE", "TUNE")


@pytest.fixture
def init_env(postgres_url: str) -> Iterator[dict[str, str]]:
    """The postgres service's environment for this server, with names unique to the test; dropped after."""
    server = urlsplit(postgres_url)
    suffix = uuid.uuid4().hex[:8]
    env = {**os.environ, "PGHOST": server.hostname, "PGPORT": str(server.port), "POSTGRES_USER": server.username}
    for prefix in PREFIXES:
        env[f"{prefix}_DB_NAME"] = f"{prefix.lower()}_{suffix}"
        env[f"{prefix}_DB_USER"] = f"{prefix.lower()} user {suffix}"
        env[f"{prefix}_DB_PASSWORD"] = f"it's; {prefix}"
    yield env
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for prefix in PREFIXES:
            conn.execute(f'DROP DATABASE IF EXISTS "{env[f"{prefix}_DB_NAME"]}"')
            conn.execute(f'DROP ROLE IF EXISTS "{env[f"{prefix}_DB_USER"]}"')


def run_script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)


def test_each_database_is_owned_by_its_user_and_usable(postgres_url: str, init_env: dict[str, str]) -> None:
    first, again = run_script(init_env), run_script(init_env)
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    server = urlsplit(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        for prefix in PREFIXES:
            database, user = init_env[f"{prefix}_DB_NAME"], init_env[f"{prefix}_DB_USER"]
            owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                 (database,)).fetchone()
            assert owner == (user,)
            has_password = conn.execute("SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
                                        (user,)).fetchone()
            assert has_password == (True,)
    for prefix in PREFIXES:
        with psycopg.connect(host=server.hostname, port=server.port, dbname=init_env[f"{prefix}_DB_NAME"],
                             user=init_env[f"{prefix}_DB_USER"], autocommit=True) as conn:
            conn.execute("CREATE TABLE probe (x int)")


def test_a_missing_variable_stops_the_init_with_its_name(init_env: dict[str, str]) -> None:
    result = run_script({**init_env, "MLFLOW_DB_PASSWORD": ""})
    assert result.returncode == 1
    assert "MLFLOW_DB_PASSWORD is not set" in result.stderr
