"""Model families behind one interface: SR and V-SKNN saved as tables, loaded without code, scored like
their evaluation baselines, served by the same Recommender and pyfunc as GRU4Rec."""

from __future__ import annotations

import pickle
import shutil
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lifecycle.tracking import training_run
from model.artifacts import CONFIG_FILE, load_model, model_family
from model.data import load_split
from model.families import FAMILIES, SessionModel
from model.neighbours import RULES_FILE, SESSIONS_FILE
from model.recommender import Recommender
from sessionrec.config import Settings
from training.baselines import fit_baselines
from training.evaluate import evaluate
from training.families import TRAINERS, evaluate_model

TABLE_FAMILIES = ("sr", "vsknn")

def test_every_loadable_family_has_a_trainer_and_back() -> None:
    assert set(FAMILIES) == set(TRAINERS)
    assert all(spec.name == name for name, spec in FAMILIES.items())
    assert all(trainer.name == name for name, trainer in TRAINERS.items())


@pytest.mark.parametrize("family", TABLE_FAMILIES)
def test_a_table_family_folder_holds_data_only(fitted: dict[str, Path], family: str) -> None:
    folder = fitted[family]
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, "items.parquet",
                                                               *FAMILIES[family].files])
    assert model_family(folder) == family
    model, _, params = load_model(folder)
    assert isinstance(model, SessionModel) and model.family == family and params == TRAINERS[family].params()


@pytest.mark.parametrize("family", TABLE_FAMILIES)
def test_the_loaded_model_scores_exactly_like_the_evaluation_baseline(fitted: dict[str, Path], family: str,
                                                                      training_dir: Path) -> None:
    """One piece of code: the baseline fitted for evaluation and the served model give the same metrics."""
    model, vocabulary, _ = load_model(fitted[family])
    test = load_split(training_dir, "test", vocabulary)
    baseline = fit_baselines(load_split(training_dir, "train", vocabulary), [family])[family]
    assert evaluate_model(TRAINERS[family], model, test) == evaluate(baseline, test)
    items = torch.tensor([[5, 6, 7, 0], [40, 0, 0, 0]])
    lengths = torch.tensor([3, 1])
    assert torch.equal(model.score_sessions(items, lengths), baseline.model.score_sessions(items, lengths))


def test_sr_recommends_the_chain_successor(fitted: dict[str, Path], chain_items: list[str]) -> None:
    recommender = Recommender.from_directory(fitted["sr"], device="cpu")
    result = recommender.recommend([[chain_items[5], chain_items[6]], ["unknown"]], k=3)
    assert result.item_id[0] == chain_items[7] and result.fallback.tolist() == [False] * 3 + [True] * 3


def test_tampered_tables_are_refused(fitted: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "sr"
    shutil.copytree(fitted["sr"], folder)
    rules = pq.read_table(folder / RULES_FILE)
    bad = rules.set_column(2, "next_idx", pa.array(np.full(len(rules), 999, np.int32)))
    pq.write_table(bad, folder / RULES_FILE)
    with pytest.raises(ValueError, match=rf"{RULES_FILE}: column next_idx must hold indexes in \[0, 60\)"):
        load_model(folder)
    (folder / RULES_FILE).write_bytes(pickle.dumps({"rules": object}))
    with pytest.raises(ValueError, match=rf"{RULES_FILE}: not a readable Parquet table"):
        load_model(folder)
    folder = tmp_path / "vsknn"
    shutil.copytree(fitted["vsknn"], folder)
    pq.write_table(pq.read_table(folder / SESSIONS_FILE).drop_columns(["session"]), folder / SESSIONS_FILE)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['session'\]"):
        load_model(folder)


def test_the_session_cap_scores_only_the_most_recent_events(fitted: dict[str, Path],
                                                            chain_items: list[str]) -> None:
    long_session = [chain_items[i % 60] for i in range(30)]
    capped = Recommender.from_directory(fitted["vsknn"], device="cpu", max_session_events=4)
    whole = Recommender.from_directory(fitted["vsknn"], device="cpu", max_session_events=100)
    recent = whole.recommend([long_session[-4:]], k=10)
    assert capped.recommend([long_session], k=10).item_id.tolist() == recent.item_id.tolist()
    assert whole.recommend([long_session], k=10).score.tolist() != recent.score.tolist()
    with pytest.raises(ValueError, match="max_session_events must be a positive integer"):
        Recommender.from_directory(fitted["sr"], device="cpu", max_session_events=0)


@pytest.mark.parametrize("family", TABLE_FAMILIES)
def test_the_pyfunc_of_a_table_family_loads_and_predicts(fitted: dict[str, Path], family: str,
                                                         mlflow_settings: Settings, chain_items: list[str]) -> None:
    with training_run(mlflow_settings, date(2026, 11, 21), device="cpu", system_metrics=False) as run:
        info = run.log_model(fitted[family])
    model = mlflow.pyfunc.load_model(info.model_uri, model_config={"device": "cpu"})
    frame = pd.DataFrame({"session_id": ["a", "b"], "item_ids": [[chain_items[5], chain_items[6]], ["nope"]]})
    result = model.predict(frame, params={"k": 5})
    expected = Recommender.from_directory(fitted[family], device="cpu").recommend(list(frame["item_ids"]), k=5)
    assert result.equals(expected.to_pandas(frame["session_id"].to_numpy()))
    assert chain_items[7] in set(result[result["session_id"] == "a"]["item_id"])
    assert result[result["session_id"] == "b"]["fallback"].all()
