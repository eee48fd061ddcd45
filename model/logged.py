"""Where a logged session model keeps its model folder, and fetching that folder from MLflow.

Its own module so that a process that only downloads a model (the scoring job's driver) does not import
torch and the network code; model/packaging.py writes what this reads.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.models import Model

ARTIFACT_KEY = "model"
# The artifact key of versions logged before families existed (all GRU4Rec).
LEGACY_ARTIFACT_KEY = "gru4rec"


def model_artifact(artifacts: dict[str, str]) -> str:
    """The model folder among a logged model's artifacts (the key of older versions is ``gru4rec``)."""
    for key in (ARTIFACT_KEY, LEGACY_ARTIFACT_KEY):
        if key in artifacts:
            return artifacts[key]
    raise ValueError(f"not a session model pyfunc: no {ARTIFACT_KEY!r} artifact, found {sorted(artifacts)}")


def download_model_dir(model_uri: str, dst: Path | str) -> Path:
    """Download a logged session model pyfunc under ``dst`` and return its model folder (config.json, ...)."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    flavor = Model.load(str(local)).flavors.get("python_function", {})
    artifacts = {key: value["path"] for key, value in flavor.get("artifacts", {}).items()}
    try:
        return local / model_artifact(artifacts)
    except ValueError as exc:
        raise ValueError(f"{model_uri}: {exc} in MLmodel") from exc
