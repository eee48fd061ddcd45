"""The lake layout (sessionrec/layout.py): every location, for local folders and remote URIs alike."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from model import data
from sessionrec.config import load_settings
from sessionrec.layout import (
    ITEMS_FILE,
    SPLITS,
    Lake,
    LandingZone,
    WorkArea,
    is_remote,
    local_path,
    partition,
    partition_day,
)

D = date(2026, 11, 21)


@pytest.mark.parametrize("root", ["/data/lake", "s3a://bucket/lake", "hdfs://nn:8020/lake/"])
def test_every_lake_location_is_the_documented_one(root: str) -> None:
    """docs/CONTRACTS.md's paths, joined with '/' whatever the scheme (no doubled or dropped slash)."""
    lake = Lake(root)
    base = root.rstrip("/")
    assert lake.raw_day(D) == f"{base}/raw/clicks/ds=2026-11-21"
    assert lake.sessions_root == f"{base}/sessions"
    assert lake.sessions(D) == f"{base}/sessions/ds=2026-11-21"
    assert lake.quarantine(D) == f"{base}/quarantine/ds=2026-11-21"
    assert lake.sessionize_stats(D) == f"{base}/stats/ds=2026-11-21.json"
    assert lake.training_set(D) == f"{base}/training/ds=2026-11-21"
    assert lake.training_split(D, "train_tr") == f"{base}/training/ds=2026-11-21/train_tr"
    assert lake.training_items(D) == f"{base}/training/ds=2026-11-21/items.parquet"
    assert lake.training_stats(D) == f"{base}/training/ds=2026-11-21/stats.json"
    assert lake.tuned_params("narm") == f"{base}/tuned/narm/params.json"
    assert lake.recommendations(D) == f"{base}/recommendations/ds=2026-11-21"
    assert lake.score_stats(D) == f"{base}/stats/score/ds=2026-11-21.json"


def test_the_landing_zone_may_live_outside_the_lake() -> None:
    lake = Lake("s3a://lake", "s3a://landing/")
    assert lake.raw == "s3a://landing" and lake.raw_day(D) == "s3a://landing/clicks/ds=2026-11-21"
    assert LandingZone("/raw").clicks == "/raw/clicks"


def test_staging_folders_are_fresh_per_run_and_inside_the_lake() -> None:
    lake = Lake("s3a://bucket/lake")
    first, second = lake.staging("score", D), lake.staging("score", D)
    assert first != second
    assert first.startswith("s3a://bucket/lake/_staging/score-2026-11-21-")


def test_a_day_may_be_a_template_a_dag_renders() -> None:
    assert Lake("/l").raw_day("{{ ds }}") == "/l/raw/clicks/ds={{ ds }}"


def test_partition_names_round_trip() -> None:
    assert partition(D) == "ds=2026-11-21"
    assert partition_day("ds=2026-11-21") == partition_day("ds=2026-11-21.json") == D
    with pytest.raises(ValueError, match="expected a partition name ds=YYYY-MM-DD"):
        partition_day("2026-11-21")


def test_bad_split_and_family_names_are_refused() -> None:
    with pytest.raises(ValueError, match="split 'validation': expected one of train, test, train_tr, valid"):
        Lake("/l").training_split(D, "validation")
    with pytest.raises(ValueError, match="model family '../x'"):
        Lake("/l").tuned_params("../x")


def test_local_and_remote_locations(tmp_path: Path) -> None:
    assert not is_remote(tmp_path) and not is_remote(tmp_path.as_uri())
    assert is_remote("s3a://bucket/x") and is_remote("hdfs://nn/x")
    assert local_path(str(tmp_path)) == local_path(tmp_path.as_uri()) == tmp_path
    with pytest.raises(ValueError, match="gs://b/lake: expected a local folder or a file:// URI"):
        local_path("gs://b/lake")


def test_the_work_area_is_local_under_home(tmp_path: Path) -> None:
    work = WorkArea(tmp_path)
    assert work.checkpoints(D) == tmp_path / "models" / "ds=2026-11-21" / "checkpoints"
    assert work.saved_model(D) == tmp_path / "models" / "ds=2026-11-21" / "model"
    assert work.spark_scratch == tmp_path / "spark"


def test_settings_give_the_layout_of_their_lake_and_landing_zone(tmp_path: Path) -> None:
    settings = load_settings(env={}, home=tmp_path)
    assert settings.layout == Lake(str(tmp_path / "lake"))
    assert settings.raw == f"{tmp_path}/lake/raw"
    moved = load_settings(env={"SESSIONREC_LAKE": "s3a://b/lake/", "SESSIONREC_RAW": "/landing"}, home=tmp_path)
    assert moved.layout.sessions(D) == "s3a://b/lake/sessions/ds=2026-11-21"
    assert moved.layout.raw_day(D) == "/landing/clicks/ds=2026-11-21"
    assert settings.work_area == WorkArea(tmp_path)


def test_the_training_set_names_match_what_the_model_package_reads() -> None:
    """model/ ships without sessionrec, so it keeps its own copy of these names: they must agree."""
    assert ITEMS_FILE == data.VOCABULARY_FILE
    assert SPLITS == data.SPLITS
