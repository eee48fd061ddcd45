"""A session model of any family as an MLflow ``pyfunc`` model, logged as "models from code": nothing is
pickled. One pyfunc serves every family (model/families.py); the model folder's ``config.json`` says which.

What a logged model holds (``<run artifacts>/<name>/``):

- ``MLmodel``, ``requirements.txt`` and friends, written by MLflow; the pip requirements are explicit and
  pinned to the versions installed here (which also skips MLflow's slow requirement inference);
- ``session_pyfunc.py``: a three-line entry point that imports :class:`SessionPyfunc` and hands an
  empty instance to ``mlflow.models.set_model``. MLflow runs this file when the model is loaded, instead
  of unpickling a ``python_model.pkl`` (what it writes for a ``PythonModel`` *instance*: the instance
  cloudpickled, whose loading executes whatever the pickle says; MLflow 3.17 refuses to load those unless
  ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` is set);
- ``code/model/``: this project's ``model`` package, so a fresh environment built from the requirements
  can import it (MLflow prepends ``code/`` to ``sys.path`` on load; an already imported ``model`` wins);
- ``artifacts/<folder>/``: the model folder written by ``model/artifacts.py``: the family's data files
  (GRU4Rec: ``model.pt``, a ``state_dict`` loaded with ``weights_only=True`` and mapped onto the loading
  device; SR, V-SKNN: Parquet tables), ``items.parquet`` and ``config.json``. This is data only; loading
  it never executes code from it.

The logged model's family is in its MLmodel ``metadata`` and becomes the ``family`` tag of its registered
version (lifecycle/registry.py).
Versions logged before families existed have the entry point ``gru4rec_pyfunc.py`` importing
``GRU4RecPyfunc`` and the artifact key ``gru4rec``; both still load (an already imported ``model``
package wins over the one they carry).

``load_context`` builds a :class:`model.recommender.Recommender` from that folder. The device is "auto"
(CUDA when present, else CPU) unless the loader passes ``model_config={"device": "cpu"}``; the
sessions scored per batch (``"chunk_size"``) and the most recent events scored per session
(``"max_session_events"``) can be set the same way.

Input: a DataFrame with ``session_id`` (string) and ``item_ids`` (list of strings, oldest first).
Output: one row per recommendation: ``session_id``, ``rank`` (1..k), ``item_id``, ``score``, ``fallback``.
Params: ``k`` (default 20) and ``exclude_last`` (default true).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelInputExample, ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext

from model.logged import ARTIFACT_KEY, model_artifact
from model.recommender import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_SESSION_EVENTS, Recommender

logger = logging.getLogger(__name__)

INPUT_COLUMNS = ("session_id", "item_ids")
DEFAULT_PARAMS: dict[str, Any] = {"k": 20, "exclude_last": True}
# Load-time options; a loader overrides them with mlflow.pyfunc.load_model(uri, model_config={...}).
DEFAULT_MODEL_CONFIG: dict[str, Any] = {"device": "auto", "chunk_size": DEFAULT_CHUNK_SIZE,
                                         "max_session_events": DEFAULT_MAX_SESSION_EVENTS}
REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "pyarrow", "scipy")
ENTRY_POINT_FILE = "session_pyfunc.py"
# This project's ``model`` package (the folder of this file), shipped with the logged model.
MODEL_PACKAGE = Path(__file__).resolve().parent
ENTRY_POINT = '''"""MLflow models-from-code entry point of the session model pyfunc (written by model/packaging.py)."""
from mlflow.models import set_model

from model.packaging import SessionPyfunc

set_model(SessionPyfunc())
'''


class SessionPyfunc(PythonModel):
    """Recommends the next items of sessions; holds nothing until ``load_context`` reads the artifacts."""

    def __init__(self) -> None:
        self._recommender: Recommender | None = None

    def load_context(self, context: PythonModelContext) -> None:
        config = {**DEFAULT_MODEL_CONFIG, **(context.model_config or {})}
        self._recommender = Recommender.from_directory(model_artifact(context.artifacts),
                                                       device=str(config["device"]),
                                                       chunk_size=int(config["chunk_size"]),
                                                       max_session_events=int(config["max_session_events"]))

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self._recommender is None:
            raise RuntimeError("SessionPyfunc.predict called before load_context")
        options = {**DEFAULT_PARAMS, **(params or {})}
        try:
            frame = checked_input(model_input)
            recommendations = self._recommender.recommend(
                list(frame["item_ids"]), k=int(options["k"]), exclude_last=bool(options["exclude_last"]))
        except (TypeError, ValueError) as exc:
            # An MlflowException keeps its message in the HTTP answer of `mlflow models serve` (400); any
            # other exception is answered with a generic message.
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc
        return recommendations.to_pandas(frame["session_id"].astype(str).to_numpy())


# The class name the entry point of versions logged before families existed imports.
GRU4RecPyfunc = SessionPyfunc


def checked_input(model_input: pd.DataFrame) -> pd.DataFrame:
    """The input frame, or a clear error when a column is missing or a session's items are not a list."""
    if not isinstance(model_input, pd.DataFrame):
        raise TypeError(f"model input must be a pandas DataFrame with columns {list(INPUT_COLUMNS)}, "
                        f"got {type(model_input).__name__}")
    missing = [c for c in INPUT_COLUMNS if c not in model_input.columns]
    if missing:
        raise ValueError(f"model input lacks column(s) {missing}; expected {list(INPUT_COLUMNS)} with "
                         "item_ids a list of item id strings per session, oldest first")
    bad = [i for i, items in enumerate(model_input["item_ids"]) if isinstance(items, str)
           or not hasattr(items, "__len__")]
    if bad:
        value = model_input["item_ids"].iloc[bad[0]]
        raise ValueError(f"model input column item_ids must hold a list of item ids per row; row {bad[0]} "
                         f"holds {type(value).__name__} {value!r}")
    return model_input


