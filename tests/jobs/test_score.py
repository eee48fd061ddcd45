"""The nightly scoring job: a real registered model, the shared local Spark, DuckDB and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient
from pyspark.accumulators import Accumulator

from jobs import model_cache, score
from jobs.day_counts import CountsParam, no_counts
from jobs.warehouse import TABLE, WarehouseSchemaError, connect
from lifecycle.connection import MlflowStore
from lifecycle.resolver import ModelNotFound, ModelReference, parse_model_reference, resolve_version
from model.artifacts import save_model
from model.data import Vocabulary
from model.network import GRU4Rec, GRU4RecConfig
from model.packaging import log_session_model
from sessionrec.config import PROJECT_ROOT, load_settings
from training.trainer import TrainParams

DAY = date(2026, 11, 21)
N_ITEMS = 30
TOP_K = 20
MODEL_NAME = "gru4rec-test"
VOCABULARY = Vocabulary(np.array([f"i{i:02d}" for i in range(N_ITEMS)], dtype=object),
                        np.arange(N_ITEMS * 10, 0, -10, dtype=np.int64))
# Sessions with something to check: one item, an unknown last item, only unknown items (the fallback).
SPECIAL_SESSIONS = {"single": ["i03"], "unknown-last": ["i05", "i07", "new-1"], "all-unknown": ["new-1", "new-2"],
                    "repeat": ["i01", "i01", "i01"]}


def day_sessions(n_random: int = 40, seed: int = 3) -> dict[str, list[str]]:
    """Session id -> item ids in position order: random sessions of 1-6 items (a few unknown) + the special ones."""
    rng = np.random.default_rng(seed)
    sessions = {}
    for s in range(n_random):
        items = [f"i{i:02d}" for i in rng.integers(0, N_ITEMS, rng.integers(1, 7))]
        sessions[f"r{s:03d}"] = [item if rng.random() > 0.1 else f"new-{s}" for item in items]
    return {**sessions, **SPECIAL_SESSIONS}


def write_day(lake: Path, sessions: dict[str, list[str]]) -> None:
    """``sessions/ds=D/`` as jobs/sessionize.py writes it (contract section 2), rows not in position order."""
    rows = [(sid, pos, item) for sid, items in sessions.items() for pos, item in enumerate(items)]
    rows.reverse()
    start = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    table = pa.table({
        "session_id": [r[0] for r in rows],
        "visitor_id": pa.nulls(len(rows), pa.string()),
        "position": pa.array([r[1] for r in rows], pa.int32()),
        "item_id": [r[2] for r in rows],
        "event_time": pa.array([start + timedelta(minutes=r[1]) for r in rows], pa.timestamp("us", tz="UTC")),
        "event_type": ["click"] * len(rows),
    })
    folder = lake / "sessions" / f"ds={DAY.isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(table.slice(0, len(rows) // 2), folder / "part-00000.parquet")
    pq.write_table(table.slice(len(rows) // 2), folder / "part-00001.parquet")


@pytest.fixture(scope="module")
def sessions() -> dict[str, list[str]]:
    return day_sessions()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory, sessions: dict[str, list[str]]) -> str:
    root = tmp_path_factory.mktemp("lake")
    write_day(root, sessions)
    return str(root)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite MLflow store holding version 1 of a small random-init GRU4Rec, aliased ``champion``."""
    root = tmp_path_factory.mktemp("mlflow")
    torch.manual_seed(0)
    model_dir = root / "model"
    save_model(model_dir, GRU4Rec(GRU4RecConfig(n_items=N_ITEMS, layers=(16,))), VOCABULARY,
               TrainParams(layers=(16,)).to_dict())
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("score-tests", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_session_model(model_dir, registered_model_name=MODEL_NAME)
    client.set_registered_model_alias(MODEL_NAME, "champion", str(info.registered_model_version))
    yield uri
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


@pytest.fixture(scope="module")
def scored(spark: object, lake: str, registry: str,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, pd.DataFrame, str]:
    """One full day scored into a DuckDB file: (run record, the partition's rows, warehouse URL)."""
    url = f"duckdb://{tmp_path_factory.mktemp('warehouse') / 'warehouse.duckdb'}"
    record = score.score_day(spark, lake, DAY, f"models:/{MODEL_NAME}@champion", TOP_K, exclude_last=True,
                             warehouse_url=url, tracking_uri=registry)
    with connect(url) as warehouse:
        rows = warehouse.read_partition(DAY).to_pandas()
    return record, rows, url


def test_run_record_counts_what_was_scored(scored: tuple, sessions: dict[str, list[str]], lake: str) -> None:
    record, rows, _ = scored
    unknown = sum(item not in set(VOCABULARY.item_ids) for items in sessions.values() for item in items)
    fallback = sum(all(item not in set(VOCABULARY.item_ids) for item in items) for items in sessions.values())
    assert record["sessions"] == len(sessions)
    assert record["events"] == sum(len(items) for items in sessions.values())
    assert record["unknown_items"] == unknown
    assert record["fallback_sessions"] == fallback >= 1
    assert record["rows_written"] == record["expected_rows"] == len(sessions) * TOP_K == len(rows)
    assert (record["model_name"], record["model_version"]) == (MODEL_NAME, "1")
    stored = json.loads(Path(lake, "stats", "score", f"ds={DAY.isoformat()}.json").read_text())
    assert stored == {key: value for key, value in record.items() if key != "run_record"}
    assert record["output"] == f"{lake}/recommendations/ds={DAY.isoformat()}"
    assert sum(pq.read_metadata(f).num_rows for f in Path(record["output"]).glob("*.parquet")) == len(rows)
    assert not any(Path(lake, "_staging").iterdir()), "swapped in from the lake's staging folder, nothing left"
    assert (record["truncated_sessions"], record["events_not_scored"], record["max_session_events"]) == (0, 0, 200)


def test_run_record_holds_the_health_figures(scored: tuple, sessions: dict[str, list[str]]) -> None:
    record, rows, _ = scored
    assert record["fallback_share"] == round(record["fallback_sessions"] / len(sessions), 6)
    assert record["unknown_event_share"] == round(record["unknown_items"] / record["events"], 6)
    assert record["recommended_items"] == rows["item_id"].nunique()
    assert record["catalogue_coverage"] == round(rows["item_id"].nunique() / N_ITEMS, 6)
    assert (record["previous_sessions"], record["previous_sessions_mean"], record["session_count_change"]) == (
        {}, None, None)  # no earlier run records in this lake


def test_every_session_gets_ranks_1_to_k_with_descending_scores(scored: tuple,
                                                                 sessions: dict[str, list[str]]) -> None:
    _, rows, _ = scored
    assert set(rows["session_id"]) == set(sessions)
    for _, group in rows.groupby("session_id"):
        assert group["rank"].tolist() == list(range(1, TOP_K + 1))
        assert (np.diff(group["score"].to_numpy()) <= 0).all()
        assert group["item_id"].is_unique
    assert set(rows["item_id"]) <= set(VOCABULARY.item_ids)
    assert set(rows["ds"]) == {DAY}
    assert set(rows["model_name"]) == {MODEL_NAME} and set(rows["model_version"]) == {"1"}


def test_last_known_item_is_excluded_and_fallback_is_flagged(scored: tuple,
                                                             sessions: dict[str, list[str]]) -> None:
    _, rows, _ = scored
    by_session = {sid: group for sid, group in rows.groupby("session_id")}
    known = set(VOCABULARY.item_ids)
    for sid, items in sessions.items():
        known_items = [item for item in items if item in known]
        if known_items:
            assert known_items[-1] not in set(by_session[sid]["item_id"]), sid
    assert by_session["all-unknown"]["fallback"].all()
    assert by_session["all-unknown"]["item_id"].tolist() == list(VOCABULARY.item_ids[:TOP_K])  # most popular
    fallback_sessions = set(rows.loc[rows["fallback"], "session_id"])
    assert fallback_sessions == {sid for sid, items in sessions.items() if not set(items) & known}


def test_recommendations_equal_the_pyfunc_output(scored: tuple, sessions: dict[str, list[str]],
                                                 registry: str) -> None:
    _, rows, _ = scored
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1", model_config={"device": "cpu"})
    frame = pd.DataFrame({"session_id": list(sessions), "item_ids": list(sessions.values())})
    expected = pyfunc.predict(frame, params={"k": TOP_K, "exclude_last": True})
    expected = expected.sort_values(["session_id", "rank"]).reset_index(drop=True)
    got = rows.sort_values(["session_id", "rank"]).reset_index(drop=True)
    assert got["session_id"].tolist() == expected["session_id"].tolist()
    assert got["rank"].tolist() == expected["rank"].tolist()
    assert got["item_id"].tolist() == expected["item_id"].tolist()
    assert got["fallback"].tolist() == expected["fallback"].tolist()
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-5, atol=1e-6)


