"""Nightly scoring: every session of day D gets its top-K next items, loaded into the warehouse.

    spark-submit jobs/score.py --lake var/lake --ds 2026-11-21 [--model-uri models:/gru4rec@champion] \
        [--top-k 20] [--warehouse duckdb:///abs/var/warehouse.duckdb] [--include-last-item]
    python -m jobs.score --lake var/lake --ds 2026-11-21 --master 'local[*]'

Steps (docs/CONTRACTS.md sections 2 and 5):

1. The model URI (``models:/name@alias`` or ``models:/name/version``) is resolved in the MLflow registry
   to a concrete version, which is downloaded once on the driver to a local temporary folder.
2. ``sessions/ds=D/`` is read and each session's items are put in ``position`` order; events whose item
   the model does not know are counted.
3. Sessions are scored inside Spark (``mapInArrow``), one Arrow batch of sessions at a time
   (``spark.sql.execution.arrow.maxRecordsPerBatch``, default 10,000), with the model loaded once per
   Python worker (cached in this module, keyed by the local model folder) on the worker's GPU when it
   has one. A worker on another machine, where the driver's folder does not exist, downloads the same
   concrete ``models:/name/version`` itself (so the tracking URI must be reachable from executors, and
   the project must be importable there, e.g. with ``--py-files``).
4. The rows are written to ``recommendations/ds=D/`` in the lake (Parquet, replaced on rerun), then the
   driver streams that folder into the warehouse: partition D is replaced in one transaction and its row
   count checked against sessions x K before the commit. The driver-side load (no JDBC jar; copied to
   the driver first when the lake is remote) suits the embedded and nightly scale: 1M sessions x 20 is
   20M narrow rows, which DuckDB's Arrow scan or PostgreSQL's COPY take in well under the scoring time.
5. The run record (rows, sessions, fallbacks, unknown items, model, duration) is logged and written to
   ``stats/score/ds=D.json``.

The warehouse URL comes from the settings (``SESSIONREC_WAREHOUSE_URL``) or ``--warehouse``; a DAG passes
the URL it builds from its Airflow connection. See jobs/warehouse.py.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __name__ == "__main__" and importlib.util.find_spec("sessionrec") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType, StringType

from jobs import warehouse
from jobs.cli import add_master_argument, parse_day
from jobs.spark import job_session
from model.data import VOCABULARY_FILE, Vocabulary, read_vocabulary
from sessionrec.config import Settings, load_settings
from sessionrec.layout import Lake

if TYPE_CHECKING:
    from model.recommender import Recommender

logger = logging.getLogger(__name__)

INPUT_COLUMNS: dict[str, tuple[type, ...]] = {
    "session_id": (StringType,),
    "item_id": (StringType,),
    "position": (IntegerType, LongType),
}
RECOMMENDATION_SCHEMA = "session_id string, rank int, item_id string, score float, fallback boolean"
# Scoring tasks per executor core: a few per core evens out sessions of unequal length between tasks.
SCORING_TASKS_PER_CORE = 2
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ResolvedModel:
    """A registered model version and where its model folder (model.pt, items.parquet, config.json) is."""

    name: str
    version: str
    uri: str  # models:/name/version: what a worker without the local folder downloads
    tracking_uri: str
    local_dir: Path


# --- the model: registry resolution on the driver, one cached Recommender per Python worker ---

def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of ``models:/name@alias`` or ``models:/name/version``."""
    match = MODEL_URI.match(model_uri)
    if match is None:
        raise ValueError(f"model URI {model_uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    return match["name"], match["alias"], match["version"]


def _use_registry(tracking_uri: str) -> None:
    """Point this process's MLflow tracking and registry at ``tracking_uri`` (as lifecycle/tracking.py does)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


def _download(model_uri: str, tracking_uri: str, dst: Path) -> Path:
    from model.packaging import download_model_dir

    _use_registry(tracking_uri)
    return download_model_dir(model_uri, dst)


def resolve_model(model_uri: str, tracking_uri: str, dst: Path) -> ResolvedModel:
    """Resolve ``model_uri`` to a concrete version and download its model folder under ``dst``.

    Downloading by version (not by alias) keeps every worker on the same version even if the alias
    moves while the job runs.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, alias, version = parse_model_uri(model_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, version))
    except MlflowException as exc:
        raise LookupError(f"model URI {model_uri}: not found in the registry at "
                          f"{warehouse.redact(tracking_uri)}: {exc.message}") from exc
    concrete = f"models:/{name}/{found.version}"
    local_dir = _download(concrete, tracking_uri, dst)
    logger.info("model %s is %s, downloaded to %s", model_uri, concrete, local_dir)
    return ResolvedModel(name, str(found.version), concrete, tracking_uri, local_dir)