def pinned_requirements() -> list[str]:
    """``name==version`` of the installed runtime packages (local labels like ``+cpu`` dropped)."""
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in REQUIREMENTS]


def input_example(recommender: Recommender) -> pd.DataFrame:
    """Two sessions: one with known items, one whose only item is unknown (it gets the fallback)."""
    known = [str(item) for item in recommender.vocabulary.item_ids[:2]]
    return pd.DataFrame({"session_id": ["s1", "s2"], "item_ids": [known, ["an-unknown-item"]]})


def model_signature(recommender: Recommender, example: pd.DataFrame) -> ModelSignature:
    """Input, output (from a real prediction on ``example``) and params with their defaults."""
    output = recommender.recommend(list(example["item_ids"]), k=DEFAULT_PARAMS["k"],
                                   exclude_last=DEFAULT_PARAMS["exclude_last"])
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: rank never does.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        return infer_signature(example, output.to_pandas(example["session_id"].to_numpy()),
                               params=DEFAULT_PARAMS)


def log_session_model(model_dir: Path | str, name: str = "model",
                      registered_model_name: str | None = None) -> ModelInfo:
    """Log the model folder ``model_dir`` (any family) as a pyfunc model in the active run (optionally
    registering it).

    The folder is loaded on the CPU first: a folder that does not load (wrong files, tampered weights,
    bad configuration) is refused here rather than at scoring time, and the signature comes from a real
    prediction.
    """
    model_dir = Path(model_dir)
    recommender = Recommender.from_directory(model_dir, device="cpu")
    example: ModelInputExample = input_example(recommender)
    signature = model_signature(recommender, example)
    with tempfile.TemporaryDirectory(prefix="session-pyfunc-") as scratch:
        entry_point = Path(scratch) / ENTRY_POINT_FILE
        entry_point.write_text(ENTRY_POINT)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry_point),
            artifacts={ARTIFACT_KEY: str(model_dir)},
            code_paths=[str(MODEL_PACKAGE)],
            signature=signature,
            input_example=example,
            model_config=DEFAULT_MODEL_CONFIG,
            pip_requirements=pinned_requirements(),
            metadata={"family": recommender.family},
            registered_model_name=registered_model_name,
        )
    logger.info("logged %s model %s as pyfunc model %s (%s)", recommender.family, model_dir, info.model_uri,
                info.artifact_path)
    return info