def test_rerun_into_postgres_is_idempotent_and_replaces_the_day(spark: object, lake: str, registry: str,
                                                                postgres_schema_url: str,
                                                                sessions: dict[str, list[str]]) -> None:
    model_uri = f"models:/{MODEL_NAME}/1"
    first = score.score_day(spark, lake, DAY, model_uri, TOP_K, True, postgres_schema_url, registry)
    with connect(postgres_schema_url) as warehouse:
        before = warehouse.read_partition(DAY).drop_columns(["generated_at"])
    second = score.score_day(spark, lake, DAY, model_uri, TOP_K, True, postgres_schema_url, registry)
    with connect(postgres_schema_url) as warehouse:
        after = warehouse.read_partition(DAY).drop_columns(["generated_at"])
    assert first["rows_written"] == second["rows_written"] == len(sessions) * TOP_K
    assert after.equals(before)
    # K above the vocabulary, last item allowed: every session gets every item once.
    everything = score.score_day(spark, lake, DAY, model_uri, 50, False, postgres_schema_url, registry)
    assert everything["rows_written"] == everything["expected_rows"] == len(sessions) * N_ITEMS
    with connect(postgres_schema_url) as warehouse:
        assert warehouse.count(DAY) == len(sessions) * N_ITEMS


def test_a_crawler_session_is_scored_on_its_most_recent_events_only(spark: object, registry: str,
                                                                     tmp_path: Path) -> None:
    """2,000 clicks of a bot: at most ``max_session_events`` reach the model (tests/jobs/test_session_groups.py
    checks the cut itself), and its recommendations are those of a session of just its last 200 events."""
    bot = [f"i{(7 * i) % N_ITEMS:02d}" if i % 50 else "new-bot" for i in range(2000)]
    lake = tmp_path / "lake"
    write_day(lake, {"bot": bot, "tail": bot[-200:], "person": ["i01", "i02", "i03"]})
    for days_before, sessions_then in ((1, 4), (2, 2)):  # run records of earlier days: 3 sessions a day
        day = (DAY - timedelta(days=days_before)).isoformat()
        Path(lake, "stats", "score").mkdir(parents=True, exist_ok=True)
        Path(lake, "stats", "score", f"ds={day}.json").write_text(json.dumps({"ds": day, "sessions": sessions_then}))
    url = f"duckdb://{tmp_path / 'warehouse.duckdb'}"
    record = score.score_day(spark, str(lake), DAY, f"models:/{MODEL_NAME}/1", 5, True, url, registry,
                             max_session_events=200)
    assert (record["truncated_sessions"], record["events_not_scored"]) == (1, 1800)
    assert record["events"] == 2203 and record["unknown_items"] == 40 + 4
    assert record["previous_sessions"] == {(DAY - timedelta(days=2)).isoformat(): 2,
                                           (DAY - timedelta(days=1)).isoformat(): 4}
    assert (record["previous_sessions_mean"], record["session_count_change"]) == (3.0, 0.0)
    with connect(url) as warehouse:
        rows = warehouse.read_partition(DAY).to_pandas()
    by_session = {sid: group.sort_values("rank") for sid, group in rows.groupby("session_id")}
    assert by_session["bot"]["item_id"].tolist() == by_session["tail"]["item_id"].tolist()
    np.testing.assert_allclose(by_session["bot"]["score"], by_session["tail"]["score"], rtol=1e-6)


