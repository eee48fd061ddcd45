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
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lifecycle.connection import MlflowStore

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark import Accumulator
    from pyspark.sql import DataFrame, SparkSession

    from model.recommender import Recommender

RECOMMENDATION_SCHEMA = "session_id string, rank int, item_id string, score float, fallback boolean"
# Sessions scored and handed back to Spark at a time: the JVM writes one batch while the worker scores the next.
SESSIONS_PER_BATCH = 10_000


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


def score_batches(batches: Iterator[pa.RecordBatch], model: ServedModel, top_k: int, exclude_last: bool,
                  max_events: int, counts: Accumulator[dict[str, int]]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: one task's events (session_id, item_id, position), all the events of each of its
    sessions -> batches of recommendations, :data:`SESSIONS_PER_BATCH` sessions at a time; the task's counts
    (jobs/session_groups.py) added to ``counts``."""
    import pyarrow as pa

    from jobs.session_groups import group_events

    batches = [batch for batch in batches if batch.num_rows]
    if not batches:  # an empty partition never loads the model
        return
    recommender = worker_recommender(model)
    sessions = group_events(pa.Table.from_batches(batches), recommender.vocabulary, max_events)
    del batches
    for begin in range(0, len(sessions), SESSIONS_PER_BATCH):
        part = sessions.slice(begin, begin + SESSIONS_PER_BATCH)
        recommendations = recommender.recommend_encoded(part.encoded, k=top_k, exclude_last=exclude_last)
        yield from recommendations.to_arrow(part.session_ids).to_batches()
    counts.add(sessions.counts)


def recommend(events: DataFrame, model: ServedModel, top_k: int, exclude_last: bool, max_events: int,
              counts: Accumulator[dict[str, int]]) -> DataFrame:
    """Top-K rows (session_id, rank, item_id, score, fallback) per session of ``events`` (partitioned by
    session id: jobs/day_sessions.py), scored in the Python workers on each session's most recent
    ``max_events`` events; the day's counts are added to ``counts`` as the rows are computed."""
    scorer = functools.partial(score_batches, model=model, top_k=top_k, exclude_last=exclude_last,
                               max_events=max_events, counts=counts)
    return events.select("session_id", "item_id", "position").mapInArrow(scorer, RECOMMENDATION_SCHEMA)


def load_in_worker(batches: Iterator[pa.RecordBatch], model: ServedModel) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body of :func:`warm_workers`: loads ``model`` in this worker, returns no rows."""
    for _ in batches:
        pass
    worker_recommender(model)
    yield from ()


@contextmanager
def warm_workers(spark: SparkSession, model: ServedModel) -> Iterator[None]:
    """While the block runs: start Python workers and load ``model`` in them, in a small Spark job on a
    background thread, joined when the block ends.

    A worker's start (its process, torch, the model) would otherwise wait for the scoring stage, after the
    driver has planned and read the day; started first it runs while the driver does that. The job has one
    task fewer than the executors' cores, so a core stays free for reading the day. Spark keeps the workers
    for later tasks, and each keeps its model (:func:`worker_recommender`). A failure is only logged: the
    scoring loads the same model and reports it.
    """
    from pyspark import InheritableThread

    tasks = max(1, spark.sparkContext.defaultParallelism - 1)

    def run() -> None:
        spark.sparkContext.setJobDescription(f"load {model.uri} in the Python workers")
        try:
            spark.range(0, tasks, 1, tasks).mapInArrow(functools.partial(load_in_worker, model=model),
                                                       "id long").collect()
        except Exception:  # noqa: BLE001 (the scoring reports it)
            logger.warning("could not load %s in the Python workers ahead of the scoring", model.uri, exc_info=True)

    thread = InheritableThread(target=run, name="warm-workers", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
