"""Recording a training run in MLflow: parameters, per-epoch metrics, test results, lineage, plots, model.

Usage from the training CLI::

    with training_run(settings, logical_date, device=device) as run:
        run.log_params({"network": config.to_dict(), "train": params.to_dict()})
        run.log_training_data(training_dir)
        train(..., on_epoch_end=run.on_epoch_end)
        run.log_test_metrics(evaluate(scorer, test))
        run.log_baselines({name: evaluate(b, test) for name, b in fit_baselines(train).items()})
        run.log_plots()
        info = run.log_model(model_dir)

Metric names (MLflow names cannot contain ``@``, so ``recall@20`` becomes ``recall_20``):

- per epoch, with ``step`` = epoch: ``train_loss``, ``train_pairs_per_s`` (training events per second),
  ``epoch_seconds``, and the validation metrics as ``valid_recall_20``, ``valid_mrr_20``, ...;
- final: ``test_recall_{K}`` and ``test_mrr_{K}`` for K in 1, 5, 10, 20, plus ``test_n_events`` and
  ``test_n_sessions`` (what evaluate() counted);
- baselines on the same split: ``baseline_{name}_recall_{K}``, ``baseline_{name}_mrr_{K}``
  (``baseline_pop_recall_20``), and the artifact ``comparison/metrics.csv``: one row per model.

Tags: ``logical_date``, ``git_commit`` (when the code runs from a git checkout), ``device`` (cpu or cuda),
``device_name`` (the GPU's name) and ``training_dir`` (the training set the run read).

The run goes to the experiment named after the model unless told otherwise; a new experiment gets an
explicit artifact location under ``Settings.mlflow_artifact_root`` (never ``./mlruns``).
System metrics (CPU, memory, disk, network; GPU needs ``nvidia-ml-py``) are sampled while the run is open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
import pyarrow.dataset as ds
import torch
from matplotlib.figure import Figure
from mlflow.data.dataset import Dataset
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.entities import Metric, Param
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

from lifecycle.connection import connect
from model.data import SPLITS, VOCABULARY_FILE
from model.packaging import log_session_model
from sessionrec.config import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from training.trainer import EpochStats

logger = logging.getLogger(__name__)

KS = (1, 5, 10, 20)
STATS_FILE = "stats.json"
MODEL_LABEL = "gru4rec"


def metric_key(name: str, prefix: str = "") -> str:
    """An MLflow-safe metric name: ``recall@20`` -> ``recall_20``; with a prefix, ``test_recall_20``."""
    safe = name.replace("@", "_")
    return f"{prefix}_{safe}" if prefix else safe


def run_name(model_name: str, logical_date: date) -> str:
    return f"{model_name}-{logical_date.isoformat()}"


def artifact_location(artifact_root: str, experiment: str) -> str:
    """Where a new experiment keeps its artifacts: ``<root>/<experiment>``; a local root becomes a file URI."""
    if "://" in artifact_root or artifact_root.startswith("mlflow-artifacts:"):
        return f"{artifact_root.rstrip('/')}/{experiment}"
    return (Path(artifact_root).resolve() / experiment).as_uri()


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str) -> str:
    """The id of experiment ``name``, created with an explicit artifact location when it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        raise ValueError(f"MLflow experiment {name!r} ({experiment.experiment_id}) is deleted; restore it "
                         "(mlflow experiments restore) or use another experiment name")
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_location(artifact_root, name)
    logger.info("creating MLflow experiment %r with artifacts at %s", name, location)
    return client.create_experiment(name, artifact_location=location)


