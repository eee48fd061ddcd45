"""Nightly scoring: every session of day D gets its top-K next items, loaded into the warehouse.

    spark-submit jobs/score.py --lake var/lake --ds 2026-11-21 [--model-uri models:/gru4rec@champion] \
        [--top-k 20] [--warehouse duckdb:///abs/var/warehouse.duckdb] [--include-last-item] \
        [--max-session-events 200]
    python -m jobs.score --lake var/lake --ds 2026-11-21 --master 'local[*]'

Steps (docs/CONTRACTS.md sections 2, 5 and 6), each in the module that owns the concern:

1. The model: ``models:/name@alias`` or ``models:/name/version`` is resolved in the MLflow registry to one
   concrete version (lifecycle/resolver.py) and its folder downloaded once on the driver, while the Spark
   session starts (:func:`run_job`); the Python workers load it once each and keep it
   (jobs/model_cache.py).
2. The day: ``sessions/ds=D/`` is read and checked, and its events hash-partitioned by session id
   (jobs/day_sessions.py), so each scoring task gets whole sessions. While the driver plans that, Python
   workers start and load the model in a small job of their own (``warm_workers``).
3. Sessions are grouped and scored inside Spark (``mapInArrow``) in one pass over the day: each task puts
   each session's events in ``position`` order, keeps its most recent ``max_session_events``
   (``Settings.crawler_max_events``: a crawler's session costs no more than that), looks its items up in
   the model's vocabulary and scores it (jobs/session_groups.py); the day's counts (sessions, events,
   unknown items, fallbacks, sessions cut, rows with nulls) come back to the driver through an
   accumulator (jobs/day_counts.py), and a day with nulls fails before its output is swapped in.
4. The rows are written to a staging folder of the lake and swapped in as ``recommendations/ds=D/``
   (jobs/lake.py), then the driver streams that folder into the warehouse: partition D is replaced in one
   transaction and its row count checked against sessions x K before the commit (jobs/warehouse.py). The
   driver-side load (no JDBC jar; copied to the driver first when the lake is remote) suits the embedded
   and nightly scale: 1M sessions x 20 is 20M narrow rows, which DuckDB's Arrow scan or PostgreSQL's COPY
   take in well under the scoring time.
5. The run record (rows, sessions, fallbacks, unknown items, sessions cut, model, time per phase, and the
   health figures of jobs/score_health.py: fallback share, unknown-event share, catalogue coverage, the
   session count against the previous days) is logged and written to ``stats/score/ds=D.json``
   (jobs/run_record.py).

The warehouse URL comes from the settings (``SESSIONREC_WAREHOUSE_URL``) or ``--warehouse``; a DAG passes
the URL it builds from its Airflow connection. The MLflow stores come from the settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__" and importlib.util.find_spec("sessionrec") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import warehouse
from jobs.cli import add_master_argument, parse_day
from jobs.day_counts import CountsParam, no_counts
from jobs.day_sessions import checked_counts, scoring_events
from jobs.lake import local_copy, replace_by_rename, staging_folder
from jobs.model_cache import ServedModel, download, recommend, warm_workers
from jobs.run_record import PhaseTimer, write_run_record
from jobs.score_health import health_figures
from jobs.spark import job_session
from lifecycle.connection import MlflowStore
from model.data import VOCABULARY_FILE, read_vocabulary
from sessionrec.config import Settings, load_settings, redact
from sessionrec.layout import Lake

logger = logging.getLogger(__name__)


def resolve_model(model_uri: str, store: MlflowStore, dst: Path) -> ServedModel:
    """Resolve ``model_uri`` to a concrete version and download its model folder under ``dst``.

    Downloading by version (not by alias) keeps every worker on the same version even if the alias
    moves while the job runs. MLflow is imported here, not with this module, so that :func:`run_job`
    loads it in the thread that fetches the model while the Spark session starts.
    """
    from lifecycle.resolver import ModelNotFound, parse_model_reference, resolve_version

    reference = parse_model_reference(model_uri)
    try:
        version = resolve_version(store.connect(), reference)
    except ModelNotFound as exc:
        raise ModelNotFound(f"{exc} (MLflow registry at {store.describe()})") from exc
    model = ServedModel(reference.name, version, store, dst, model_uri)
    model = dataclasses.replace(model, local_dir=download(model.uri, store, dst))
    logger.info("model %s is %s (MLflow %s), downloaded to %s", model_uri, model.uri, store.describe(),
                model.local_dir)
    return model


def _timed(function: Callable[..., ServedModel], *args: Any) -> tuple[ServedModel, float]:
    started = time.perf_counter()
    return function(*args), time.perf_counter() - started


def expected_rows(sessions: int, n_items: int, top_k: int, exclude_last: bool) -> int:
    """Rows the scoring must produce: every session gets min(K, candidates) items, where the candidates
    are the vocabulary less the excluded last item (model/recommender.py gives each session that many,
    fallback sessions included)."""
    return sessions * min(top_k, n_items - int(exclude_last))


def with_run_columns(recommendations: DataFrame, ds: date, model: ServedModel,
                     generated_at: datetime) -> DataFrame:
    """The warehouse row: recommendations plus ds, model name and version, generation time (UTC)."""
    return recommendations.select(
        F.lit(ds).alias("ds"), "session_id", "rank", "item_id", "score", "fallback",
        F.lit(model.name).alias("model_name"), F.lit(model.version).alias("model_version"),
        F.lit(generated_at.strftime("%Y-%m-%d %H:%M:%S")).cast("timestamp_ntz").alias("generated_at"))


def score_day(spark: SparkSession, lake: str, ds: date, model_uri: str, top_k: int, exclude_last: bool,
              warehouse_url: str, tracking_uri: str, before_commit: Callable[[], None] | None = None,
              registry_uri: str = "",
              max_session_events: int = Settings.crawler_max_events) -> dict[str, Any]:
    """Resolve and download ``model_uri`` from the MLflow stores (``tracking_uri``; the registry defaults to
    it), then :func:`score_model`; the run record."""
    with tempfile.TemporaryDirectory(prefix="sessionrec-model-") as scratch:
        model, fetch_seconds = _timed(resolve_model, model_uri, MlflowStore(tracking_uri, registry_uri),
                                      Path(scratch))
        return score_model(spark, lake, ds, model, top_k, exclude_last, warehouse_url, before_commit,
                           max_session_events, fetch_seconds)


def score_model(spark: SparkSession, lake: str, ds: date, model: ServedModel, top_k: int, exclude_last: bool,
                warehouse_url: str, before_commit: Callable[[], None] | None = None,
                max_session_events: int = Settings.crawler_max_events,
                fetch_seconds: float | None = None, session_seconds: float | None = None) -> dict[str, Any]:
    """Score every session of day ``ds`` (on its most recent ``max_session_events`` events) with ``model``
    (resolved and downloaded by :func:`resolve_model`) and replace partition ``ds`` of the warehouse; the
    run record. ``fetch_seconds`` (resolving and downloading the model) and ``session_seconds`` (starting
    the Spark session, when the caller started it) go into the record.

    ``before_commit`` runs inside the warehouse transaction, just before the commit (see
    :meth:`jobs.warehouse.Warehouse.replace_partition`).
    """
    for name, value in (("top_k", top_k), ("max_session_events", max_session_events)):
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    layout = Lake(lake)
    timer = PhaseTimer()
    generated_at = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    output = layout.recommendations(ds)
    with warehouse.connect(warehouse_url) as target, \
            tempfile.TemporaryDirectory(prefix="sessionrec-score-") as scratch, \
            staging_folder(spark, layout.staging("score", ds)) as staging, ExitStack() as stack:
        target.ensure_table()  # a table with the wrong schema fails the run before the scoring, not after
        stack.enter_context(warm_workers(spark, model))
        vocabulary = read_vocabulary(model.local_dir / VOCABULARY_FILE)
        timer.lap("model")
        events, path = scoring_events(spark, layout, ds)
        counts = spark.sparkContext.accumulator(no_counts(), CountsParam())
        rows = with_run_columns(recommend(events, model, top_k, exclude_last, max_session_events, counts), ds,
                                model, generated_at)
        rows.write.parquet(f"{staging}/recommendations")
        stats = checked_counts(counts.value, path)
        expected = expected_rows(stats["sessions"], len(vocabulary), top_k, exclude_last)
        replace_by_rename(spark, f"{staging}/recommendations", output, f"{staging}/previous")
        logger.info("%s: scored %d sessions, %d events (%d with an item unknown to the model), %d fallback "
                    "sessions, %d sessions cut to their last %d events, with %s version %s in %.1f s; "
                    "recommendations in %s", ds, stats["sessions"], stats["events"], stats["unknown_items"],
                    stats["fallback_sessions"], stats["truncated_sessions"], max_session_events, model.name,
                    model.version, timer.lap("scoring"), output)
        source = local_copy(spark, output, Path(scratch))
        loaded = target.replace_partition(ds, warehouse.read_rows(source), expected_rows=expected,
                                          before_commit=before_commit, source=output)
        timer.lap("warehouse")
        health = health_figures(spark, layout, ds, stats, len(vocabulary), source)
        timer.lap("health")
    record = {
        "ds": ds.isoformat(), "model_uri": model.reference, "model_name": model.name, "model_version": model.version,
        "top_k": top_k, "exclude_last_item": exclude_last, "vocabulary_size": len(vocabulary),
        "max_session_events": max_session_events, **stats, **health,
        "rows_written": loaded, "expected_rows": expected, "output": output,
        "warehouse": redact(warehouse_url), "generated_at": generated_at.isoformat() + "Z",
        "phase_seconds": {**({} if session_seconds is None else {"spark_session": round(session_seconds, 3)}),
                          **timer.seconds},
        "duration_seconds": timer.total(),
        "model_fetch_seconds": None if fetch_seconds is None else round(fetch_seconds, 3),
    }
    record["run_record"] = write_run_record(spark, layout.score_stats(ds), record)
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
    parser.add_argument("--max-session-events", type=int, default=settings.crawler_max_events,
                        help="score each session on its most recent events only, at most this many "
                             "(default: %(default)s)")
    add_master_argument(parser)
    return parser.parse_args(argv)


def run_job(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The job of ``main``: the model is resolved and downloaded (MLflow, on the driver) while Spark starts,
    then :func:`score_model`; the run record, with the session's start-up among its phases."""
    store = MlflowStore.of(settings)
    with tempfile.TemporaryDirectory(prefix="sessionrec-model-") as scratch, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch-model") as pool:
        fetching = pool.submit(_timed, resolve_model, args.model_uri, store, Path(scratch))
        started = time.perf_counter()
        with job_session("score", args.master, settings) as spark:
            session_seconds = time.perf_counter() - started
            model, fetch_seconds = fetching.result()
            return score_model(spark, args.lake, args.ds, model, args.top_k,
                               exclude_last=settings.exclude_last_item and not args.include_last_item,
                               warehouse_url=args.warehouse, max_session_events=args.max_session_events,
                               fetch_seconds=fetch_seconds, session_seconds=session_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    record = run_job(parse_args(argv, settings), settings)
    print(json.dumps(record, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