def test_crash_during_the_load_keeps_the_previous_partition(scored: tuple, spark: object, lake: str,
                                                            registry: str) -> None:
    _, rows, url = scored

    def crash() -> None:
        raise OSError("driver lost between delete and commit")

    with pytest.raises(OSError, match="driver lost"):
        score.score_day(spark, lake, DAY, f"models:/{MODEL_NAME}@champion", 5, True, url, registry,
                        before_commit=crash)
    with connect(url) as warehouse:
        kept = warehouse.read_partition(DAY).to_pandas()
    pd.testing.assert_frame_equal(kept, rows)


def test_wrong_warehouse_schema_fails_before_scoring(spark: object, registry: str, tmp_path: Path,
                                                     sessions: dict[str, list[str]]) -> None:
    import duckdb

    write_day(tmp_path / "lake", sessions)
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE {TABLE} (ds DATE, session_id VARCHAR, rank VARCHAR, item_id VARCHAR, "
                    "score FLOAT, fallback BOOLEAN, model_name VARCHAR, model_version VARCHAR, "
                    "generated_at TIMESTAMP, PRIMARY KEY (ds, session_id, rank))")
    with pytest.raises(WarehouseSchemaError, match=f"table {TABLE} .*column rank has type VARCHAR, expected INTEGER"):
        score.score_day(spark, str(tmp_path / "lake"), DAY, f"models:/{MODEL_NAME}@champion", TOP_K, True,
                        f"duckdb://{path}", registry)
    assert not (tmp_path / "lake" / "recommendations").exists()