_worker_models: dict[str, Recommender] = {}


def worker_recommender(model: ResolvedModel) -> Recommender:
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
            scratch = Path(tempfile.mkdtemp(prefix="sessionrec-model-"))
            directory = _download(model.uri, model.tracking_uri, scratch)
        context = TaskContext.get()
        if context is not None:
            torch.set_num_threads(max(1, context.cpus()))
        _worker_models.clear()
        _worker_models[key] = Recommender.from_directory(directory)
    return _worker_models[key]


def score_batches(batches: Iterator[pa.RecordBatch], model: ResolvedModel, top_k: int,
                  exclude_last: bool) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: batches of (session_id, item_ids) -> batches of recommendations."""
    for batch in batches:  # the model loads on the first batch: an empty partition never loads it
        recommender = worker_recommender(model)
        recommendations = recommender.recommend(batch.column("item_ids").to_pylist(), k=top_k,
                                                exclude_last=exclude_last)
        yield from recommendations.to_arrow(batch.column("session_id")).to_batches()


def expected_rows(sessions: int, n_items: int, top_k: int, exclude_last: bool) -> int:
    """Rows the scoring must produce: every session gets min(K, candidates) items, where the candidates
    are the vocabulary less the excluded last item (model/recommender.py gives each session that many,
    fallback sessions included)."""
    return sessions * min(top_k, n_items - int(exclude_last))


# --- the sessions ---

def read_sessions(spark: SparkSession, lake: str, ds: date) -> DataFrame:
    """The events of ``sessions/ds=D/`` (session_id, item_id, position), checked against the contract."""
    path = Lake(lake).sessions(ds)
    try:
        frame = spark.read.parquet(path)
    except AnalysisException as exc:
        raise FileNotFoundError(f"{path}: cannot read the sessions of {ds} as Parquet "
                                f"(run jobs/sessionize.py for that day first): {exc.getMessage()}") from exc
    fields = {f.name: f.dataType for f in frame.schema.fields}
    for name, types in INPUT_COLUMNS.items():
        expected = " or ".join(t.typeName() for t in types)
        if name not in fields:
            raise ValueError(f"{path}: column {name!r} is missing; expected {expected} (docs/CONTRACTS.md 2)")
        if not isinstance(fields[name], types):
            raise ValueError(f"{path}: column {name!r} is {fields[name].simpleString()}; expected {expected}")
    events = frame.select(*INPUT_COLUMNS)
    nulls = events.where(F.col("session_id").isNull() | F.col("item_id").isNull() | F.col("position").isNull())
    null_rows = nulls.count()
    if null_rows:
        raise ValueError(f"{path}: {null_rows} row(s) with a null session_id, item_id or position; expected none")
    return events


def session_sequences(events: DataFrame, known_items: DataFrame, partitions: int) -> DataFrame:
    """One row per session: ``item_ids`` in position order, ``length`` and ``known`` (events whose item the
    model knows; ``known_items`` has one ``item_id`` column), in ``partitions`` partitions.

    The partition count is explicit because adaptive execution would otherwise coalesce a day's sessions
    (small as data, expensive to score) into one or two partitions and leave most executors idle.
    """
    flagged = (events.repartition(partitions, "session_id")
               .join(F.broadcast(known_items.withColumn("is_known", F.lit(True))), "item_id", "left"))
    return (flagged.groupBy("session_id")
            .agg(F.sort_array(F.collect_list(F.struct("position", "item_id"))).alias("events"),
                 F.count(F.lit(1)).alias("length"),
                 F.count("is_known").alias("known"))
            .select("session_id", F.col("events.item_id").alias("item_ids"), "length", "known"))


def sequence_stats(sequences: DataFrame) -> dict[str, int]:
    """Sessions, events, events with an unknown item, and sessions with no known item (the fallbacks)."""
    row = sequences.agg(F.count(F.lit(1)).alias("sessions"),
                        F.coalesce(F.sum("length"), F.lit(0)).alias("events"),
                        F.coalesce(F.sum(F.col("length") - F.col("known")), F.lit(0)).alias("unknown_items"),
                        F.count(F.when(F.col("known") == 0, 1)).alias("fallback_sessions")).first()
    return {key: int(row[key]) for key in ("sessions", "events", "unknown_items", "fallback_sessions")}


def recommend(sequences: DataFrame, model: ResolvedModel, top_k: int, exclude_last: bool) -> DataFrame:
    """Top-K rows (session_id, rank, item_id, score, fallback) per session, scored in the Python workers."""
    scorer = functools.partial(score_batches, model=model, top_k=top_k, exclude_last=exclude_last)
    return sequences.select("session_id", "item_ids").mapInArrow(scorer, RECOMMENDATION_SCHEMA)


def with_run_columns(recommendations: DataFrame, ds: date, model: ResolvedModel,
                     generated_at: datetime) -> DataFrame:
    """The warehouse row: recommendations plus ds, model name and version, generation time (UTC)."""
    return recommendations.select(
        F.lit(ds).alias("ds"), "session_id", "rank", "item_id", "score", "fallback",
        F.lit(model.name).alias("model_name"), F.lit(model.version).alias("model_version"),
        F.lit(generated_at.strftime("%Y-%m-%d %H:%M:%S")).cast("timestamp_ntz").alias("generated_at"))


# --- the lake, through Hadoop's FileSystem so that remote lakes work like local ones ---

def _hadoop_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jpath = spark._jvm.org.apache.hadoop.fs.Path(path)
    return jpath.getFileSystem(spark._jsc.hadoopConfiguration()), jpath


def local_folder(spark: SparkSession, folder: str, scratch: Path) -> Path:
    """``folder`` on the driver's disk: itself for a local lake, else a copy under ``scratch``."""
    fs, jpath = _hadoop_path(spark, folder)
    if fs.getScheme() == "file":
        return Path(jpath.toUri().getPath())
    copy = scratch / "recommendations"
    fs.copyToLocalFile(False, jpath, spark._jvm.org.apache.hadoop.fs.Path(str(copy)), True)
    return copy


