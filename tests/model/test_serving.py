"""The registered champion served over HTTP by ``mlflow models serve`` (the README's serving section): the
answers to sessions of known items, of unknown items only, an empty session, and the errors of bad bodies."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.net import free_port, stop_process_group, wait_healthy

MODEL_NAME = "gru4rec-http"
SERVER_START_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def served(server_champion: Callable[[Path, str], str], mlflow_server: str, trained_model_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow models serve -m models:/gru4rec-http@champion --env-manager local`` on a free loopback port."""
    model_uri = server_champion(trained_model_dir, MODEL_NAME)
    root = tmp_path_factory.mktemp("serving")
    port = free_port()
    log = root / "serve.log"
    venv_bin = Path(sys.executable).parent
    # The CLI starts the server as `uvicorn ...`, found on PATH: the environment's bin folder comes first.
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true",
           "CUDA_VISIBLE_DEVICES": "", "PATH": os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")])}
    command = [str(venv_bin / "mlflow"), "models", "serve", "-m", model_uri,
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                   start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/ping", process, log, SERVER_START_TIMEOUT_S)
        yield url
    finally:
        stop_process_group(process)


def post(url: str, body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST ``body`` (a dict is sent as JSON) to ``/invocations``; the status and the decoded JSON answer."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/invocations", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def sessions_body(sessions: dict[str, list[str]], **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"dataframe_records": [{"session_id": sid, "item_ids": items}
                                                  for sid, items in sessions.items()]}
    if params:
        body["params"] = params
    return body


def by_session(predictions: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in predictions:
        grouped.setdefault(row["session_id"], []).append(row)
    return grouped


def test_known_unknown_and_empty_sessions(served: str, chain_items: list[str]) -> None:
    status, answer = post(served, sessions_body({"known": chain_items[5:7], "unknown": ["never-seen", "nor-this"],
                                                 "empty": [], "last-unknown": [chain_items[40], "never-seen"]},
                                                k=3))
    assert status == 200, answer
    rows = by_session(answer["predictions"])
    assert list(rows) == ["known", "unknown", "empty", "last-unknown"]
    assert all(sorted(row) == ["fallback", "item_id", "rank", "score", "session_id"]
               for group in rows.values() for row in group)
    assert all([row["rank"] for row in group] == [1, 2, 3] for group in rows.values())
    assert all(group[0]["score"] >= group[1]["score"] >= group[2]["score"] for group in rows.values())
    # The chain model continues a session with the next item; the unknown last item is skipped.
    assert rows["known"][0]["item_id"] == chain_items[7] and not rows["known"][0]["fallback"]
    assert rows["last-unknown"][0]["item_id"] == chain_items[41] and not rows["last-unknown"][0]["fallback"]
    assert chain_items[6] not in {row["item_id"] for row in rows["known"]}  # the last item is excluded
    # No known item: the most popular items, flagged as the fallback, the same for both.
    assert all(row["fallback"] for row in rows["unknown"] + rows["empty"])
    assert rows["unknown"] == [{**row, "session_id": "unknown"} for row in rows["empty"]]


def test_default_params_and_dataframe_split(served: str, chain_items: list[str]) -> None:
    status, answer = post(served, {"dataframe_split": {"columns": ["session_id", "item_ids"],
                                                       "data": [["s1", chain_items[10:12]]]}})
    assert status == 200, answer
    assert [row["rank"] for row in answer["predictions"]] == list(range(1, 21))
    assert answer["predictions"][0]["item_id"] == chain_items[12]


@pytest.mark.parametrize(("body", "message"), [
    (b'{"dataframe_records": [{"session_id": "s1", "item_ids": ["a"', "valid JSON formatted string"),
    ({"sessions": [["a"]]}, "exactly one of the input fields"),
    ({"dataframe_records": [{"session_id": "s1"}]}, re.escape("missing inputs ['item_ids']")),
    ({"dataframe_records": [{"session_id": "s1", "item_ids": "item005"}]},
     re.escape("column item_ids to type 'Array(string)'")),
    (sessions_body({"s1": ["item005"]}, k=0), "k must be a positive integer, got 0"),
], ids=["truncated-json", "no-input-key", "missing-column", "items-not-a-list", "bad-k"])
def test_bad_bodies_get_a_400_that_says_what_is_wrong(served: str, body: bytes | dict, message: str) -> None:
    status, answer = post(served, body)
    assert status == 400, answer
    assert answer["error_code"] in {"BAD_REQUEST", "INVALID_PARAMETER_VALUE"}
    assert re.search(message, answer["message"]), answer


def test_single_session_latency(served: str, chain_items: list[str]) -> None:
    """Twenty single-session requests all answer; the median is printed (not asserted: the machine is shared)."""
    body = sessions_body({"s1": chain_items[:5]}, k=20)
    seconds = []
    for _ in range(20):
        started = time.perf_counter()
        status, answer = post(served, body)
        seconds.append(time.perf_counter() - started)
        assert status == 200 and len(answer["predictions"]) == 20
    print(f"single-session POST /invocations: median {statistics.median(seconds) * 1000:.1f} ms")