def test_missing_day_names_the_folder(spark: object, lake: str, registry: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sessions/ds=2026-11-01: cannot read the sessions"):
        score.score_day(spark, lake, date(2026, 11, 1), f"models:/{MODEL_NAME}@champion", TOP_K, True,
                        f"duckdb://{tmp_path / 'w.duckdb'}", registry)


def test_input_with_a_wrong_column_type_names_the_column(spark: object, registry: str, tmp_path: Path) -> None:
    folder = tmp_path / "lake" / "sessions" / f"ds={DAY.isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"session_id": ["a"], "item_id": ["i01"], "position": ["0"]}), folder / "p.parquet")
    with pytest.raises(ValueError, match="column 'position' is string; expected integer or long"):
        score.score_day(spark, str(tmp_path / "lake"), DAY, f"models:/{MODEL_NAME}@champion", TOP_K, True,
                        f"duckdb://{tmp_path / 'w.duckdb'}", registry)


def test_nulls_in_the_day_are_counted_and_refused_before_anything_is_written(spark: object, registry: str,
                                                                 tmp_path: Path) -> None:
    folder = tmp_path / "lake" / "sessions" / f"ds={DAY.isoformat()}"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"session_id": ["a", "a", None, "b"], "item_id": ["i01", None, "i02", "i03"],
                             "position": pa.array([0, 1, 0, None], pa.int32())}), folder / "p.parquet")
    with pytest.raises(ValueError, match=r"ds=2026-11-21: 3 row\(s\) with a null session_id, item_id, position"):
        score.score_day(spark, str(tmp_path / "lake"), DAY, f"models:/{MODEL_NAME}@champion", TOP_K, True,
                        f"duckdb://{tmp_path / 'w.duckdb'}", registry)
    assert not (tmp_path / "lake" / "recommendations").exists()