def write_run_record(spark: SparkSession, lake: str, ds: date, record: dict[str, Any]) -> str:
    """``stats/score/ds=D.json`` (replaced on rerun); returns its path."""
    path = Lake(lake).score_stats(ds)
    fs, jpath = _hadoop_path(spark, path)
    stream = fs.create(jpath, True)
    try:
        stream.write(bytearray((json.dumps(record, indent=2, sort_keys=True) + "\n").encode()))
    finally:
        stream.close()
    return path


# --- the job ---

class PhaseTimer:
    """Seconds spent in each named phase of a run, for the run record."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> float:
        """Close ``phase`` (it ran since the previous lap); returns its seconds."""
        now = time.perf_counter()
        self.seconds[phase] = round(now - self._last, 3)
        self._last = now
        return self.seconds[phase]

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def prepare_sessions(spark: SparkSession, lake: str, ds: date, vocabulary: Vocabulary) -> tuple[DataFrame, dict]:
    """The day's session sequences (checkpointed: scored once, counted once) and their counts."""
    known_items = spark.createDataFrame(pa.table({"item_id": pa.array(vocabulary.item_ids, pa.string())}))
    partitions = SCORING_TASKS_PER_CORE * spark.sparkContext.defaultParallelism
    sequences = session_sequences(read_sessions(spark, lake, ds), known_items, partitions).localCheckpoint()
    return sequences, sequence_stats(sequences)


