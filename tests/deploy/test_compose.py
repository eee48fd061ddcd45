"""docker/compose.yaml and docker/compose.gpu-worker.yaml: valid Compose files, and a consistent stack.

No Docker engine runs here: the files are validated against the Compose specification's JSON schema
(``check-jsonschema --builtin-schema vendor.compose-spec``), as written and as rendered from a filled-in
docker/.env, and with ``docker compose config`` where the Compose plugin is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import (
    COMPOSE_FILE,
    CONSTRAINTS,
    DOCKER,
    ENV_EXAMPLE,
    GPU_WORKER_FILE,
    ROOT,
    InterpolationError,
    command_list,
    environment,
    interpolate,
    is_secret,
    read_pins,
    references,
    strings,
    variables_in,
    volume_targets,
)

from sessionrec.config import load_settings

COMPOSE_FILES = [COMPOSE_FILE, GPU_WORKER_FILE]
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
AIRFLOW_SERVICES = {"airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "airflow-worker-train-cpu"}
TRAINING_WORKERS = {"airflow-worker-gpu", "airflow-worker-train-cpu"}
# Every process that runs the project's code runs the project image.
PROJECT_SERVICES = AIRFLOW_SERVICES | {"spark-master", "spark-worker"}
# Where the lake is read or written: Spark drivers and executors, the training task, the deferred
# landing-zone sensor, and the init service creating the landing folder.
LAKE_USERS = {"airflow-worker", "airflow-worker-gpu", "airflow-worker-train-cpu", "airflow-triggerer",
              "spark-worker", "airflow-init"}


def test_compose_files_match_the_compose_specification(filled_env: dict[str, str], tmp_path: Path) -> None:
    """Both files, as written and as rendered from a filled-in docker/.env (one check-jsonschema run)."""
    rendered = []
    for path in COMPOSE_FILES:
        target = tmp_path / f"rendered-{path.name}"
        target.write_text(yaml.safe_dump(interpolate(yaml.safe_load(path.read_text()), filled_env)))
        rendered.append(target)
    command = [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", *map(str, COMPOSE_FILES),
               *map(str, rendered)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not compose_plugin(), reason="the docker compose plugin is not installed")
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_docker_compose_config_accepts_the_file(path: Path, filled_env: dict[str, str], tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in filled_env.items()))
    result = subprocess.run(["docker", "compose", "-f", str(path), "--env-file", str(env_file), "--profile", "gpu",
                             "--profile", "cpu-training", "config", "--quiet"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_variable_is_in_env_example(path: Path, env_example: dict[str, str]) -> None:
    used = set().union(*(variables_in(text) for text in strings(yaml.safe_load(path.read_text()))))
    assert used - set(env_example) == set(), f"{path.name} uses variables that {ENV_EXAMPLE.name} lacks"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_defaults_in_compose_equal_env_example(path: Path, env_example: dict[str, str]) -> None:
    for text in strings(yaml.safe_load(path.read_text())):
        for name, op, default in references(text):
            if op == ":-":
                assert default == env_example[name], f"{path.name}: default of {name} differs from .env.example"


def test_secrets_are_empty_in_env_example(env_example: dict[str, str]) -> None:
    secrets = {name: value for name, value in env_example.items() if is_secret(name)}
    assert len(secrets) >= 10
    assert {name for name, value in secrets.items() if value} == set()


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_secrets_are_required_variables(path: Path) -> None:
    """A secret is only ever ``${NAME:?message}``: Compose stops when docker/.env lacks it."""
    for text in strings(yaml.safe_load(path.read_text())):
        for name, op, _ in references(text):
            if is_secret(name):
                assert op == ":?", f"{path.name}: {name} must be required (${{{name}:?...}}), found {text!r}"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_no_literal_secret(path: Path) -> None:
    for name, service in yaml.safe_load(path.read_text())["services"].items():
        for key, value in environment(service).items():
            if is_secret(key):
                assert variables_in(value), f"{path.name}: {name}: {key} is a literal value"
            parts = urlsplit(value) if "://" in value else None
            if parts is not None and parts.password:
                assert variables_in(parts.password), f"{path.name}: {name}: {key} has a literal password"


def test_a_missing_secret_stops_the_stack(compose: dict[str, Any], env_example: dict[str, str]) -> None:
    with pytest.raises(InterpolationError, match="missing in docker/.env"):
        interpolate(compose, env_example)


def test_depends_on_names_services_with_a_sensible_condition(stack: dict[str, Any]) -> None:
    for name, service in stack.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in stack, f"{name} depends on unknown service {target}"
            condition = rule["condition"]
            assert condition in CONDITIONS
            if condition == "service_healthy":
                assert "healthcheck" in stack[target], f"{name} waits for {target}, which has no healthcheck"
            if condition == "service_completed_successfully":
                assert stack[target].get("restart") == "no", f"{target} must be a one-shot service"


def test_dependencies_have_no_cycle(stack: dict[str, Any]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for target in stack[name].get("depends_on") or {}:
                visit(target, (*path, name))
            done.add(name)

    for name in stack:
        visit(name, ())


def test_every_long_running_service_has_a_healthcheck(stack: dict[str, Any]) -> None:
    one_shot = {name for name, service in stack.items() if service.get("restart") == "no"}
    assert one_shot == {"airflow-init", "minio-init"}
    for name in set(stack) - one_shot:
        test = stack[name].get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no healthcheck"
    for stateful in ("postgres", "redis", "minio", "mlflow"):
        assert "healthcheck" in stack[stateful]


def test_project_services_build_the_project_image(stack: dict[str, Any], remote_worker: dict[str, Any]) -> None:
    assert PROJECT_SERVICES <= set(stack)
    for name, service in [*stack.items(), ("remote airflow-worker-gpu", remote_worker)]:
        build = service.get("build")
        if name in PROJECT_SERVICES or name.startswith("remote"):
            assert build, f"{name} runs project code but does not build the project image"
        if build:
            assert (DOCKER / build["context"]).resolve() == ROOT, f"{name}: build context is not the repository"
            assert build["dockerfile"] == "docker/Dockerfile"
            assert service["image"].split(":")[0] in {"sessionrec", "sessionrec-gpu"}
    images = {stack[name]["image"] for name in PROJECT_SERVICES - {"airflow-worker-gpu"}}
    assert len(images) == 1, f"the CPU services must share one image, found {images}"


def test_gpu_workers_reserve_an_nvidia_gpu_and_take_the_gpu_queue(stack: dict[str, Any],
                                                                  remote_worker: dict[str, Any],
                                                                  filled_env: dict[str, str]) -> None:
    settings = load_settings({k: v for k, v in filled_env.items() if k.startswith("SESSIONREC_")})
    for worker in (stack["airflow-worker-gpu"], remote_worker):
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert [(d["driver"], d["capabilities"]) for d in devices] == [("nvidia", ["gpu"])]
        assert worker["build"]["args"]["TORCH_VARIANT"] == "cuda"
        command = command_list(worker)
        assert command[:2] == ["celery", "worker"]
        assert command[command.index("--queues") + 1] == settings.gpu_queue
        assert command[command.index("--concurrency") + 1] == "1"
        assert environment(worker)["SESSIONREC_GPU_QUEUE"] == settings.gpu_queue
        assert environment(worker)["SESSIONREC_GPU_POOL"] == settings.gpu_pool
    cpu_training = command_list(stack["airflow-worker-train-cpu"])
    assert cpu_training[cpu_training.index("--queues") + 1] == settings.gpu_queue
    assert stack["airflow-worker-gpu"]["profiles"] == ["gpu"]
    assert stack["airflow-worker-train-cpu"]["profiles"] == ["cpu-training"]


def test_the_default_worker_leaves_the_gpu_queue_alone(stack: dict[str, Any]) -> None:
    assert command_list(stack["airflow-worker"]) == ["celery", "worker"]
    assert "deploy" not in stack["airflow-worker"]


def test_airflow_components_share_one_configuration(stack: dict[str, Any]) -> None:
    common = environment(stack["airflow-scheduler"])
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
        assert common[key], key
    api = urlsplit(common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    published = stack["airflow-api-server"]["ports"][0].rsplit(":", 1)[1]
    assert (api.hostname, str(api.port), api.path) == ("airflow-api-server", published, "/execution/")
    for name in AIRFLOW_SERVICES:
        env = environment(stack[name])
        assert {key: env[key] for key in common} == common, f"{name} runs with another Airflow configuration"


def test_spark_default_points_at_the_spark_master(stack: dict[str, Any]) -> None:
    master = urlsplit(environment(stack["airflow-init"])["SESSIONREC_SPARK_MASTER"])
    command = command_list(stack["spark-master"])
    assert command[:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    assert (master.scheme, master.hostname) == ("spark", "spark-master")
    assert str(master.port) == command[command.index("--port") + 1]
    assert command[command.index("--host") + 1] == "spark-master"
    worker = command_list(stack["spark-worker"])
    assert worker[:2] == ["spark-class", "org.apache.spark.deploy.worker.Worker"]
    assert worker[-1] == master.geturl()


def test_mlflow_server_is_the_one_the_code_uses(stack: dict[str, Any], filled_env: dict[str, str]) -> None:
    mlflow = stack["mlflow"]
    assert mlflow["image"] == f"ghcr.io/mlflow/mlflow:v{read_pins(CONSTRAINTS)['mlflow']}-full"
    command = command_list(mlflow)
    tracking = urlsplit(environment(stack["airflow-worker"])["SESSIONREC_MLFLOW_TRACKING_URI"])
    assert (tracking.hostname, str(tracking.port)) == ("mlflow", command[command.index("--port") + 1])
    assert f"{tracking.hostname}:{tracking.port}" in environment(mlflow)["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "--serve-artifacts" in command
    bucket = urlsplit(command[command.index("--artifacts-destination") + 1]).hostname
    assert bucket == environment(stack["minio-init"])["MLFLOW_BUCKET"]
    assert environment(stack["airflow-worker"])["SESSIONREC_MLFLOW_ARTIFACT_ROOT"].startswith("mlflow-artifacts:")
    assert environment(mlflow)["AWS_ACCESS_KEY_ID"] == environment(stack["minio-init"])["MLFLOW_S3_ACCESS_KEY_ID"]


def test_databases_are_the_ones_the_init_script_creates(stack: dict[str, Any]) -> None:
    created = environment(stack["postgres"])
    airflow = urlsplit(environment(stack["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    mlflow = urlsplit(environment(stack["mlflow"])["MLFLOW_BACKEND_STORE_URI"])
    warehouse = urlsplit(environment(stack["airflow-worker"])["SESSIONREC_WAREHOUSE_URL"])
    tune = urlsplit(environment(stack["airflow-worker-gpu"])["SESSIONREC_TUNE_STORAGE"])
    assert tune.scheme == "postgresql+psycopg"  # psycopg 3: the driver the project pins
    for prefix, url in (("AIRFLOW", airflow), ("MLFLOW", mlflow), ("WAREHOUSE", warehouse), ("TUNE", tune)):
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert (url.username, url.password, url.path.lstrip("/")) == (
            created[f"{prefix}_DB_USER"], created[f"{prefix}_DB_PASSWORD"], created[f"{prefix}_DB_NAME"])
    mount = volume_targets(stack["postgres"])["/docker-entrypoint-initdb.d/10-init-databases.sh"]
    assert (DOCKER / mount).is_file()


def test_init_scripts_get_every_variable_they_read(stack: dict[str, Any]) -> None:
    script = (DOCKER / "postgres" / "init-databases.sh").read_text()
    loop = script[script.index("for name in") + len("for name in"):script.index("; do")]
    assert set(loop.replace("\\", " ").split()) <= set(environment(stack["postgres"]))
    minio_script = (DOCKER / "minio" / "init-buckets.sh").read_text()
    assigned = set(re.findall(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=", minio_script, flags=re.MULTILINE))
    assert variables_in(minio_script) - assigned <= set(environment(stack["minio-init"]))
    assert (DOCKER / volume_targets(stack["minio-init"])["/init/init-buckets.sh"]).is_file()


def test_the_lake_is_one_volume_at_the_same_path_everywhere(stack: dict[str, Any]) -> None:
    for name in LAKE_USERS:
        lake = environment(stack[name])["SESSIONREC_LAKE"]
        assert volume_targets(stack[name]).get(lake) == "lake", f"{name} does not mount the lake at {lake}"
    for name in ("airflow-worker", "airflow-worker-gpu"):
        home = environment(stack[name])["SESSIONREC_HOME"]
        assert volume_targets(stack[name]).get(home) == "sessionrec-home"


def test_remote_gpu_worker_joins_the_same_stack(stack: dict[str, Any], remote_worker: dict[str, Any],
                                                filled_env: dict[str, str]) -> None:
    local, remote = environment(stack["airflow-worker-gpu"]), environment(remote_worker)
    assert set(local) == set(remote)
    for key, value in local.items():
        if "://" not in value:
            assert remote[key] == value, key
            continue
        here, there = urlsplit(value), urlsplit(remote[key])
        assert (here.scheme, here.username, here.password, here.path) == (
            there.scheme, there.username, there.password, there.path), key
        if here.hostname not in {"spark-master"}:
            assert there.hostname == filled_env["STACK_HOST"], f"{key} does not point at the stack's host"
    assert volume_targets(remote_worker)[local["SESSIONREC_LAKE"]] == filled_env["LAKE_PATH"]
    assert remote_worker["hostname"] == filled_env["WORKER_HOSTNAME"]
