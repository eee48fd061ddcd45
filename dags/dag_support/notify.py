"""Who hears about a failed task: the notifier every DAG passes as its tasks' ``on_failure_callback``.

Airflow calls it once a task has failed for good (not on a failure that is retried). The kind comes from
``Settings.notifier``:

- ``log`` (default): one ERROR line on the logger ``sessionrec.alerts``, in the task's log.
- ``smtp``: an e-mail through the SMTP provider's ``SmtpNotifier`` on the SMTP connection
  ``Settings.notify_conn_id`` (empty: ``smtp_default``) to ``Settings.notify_to``.
- ``webhook``: a JSON ``{"text": message}`` POST to the chat incoming-webhook URL held by the HTTP
  connection ``Settings.notify_conn_id`` (Slack, Mattermost, Rocket.Chat and Google Chat accept it).

Secrets (the webhook URL, the SMTP password) live in the connection, never in the settings.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier, Connection

from sessionrec.config import Settings

ALERTS_LOGGER = "sessionrec.alerts"
NOTIFIERS = ("log", "smtp", "webhook")
WEBHOOK_TIMEOUT_S = 30


def failure_message(context: Any) -> str:
    """One line naming the DAG, task, run and try, the error and where the log is."""
    ti = context["task_instance"]
    error = context.get("exception")
    return (f"sessionrec: task {ti.task_id} of DAG {ti.dag_id} failed (run {ti.run_id}, try "
            f"{ti.try_number}): {error if error is not None else 'no error recorded'}. Log: {ti.log_url}")


class LogNotifier(BaseNotifier):
    """The failure as an ERROR line on :data:`ALERTS_LOGGER` (log shippers and alert rules match on it)."""

    def notify(self, context: Any) -> None:
        logging.getLogger(ALERTS_LOGGER).error(failure_message(context))


def webhook_url(connection: Any) -> str:
    """The incoming-webhook URL of an HTTP connection: its host when that is a whole URL, otherwise
    ``<schema or https>://<host>[:<port>]`` followed by the ``endpoint`` of its extra."""
    host = connection.host or ""
    if not host:
        raise ValueError(f"connection {connection.conn_id!r} has no host: put the webhook URL there")
    if "://" in host:
        return host
    port = f":{connection.port}" if connection.port else ""
    endpoint = str(connection.extra_dejson.get("endpoint", "")).lstrip("/")
    return f"{connection.schema or 'https'}://{host}{port}/{endpoint}"


class WebhookNotifier(BaseNotifier):
    """The failure as a chat message: ``{"text": ...}`` POSTed to the connection's webhook URL."""

    def __init__(self, conn_id: str) -> None:
        super().__init__()
        self.conn_id = conn_id

    def notify(self, context: Any) -> None:
        url = webhook_url(Connection.get(self.conn_id))
        request = urllib.request.Request(url, data=json.dumps({"text": failure_message(context)}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            self.log.info("failure posted to the webhook of connection %s (HTTP %d)", self.conn_id,
                          response.status)


def smtp_notifier(settings: Settings) -> BaseNotifier:
    """The SMTP provider's notifier with the failure line as subject; the provider must be installed."""
    try:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    except ImportError as exc:
        raise ValueError("SESSIONREC_NOTIFIER=smtp needs apache-airflow-providers-smtp installed") from exc
    recipients = [address.strip() for address in settings.notify_to.split(",") if address.strip()]
    if not recipients:
        raise ValueError("SESSIONREC_NOTIFIER=smtp needs the recipients in SESSIONREC_NOTIFY_TO")
    return SmtpNotifier(
        to=recipients, smtp_conn_id=settings.notify_conn_id or None,
        subject="sessionrec: {{ ti.dag_id }}.{{ ti.task_id }} failed",
        html_content="<p>Task {{ ti.task_id }} of DAG {{ ti.dag_id }} failed (run {{ ti.run_id }}, try "
                     "{{ ti.try_number }}): {{ exception }}</p><p><a href=\"{{ ti.log_url }}\">Log</a></p>")


def failure_notifier(settings: Settings) -> BaseNotifier:
    """The notifier ``Settings.notifier`` names; a clear error for an unknown kind or missing setting."""
    if settings.notifier == "log":
        return LogNotifier()
    if settings.notifier == "smtp":
        return smtp_notifier(settings)
    if settings.notifier == "webhook":
        if not settings.notify_conn_id:
            raise ValueError("SESSIONREC_NOTIFIER=webhook needs the HTTP connection holding the webhook URL "
                             "in SESSIONREC_NOTIFY_CONN_ID")
        return WebhookNotifier(settings.notify_conn_id)
    raise ValueError(f"SESSIONREC_NOTIFIER={settings.notifier!r}: expected one of {', '.join(NOTIFIERS)}")
