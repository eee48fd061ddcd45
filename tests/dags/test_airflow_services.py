"""The real Airflow services (``airflow standalone`` as ``make ui`` starts it) run the chain from a REST
trigger, exactly as the trigger button of the UI does, and refuse bad Params with a 400.

``gru4rec_train`` is triggered through ``POST /api/v2/dags/<id>/dagRuns`` with its Params as ``conf``;
its gate updates the model asset, on which the scheduler starts ``gru4rec_score`` by itself: an
asset-triggered run without a logical date or conf that must take its day from the asset event. It
rescores the day the dag.test runs already scored, so the warehouse partition must be replaced, not
grown. The services use an Airflow home of their own on the lake, MLflow store and warehouse of
tests/dags/test_pipeline_runs.py.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dag_test_support import DAYS, PipelineRun

from sessionrec.ui import Services

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 420.0
TRAINING_CONF = {"training_days": DAYS, "epochs": 1, "hidden_size": 16, "batch_size": 16, "n_sample": 32}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Api:
    """The Airflow REST API v2 with a JWT from /auth/token, as the UI uses it."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password},
                               expect=201)["access_token"]

    def call(self, method: str, path: str, body: object | None = None, expect: int = 200) -> Any:
        request = urllib.request.Request(
            self.base + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {self.token}"} if hasattr(self, "token") else {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, payload = error.code, error.read()
        assert status == expect, f"{method} {path}: {status} {payload[:2000]!r}"
        return json.loads(payload) if payload else None

    def trigger(self, dag_id: str, conf: dict[str, Any], expect: int = 200) -> Any:
        return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf},
                         expect=expect)

    def wait_for_dags(self, dag_ids: set[str], timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while {dag["dag_id"] for dag in self.call("GET", "/api/v2/dags")["dags"]} < dag_ids:
            assert time.monotonic() < deadline, "the DAG processor did not register the DAGs"
            time.sleep(2)

    def wait_for_run(self, dag_id: str, run_type: str | None = None, timeout_s: float = RUN_TIMEOUT_S,
                     run_id: str | None = None) -> dict[str, Any]:
        """The run (by id, or the first of ``run_type``) once it finished; fails if it did not succeed."""
        deadline = time.monotonic() + timeout_s
        while True:
            runs = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
            found = [run for run in runs if run["dag_run_id"] == run_id or run["run_type"] == run_type]
            if found and found[0]["state"] in ("success", "failed"):
                assert found[0]["state"] == "success", self.failure_report(dag_id, found[0]["dag_run_id"])
                return found[0]
            assert time.monotonic() < deadline, f"{dag_id} {run_id or run_type}: not finished: {found}"
            time.sleep(3)

    def failure_report(self, dag_id: str, run_id: str) -> str:
        instances = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return f"{dag_id} {run_id}: " + ", ".join(f"{ti['task_id']}={ti['state']}" for ti in instances)


@pytest.fixture(scope="module")
def api(pipeline_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = pipeline_run.settings.replace(home=tmp_path_factory.mktemp("services") / "var")
    port = free_port()
    services = Services(settings, airflow_port=port, mlflow_port=None)
    services.start(timeout_s=240)
    try:
        client = Api(f"http://127.0.0.1:{port}", services.admin_password())
        client.wait_for_dags({"clickstream_sessionize", "gru4rec_train", "gru4rec_score"})
        yield client
    finally:
        leader = services.servers[0].process.pid
        services.stop()
        with pytest.raises(ProcessLookupError):  # standalone stopped with every child process
            os.killpg(leader, 0)


@pytest.mark.parametrize(("dag_id", "conf", "reason"), [
    ("gru4rec_score", {"top_k": 0}, "less than the minimum of 1"),
    ("gru4rec_score", {"model": "models:/gru4rec@champion"}, "does not match"),
    ("gru4rec_train", {"loss": "mse"}, "is not one of"),
    ("clickstream_sessionize", {"ds": "2026-13-01"}, "is not a 'date'"),
])
def test_bad_params_are_refused_by_the_api(api: Api, dag_id: str, conf: dict, reason: str) -> None:
    detail = api.trigger(dag_id, conf, expect=400)["detail"]
    assert reason in detail
    assert api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns")["total_entries"] == 0


def test_the_trigger_form_gets_titles_types_and_choices(api: Api) -> None:
    params = api.call("GET", "/api/v2/dags/gru4rec_train/details")["params"]
    assert params["loss"]["schema"]["enum"][0] == "cross-entropy"
    assert params["ds"]["schema"]["format"] == "date"
    assert params["epochs"]["schema"]["title"] == "Epochs" and params["epochs"]["schema"]["type"] == "integer"


def test_a_triggered_training_run_rescores_its_day_through_the_model_asset(
        api: Api, pipeline_run: PipelineRun) -> None:
    from jobs.warehouse import connect

    settings, ds = pipeline_run.settings, pipeline_run.day.isoformat()
    for dag_id in ("gru4rec_train", "gru4rec_score"):
        api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    run = api.trigger("gru4rec_train", {"ds": ds, **TRAINING_CONF})
    assert run["conf"]["ds"] == ds and run["logical_date"] is None
    api.wait_for_run("gru4rec_train", run_id=run["dag_run_id"])
    scored = api.wait_for_run("gru4rec_score", run_type="asset_triggered")
    assert scored["conf"] == {} and scored["logical_date"] is None

    events = api.call("GET", "/api/v2/assets/events?source_dag_id=gru4rec_score")["asset_events"]
    assert [event["extra"]["ds"] for event in events] == [ds]
    record = json.loads(Path(settings.layout.score_stats(ds)).read_text())
    assert record["ds"] == ds and record["top_k"] == settings.top_k
    with connect(settings.warehouse_url) as warehouse:
        assert warehouse.count(pipeline_run.day) == record["expected_rows"] == events[0]["extra"]["rows"]
