"""The settings' MLflow stores follow MLflow's own conventions, under the project's own variables."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lifecycle.connection import MlflowStore, connect
from sessionrec.config import env_names, load_settings


def test_the_embedded_sqlite_store_is_the_default(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path)
    assert settings.mlflow_tracking_uri == settings.mlflow_registry_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"


@pytest.mark.parametrize(("env", "tracking", "registry"), [
    ({"MLFLOW_TRACKING_URI": "http://mlflow:5000"}, "http://mlflow:5000", "http://mlflow:5000"),
    ({"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_REGISTRY_URI": "sqlite:////r.db"},
     "http://mlflow:5000", "sqlite:////r.db"),
    ({"MLFLOW_TRACKING_URI": "http://other:5000", "SESSIONREC_MLFLOW_TRACKING_URI": "http://ours:5000"},
     "http://ours:5000", "http://ours:5000"),
    ({"MLFLOW_REGISTRY_URI": "http://reg:5000", "SESSIONREC_MLFLOW_REGISTRY_URI": "http://our-reg:5000",
      "SESSIONREC_MLFLOW_TRACKING_URI": "http://ours:5000"}, "http://ours:5000", "http://our-reg:5000"),
    ({"MLFLOW_TRACKING_URI": ""}, None, None),
])
def test_sessionrec_variables_win_over_mlflow_ones_which_win_over_the_default(
        tmp_path: Path, env: dict[str, str], tracking: str | None, registry: str | None) -> None:
    settings = load_settings(env=env, home=tmp_path)
    default = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert settings.mlflow_tracking_uri == (tracking or default)
    assert settings.mlflow_registry_uri == (registry or default)
    assert MlflowStore.of(settings) == MlflowStore(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)


def test_the_registry_has_its_own_setting() -> None:
    assert "SESSIONREC_MLFLOW_REGISTRY_URI" in env_names()


def test_with_mlflow_tracking_uri_set_runs_land_in_that_store(tmp_path: Path) -> None:
    """A training run tracked with only MLFLOW_TRACKING_URI set goes to that store, not the embedded one."""
    from lifecycle.tracking import training_run

    theirs = f"sqlite:///{tmp_path / 'theirs' / 'mlflow.db'}"
    settings = load_settings(env={"MLFLOW_TRACKING_URI": theirs}, home=tmp_path / "var")
    with training_run(settings, date(2026, 11, 21), "cpu", system_metrics=False) as run:
        run.log_params({"epochs": 1})
    (found,) = MlflowClient(tracking_uri=theirs).search_runs(
        [MlflowClient(tracking_uri=theirs).get_experiment_by_name(settings.model_name).experiment_id])
    assert found.info.run_id == run.run_id and found.data.params == {"epochs": "1"}
    assert not (tmp_path / "var" / "mlflow").exists(), "nothing written to the embedded default store"


def test_a_separate_registry_receives_the_registered_models(tmp_path: Path) -> None:
    tracking, registry = f"sqlite:///{tmp_path / 't.db'}", f"sqlite:///{tmp_path / 'r' / 'r.db'}"
    client = connect(load_settings(env={"MLFLOW_TRACKING_URI": tracking, "MLFLOW_REGISTRY_URI": registry},
                                   home=tmp_path))
    client.create_registered_model("recs")
    assert [m.name for m in MlflowClient(tracking_uri=tracking, registry_uri=registry).search_registered_models()] \
        == ["recs"]
    assert MlflowClient(tracking_uri=tracking, registry_uri=tracking).search_registered_models() == []
