"""The GRU4Rec pyfunc model against a real MLflow store (SQLite): what is logged, how it predicts, and that
a tampered artifact is refused on load without running anything from it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from mlflow.models.model import ModelInfo

from lifecycle.tracking import training_run
from model.logged import download_model_dir
from model.packaging import ENTRY_POINT_FILE, pinned_requirements
from sessionrec.config import Settings


@pytest.fixture(scope="module")
def logged(trained_model_dir: Path, mlflow_store: Callable[[Path], Settings],
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, ModelInfo]:
    """The trained model logged once for this module's tests."""
    settings = mlflow_store(tmp_path_factory.mktemp("packaging") / "var")
    with training_run(settings, date(2026, 11, 21), device="cpu", system_metrics=False) as run:
        info = run.log_model(trained_model_dir)
    return settings, info


@pytest.fixture(scope="module")
def local_copy(logged: tuple[Settings, ModelInfo], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(mlflow.artifacts.download_artifacts(logged[1].model_uri,
                                                    dst_path=str(tmp_path_factory.mktemp("copy"))))


def test_logged_model_is_code_plus_data_with_no_pickle(local_copy: Path) -> None:
    files = {p.relative_to(local_copy).as_posix() for p in local_copy.rglob("*") if p.is_file()}
    assert ENTRY_POINT_FILE in files
    assert "code/model/packaging.py" in files and "code/model/recommender.py" in files
    assert not any(name.endswith((".pkl", ".pickle")) or "__pycache__" in name for name in files)
    mlmodel = yaml.safe_load((local_copy / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert "python_model" not in flavor and flavor["model_code_path"].endswith(ENTRY_POINT_FILE)
    model_dir = local_copy / flavor["artifacts"]["model"]["path"]
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "items.parquet", "model.pt"]


def test_requirements_are_explicit_and_pinned(local_copy: Path) -> None:
    lines = [line for line in (local_copy / "requirements.txt").read_text().splitlines() if line]
    assert lines == pinned_requirements()
    assert {line.split("==")[0] for line in lines} == {"mlflow", "torch", "numpy", "pandas", "pyarrow", "scipy"}
    assert all("+" not in line for line in lines)


def test_signature_has_the_input_columns_and_params(local_copy: Path) -> None:
    signature = mlflow.models.Model.load(str(local_copy)).signature
    assert signature.inputs.input_names() == ["session_id", "item_ids"]
    assert signature.outputs.input_names() == ["session_id", "rank", "item_id", "score", "fallback"]
    params = {p.name: p.default for p in signature.params.params}
    assert params == {"k": 20, "exclude_last": True}
    example = json.loads((local_copy / "input_example.json").read_text())
    assert example["columns"] == ["session_id", "item_ids"]


def test_loaded_model_predicts_recommendations(logged: tuple[Settings, ModelInfo], chain_items: list[str]) -> None:
    model = mlflow.pyfunc.load_model(logged[1].model_uri, model_config={"device": "cpu"})
    frame = pd.DataFrame({"session_id": ["a", "b", "c"],
                          "item_ids": [[chain_items[5], chain_items[6]], ["never-seen"], [chain_items[40]]]})
    result = model.predict(frame, params={"k": 4})
    assert list(result.columns) == ["session_id", "rank", "item_id", "score", "fallback"]
    assert result.groupby("session_id")["rank"].apply(list).to_dict() == {s: [1, 2, 3, 4] for s in "abc"}
    first = result[result["rank"] == 1].set_index("session_id")["item_id"]
    assert first["a"] == chain_items[7] and first["c"] == chain_items[41]
    assert result.set_index("session_id")["fallback"].groupby(level=0).all().to_dict() == {
        "a": False, "b": True, "c": False}
    kept = model.predict(frame.iloc[:1], params={"k": len(chain_items), "exclude_last": False})
    assert chain_items[6] in set(kept["item_id"])
    assert chain_items[6] not in set(model.predict(frame.iloc[:1], params={"k": len(chain_items)})["item_id"])


def test_load_time_config_reaches_the_model(logged: tuple[Settings, ModelInfo]) -> None:
    mlmodel = mlflow.models.Model.load(logged[1].model_uri)
    assert mlmodel.flavors["python_function"]["config"] == {"device": "auto", "chunk_size": 2048,
                                                            "max_session_events": 50}
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        mlflow.pyfunc.load_model(logged[1].model_uri, model_config={"device": "cpu", "chunk_size": 0})
    with pytest.raises(ValueError, match="max_session_events must be a positive integer, got 0"):
        mlflow.pyfunc.load_model(logged[1].model_uri, model_config={"device": "cpu", "max_session_events": 0})


LEGACY_ENTRY_POINT = '''from mlflow.models import set_model

from model.packaging import GRU4RecPyfunc

set_model(GRU4RecPyfunc())
'''


def test_a_version_logged_before_families_still_loads(logged: tuple[Settings, ModelInfo], trained_model_dir: Path,
                                                      tmp_path: Path, chain_items: list[str]) -> None:
    """What earlier code logged: entry point importing GRU4RecPyfunc, artifact key gru4rec, format 1 folder."""
    folder = tmp_path / "legacy"
    shutil.copytree(trained_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["family"]
    (folder / "config.json").write_text(json.dumps({**config, "format_version": 1}))
    entry_point = tmp_path / "gru4rec_pyfunc.py"
    entry_point.write_text(LEGACY_ENTRY_POINT)
    # The project's experiment (its artifact location is the store's), never the working directory's ./mlruns.
    mlflow.set_tracking_uri(logged[0].mlflow_tracking_uri)
    with mlflow.start_run(experiment_id=mlflow.get_run(logged[1].run_id).info.experiment_id):
        info = mlflow.pyfunc.log_model(name="legacy", python_model=str(entry_point),
                                       artifacts={"gru4rec": str(folder)}, pip_requirements=["mlflow"])
    model = mlflow.pyfunc.load_model(info.model_uri, model_config={"device": "cpu"})
    result = model.predict(pd.DataFrame({"session_id": ["a"], "item_ids": [[chain_items[5], chain_items[6]]]}))
    assert result.iloc[0]["item_id"] == chain_items[7]
    assert (download_model_dir(info.model_uri, tmp_path / "download") / "model.pt").is_file()


def test_bad_input_is_refused_with_the_expected_columns(logged: tuple[Settings, ModelInfo]) -> None:
    model = mlflow.pyfunc.load_model(logged[1].model_uri, model_config={"device": "cpu"})
    with pytest.raises(Exception, match="item_ids"):
        model.predict(pd.DataFrame({"session_id": ["a"]}))


def test_download_model_dir_finds_the_model_folder(logged: tuple[Settings, ModelInfo], tmp_path: Path) -> None:
    folder = download_model_dir(logged[1].model_uri, tmp_path)
    assert (folder / "model.pt").is_file() and (folder / "config.json").is_file()


class _WritesMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_tampered_logged_model_is_refused_without_running_code(local_copy: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(local_copy, tampered)
    flavor = yaml.safe_load((tampered / "MLmodel").read_text())["flavors"]["python_function"]
    weights = tampered / flavor["artifacts"]["model"]["path"] / "model.pt"
    marker = tmp_path / "code-ran"
    torch.save({"item_embedding": _WritesMarker(marker)}, weights)
    with pytest.raises(ValueError, match="refusing to load objects"):
        mlflow.pyfunc.load_model(str(tampered))
    assert not marker.exists()