def test_resolve_model_by_alias_and_by_version(registry: str, tmp_path: Path) -> None:
    store = MlflowStore(registry)
    by_alias = score.resolve_model(f"models:/{MODEL_NAME}@champion", store, tmp_path / "a")
    by_version = score.resolve_model(f"models:/{MODEL_NAME}/1", store, tmp_path / "b")
    assert (by_alias.name, by_alias.version, by_alias.uri) == (MODEL_NAME, "1", f"models:/{MODEL_NAME}/1")
    assert by_version.version == "1"
    assert {p.name for p in by_alias.local_dir.iterdir()} >= {"model.pt", "items.parquet", "config.json"}
    with pytest.raises(ModelNotFound, match=rf"models:/{MODEL_NAME}@nobody: no alias 'nobody' on registered "
                       rf"model '{MODEL_NAME}' \(versions 1; aliases: @champion -> 1\) \(MLflow registry at "):
        score.resolve_model(f"models:/{MODEL_NAME}@nobody", store, tmp_path / "c")


def test_the_resolver_names_what_is_missing(registry: str) -> None:
    client = MlflowStore(registry).connect()
    assert resolve_version(client, "champion", MODEL_NAME) == resolve_version(client, 1, MODEL_NAME) == "1"
    assert resolve_version(client, f"models:/{MODEL_NAME}@champion") == "1"
    with pytest.raises(ModelNotFound, match=rf"models:/{MODEL_NAME}/7: no version 7 of registered model "
                                            rf"'{MODEL_NAME}' \(versions 1; aliases: @champion -> 1\)"):
        resolve_version(client, "7", MODEL_NAME)
    with pytest.raises(ModelNotFound, match="models:/other@champion: no alias 'champion' on registered model "
                                            "'other': it does not exist in the registry"):
        resolve_version(client, "models:/other@champion")


@pytest.mark.parametrize("uri", ["models:/gru4rec", "runs:/abc/model", "models:/gru4rec/latest", "gru4rec",
                                 "models:/gru4rec/0"])
def test_model_references_of_other_forms_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="expected models:/<name>@<alias> or models:/<name>/<version>$"):
        parse_model_reference(uri)


def test_bare_versions_and_aliases_need_the_model_name() -> None:
    assert parse_model_reference("3", "recs") == ModelReference("recs", version="3")
    assert str(parse_model_reference("champion", "recs")) == "models:/recs@champion"
    assert str(parse_model_reference("models:/other/2", "recs")) == "models:/other/2"
    with pytest.raises(ValueError, match="or a version number or an alias of 'recs'"):
        parse_model_reference("champion!", "recs")


