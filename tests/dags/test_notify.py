"""Failed tasks notify through the notifier the settings choose (dags/dag_support/notify.py).

A real ``airflow dags test`` run whose task fails for good posts to a chat webhook: a tiny HTTP server
of the test, reached through an Airflow connection given in the environment, as a deployment would give
it. The other kinds are checked where the DAG folder is parsed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dag_test_support import DAY, describe_dags

from sessionrec import airflow_env
from sessionrec.airflow_env import DAGS_FOLDER
from sessionrec.config import Settings
from sessionrec.run import run_dag

CONN_ID = "sessionrec_alerts"


class Webhook(ThreadingHTTPServer):
    """An incoming-webhook endpoint that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the handler API's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/T1/B2/secret"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_task_that_fails_for_good_posts_to_the_chat_webhook(dag_settings: Settings, webhook: Webhook) -> None:
    settings = dag_settings.replace(notifier="webhook", notify_conn_id=CONN_ID)
    env = airflow_env.airflow_env(settings, retry_delay_s=1)
    env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({"conn_type": "http", "host": webhook.url})
    airflow_env.prepare(settings, env)
    conf = {"ds": DAY.isoformat(), "model": "999"}  # no such version: resolve_model fails for good
    with pytest.raises(RuntimeError, match="DAG gru4rec_score failed") as failed:
        run_dag("gru4rec_score", conf, env, settings.home / "notify-logs")
    assert len(webhook.received) == 1, failed.value
    path, body = webhook.received[0]
    assert path == "/hooks/T1/B2/secret"
    assert body["text"].startswith("sessionrec: task resolve_model of DAG gru4rec_score failed")
    assert "no version 999" in body["text"] and "/dags/gru4rec_score/runs/" in body["text"]


def test_the_settings_choose_the_notifier_and_a_wrong_choice_is_named(dag_settings: Settings) -> None:
    smtp = describe_dags(dag_settings.replace(notifier="smtp", notify_to="oncall@example.com"), {})
    assert {task["failure_callbacks"][0] for dag in smtp["dags"].values() for task in dag["tasks"].values()} \
        == {"SmtpNotifier"}
    wrong = describe_dags(dag_settings.replace(notifier="pager"), {})
    assert set(wrong["import_errors"]) == {path.name for path in DAGS_FOLDER.glob("*.py")}
    assert all("SESSIONREC_NOTIFIER='pager': expected one of log, smtp, webhook" in error
               for error in wrong["import_errors"].values())
