"""The assets the DAGs produce and schedule on. Every asset event carries the day in ``extra["ds"]``.

- sessions: a day of ``sessions/ds=D`` passed its checks (``clickstream_sessionize``);
  consumers: ``gru4rec_train``.
- model: the promotion gate decided on a new version of the registered model (``gru4rec_train``);
  extra also holds ``version``, ``promoted`` and ``champion_version``; consumers: ``gru4rec_score``.
- recommendations: partition D of the warehouse table passed its checks (``gru4rec_score``).
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Asset

from sessionrec.config import Settings

GROUP = "sessionrec"


def location_uri(location: str) -> str:
    """A lake location as a URI: local folders become ``file://`` URIs, URIs stay as they are."""
    if "://" in location:
        return location
    return Path(location).resolve().as_uri()


def sessions_asset(settings: Settings) -> Asset:
    return Asset(name="clickstream_sessions", uri=location_uri(settings.layout.sessions_root), group=GROUP)


def model_asset(settings: Settings) -> Asset:
    return Asset(name=f"{settings.model_name}_model", uri=f"models:/{settings.model_name}", group=GROUP)


def recommendations_asset() -> Asset:
    return Asset(name="session_recommendations", group=GROUP)
