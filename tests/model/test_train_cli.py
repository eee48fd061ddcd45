"""``python -m training.train`` end to end on a tiny training-set folder (docs/CONTRACTS.md section 3)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.artifacts import load_model
from model.data import Vocabulary, write_vocabulary
from training.baselines import BASELINES
from training.presets import PRESETS
from training.train import ProgressLine, build_parser, main, params_from_args

N_ITEMS = 30
DAY = np.datetime64("2026-11-21T00:00:00", "us")
FAST_BASELINES = [name for name in BASELINES if name != "bprmf"]
TINY = ["--layers", "16", "--batch-size", "16", "--epochs", "2", "--n-sample", "8", "--learning-rate", "0.1"]


def chain_sessions(n_sessions: int, seed: int, start: np.datetime64, prefix: str) -> pa.Table:
    """Sessions walking items j, j+1, ... (mod N_ITEMS), one minute per event."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 6, n_sessions)
    session = np.repeat(np.arange(n_sessions), lengths)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = (np.repeat(rng.integers(0, N_ITEMS, n_sessions), lengths) + position) % N_ITEMS
    times = start + (session * 600).astype("timedelta64[s]") + (position * 60).astype("timedelta64[s]")
    return pa.table({"session_id": [f"{prefix}{s:04d}" for s in session],
                     "item_id": [f"item{i:02d}" for i in items],
                     "event_time": pa.array(times, pa.timestamp("us", tz="UTC"))})


def write_split(events: pa.Table, vocabulary: Vocabulary, folder: Path) -> None:
    idx = vocabulary.lookup(events.column("item_id")).astype(np.int32)
    table = events.append_column("item_idx", pa.array(idx, pa.int32()))
    table = table.select(["session_id", "item_id", "item_idx", "event_time"])
    folder.mkdir(parents=True)
    pq.write_table(table.sort_by([("session_id", "ascending"), ("event_time", "ascending")]),
                   folder / "part-00000.parquet")


@pytest.fixture(scope="module")
def training_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lake") / "training" / "ds=2026-11-21"
    train = chain_sessions(120, 1, DAY - np.timedelta64(2, "D"), "a")
    test = chain_sessions(30, 2, DAY, "b")
    train_tr = chain_sessions(90, 3, DAY - np.timedelta64(2, "D"), "c")
    valid = chain_sessions(20, 4, DAY - np.timedelta64(1, "D"), "d")
    ids, counts = np.unique(np.asarray(train.column("item_id").to_pylist(), dtype=object), return_counts=True)
    vocabulary = Vocabulary.from_counts(ids, counts)
    root.mkdir(parents=True)
    write_vocabulary(vocabulary, root / "items.parquet")
    for name, events in (("train", train), ("test", test), ("train_tr", train_tr), ("valid", valid)):
        write_split(events, vocabulary, root / name)
    stats = {"splits": {"test": {"unknown_events_dropped": 3}, "valid": {"unknown_events_dropped": 1}}}
    (root / "stats.json").write_text(json.dumps(stats))
    return root


