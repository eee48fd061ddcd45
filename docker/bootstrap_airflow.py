"""Prepare the stack's Airflow: run by the ``airflow-init`` service on every ``docker compose up``.

1. ``airflow db migrate`` (idempotent; also creates the FAB auth manager's tables);
2. the admin user of the FAB auth manager, unless it exists (its password is never changed here);
3. the connections, from the project's settings (``SESSIONREC_*``), overwriting earlier versions so that
   docker/.env stays the one source of truth: ``spark_default`` and ``fs_default`` exactly as the embedded
   Airflow gets them (:func:`sessionrec.airflow_env.bootstrap_objects`), ``sessionrec_warehouse`` (the
   warehouse as a postgres connection) and ``mlflow_default`` (the tracking server);
4. the GPU pool, with ``GPU_POOL_SLOTS`` slots;
5. the landing zone folder of a local lake, so the first files have somewhere to go.

Its own inputs (not project settings) come from the init service's environment: ``AIRFLOW_ADMIN_USERNAME``,
``AIRFLOW_ADMIN_PASSWORD``, ``AIRFLOW_ADMIN_EMAIL`` and ``GPU_POOL_SLOTS``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sessionrec.airflow_env import bootstrap_objects, run_airflow
from sessionrec.config import Settings, load_settings
from sessionrec.layout import is_remote, local_path

log = logging.getLogger("bootstrap_airflow")

WAREHOUSE_CONN_ID = "sessionrec_warehouse"
MLFLOW_CONN_ID = "mlflow_default"
POSTGRES_SCHEMES = {"postgresql", "postgres"}


def warehouse_connection(url: str) -> dict[str, Any]:
    """The warehouse URL (``postgresql://user:password@host:port/database``) as an Airflow connection."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(f"SESSIONREC_WAREHOUSE_URL: the stack's warehouse is PostgreSQL, expected a "
                         f"postgresql:// URL, got scheme {parts.scheme!r}")
    database = parts.path.lstrip("/")
    if not parts.hostname or not database:
        raise ValueError("SESSIONREC_WAREHOUSE_URL: expected postgresql://user:password@host:port/database "
                         "with a host and a database name")
    return {
        "conn_type": "postgres",
        "description": "The warehouse holding session_recommendations (SESSIONREC_WAREHOUSE_URL)",
        "host": parts.hostname,
        "port": parts.port or 5432,
        "schema": database,
        "login": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "extra": "{}",
    }


def mlflow_connection(tracking_uri: str) -> dict[str, Any]:
    """The MLflow tracking server as a generic connection whose host is its URI."""
    if not tracking_uri.startswith(("http://", "https://")):
        raise ValueError(f"SESSIONREC_MLFLOW_TRACKING_URI: the stack's MLflow is a tracking server, expected "
                         f"an http(s):// URI, got {tracking_uri!r}")
    return {
        "conn_type": "generic",
        "description": "MLflow tracking server and model registry (SESSIONREC_MLFLOW_TRACKING_URI)",
        "host": tracking_uri,
        "extra": "{}",
    }


def stack_connections(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every connection the stack defines, in ``airflow connections import`` format."""
    connections, _ = bootstrap_objects(settings)
    return {
        **connections,
        WAREHOUSE_CONN_ID: warehouse_connection(settings.warehouse_url),
        MLFLOW_CONN_ID: mlflow_connection(settings.mlflow_tracking_uri),
    }


def pool_slots(text: str) -> int:
    """``GPU_POOL_SLOTS``: how many training runs at once (one per GPU)."""
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"GPU_POOL_SLOTS={text!r}: expected a positive integer (one slot per GPU)")
    return int(text)


def stack_pools(settings: Settings, gpu_slots: int) -> dict[str, dict[str, Any]]:
    """The pools, in ``airflow pools import`` format, with ``gpu_slots`` training slots."""
    _, pools = bootstrap_objects(settings)
    return {name: {**pool, "slots": gpu_slots} for name, pool in pools.items()}


def required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise SystemExit(f"{name} is not set: the airflow-init service needs it (see docker/.env.example)")
    return value


def ensure_admin(env: Mapping[str, str]) -> None:
    """Create the admin user unless it exists (the FAB CLI leaves an existing user untouched)."""
    username = required(env, "AIRFLOW_ADMIN_USERNAME")
    result = run_airflow(["users", "create", "--username", username, "--password",
                          required(env, "AIRFLOW_ADMIN_PASSWORD"), "--email", required(env, "AIRFLOW_ADMIN_EMAIL"),
                          "--role", "Admin", "--firstname", "Airflow", "--lastname", "Admin"], env, check=False)
    if result.returncode != 0:
        # The command line holds the password: report the output only.
        raise SystemExit(f"`airflow users create --username {username}` failed:\n{result.stdout}")
    outcome = (result.stdout or "").strip().splitlines()[-1:]
    log.info("admin user %r: %s", username, outcome[0] if outcome else "checked")


def import_objects(kind: str, objects: Mapping[str, Any], env: Mapping[str, str], extra: list[str]) -> None:
    """``airflow <kind> import`` of ``objects`` through a private temporary file."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"{kind}.json"
        path.write_text(json.dumps(objects))
        run_airflow([kind, "import", *extra, str(path)], env)
    log.info("%s: %s", kind, ", ".join(sorted(objects)))


def create_landing_zone(settings: Settings) -> None:
    clicks = settings.layout.landing.clicks
    if is_remote(clicks):
        log.info("remote landing zone %s: nothing to create", clicks)
        return
    local_path(clicks).mkdir(parents=True, exist_ok=True)
    log.info("landing zone: %s/", settings.layout.raw_day("YYYY-MM-DD"))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = dict(os.environ)
    settings = load_settings(env)
    gpu_slots = pool_slots(required(env, "GPU_POOL_SLOTS"))
    connections = stack_connections(settings)
    pools = stack_pools(settings, gpu_slots)
    run_airflow(["db", "migrate"], env)
    log.info("metadata database migrated")
    ensure_admin(env)
    import_objects("connections", connections, env, ["--overwrite"])
    import_objects("pools", pools, env, [])
    create_landing_zone(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
