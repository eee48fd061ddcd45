"""A registered model of every family loads and predicts in a bare virtual environment: only the
distributions its ``requirements.txt`` names (mlflow, torch, numpy, pandas, pyarrow, scipy) and their
dependencies, no project on the path, started outside the repository. Loading must import nothing of the
project but the ``model`` package the logged model carries, and answer as the model folder does here.

The environment is a fresh ``venv`` whose site-packages holds links to the files of exactly those
distributions as installed here (the versions the model pins). ``pip install`` of the same set takes
minutes on this machine (half of it comes over the network) for the same result, so the links stand in
for it; the pins are checked against what is linked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import venv
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from model.families import FAMILIES
from model.recommender import Recommender
from sessionrec.config import PROJECT_ROOT

# Packages of this project that loading a model must never import.
PROJECT_PACKAGES = ("sessionrec", "training", "lifecycle", "jobs", "dags", "airflow", "pyspark")
# Every family a logged model can hold (model/families.py), with the fixture giving a model folder of it.
FAMILY_FOLDERS = {"gru4rec": "trained_model_dir", "narm": "narm_model_dir", "sr": "fitted", "vsknn": "fitted"}
SCRIPT = """
import importlib.util, json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1], model_config={"device": "cpu"})
frame = pd.DataFrame({"session_id": ["known", "unknown"], "item_ids": [sys.argv[2:4], ["never-seen"]]})
rows = model.predict(frame, params={"k": 3}).to_dict(orient="records")
print(json.dumps({"rows": rows, "modules": sorted({name.split(".")[0] for name in sys.modules}),
                  "model_code": sys.modules["model"].__file__, "sys_path": sys.path,
                  "importable": [name for name in sys.argv[4:] if importlib.util.find_spec(name)]}))
"""


def dependency_closure(requirements: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions of ``requirements`` (pinned ``name==version``) and all they depend on.

    Raises when a pinned version is not the installed one: the bare environment would not be the one
    the model declares.
    """
    closure: dict[str, metadata.Distribution] = {}
    pending = []
    for line in requirements:
        requirement = Requirement(line)
        installed = metadata.version(requirement.name)
        if not requirement.specifier.contains(installed.split("+")[0], prereleases=True):
            raise AssertionError(f"the model pins {line}, this environment has {requirement.name} {installed}")
        pending.append(requirement.name)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in closure:
            continue
        closure[name] = metadata.distribution(name)
        for text in closure[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return closure


def link_distributions(distributions: dict[str, metadata.Distribution], site_packages: Path) -> int:
    """Link the installed files of ``distributions`` into ``site_packages``; returns the number of links.

    A top-level folder that no other installed distribution has files in is linked as a whole (torch alone
    has thousands of files); the others file by file.
    """
    others: set[str] = set()
    for distribution in metadata.distributions():
        if canonicalize_name(distribution.metadata["Name"]) not in distributions:
            others.update(file.parts[0] for file in distribution.files or [])
    links: dict[Path, Path] = {}
    for distribution in distributions.values():
        for file in distribution.files or []:
            if file.parts[0] == "..":  # scripts outside site-packages
                continue
            source = Path(distribution.locate_file(file))
            whole = len(file.parts) > 1 and file.parts[0] not in others
            entry = Path(file.parts[0]) if whole else Path(file)
            links[entry] = source.parents[len(file.parts) - 2] if whole else source
    for entry, source in links.items():
        if source.exists():
            (site_packages / entry).parent.mkdir(parents=True, exist_ok=True)
            (site_packages / entry).symlink_to(source)
    return len(links)


BareEnvironments = Callable[[tuple[str, ...]], Path]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> BareEnvironments:
    """``bare_python(requirements)``: the interpreter of a bare environment holding those requirements
    (``name==version`` lines), built on first use and reused for the same requirements."""
    built: dict[tuple[str, ...], Path] = {}

    def environment(requirements: tuple[str, ...]) -> Path:
        if requirements not in built:
            root = tmp_path_factory.mktemp("bare-env")
            started = time.monotonic()
            venv.create(root, with_pip=False, symlinks=True)
            closure = dependency_closure(list(requirements))
            files = link_distributions(closure, next((root / "lib").glob("python3*/site-packages")))
            print(f"bare environment: {len(closure)} distributions, {files} links in "
                  f"{time.monotonic() - started:.1f} s")
            built[requirements] = root / "bin" / "python"
        return built[requirements]

    return environment


def test_every_family_is_checked() -> None:
    assert set(FAMILY_FOLDERS) == set(FAMILIES), "add the new family to FAMILY_FOLDERS"


@pytest.mark.parametrize("family", sorted(FAMILY_FOLDERS))
def test_registered_model_loads_and_predicts_in_a_bare_environment(
        family: str, bare_python: BareEnvironments, mlflow_server: str,
        server_champion: Callable[[Path, str], str], chain_items: list[str], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    folders = request.getfixturevalue(FAMILY_FOLDERS[family])
    model_folder = folders[family] if isinstance(folders, dict) else folders
    model_uri = server_champion(model_folder, f"bare-env-{family}")
    mlflow.set_tracking_uri(mlflow_server)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text().split()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update({"MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true",
                "CUDA_VISIBLE_DEVICES": ""})
    # -I: no PYTHONPATH, no user site, not even the working directory on the path.
    result = subprocess.run([str(bare_python(tuple(requirements))), "-I", "-c", SCRIPT, model_uri,
                             *chain_items[5:7], *PROJECT_PACKAGES], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["importable"] == [], f"the bare environment can import {output['importable']}"
    assert not set(output["modules"]) & set(PROJECT_PACKAGES), output["modules"]
    assert re.search(r"/code/model/__init__\.py$", output["model_code"]), output["model_code"]
    assert not any(str(PROJECT_ROOT) in entry for entry in output["sys_path"]), output["sys_path"]
    rows = output["rows"]
    assert [(row["session_id"], row["rank"], row["fallback"]) for row in rows] == [
        ("known", 1, False), ("known", 2, False), ("known", 3, False),
        ("unknown", 1, True), ("unknown", 2, True), ("unknown", 3, True)]
    # The same answers as the model folder gives in this project's environment.
    expected = Recommender.from_directory(model_folder, device="cpu").recommend(
        [chain_items[5:7], ["never-seen"]], k=3).to_pandas(np.array(["known", "unknown"], dtype=object))
    assert [row["item_id"] for row in rows] == expected["item_id"].tolist()
    assert [row["score"] for row in rows] == pytest.approx(expected["score"].tolist(), rel=1e-5)