def test_trains_evaluates_reports_and_saves(training_dir: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    report, output = tmp_path / "out" / "report.json", tmp_path / "model"
    # Every baseline but BPR-MF, whose fixed training schedule alone takes about 10 s.
    code = main(["--training-dir", str(training_dir), "--no-mlflow", "--report", str(report), "--family", "gru4rec",
                 "--output-dir", str(output), "--device", "cpu",
                 "--checkpoint-dir", str(tmp_path / "checkpoints"), *TINY,
                 "--baselines", ",".join(FAST_BASELINES)])
    assert code == 0
    out = capsys.readouterr()
    assert "epoch 1/2" in out.out and "epoch 2/2" in out.out and "recall@20" in out.out
    assert "\r" not in out.err, "no progress line when stderr is not a terminal"
    result = json.loads(report.read_text())
    assert {"metrics", "baselines", "throughput_events_per_s", "train_seconds", "n_unknown_test_events"} <= set(result)
    assert result["family"] == "gru4rec"
    assert set(result["baselines"]) == set(FAST_BASELINES)
    for metrics in [result["metrics"], *result["baselines"].values()]:
        assert {f"{m}@{k}" for m in ("recall", "mrr") for k in (1, 5, 10, 20)} <= set(metrics)
    assert result["metrics"]["recall@5"] > result["baselines"]["pop"]["recall@5"]
    assert result["n_unknown_test_events"] == 3 and result["split"] == "full"
    assert result["throughput_events_per_s"] > 0 and len(result["epochs"]) == 2
    model, vocabulary, params = load_model(output)
    assert len(vocabulary) == model.n_items == N_ITEMS
    assert params["layers"] == [16] and params["epochs"] == 2
    assert (tmp_path / "checkpoints" / "checkpoint.pt").is_file()


def test_tuning_split_trains_on_train_tr_and_evaluates_on_valid(training_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    assert main(["--training-dir", str(training_dir), "--no-mlflow", "--split", "tuning", "--report", str(report),
                 "--family", "gru4rec", "--device", "cpu", "--baselines", "pop", *TINY]) == 0
    result = json.loads(report.read_text())
    assert result["split"] == "tuning" and result["n_unknown_test_events"] == 1
    assert list(result["baselines"]) == ["pop"]
    assert result["epochs"][0]["pairs"] == chain_sessions(90, 3, DAY, "c").num_rows - 90
    assert result["metrics"]["n_sessions"] == 20


def test_without_family_selects_on_validation_and_reports_the_leaderboard(
        training_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    assert main(["--training-dir", str(training_dir), "--no-mlflow", "--report", str(report), "--device", "cpu",
                 "--baselines", "pop,sr", *TINY]) == 0
    result = json.loads(report.read_text())
    families = {"gru4rec", "sr", "vsknn"}
    assert result["family"] in families and set(result["validation"]) == families
    metric = result["selection_metric"]
    validation = result["validation"]
    assert max(validation, key=lambda f: (validation[f][metric], validation[f]["mrr@20"])) == result["family"]
    rows = {(row["model"], row["kind"]): row for row in result["leaderboard"]}
    assert set(rows) == {(f, "family") for f in families} | {("pop", "baseline"), ("sr", "baseline")}
    (selected,) = [row for row in result["leaderboard"] if row["selected"]]
    assert selected["model"] == result["family"] and selected["test_recall@20"] == result["metrics"]["recall@20"]
    assert all(f"valid_{metric}" in rows[f, "family"] for f in families)
    assert rows["sr", "family"]["test_recall@20"] == rows["sr", "baseline"]["test_recall@20"]
    assert f"selected {result['family']} by validation {metric}" in capsys.readouterr().out


def test_an_ad_hoc_run_tracks_but_never_registers_unless_asked(training_dir: Path, cli_home: Path) -> None:
    """The default CLI run: one MLflow run with the model, no registered version (nothing can be promoted)."""
    from mlflow.tracking import MlflowClient

    from sessionrec.config import load_settings

    assert main(["--training-dir", str(training_dir), "--family", "gru4rec", "--device", "cpu", "--baselines", "pop",
                 *TINY]) == 0
    settings = load_settings()
    client = MlflowClient(settings.mlflow_tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(settings.model_name).experiment_id])
    assert run.info.run_name == "gru4rec-2026-11-21" and run.info.status == "FINISHED"
    assert "16" in run.data.params["layers"] and run.data.params["epochs"] == "2"
    assert run.data.tags["family"] == "gru4rec"
    assert {"test_recall_20", "baseline_pop_recall_20", "train_loss"} <= set(run.data.metrics)
    assert client.search_model_versions(f"name = '{settings.model_name}'") == []
    assert not settings.work_area.checkpoints("2026-11-21").exists(), "checkpoints removed once logged"


def test_register_in_the_production_lake_is_gated(training_dir: Path, cli_home: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained on the production lake's training set of the day: registered and gated on that day's data."""
    from mlflow.tracking import MlflowClient

    from sessionrec.config import load_settings

    monkeypatch.setenv("SESSIONREC_LAKE", str(training_dir.parent.parent))
    assert main(["--training-dir", str(training_dir), "--family", "sr", "--device", "cpu", "--baselines", "pop",
                 "--register"]) == 0
    settings = load_settings()
    client = MlflowClient(settings.mlflow_tracking_uri)
    version = client.get_model_version(settings.model_name, "1")
    assert version.tags["family"] == "sr" and version.tags["gate_decision"] == "promoted"
    assert "not beaten by the best baseline" in version.tags["gate_reason"]
    assert version.tags["gate_test_data"] == str(training_dir.resolve())
    assert client.get_model_version_by_alias(settings.model_name, "champion").version in (1, "1")


def test_flags_override_the_preset() -> None:
    parser = build_parser("cpu")
    assert parser.parse_args(["--training-dir", "x"]).baselines.split(",") == list(BASELINES)
    args = parser.parse_args(["--training-dir", "x", "--preset", "coveo", "--epochs", "3", "--layers", "64,32",
                              "--no-constrained-embedding", "--embedding", "16", "--no-remove-accidental-hits"])
    params = params_from_args(args)
    assert (params.epochs, params.layers, params.constrained_embedding, params.embedding) == (3, (64, 32), False, 16)
    assert not params.remove_accidental_hits
    assert (params.loss, params.bpreg, params.batch_size) == ("bpr-max", PRESETS["coveo"]["bpreg"], 144)
    assert params_from_args(parser.parse_args(["--training-dir", "x"])).to_dict() == \
        params_from_args(parser.parse_args(["--training-dir", "x", "--preset", "default"])).to_dict()


@pytest.mark.parametrize(("flags", "message"), [
    (["--loss", "hinge"], "invalid choice"),
    (["--momentum", "1.5"], "momentum"),
    (["--layers", "a,b"], "invalid"),
    (["--split", "all"], "invalid choice"),
    (["--baselines", "pop,magic"], "unknown baseline"),
    (["--family", "magic"], "invalid choice"),
    (["--split", "tuning"], "--split needs --family"),
    (["--force-promote"], "--force-promote needs --register"),
    (["--params", '{"epochs": 2}'], "--params needs --family"),
    (["--params", "[1]"], "expected a JSON object"),
    (["--family", "sr", "--loss", "bpr"], "the hyperparameter flags are GRU4Rec's"),
    (["--family", "sr", "--params", '{"k": 3}'], "unknown sr parameter(s) ['k']"),
])
def test_bad_flags_fail_with_a_message(training_dir: Path, flags: list[str], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--training-dir", str(training_dir), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_training_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="items.parquet"):
        main(["--training-dir", str(tmp_path / "nowhere"), "--no-mlflow", "--device", "cpu", *TINY])


def test_progress_line() -> None:
    stream = io.StringIO()
    progress = ProgressLine(epochs=3, stream=stream, enabled=True, width=10)
    progress(2, 10, 100)
    progress(2, 50, 100)
    progress.clear()
    text = stream.getvalue()
    assert "\repoch 2/3 [#.........]  10% " in text
    assert "\repoch 2/3 [#####.....]  50% " in text and "pairs/s" in text
    silent = io.StringIO()
    ProgressLine(epochs=3, stream=silent)(1, 5, 10)
    assert silent.getvalue() == ""