def git_commit(directory: Path = PROJECT_ROOT) -> str | None:
    """``git rev-parse HEAD`` of the checkout the code runs from, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def device_tags(device: torch.device | str) -> dict[str, str]:
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {"device": device.type, "device_name": name}


def run_tags(logical_date: date, device: torch.device | str) -> dict[str, str]:
    tags = {"logical_date": logical_date.isoformat(), **device_tags(device)}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    return tags


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings as dotted keys (``network.layers``); values as MLflow param strings."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


class TrainingSetDataset(Dataset):
    """A training set folder (docs/CONTRACTS.md, section 3) as an MLflow dataset: where it is, rows per
    split, and a digest of its vocabulary and statistics files (the data is not copied)."""

    def __init__(self, training_dir: Path) -> None:
        self.training_dir = training_dir
        self._rows = split_rows(training_dir)
        with warnings.catch_warnings():
            # MLflow registers two equivalent local sources (no scheme, file://) and warns that it picked one.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            source = resolve_dataset_source(str(training_dir.resolve()))
        super().__init__(source=source, name=f"{training_dir.parent.name}/{training_dir.name}")

    def _compute_digest(self) -> str:
        digest = hashlib.sha256()
        for file in (VOCABULARY_FILE, STATS_FILE):
            path = self.training_dir / file
            if not path.is_file():
                raise FileNotFoundError(f"{path}: not found; a training set folder holds {VOCABULARY_FILE} "
                                        f"and {STATS_FILE}")
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]

    @property
    def profile(self) -> dict[str, int]:
        return {f"{split}_rows": rows for split, rows in self._rows.items()}

    @property
    def schema(self) -> None:
        return None

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self.profile)}


def split_rows(training_dir: Path) -> dict[str, int]:
    """Rows of each split folder present (from Parquet metadata, without reading the data)."""
    if not training_dir.is_dir():
        raise FileNotFoundError(f"{training_dir}: training set folder not found")
    return {split: ds.dataset(training_dir / split, format="parquet").count_rows()
            for split in SPLITS if (training_dir / split).is_dir()}


def loss_figure(history: list[EpochStats]) -> Figure:
    """Training loss by epoch."""
    figure = Figure(figsize=(6, 4), layout="tight")
    axes = figure.add_subplot()
    axes.plot([s.epoch for s in history], [s.loss for s in history], marker="o")
    axes.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    axes.grid(alpha=0.3)
    return figure


def recall_figure(results: Mapping[str, Mapping[str, float]], ks: tuple[int, ...] = KS) -> Figure:
    """Recall@K against K for every model (the trained model and each baseline) on the test split."""
    figure = Figure(figsize=(6, 4), layout="tight")
    axes = figure.add_subplot()
    for label, metrics in results.items():
        axes.plot(ks, [metrics[f"recall@{k}"] for k in ks], marker="o", label=label)
    axes.set(xlabel="K", ylabel="Recall@K", title="Recall@K on the test split", xticks=list(ks))
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def comparison_table(results: Mapping[str, Mapping[str, float]], ks: tuple[int, ...] = KS) -> pd.DataFrame:
    """One row per model; columns recall@K and mrr@K."""
    columns = [f"{name}@{k}" for name in ("recall", "mrr") for k in ks]
    rows = [{"model": label, **{c: metrics[c] for c in columns}} for label, metrics in results.items()]
    return pd.DataFrame(rows, columns=["model", *columns])


@dataclass
class TrainingRun:
    """An open MLflow run and what it has seen so far (for the plots)."""

    client: MlflowClient
    run_id: str
    history: list[EpochStats] = field(default_factory=list)
    results: dict[str, dict[str, float]] = field(default_factory=dict)

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = flatten_params(params)
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])

    def on_epoch_end(self, stats: EpochStats) -> None:
        """Per-epoch step metrics; usable directly as the trainer's ``on_epoch_end`` callback."""
        self.history.append(stats)
        values = {"train_loss": stats.loss, "train_pairs_per_s": stats.pairs_per_s,
                  "epoch_seconds": stats.seconds}
        values.update({metric_key(k, "valid"): v for k, v in (stats.eval_metrics or {}).items() if "@" in k})
        self._log_metrics(values, step=stats.epoch)

    def log_test_metrics(self, metrics: Mapping[str, float], label: str = MODEL_LABEL) -> None:
        """The trained model's test metrics (evaluate()'s dictionary) as ``test_*``; ``label`` names it in
        the comparison table and plot (its family)."""
        self.results[label] = dict(metrics)
        self._log_metrics({metric_key(k, "test"): v for k, v in metrics.items()})

    def log_baselines(self, baselines: Mapping[str, Mapping[str, float]]) -> None:
        """Each baseline's test metrics as ``baseline_<name>_*``, and the comparison table with the model."""
        for name, metrics in baselines.items():
            self.results[name] = dict(metrics)
            self._log_metrics({metric_key(k, f"baseline_{name}"): v for k, v in metrics.items()})
        table = comparison_table(self.results)
        self.client.log_text(self.run_id, table.to_csv(index=False), "comparison/metrics.csv")

    def log_training_data(self, training_dir: Path | str) -> None:
        """Dataset lineage: the training set folder, its row counts per split and its digest."""
        self._require_active()
        training_dir = Path(training_dir)
        dataset = TrainingSetDataset(training_dir)
        mlflow.log_input(dataset, context="training")
        self.client.set_tag(self.run_id, "training_dir", str(training_dir.resolve()))
        logger.info("logged training set %s (digest %s, rows %s)", training_dir, dataset.digest, dataset.profile)

    def log_plots(self) -> None:
        """``plots/loss.png`` (needs epochs) and ``plots/recall_at_k.png`` (needs test results)."""
        if self.history:
            self.client.log_figure(self.run_id, loss_figure(self.history), "plots/loss.png")
        if self.results:
            self.client.log_figure(self.run_id, recall_figure(self.results), "plots/recall_at_k.png")

    def log_model(self, model_dir: Path | str, name: str = "model") -> ModelInfo:
        """The model folder as the run's pyfunc model (model/packaging.py)."""
        self._require_active()
        return log_session_model(Path(model_dir), name=name)

    def _require_active(self) -> None:
        """MLflow's dataset and model logging write to the active run: it must be this one."""
        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise RuntimeError(f"run {self.run_id} is not the active MLflow run; use it inside training_run()")

    def _log_metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        metrics = [Metric(k, float(v), timestamp=int(time.time() * 1000), step=step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)


@contextmanager
def training_run(settings: Settings, logical_date: date, device: torch.device | str,
                 experiment: str | None = None, system_metrics: bool = True) -> Iterator[TrainingRun]:
    """Open a run named ``<model>-<logical date>`` in ``experiment`` (default: the model name).

    The run ends FINISHED when the block completes and FAILED when it raises.
    """
    client = connect(settings)
    experiment_id = ensure_experiment(client, experiment or settings.model_name, settings.mlflow_artifact_root)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name(settings.model_name, logical_date),
                          tags=run_tags(logical_date, device), log_system_metrics=system_metrics) as run:
        logger.info("MLflow run %s (%s) in experiment %s", run.info.run_id, run.info.run_name, experiment_id)
        yield TrainingRun(client, run.info.run_id)