def test_worker_without_the_driver_folder_downloads_the_same_version(registry: str, tmp_path: Path,
                                                                     sessions: dict[str, list[str]],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the worker's download folder goes here
    local = score.resolve_model(f"models:/{MODEL_NAME}/1", MlflowStore(registry), tmp_path / "driver")
    remote = dataclasses.replace(local, local_dir=tmp_path / "not-on-this-host")
    rows = [(sid, item, pos) for sid, items in sessions.items() for pos, item in enumerate(items)]
    batch = pa.record_batch({"session_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                             "position": pa.array([r[2] for r in rows], pa.int32())})
    counts = Accumulator(0, no_counts(), CountsParam())
    from_local = pa.Table.from_batches(model_cache.score_batches(iter([batch]), local, TOP_K, True, 200, counts))
    from_download = pa.Table.from_batches(model_cache.score_batches(iter([batch]), remote, TOP_K, True, 200, counts))
    assert from_download.equals(from_local)
    assert from_local.num_rows == len(sessions) * TOP_K
    assert (counts.value["sessions"], counts.value["events"]) == (2 * len(sessions), 2 * len(rows))
    assert len(list(tmp_path.glob("sessionrec-model-*/**/model.pt"))) == 1  # downloaded by the worker


@pytest.mark.parametrize("sessions_, n_items, k, exclude_last, expected", [
    (3, 30, 20, True, 60),
    (3, 15, 20, True, 42),
    (3, 15, 20, False, 45),
    (0, 15, 20, True, 0),
])
def test_expected_rows(sessions_: int, n_items: int, k: int, exclude_last: bool, expected: int) -> None:
    assert score.expected_rows(sessions_, n_items, k, exclude_last) == expected


def test_cli_defaults_come_from_the_settings(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path, model_name="recs", top_k=7)
    args = score.parse_args(["--ds", "2026-11-21"], settings)
    assert (args.lake, args.model_uri, args.top_k, args.warehouse, args.include_last_item) == (
        settings.lake, "models:/recs@champion", 7, settings.warehouse_url, False)
    assert score.parse_args(["--ds", "2026-11-21", "--include-last-item"], settings).include_last_item
    assert args.max_session_events == settings.crawler_max_events == 200
    with pytest.raises(SystemExit):
        score.parse_args(["--ds", "21/11/2026"], settings)


def test_the_scoring_driver_loads_neither_torch_nor_the_training_code() -> None:
    """The driver resolves, downloads and counts; only the Python workers score (they import torch), so
    the job's start-up does not pay for the network, the training loop or the registry's gate."""
    probe = ("import json, sys\nimport jobs.score, jobs.model_cache, model.logged\n"
             "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    loaded = set(json.loads(result.stdout))
    assert {"jobs", "lifecycle", "mlflow"} <= loaded
    unwanted = loaded & {"torch", "training", "matplotlib"}
    assert not unwanted, sorted(unwanted)


def test_the_job_fetches_the_model_while_spark_starts_and_scores_like_score_day(
        spark: object, scored: tuple, lake: str, registry: str, tmp_path: Path) -> None:
    """``run_job`` (what ``python -m jobs.score`` runs): same rows as :func:`score.score_day`, the model
    resolved from the alias in its own thread, the session's start-up in the record's phases."""
    record, rows, _ = scored
    url = f"duckdb://{tmp_path / 'warehouse.duckdb'}"
    settings = load_settings(env={}, home=tmp_path / "home", mlflow_tracking_uri=registry)
    args = score.parse_args(["--lake", lake, "--ds", DAY.isoformat(), "--warehouse", url,
                             "--model-uri", f"models:/{MODEL_NAME}@champion"], settings)
    job = score.run_job(args, settings)
    assert (job["model_uri"], job["model_version"], job["rows_written"]) == (
        f"models:/{MODEL_NAME}@champion", "1", record["rows_written"])
    assert list(job["phase_seconds"])[:2] == ["spark_session", "model"] and job["model_fetch_seconds"] > 0
    written = json.loads(Path(job["run_record"]).read_text())
    assert (written["phase_seconds"], written["model_fetch_seconds"]) == (job["phase_seconds"],
                                                                          job["model_fetch_seconds"])
    with connect(url) as warehouse:
        again = warehouse.read_partition(DAY).to_pandas()
    key = ["session_id", "rank"]
    pd.testing.assert_frame_equal(
        again.sort_values(key).reset_index(drop=True)[["session_id", "rank", "item_id", "score", "fallback"]],
        rows.sort_values(key).reset_index(drop=True)[["session_id", "rank", "item_id", "score", "fallback"]])


def test_warming_loads_the_model_in_a_worker_and_only_logs_a_failure(spark: object, registry: str, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    def loaded_models(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """``mapInArrow`` probe (pickled by value: the workers cannot import this module): the model
        folders this Python worker holds."""
        for _ in batches:
            pass
        yield pa.record_batch({"folder": pa.array(list(model_cache._worker_models), pa.string())})

    model = score.resolve_model(f"models:/{MODEL_NAME}/1", MlflowStore(registry), tmp_path / "driver")
    with model_cache.warm_workers(spark, model):
        pass
    held = {row["folder"] for row in spark.range(0, 2, 1, 2).mapInArrow(loaded_models, "folder string").collect()}
    assert str(model.local_dir) in held
    missing = dataclasses.replace(model, version="999", local_dir=tmp_path / "nowhere")
    with caplog.at_level("WARNING", logger="jobs.model_cache"), model_cache.warm_workers(spark, missing):
        pass
    assert f"could not load models:/{MODEL_NAME}/999 in the Python workers" in caplog.text
