"""The DAG folder as the DAG processor sees it: imports, parse cost, schedules, tasks and Params.

One cold subprocess parses the folder (tests/dags/describe_dags.py) and validates run confs the way the
REST API does; the tests below read its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dag_test_support import describe_dags

from sessionrec.config import Settings
from training.presets import PRESETS

DAG_IDS = {"clickstream_sessionize", "gru4rec_train", "gru4rec_score"}
PARSE_BUDGET_S = 2.0

GOOD_CONFS: dict[str, list[dict[str, Any]]] = {
    "clickstream_sessionize": [{}, {"ds": "2026-11-21"}, {"ds": None}],
    "gru4rec_train": [{}, {"ds": "2026-11-21", "training_days": 3, "epochs": 1, "loss": "bpr-max",
                           "hidden_size": 16, "batch_size": 8, "learning_rate": 0.05, "n_sample": 0,
                           "force_promote": True}],
    "gru4rec_score": [{}, {"ds": "2026-11-21", "top_k": 5, "model": "3"}, {"model": "challenger"}],
}
BAD_CONFS: dict[str, list[tuple[dict[str, Any], str]]] = {
    "clickstream_sessionize": [({"ds": "2026-13-01"}, "is not a 'date'"),
                               ({"ds": "21.11.2026"}, "is not a 'date'"),
                               ({"ds": 20261121}, "is not of type")],
    "gru4rec_train": [({"training_days": 1}, "less than the minimum of 2"),
                      ({"epochs": 0}, "less than the minimum of 1"),
                      ({"epochs": "ten"}, "is not of type 'integer'"),
                      ({"loss": "mse"}, "is not one of"),
                      ({"hidden_size": 100000}, "greater than the maximum"),
                      ({"batch_size": 1.5}, "is not of type 'integer'"),
                      ({"learning_rate": 0}, "less than or equal to the minimum"),
                      ({"n_sample": -1}, "less than the minimum of 0"),
                      ({"force_promote": "yes"}, "is not of type 'boolean'")],
    "gru4rec_score": [({"top_k": 0}, "less than the minimum of 1"),
                      ({"model": "models:/gru4rec@champion"}, "does not match"),
                      ({"model": "0"}, "does not match"),
                      ({"ds": "tomorrow"}, "is not a 'date'")],
}


@pytest.fixture(scope="module")
def report(dag_settings: Settings) -> dict[str, Any]:
    confs = {dag_id: GOOD_CONFS[dag_id] + [conf for conf, _ in BAD_CONFS[dag_id]] for dag_id in DAG_IDS}
    return describe_dags(dag_settings, confs)


def tasks(report: dict[str, Any], dag_id: str) -> dict[str, dict[str, Any]]:
    return report["dags"][dag_id]["tasks"]


def test_the_dag_folder_imports_without_errors(report: dict[str, Any]) -> None:
    assert report["import_errors"] == {}
    assert set(report["dags"]) == DAG_IDS


def test_parsing_is_cheap_and_imports_nothing_heavy(report: dict[str, Any]) -> None:
    assert report["heavy_modules"] == []
    parse_s = sum(report["file_parse_s"].values())
    assert parse_s < PARSE_BUDGET_S, report["file_parse_s"]


def test_every_dag_documents_itself_and_its_owner(report: dict[str, Any]) -> None:
    for dag_id, dag in report["dags"].items():
        assert "**Inputs**" in dag["doc_md"] and "**Outputs**" in dag["doc_md"], dag_id
        assert "sessionrec" in dag["tags"], dag_id
        assert dag["owner"].startswith("recsys"), dag_id
        assert dag["catchup"] is False, dag_id
        assert 1 <= dag["max_active_runs"] <= 3, dag_id


def test_every_task_but_the_sensor_has_an_execution_timeout(report: dict[str, Any]) -> None:
    for dag_id in DAG_IDS:
        for task_id, task in tasks(report, dag_id).items():
            if task["type"] == "FileSensor":
                assert task["execution_timeout_s"] is None and task["sensor_timeout_s"], task_id
            else:
                assert task["execution_timeout_s"], (dag_id, task_id)


def test_every_param_has_a_title_and_a_type(report: dict[str, Any]) -> None:
    for dag_id, dag in report["dags"].items():
        for name, schema in dag["params"].items():
            assert schema.get("title") and schema.get("type"), (dag_id, name)
        assert dag["params"]["ds"]["format"] == "date", dag_id


def test_sessionize_runs_nightly_waits_for_the_landing_zone_and_publishes_sessions(
        report: dict[str, Any], dag_settings: Settings) -> None:
    dag = report["dags"]["clickstream_sessionize"]
    assert dag["schedule"]["timetable"] == "CronTriggerTimetable"
    assert dag["schedule"]["summary"] == dag_settings.nightly_cron
    steps = tasks(report, "clickstream_sessionize")
    sensor = steps["wait_for_landing_zone"]
    assert sensor["type"] == "FileSensor" and sensor["deferrable"] is True
    assert sensor["upstream"] == ["resolve_day"]
    assert 0 < sensor["poke_interval_s"] < sensor["sensor_timeout_s"] <= 24 * 3600
    assert sensor["filepath"].startswith(f"{dag_settings.raw}/clicks/ds=")
    spark = steps["sessionize"]
    assert spark["type"] == "SparkSubmitOperator" and spark["conn_id"] == "spark_default"
    assert Path(spark["application"]).is_file()
    assert "wait_for_landing_zone" in spark["upstream"]
    assert spark["execution_timeout_s"]
    assert steps["check_stats"]["outlets"] == ["clickstream_sessions"]
    assert steps["check_stats"]["upstream"] == ["resolve_day", "sessionize"]


def test_training_follows_the_sessions_asset_on_the_gpu_pool_and_queue(
        report: dict[str, Any], dag_settings: Settings) -> None:
    assert report["dags"]["gru4rec_train"]["schedule"]["assets"] == ["clickstream_sessions"]
    steps = tasks(report, "gru4rec_train")
    assert steps["build_training_set"]["type"] == "SparkSubmitOperator"
    assert Path(steps["build_training_set"]["application"]).is_file()
    train = steps["train"]
    assert (train["pool"], train["queue"]) == (dag_settings.gpu_pool, dag_settings.gpu_queue)
    assert train["retries"] >= 1 and train["execution_timeout_s"]
    assert train["upstream"] == ["build_training_set", "resolve_day"]
    assert steps["register"]["upstream"] == ["resolve_day", "train"]
    assert steps["gate"]["outlets"] == [f"{dag_settings.model_name}_model"]
    for other in ("resolve_day", "build_training_set", "register", "gate"):
        assert steps[other]["pool"] != dag_settings.gpu_pool, other


def test_scoring_follows_the_model_asset_and_checks_the_warehouse(
        report: dict[str, Any], dag_settings: Settings) -> None:
    assert report["dags"]["gru4rec_score"]["schedule"]["assets"] == [f"{dag_settings.model_name}_model"]
    steps = tasks(report, "gru4rec_score")
    assert steps["score"]["upstream"] == ["resolve_day", "resolve_model"]
    assert Path(steps["score"]["application"]).is_file()
    assert steps["check_partition"]["outlets"] == ["session_recommendations"]


def test_training_form_defaults_are_the_settings_and_the_default_preset(
        report: dict[str, Any], dag_settings: Settings) -> None:
    preset = PRESETS["default"]
    defaults = report["dags"]["gru4rec_train"]["param_defaults"]
    assert defaults == {"ds": None, "training_days": dag_settings.training_days, "family": "auto",
                        "epochs": preset["epochs"],
                        "loss": preset["loss"], "hidden_size": preset["layers"][0],
                        "batch_size": preset["batch_size"], "learning_rate": preset["learning_rate"],
                        "n_sample": preset["n_sample"], "force_promote": False}
    assert report["dags"]["gru4rec_score"]["param_defaults"] == {
        "ds": None, "top_k": dag_settings.top_k, "model": "champion"}


def test_the_loss_choices_are_the_losses_the_model_implements(report: dict[str, Any]) -> None:
    from training.losses import LOSSES

    assert report["dags"]["gru4rec_train"]["params"]["loss"]["enum"] == list(LOSSES)


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_good_confs_are_accepted(report: dict[str, Any], dag_id: str) -> None:
    outcomes = report["validation"][dag_id][:len(GOOD_CONFS[dag_id])]
    assert outcomes == [None] * len(GOOD_CONFS[dag_id])


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_bad_confs_are_refused_with_the_reason(report: dict[str, Any], dag_id: str) -> None:
    outcomes = report["validation"][dag_id][len(GOOD_CONFS[dag_id]):]
    for (conf, reason), outcome in zip(BAD_CONFS[dag_id], outcomes, strict=True):
        assert outcome is not None and outcome.startswith("ParamValidationError"), conf
        assert reason in outcome, (conf, outcome)
