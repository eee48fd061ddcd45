"""The nightly leaderboard in the MLflow run: every family and baseline, every metric, as a table and a plot.

Logged by ``lifecycle.pipeline.track_selection``:

- ``leaderboard/leaderboard.json``: an MLflow table (``mlflow.log_table``), one row per model: ``model``,
  ``kind`` (family or baseline), ``selected``, ``test_<metric>`` on day D's test split and, for
  families, ``valid_<metric>`` on the validation split the selection used;
- ``leaderboard/leaderboard.png``: Recall@20 and MRR@20 on test by model, the selected one marked;
- metrics ``family_<name>_test_<metric>`` and ``family_<name>_valid_<metric>`` for each family.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from lifecycle.tracking import metric_key

TABLE_FILE = "leaderboard/leaderboard.json"
PLOT_FILE = "leaderboard/leaderboard.png"
PLOTTED = ("recall@20", "mrr@20")


def leaderboard_figure(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Grouped bars of the test metrics in :data:`PLOTTED` per model; the selected model's name starred."""
    figure = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2), 4), layout="tight")
    axes = figure.add_subplot()
    positions = np.arange(len(rows))
    width = 0.8 / len(PLOTTED)
    for offset, metric in enumerate(PLOTTED):
        axes.bar(positions + offset * width, [row[f"test_{metric}"] for row in rows], width, label=metric)
    labels = [f"{row['model']}{' (baseline)' if row['kind'] == 'baseline' else ''}{' *' if row['selected'] else ''}"
              for row in rows]
    axes.set_xticks(positions + width * (len(PLOTTED) - 1) / 2, labels, rotation=30, ha="right")
    axes.set(ylabel="on the test split", title="Leaderboard (* selected on the validation split)")
    axes.grid(alpha=0.3, axis="y")
    axes.legend()
    return figure


def log_leaderboard(client: MlflowClient, run_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
    client.log_table(run_id, data=pd.DataFrame(list(rows)), artifact_file=TABLE_FILE)
    client.log_figure(run_id, leaderboard_figure(rows), PLOT_FILE)
    now = int(time.time() * 1000)
    metrics = [Metric(metric_key(key, f"family_{row['model']}"), float(value), timestamp=now, step=0)
               for row in rows if row["kind"] == "family"
               for key, value in row.items() if key.startswith(("test_", "valid_"))]
    for begin in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[begin:begin + 1000])
