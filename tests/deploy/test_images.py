"""docker/Dockerfile: lint-clean, built from the pinned set only, with a build context that holds what it
copies and nothing else."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from deploy_support import (
    CONSTRAINTS,
    DOCKER,
    DOCKERFILE,
    ROOT,
    dockerfile_instructions,
    dockerignore_excludes,
    dockerignore_patterns,
    read_pins,
)
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

HADOLINT = Path(sys.executable).parent / "hadolint"
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
DEPLOY_IN = DOCKER / "requirements-deploy.in"
DEPLOY_LOCK = DOCKER / "requirements-deploy.txt"
CUDA_LOCK = DOCKER / "requirements-cuda.txt"
PIN_LITERAL = re.compile(r"\b([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)")
# What must never reach the build context (secrets, environments, local state, results).
NEVER_IN_CONTEXT = [".venv/bin/python", "var/lake/raw", ".git/HEAD", "bench/results/sessionize.json",
                    "docker/.env", "tests/conftest.py", "sessionrec/__pycache__/config.cpython-311.pyc"]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def build_args() -> dict[str, str]:
    return dict(arguments.split("=", 1) for keyword, arguments in dockerfile_instructions()
                if keyword == "ARG" and "=" in arguments)


def pip_installs() -> list[str]:
    """Every ``pip install`` command of the Dockerfile's RUN instructions, in order."""
    commands = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "RUN":
            commands += [part.strip() for part in arguments.split("&&") if "pip install" in part]
    return commands


def test_hadolint_finds_no_error() -> None:
    result = subprocess.run([str(HADOLINT), "--config", str(HADOLINT_CONFIG), str(DOCKERFILE)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_hadolint_rule_is_explained() -> None:
    config_lines = HADOLINT_CONFIG.read_text().splitlines()
    ignored = yaml.safe_load(HADOLINT_CONFIG.read_text()).get("ignored", [])
    assert yaml.safe_load(HADOLINT_CONFIG.read_text())["failure-threshold"] == "error"
    for rule in ignored:
        assert any(line.lstrip().startswith("#") and rule in line for line in config_lines), \
            f"{HADOLINT_CONFIG.name}: ignored rule {rule} has no comment giving the reason"
    lines = DOCKERFILE.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            reason = lines[index - 1]
            assert reason.startswith("#") and "hadolint ignore" not in reason, \
                f"Dockerfile line {index + 1}: an inline ignore needs its reason on the line above"


def test_the_airflow_base_image_is_the_pinned_release() -> None:
    image = build_args()["AIRFLOW_IMAGE"]
    match = re.fullmatch(r"apache/airflow:(?:slim-)?(?P<version>[0-9.]+)-python(?P<python>3\.[0-9]+)", image)
    assert match, f"unexpected Airflow base image {image}"
    assert match["version"] == read_pins(CONSTRAINTS)["apache-airflow"]
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains(f"{match['python']}.0")


def test_version_literals_equal_the_pins() -> None:
    pins = read_pins(CONSTRAINTS)
    for name, version in PIN_LITERAL.findall(DOCKERFILE.read_text()):
        assert pins.get(canonicalize_name(name)) == version, f"Dockerfile pins {name}=={version}"


def test_every_pip_install_is_constrained() -> None:
    installs = pip_installs()
    assert len(installs) == 5
    for command in installs:
        constrained = "-c constraints.txt" in command
        project_only = "--no-deps" in command and command.endswith("-e .")
        assert constrained or project_only, f"unconstrained install: {command}"


def test_the_install_order_is_make_setups() -> None:
    """torch first (CPU index or the CUDA lock), then the project's dependencies, then pyspark again."""
    cpu, cuda, dependencies, pyspark, project = pip_installs()
    assert "--index-url" in cpu and cpu.endswith(" torch") and "--no-deps" in cpu
    assert build_args()["TORCH_CPU_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "-r docker/requirements-cuda.txt" in cuda and cuda.endswith(" torch") and "--index-url" not in cuda
    assert "-r /tmp/project-requirements.txt" in dependencies and "-r docker/requirements-deploy.txt" in dependencies
    assert "--force-reinstall" in pyspark and pyspark.endswith(" pyspark")
    assert project.endswith("-e .")
    final_run = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "RUN"][-1]
    assert final_run.endswith("pip check")


def test_pyproject_dependencies_are_pinned_consistently() -> None:
    pins = read_pins(CONSTRAINTS)
    for text in pyproject()["project"]["dependencies"]:
        requirement = Requirement(text)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"pyproject.toml: {text} is not pinned"
        name = canonicalize_name(requirement.name)
        assert pins.get(name, specifiers[0].version) == specifiers[0].version, f"{text} != constraints.txt"


def test_image_locks_add_to_the_pinned_set_without_overriding_it() -> None:
    pinned = set(read_pins(CONSTRAINTS)) | {canonicalize_name(Requirement(text).name)
                                           for text in pyproject()["project"]["dependencies"]}
    deploy, cuda = read_pins(DEPLOY_LOCK), read_pins(CUDA_LOCK)
    assert set(deploy) & pinned == set() and set(cuda) & pinned == set() and set(deploy) & set(cuda) == set()
    for name, version in read_pins(DEPLOY_IN).items():
        assert deploy.get(name) == version, f"{DEPLOY_LOCK.name} is stale: regenerate with lock_requirements.py"
    assert {"apache-airflow-providers-celery", "apache-airflow-providers-fab", "celery", "redis"} <= set(deploy)
    assert any(name.startswith("nvidia-") for name in cuda)


def test_the_study_database_driver_is_installed_in_the_image() -> None:
    """SESSIONREC_TUNE_STORAGE names SQLAlchemy's psycopg 3 dialect: psycopg is one of the project's
    dependencies (so in every image), and the dialect loads it."""
    import sqlalchemy

    schemes = set(re.findall(r"SESSIONREC_TUNE_STORAGE: ([a-z0-9+]+)://", (DOCKER / "compose.yaml").read_text()))
    assert schemes == {"postgresql+psycopg"}
    dependencies = {canonicalize_name(Requirement(text).name) for text in pyproject()["project"]["dependencies"]}
    assert "psycopg" in dependencies
    dialect = sqlalchemy.engine.make_url("postgresql+psycopg://user:secret@postgres:5432/optuna").get_dialect()
    assert dialect.driver == "psycopg"


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    patterns = dockerignore_patterns()
    copies = [arguments.split() for keyword, arguments in dockerfile_instructions()
              if keyword == "COPY" and not arguments.startswith("--from")]
    sources = [source for parts in copies for source in parts[:-1]]
    assert len(sources) >= 10
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignore_excludes(source, patterns), f"COPY {source}: excluded by .dockerignore"
        if (ROOT / source).is_dir():
            for path in (ROOT / source).rglob("*.py"):
                if "__pycache__" not in path.parts:
                    assert not dockerignore_excludes(str(path.relative_to(ROOT)), patterns), path


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    patterns = dockerignore_patterns()
    for path in NEVER_IN_CONTEXT:
        assert dockerignore_excludes(path, patterns), f"{path} would be sent to the Docker daemon"
