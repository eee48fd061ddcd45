"""Connecting to MLflow: the one place that points this process and a client at the project's stores.

The stores come from the settings (``Settings.mlflow_tracking_uri`` and ``mlflow_registry_uri``, which
follow ``SESSIONREC_*`` then MLflow's own ``MLFLOW_*`` variables, see sessionrec/config.py). A
:class:`MlflowStore` is a small picklable value, so a Spark job can hand it to its Python workers.
Importing this module loads MLflow only when a connection is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sessionrec.config import Settings, redact

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

SQLITE = "sqlite:///"


@dataclass(frozen=True)
class MlflowStore:
    """An MLflow tracking store and model registry (the same URI unless configured apart)."""

    tracking_uri: str
    registry_uri: str = ""

    def __post_init__(self) -> None:
        if not self.registry_uri:
            object.__setattr__(self, "registry_uri", self.tracking_uri)

    @classmethod
    def of(cls, settings: Settings) -> MlflowStore:
        return cls(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)

    def describe(self) -> str:
        """The URIs as they may be logged (passwords replaced)."""
        if self.registry_uri == self.tracking_uri:
            return redact(self.tracking_uri)
        return f"{redact(self.tracking_uri)} (registry {redact(self.registry_uri)})"

    def connect(self) -> MlflowClient:
        """Point this process's MLflow (fluent API, model downloads) at the stores and return a client.

        The folder of a local SQLite store is created, so a fresh ``var/`` works. MLflow also exports the
        URIs as ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``, so child processes use the same stores.
        """
        import mlflow
        from mlflow.tracking import MlflowClient

        for uri in {self.tracking_uri, self.registry_uri}:
            if uri.startswith(SQLITE):
                Path(uri.removeprefix(SQLITE)).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.registry_uri)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)


def connect(settings: Settings) -> MlflowClient:
    """A client of the settings' MLflow stores, with this process pointed at them too."""
    return MlflowStore.of(settings).connect()
