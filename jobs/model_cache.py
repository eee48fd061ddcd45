"""The model a scoring job serves: one registry version, loaded once per Python worker and kept there.

The driver resolves the reference to a concrete version and downloads its folder (jobs/score.py); the
:class:`ServedModel` it builds travels to the workers with the scoring function. A worker loads the
Recommender from the driver's folder when it shares the driver's disk, else downloads the same
``models:/name/version`` itself (so executors must reach the MLflow stores and import the project, e.g.
with ``--py-files``), on its GPU when it has one. Spark imports this module in each Python worker, so it
imports nothing heavy at the top.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lifecycle.connection import MlflowStore

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from model.recommender import Recommender

RECOMMENDATION_SCHEMA = "session_id string, rank int, item_id string, score float, fallback boolean"


@dataclass(frozen=True)
class ServedModel:
    """A registered model version, the reference it was resolved from (``models:/name@alias`` as asked),
    and where the driver downloaded its folder (model.pt, items.parquet, config.json)."""

    name: str
    version: str
    store: MlflowStore
    local_dir: Path
    reference: str

    @property
    def uri(self) -> str:
        """``models:/name/version``: what a worker without the driver's folder downloads."""
        return f"models:/{self.name}/{self.version}"


def download(model_uri: str, store: MlflowStore, dst: Path) -> Path:
    """The model folder of ``model_uri`` (a concrete version) downloaded from ``store`` under ``dst``."""
    from model.logged import download_model_dir

    store.connect()
    return download_model_dir(model_uri, dst)


_worker_models: dict[str, Recommender] = {}


def worker_recommender(model: ServedModel) -> Recommender:
    """The Recommender of ``model`` in this Python worker, loaded on first use and kept for later tasks.

    Loads from the driver's folder when this machine has it, else downloads ``model.uri`` into a temporary
    folder kept for the worker's lifetime. Torch gets as many threads as the task has cores, so parallel
    workers do not oversubscribe the CPU.
    """
    key = str(model.local_dir)
    if key not in _worker_models:
        import torch
        from pyspark import TaskContext

        from model.recommender import Recommender

        directory = model.local_dir
        if not directory.exists():
            directory = download(model.uri, model.store, Path(tempfile.mkdtemp(prefix="sessionrec-model-")))
        context = TaskContext.get()
        if context is not None:
            torch.set_num_threads(max(1, context.cpus()))
        _worker_models.clear()
        _worker_models[key] = Recommender.from_directory(directory)
    return _worker_models[key]


def score_batches(batches: Iterator[pa.RecordBatch], model: ServedModel, top_k: int,
                  exclude_last: bool) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: batches of (session_id, item_ids) -> batches of recommendations."""
    for batch in batches:  # the model loads on the first batch: an empty partition never loads it
        recommender = worker_recommender(model)
        recommendations = recommender.recommend(batch.column("item_ids").to_pylist(), k=top_k,
                                                exclude_last=exclude_last)
        yield from recommendations.to_arrow(batch.column("session_id")).to_batches()


def recommend(sequences: DataFrame, model: ServedModel, top_k: int, exclude_last: bool) -> DataFrame:
    """Top-K rows (session_id, rank, item_id, score, fallback) per session, scored in the Python workers."""
    scorer = functools.partial(score_batches, model=model, top_k=top_k, exclude_last=exclude_last)
    return sequences.select("session_id", "item_ids").mapInArrow(scorer, RECOMMENDATION_SCHEMA)