def score_day(spark: SparkSession, lake: str, ds: date, model_uri: str, top_k: int, exclude_last: bool,
              warehouse_url: str, tracking_uri: str,
              before_commit: Callable[[], None] | None = None) -> dict[str, Any]:
    """Score every session of day ``ds`` and replace partition ``ds`` of the warehouse; the run record.

    ``before_commit`` runs inside the warehouse transaction, just before the commit (see
    :meth:`jobs.warehouse.Warehouse.replace_partition`).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    timer = PhaseTimer()
    generated_at = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    output = Lake(lake).recommendations(ds)
    with warehouse.connect(warehouse_url) as target, \
            tempfile.TemporaryDirectory(prefix="sessionrec-score-") as scratch:
        target.ensure_table()  # a table with the wrong schema fails the run before the scoring, not after
        model = resolve_model(model_uri, tracking_uri, Path(scratch) / "model")
        vocabulary = read_vocabulary(model.local_dir / VOCABULARY_FILE)
        timer.lap("model")
        sequences, stats = prepare_sessions(spark, lake, ds, vocabulary)
        expected = expected_rows(stats["sessions"], len(vocabulary), top_k, exclude_last)
        logger.info("%s: %d sessions, %d events (%d with an item unknown to the model), %d fallback sessions "
                    "(%.1f s); scoring with %s version %s", ds, stats["sessions"], stats["events"],
                    stats["unknown_items"], stats["fallback_sessions"], timer.lap("sessions"), model.name,
                    model.version)
        rows = with_run_columns(recommend(sequences, model, top_k, exclude_last), ds, model, generated_at)
        rows.write.mode("overwrite").parquet(output)
        logger.info("scored %d sessions in %.1f s; recommendations in %s", stats["sessions"],
                    timer.lap("scoring"), output)
        source = local_folder(spark, output, Path(scratch))
        loaded = target.replace_partition(ds, warehouse.read_rows(source), expected_rows=expected,
                                          before_commit=before_commit, source=output)
        timer.lap("warehouse")
    record = {
        "ds": ds.isoformat(), "model_uri": model_uri, "model_name": model.name, "model_version": model.version,
        "top_k": top_k, "exclude_last_item": exclude_last, "vocabulary_size": len(vocabulary), **stats,
        "rows_written": loaded, "expected_rows": expected, "output": output,
        "warehouse": warehouse.redact(warehouse_url), "generated_at": generated_at.isoformat() + "Z",
        "phase_seconds": timer.seconds, "duration_seconds": timer.total(),
    }
    record["run_record"] = write_run_record(spark, lake, ds, record)
    logger.info("score run for %s: %s", ds, json.dumps(record, sort_keys=True))
    return record


# --- command line ---


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobs.score", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lake", default=settings.lake, help="lake root (default: %(default)s)")
    parser.add_argument("--ds", type=parse_day, required=True, help="the day whose sessions are scored (UTC)")
    parser.add_argument("--model-uri", default=f"models:/{settings.model_name}@champion",
                        help="models:/name@alias or models:/name/version (default: %(default)s)")
    parser.add_argument("--top-k", type=int, default=settings.top_k,
                        help="recommendations per session (default: %(default)s)")
    parser.add_argument("--warehouse", default=settings.warehouse_url,
                        help="duckdb:///abs/path.duckdb or postgresql://... (default: the settings' URL)")
    parser.add_argument("--include-last-item", action="store_true",
                        help="let a session's own last item be recommended (excluded by default)")
    add_master_argument(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    args = parse_args(argv, settings)
    with job_session("score", args.master, settings) as spark:
        record = score_day(spark, args.lake, args.ds, args.model_uri, args.top_k,
                           exclude_last=settings.exclude_last_item and not args.include_last_item,
                           warehouse_url=args.warehouse, tracking_uri=settings.mlflow_tracking_uri)
    print(json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: Spark then pickles the worker function by
    # reference to jobs.score, so each Python worker imports it once and keeps its model cache.
    from jobs.score import main as module_main

    sys.exit(module_main())
