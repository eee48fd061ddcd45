"""The registry and the promotion gate: the pure rule, evaluation with a model's own vocabulary, and the
whole flow against real MLflow stores (a SQLite file, and a real ``mlflow server`` with a fresh process
loading ``models:/<name>@champion``)."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from lifecycle.registry import (
    decide_promotion,
    describe_model,
    evaluate_events,
    force_promote,
    gate_and_promote,
    main,
    register_version,
)
from lifecycle.resolver import CHALLENGER, CHAMPION, PREVIOUS
from lifecycle.tracking import connect, training_run
from model.data import Vocabulary, load_split
from model.network import GRU4RecScorer
from model.recommender import Recommender
from sessionrec.config import PROJECT_ROOT, Settings, load_settings
from training.evaluate import evaluate


def gate(recall: float, mrr: float) -> dict[str, float]:
    return {"recall@20": recall, "mrr@20": mrr}


BASELINES = {"pop": gate(0.30, 0.10), "sr": gate(0.40, 0.15), "vsknn": gate(0.38, 0.18)}


@pytest.mark.parametrize(("candidate", "champion", "margin", "family", "promote", "reason"), [
    (gate(0.50, 0.20), None, 0.0, "gru4rec", True,
     "promoted: no champion yet; not beaten by the best baseline (Recall@20 sr 0.4000 against the candidate's "
     "0.5000, MRR@20 vsknn 0.1800 against the candidate's 0.2000)"),
    (gate(0.35, 0.20), None, 0.0, "gru4rec", False,
     "refused: no champion yet; the best baseline beats it on Recall@20 (Recall@20 sr 0.4000 against the "
     "candidate's 0.3500"),
    (gate(0.50, 0.17), None, 0.0, "gru4rec", False, "the best baseline beats it on MRR@20"),
    (gate(0.43, 0.20), None, 0.05, "gru4rec", False, "against the candidate's 0.4300 + margin 0.0500"),
    (gate(0.46, 0.24), None, 0.05, "gru4rec", True, "not beaten by the best baseline"),
    # An SR candidate is not compared with the SR baseline (itself) but with the best other ones.
    (gate(0.39, 0.19), None, 0.0, "sr", True, "not beaten by the best baseline (Recall@20 vsknn 0.3800"),
    (gate(0.495, 0.195), gate(0.50, 0.20), 0.0, "gru4rec", True, "within 0.0100 of the champion"),
    (gate(0.60, 0.15), gate(0.50, 0.20), 0.0, "gru4rec", False,
     "trails the champion by more than 0.0100 on MRR@20 (Recall@20 0.6000 against 0.5000, MRR@20 0.1500 against "
     "0.2000); the best baseline beats it on MRR@20"),
    (gate(0.45, 0.25), gate(0.50, 0.20), 0.0, "gru4rec", False, "trails the champion by more than 0.0100 on Recall@20"),
    (gate(0.20, 0.05), gate(0.50, 0.20), 0.0, "gru4rec", False, "on Recall@20 and MRR@20"),
    # Better than the champion is not enough when a baseline beats it: both comparisons are named.
    (gate(0.38, 0.14), gate(0.30, 0.10), 0.0, "gru4rec", False,
     "refused: within 0.0100 of the champion (Recall@20 0.3800 against 0.3000, MRR@20 0.1400 against 0.1000); "
     "the best baseline beats it on Recall@20 and MRR@20"),
])
def test_decide_promotion(candidate: dict, champion: dict | None, margin: float, family: str, promote: bool,
                          reason: str) -> None:
    decision = decide_promotion(candidate, champion, BASELINES, tolerance=0.01, baseline_margin=margin,
                                family=family)
    assert decision.promote is promote
    assert reason in decision.reason


def test_decide_promotion_names_missing_metrics() -> None:
    with pytest.raises(ValueError, match="candidate metrics lack \\['mrr@20'\\]"):
        decide_promotion({"recall@20": 0.5}, None, BASELINES, 0.01, 0.0)
    with pytest.raises(ValueError, match="champion metrics lack"):
        decide_promotion(gate(0.5, 0.2), {"recall@10": 0.4}, BASELINES, 0.01, 0.0)
    with pytest.raises(ValueError, match="champion metrics are not finite"):
        decide_promotion(gate(0.5, 0.2), gate(float("nan"), 0.2), BASELINES, 0.01, 0.0)
    with pytest.raises(ValueError, match="no baseline other than 'pop'"):
        decide_promotion(gate(0.5, 0.2), None, {"pop": gate(0.1, 0.1)}, 0.01, 0.0, family="pop")


class SuccessorScorer:
    """Scores 1 for the item whose id follows the last item's id (``a3`` -> ``a4``), 0 elsewhere."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.n_items = len(vocabulary)
        ids = list(vocabulary.item_ids)
        successors = vocabulary.lookup([f"a{int(i[1:]) + 1}" for i in ids])
        self.table = torch.zeros(self.n_items, self.n_items)
        for item, successor in enumerate(successors.tolist()):
            if successor >= 0:
                self.table[item, successor] = 1.0

    def begin(self, n_slots: int) -> None:
        self.last = torch.zeros(n_slots, dtype=torch.long)

    def reset(self, slots: torch.Tensor) -> None:
        self.last[slots] = 0

    def step(self, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.last[slots] = items
        return self.table[items]


def events_table(sessions: list[list[str]]) -> pa.Table:
    rows = [(f"s{s}", item, 60 * s + i) for s, session in enumerate(sessions) for i, item in enumerate(session)]
    seconds = np.array([r[2] for r in rows], dtype="timedelta64[s]")
    return pa.table({"session_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                     "event_time": pa.array(np.datetime64("2026-11-21T00:00:00", "us") + seconds)})


def test_unknown_test_items_count_as_misses_for_a_model_that_does_not_know_them() -> None:
    events = events_table([["a0", "a1", "a2"], ["a3", "a4"], ["a5", "a6", "a7", "a8"]])
    full = Vocabulary(np.array([f"a{i}" for i in range(10)], dtype=object), np.ones(10, np.int64))
    metrics = evaluate_events(SuccessorScorer(full), full, events, ks=(1,))
    assert metrics == {"recall@1": 1.0, "mrr@1": 1.0, "n_events": 6, "ranked_events": 6, "unknown_events": 0,
                       "coverage": 1.0}
    # Without a4 and a6: a3 -> a4 and a5 -> a6 are unknown targets, a5 -> a7 is now ranked after a5 (the
    # model predicts a6, which it cannot), and [a3] alone has no target left: 3 hits out of 6 targets.
    older = Vocabulary(np.array([f"a{i}" for i in (0, 1, 2, 3, 5, 7, 8, 9)], dtype=object),
                       np.ones(8, np.int64))
    metrics = evaluate_events(SuccessorScorer(older), older, events, ks=(1,))
    assert metrics == {"recall@1": 0.5, "mrr@1": 0.5, "n_events": 6, "ranked_events": 4, "unknown_events": 2,
                       "coverage": 7 / 9}


def test_a_model_that_knows_no_test_item_scores_zero() -> None:
    events = events_table([["a0", "a1"]])
    other = Vocabulary(np.array(["b0", "b1"], dtype=object), np.ones(2, np.int64))
    metrics = evaluate_events(SuccessorScorer(Vocabulary(np.array(["a0"], dtype=object), np.ones(1, np.int64))),
                              other, events, ks=(20,))
    assert metrics["recall@20"] == 0.0 and metrics["n_events"] == 1 and metrics["unknown_events"] == 2


def test_evaluate_events_agrees_with_evaluate_when_every_item_is_known(trained_model_dir: Path,
                                                                       training_dir: Path) -> None:
    from lifecycle.registry import read_test_events

    recommender = Recommender.from_directory(trained_model_dir, device="cpu")
    scorer = GRU4RecScorer(recommender.model, "cpu")
    direct = evaluate(scorer, load_split(training_dir, "test", recommender.vocabulary))
    adapted = evaluate_events(scorer, recommender.vocabulary, read_test_events(training_dir))
    for key in ("recall@20", "mrr@20", "recall@1"):
        assert adapted[key] == pytest.approx(direct[key])
    assert adapted["n_events"] == direct["n_events"]


def log_and_register(settings: Settings, model_dir: Path, training_dir: Path, day: date,
                     model_name: str) -> ModelVersion:
    with training_run(settings, day, device="cpu", system_metrics=False) as run:
        run.log_training_data(training_dir)
        recommender = Recommender.from_directory(model_dir, device="cpu")
        run.log_test_metrics(evaluate(GRU4RecScorer(recommender.model, "cpu"),
                                      load_split(training_dir, "test", recommender.vocabulary)))
        info = run.log_model(model_dir)
    return register_version(connect(settings), info, model_name, day)


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def test_gate_promotes_better_models_and_keeps_worse_ones_as_challenger(
        mlflow_settings: Settings, trained_model_dir: Path, random_model_dir: Path, training_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    settings, name = mlflow_settings, mlflow_settings.model_name
    client = connect(settings)
    tolerance, margin = settings.gate_tolerance, settings.gate_baseline_margin

    first = log_and_register(settings, trained_model_dir, training_dir, date(2026, 11, 21), name)
    assert str(first.version) == "1" and first.tags["logical_date"] == "2026-11-21"
    assert float(first.tags["test_recall_20"]) > 0.9
    assert first.tags["training_dir"] == str(training_dir.resolve())
    assert "gru4rec trained for 2026-11-21" in first.description and "Recall@20" in first.description
    decision = gate_and_promote(client, name, first.version, training_dir, tolerance, margin, 0.5, device="cpu",
                                baselines=("pop",))
    assert decision.promote and "no champion yet" in decision.reason
    assert aliases(client, name) == {CHAMPION: "1"}
    tags = client.get_model_version(name, "1").tags
    assert tags["gate_decision"] == "promoted" and float(tags["gate_candidate_recall_20"]) > 0.9
    assert tags["gate_best_baseline"] == "pop" and 0.0 < float(tags["gate_best_baseline_recall_20"]) < 0.6
    assert tags["gate_test_data"] == str(training_dir.resolve()) and float(tags["gate_coverage"]) == 1.0

    worse = log_and_register(settings, random_model_dir, training_dir, date(2026, 11, 22), name)
    decision = gate_and_promote(client, name, worse.version, training_dir, tolerance, margin, 0.5, device="cpu",
                                baselines=("pop",))
    assert not decision.promote and "trails the champion" in decision.reason
    assert aliases(client, name) == {CHAMPION: "1", CHALLENGER: "2"}
    tags = client.get_model_version(name, "2").tags
    assert tags["gate_decision"] == "rejected" and tags["gate_reason"] == decision.reason
    assert float(tags["gate_champion_recall_20"]) > 0.9

    better = log_and_register(settings, trained_model_dir, training_dir, date(2026, 11, 23), name)
    decision = gate_and_promote(client, name, better.version, training_dir, tolerance, margin, 0.5, device="cpu",
                                baselines=("pop",))
    assert decision.promote and "(champion: version 1)" in decision.reason
    assert aliases(client, name) == {CHAMPION: "3", PREVIOUS: "1", CHALLENGER: "2"}

    # The CLI gates on the production lake's training set of the day (here the fixture's lake).
    production = settings.replace(lake=str(training_dir.parent.parent))
    assert main(["promote", "--version", "2", "--ds", "2026-11-21"], production) == 1
    assert client.get_model_version(name, "2").tags["gate_test_data"] == str(training_dir.resolve())
    with pytest.raises(FileNotFoundError, match="ds=2026-11-22"):
        main(["promote", "--version", "2"], production)  # its own day has no training set in that lake
    assert aliases(client, name) == {CHAMPION: "3", PREVIOUS: "1", CHALLENGER: "2"}
    assert main(["promote", "--version", "2", "--force", "--reason", "roll forward for a test"], settings) == 0
    assert aliases(client, name) == {CHAMPION: "2", PREVIOUS: "3"}
    tags = client.get_model_version(name, "2").tags
    assert tags["gate_decision"] == "forced" and tags["gate_forced_by"] == getpass.getuser()
    assert tags["gate_reason"] == f"forced by {getpass.getuser()}: roll forward for a test"

    capsys.readouterr()
    assert main(["show"], settings) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"{name}: 3 version(s); @champion -> 2, @previous -> 3")
    lines = shown.splitlines()
    assert lines[1].split()[:3] == ["version", "aliases", "logical_date"]
    assert lines[2].split()[:4] == ["3", "previous", "2026-11-23", first.tags["test_recall_20"]]
    assert lines[3].split()[:2] == ["2", "champion"] and "forced" in lines[3]


def test_force_promote_of_the_first_version_and_unknown_versions(mlflow_settings: Settings,
                                                                  trained_model_dir: Path,
                                                                  training_dir: Path) -> None:
    client = connect(mlflow_settings)
    name = "other-model"
    version = log_and_register(mlflow_settings, trained_model_dir, training_dir, date(2026, 11, 21), name)
    decision = force_promote(client, name, version.version)
    assert decision.promote and decision.reason == f"forced by {getpass.getuser()}"
    assert aliases(client, name) == {CHAMPION: "1"}
    with pytest.raises(Exception, match="(?i)not found|does not exist"):
        force_promote(client, name, "7")
    assert describe_model(client, "no-such-model") == "registered model 'no-such-model' not found"


def test_server_registry_and_a_fresh_process_loading_the_champion(
        mlflow_server: str, trained_model_dir: Path, training_dir: Path, tmp_path: Path,
        chain_items: list[str]) -> None:
    settings = load_settings(env={}, home=tmp_path / "var", mlflow_tracking_uri=mlflow_server,
                             mlflow_artifact_root="mlflow-artifacts:/")
    name = "gru4rec-served"
    version = log_and_register(settings, trained_model_dir, training_dir, date(2026, 11, 21), name)
    client = connect(settings)
    decision = gate_and_promote(client, name, version.version, training_dir, settings.gate_tolerance,
                                settings.gate_baseline_margin, settings.gate_min_coverage, device="cpu")
    assert decision.promote
    experiment = client.get_experiment_by_name(settings.model_name)
    assert experiment.artifact_location == f"mlflow-artifacts:/{settings.model_name}"

    # The fresh process cannot import this checkout (its editable-install finder and the repository are
    # taken off the import path): the model's code must come from the logged model itself.
    script = (
        "import json, sys\n"
        "sys.meta_path = [f for f in sys.meta_path if '__editable__' not in repr(f)]\n"
        f"sys.path = [p for p in sys.path if p not in ('', {str(PROJECT_ROOT)!r})]\n"
        "import mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model('models:/{name}@champion')\n"
        "frame = pd.DataFrame({'session_id': ['s1', 's2'], 'item_ids': [sys.argv[1:3], ['unknown']]})\n"
        "rows = model.predict(frame, params={'k': 3}).to_dict(orient='records')\n"
        "print(json.dumps({'code': sys.modules['model'].__file__, 'rows': rows}))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true",
           "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", script, chain_items[5], chain_items[6]], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["code"].endswith("/code/model/__init__.py") and str(PROJECT_ROOT) not in output["code"]
    rows = output["rows"]
    assert [sorted(r) for r in rows[:1]] == [["fallback", "item_id", "rank", "score", "session_id"]]
    assert [(r["session_id"], r["rank"], r["fallback"]) for r in rows] == [
        ("s1", 1, False), ("s1", 2, False), ("s1", 3, False), ("s2", 1, True), ("s2", 2, True), ("s2", 3, True)]
    assert rows[0]["item_id"] == chain_items[7]
