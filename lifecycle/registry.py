"""The model registry: every trained model becomes a version; the promotion gate moves ``@champion``.

Aliases of the registered model (``Settings.model_name``, default ``gru4rec``):

- ``champion``: the version the nightly scoring serves;
- ``previous``: the champion before the last promotion (roll back by promoting it with ``--force``);
- ``challenger``: the latest version that did not pass the gate.

The gate (:func:`gate_and_promote`) evaluates the candidate, the champion and the baselines on the same
data: the test split of the production lake's training set for the day being gated (the caller passes
it; never a folder only the candidate brought). It refuses a candidate whose vocabulary holds the items
of less than ``Settings.gate_min_coverage`` of those test events (a model of another clickstream),
whatever its metrics. Otherwise (:func:`decide_promotion`) it promotes a candidate of any family when it
trails the champion (of any family) by at most ``Settings.gate_tolerance`` (absolute) on both Recall@20
and MRR@20, and reaches on both the best baseline other than its own family (fitted on the same
training set's train split) plus ``Settings.gate_baseline_margin``. With no champion
yet only the baseline check applies. Every model is evaluated with its own vocabulary: test events whose
item a model does not know are skipped as input and count as misses as targets
(:func:`evaluate_events`), so a champion trained on an older vocabulary is not flattered by dropping
what it cannot rank.

The decision, its reason and the metrics it used are recorded as version tags (``gate_*``); an operator
can force a promotion, recorded as ``gate_decision=forced`` with the user's name.

CLI::

    python -m lifecycle.registry show [--model gru4rec]
    python -m lifecycle.registry promote --model gru4rec --version N [--ds YYYY-MM-DD] [--force] [--reason TEXT]

``promote`` exits with 0 when the version is (or already was) the champion and 1 when the gate refused it.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

from lifecycle.resolver import CHALLENGER, CHAMPION, PREVIOUS, aliased_version, registered_model
from lifecycle.tracking import connect, metric_key
from model.artifacts import load_model
from model.data import VOCABULARY_FILE, Vocabulary, dataset_from_table, load_split, read_vocabulary
from model.device import resolve_device
from model.families import LEGACY_FAMILY
from model.logged import download_model_dir
from sessionrec.config import Settings, load_settings
from sessionrec.layout import local_path
from training.baselines import BASELINES, fit_baselines
from training.evaluate import SessionScorer, evaluate
from training.families import trainer_for

logger = logging.getLogger(__name__)

GATE_METRICS = ("recall@20", "mrr@20")
KS = (1, 5, 10, 20)
TEST_EVENT_COLUMNS = ("session_id", "item_id", "event_time")
FAMILY_TAG = "family"
MODEL_DESCRIPTION = (
    "Session-based next-item recommender (pyfunc: session_id + item_ids in, top-k items out); each version's "
    "'family' tag says which model family it is (gru4rec, sr, vsknn, ...). "
    "@champion is served by the nightly scoring, @previous is the champion before the last promotion, "
    "@challenger is the latest version that did not pass the promotion gate."
)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def _check_metrics(named: Mapping[str, Mapping[str, float]]) -> None:
    for label, metrics in named.items():
        missing = [m for m in GATE_METRICS if m not in metrics]
        if missing:
            raise ValueError(f"{label} metrics lack {missing}; got {sorted(metrics)}")
        if not all(math.isfinite(metrics[m]) for m in GATE_METRICS):
            raise ValueError(f"{label} metrics are not finite: {[metrics[m] for m in GATE_METRICS]}")


def best_baselines(baselines: Mapping[str, Mapping[str, float]], family: str | None = None) -> dict[str, str]:
    """For each gate metric, the baseline best on it (ties: the other gate metric, then the name), leaving
    out ``family`` (a model is not compared with itself)."""
    others = sorted(name for name in baselines if name != family)
    if not others:
        raise ValueError(f"no baseline other than {family!r} to compare with; got {sorted(baselines)}")
    return {metric: max(others, key=lambda name: (baselines[name][metric],
                                                  *(baselines[name][m] for m in GATE_METRICS)))
            for metric in GATE_METRICS}


def best_baseline_label(best: Mapping[str, str]) -> str:
    """``sr``, or ``sr (Recall@20), vsknn (MRR@20)`` when the best differs by metric."""
    names = set(best.values())
    return names.pop() if len(names) == 1 else ", ".join(f"{name} ({_label(m)})" for m, name in best.items())


def decide_promotion(candidate: Mapping[str, float], champion: Mapping[str, float] | None,
                     baselines: Mapping[str, Mapping[str, float]], tolerance: float,
                     baseline_margin: float, family: str | None = None) -> GateDecision:
    """The promotion rule, on metrics keyed like evaluate()'s output (``recall@20``, ``mrr@20``).

    ``baselines`` maps baseline names to their metrics. On each gate metric the candidate must reach the
    best baseline other than ``family`` (its own) plus ``baseline_margin``, and trail the champion by at
    most ``tolerance``. The reason names both comparisons, passed or not.
    """
    named = {"candidate": candidate, **{f"baseline {name}": m for name, m in baselines.items()}}
    if champion is not None:
        named["champion"] = champion
    _check_metrics(named)
    best = best_baselines(baselines, family)
    margin = f" + margin {baseline_margin:.4f}" if baseline_margin else ""
    beaten = [m for m in GATE_METRICS if candidate[m] < baselines[best[m]][m] + baseline_margin]
    against = ", ".join(f"{_label(m)} {best[m]} {baselines[best[m]][m]:.4f} against the candidate's "
                        f"{candidate[m]:.4f}{margin}" for m in GATE_METRICS)
    baseline_part = (f"the best baseline beats it on {' and '.join(_label(m) for m in beaten)} ({against})"
                     if beaten else f"not beaten by the best baseline ({against})")
    if champion is None:
        champion_part, trails = "no champion yet", []
    else:
        trails = [m for m in GATE_METRICS if candidate[m] < champion[m] - tolerance]
        compared = ", ".join(f"{_label(m)} {candidate[m]:.4f} against {champion[m]:.4f}" for m in GATE_METRICS)
        champion_part = (f"trails the champion by more than {tolerance:.4f} on "
                         f"{' and '.join(_label(m) for m in trails)} ({compared})" if trails else
                         f"within {tolerance:.4f} of the champion ({compared})")
    promote = not beaten and not trails
    return GateDecision(promote, f"{'promoted' if promote else 'refused'}: {champion_part}; {baseline_part}")


def _label(metric: str) -> str:
    name, k = metric.split("@")
    return f"{'MRR' if name == 'mrr' else 'Recall'}@{k}"


def read_test_events(training_dir: Path | str) -> pa.Table:
    """The test split's events with item ids (not indexes), so any model can map them to its vocabulary."""
    path = Path(training_dir) / "test"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: test split folder not found (is {training_dir} a training set?)")
    table = ds.dataset(path, format="parquet").to_table()
    missing = sorted(set(TEST_EVENT_COLUMNS) - set(table.column_names))
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(TEST_EVENT_COLUMNS)}")
    return table.select(list(TEST_EVENT_COLUMNS))


def count_targets(events: pa.Table) -> int:
    """Next-item targets of the events: every event but each session's first."""
    counts = pc.value_counts(events.column("session_id")).field("counts").to_numpy()
    return int(np.maximum(counts - 1, 0).sum())


def evaluate_events(scorer: SessionScorer, vocabulary: Vocabulary, events: pa.Table,
                    ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@K and MRR@K of ``scorer`` over every target of ``events``, unknown items counting as misses.

    Events whose item is not in ``vocabulary`` are dropped before evaluation (the model never sees them
    as input, as in scoring); evaluate() then averages over the targets it could rank, and the averages
    are rescaled to all targets of ``events``, so each target the model could not rank is a miss
    (including the known targets of sessions left with fewer than two known events). ``coverage`` is the
    share of the events whose item the vocabulary holds.
    """
    total = count_targets(events)
    if not total:
        raise ValueError("the test events hold no session with two or more events")
    data, unknown = dataset_from_table(events, vocabulary, source="test split")
    metrics = {f"{name}@{k}": 0.0 for name in ("recall", "mrr") for k in ks}
    ranked = 0
    if (data.lengths() >= 2).any():
        found = evaluate(scorer, data, ks)
        ranked = int(found["n_events"])
        metrics = {key: found[key] * ranked / total for key in metrics}
    logger.info("%s: ranked %d of %d targets (%d test events with unknown items)", type(scorer).__name__,
                ranked, total, unknown)
    return {**metrics, "n_events": total, "ranked_events": ranked, "unknown_events": unknown,
            "coverage": 1.0 - unknown / events.num_rows}


def evaluate_version(client: MlflowClient, model_name: str, version: str, events: pa.Table,
                     device: torch.device) -> tuple[str, dict[str, float]]:
    """Download a registered version's model folder and evaluate it on ``events`` (see evaluate_events):
    (its family, its metrics)."""
    with tempfile.TemporaryDirectory(prefix="session-model-gate-") as scratch:
        source = client.get_model_version_download_uri(model_name, version)
        model_dir = download_model_dir(source, scratch)
        model, vocabulary, _ = load_model(model_dir, device=device)
    logger.info("evaluating %s version %s (%s) on %d test events", model_name, version, model.family,
                events.num_rows)
    return model.family, evaluate_events(trainer_for(model.family).scorer(model), vocabulary, events)


def evaluate_baselines_on(training_dir: Path | str, events: pa.Table,
                          names: Sequence[str] = tuple(BASELINES)) -> dict[str, dict[str, float]]:
    """The baselines fitted on the training set's train split, each evaluated on ``events``."""
    training_dir = Path(training_dir)
    vocabulary = read_vocabulary(training_dir / VOCABULARY_FILE)
    fitted = fit_baselines(load_split(training_dir, "train", vocabulary), list(names))
    return {name: evaluate_events(scorer, vocabulary, events) for name, scorer in fitted.items()}


def ensure_registered_model(client: MlflowClient, model_name: str) -> None:
    if registered_model(client, model_name) is None:
        client.create_registered_model(model_name, description=MODEL_DESCRIPTION)
        logger.info("created registered model %s", model_name)


def version_description(logical_date: date, run: Run, family: str) -> str:
    """What the registry UI shows for a version: date, run, test results, training set, device, commit."""
    metrics, tags = run.data.metrics, run.data.tags
    lines = [f"{family} trained for {logical_date.isoformat()} (run {run.info.run_name}, {run.info.run_id})."]
    if "test_recall_20" in metrics and "test_mrr_20" in metrics:
        results = f"Test Recall@20 {metrics['test_recall_20']:.4f}, MRR@20 {metrics['test_mrr_20']:.4f}"
        if "baseline_pop_recall_20" in metrics:
            results += f"; most popular Recall@20 {metrics['baseline_pop_recall_20']:.4f}"
        lines.append(results + ".")
    if "training_dir" in tags:
        lines.append(f"Training set: {tags['training_dir']}.")
    details = [f"{key} {tags[key]}" for key in ("device", "device_name", "git_commit") if key in tags]
    if details:
        lines.append(f"Trained with {', '.join(details)}.")
    return "\n".join(lines)


def register_version(client: MlflowClient, model_info: ModelInfo, model_name: str,
                     logical_date: date) -> ModelVersion:
    """A new version of ``model_name`` from a logged model, tagged with its run's test metrics and date."""
    ensure_registered_model(client, model_name)
    run = client.get_run(model_info.run_id)
    tags = {key: f"{value:.6g}" for key, value in run.data.metrics.items() if key.startswith("test_")}
    tags["logical_date"] = logical_date.isoformat()
    tags[FAMILY_TAG] = str((model_info.metadata or {}).get(FAMILY_TAG, LEGACY_FAMILY))
    if "training_dir" in run.data.tags:
        tags["training_dir"] = run.data.tags["training_dir"]
    description = version_description(logical_date, run, tags[FAMILY_TAG])
    version = client.create_model_version(model_name, source=model_info.model_uri, run_id=model_info.run_id,
                                          tags=tags, description=description, model_id=model_info.model_id)
    logger.info("registered %s version %s from run %s", model_name, version.version, model_info.run_id)
    return version


def set_champion(client: MlflowClient, model_name: str, version: str) -> None:
    """Point ``champion`` at ``version``; the outgoing champion becomes ``previous``."""
    current = aliased_version(client, model_name, CHAMPION)
    if current is not None and current != version:
        client.set_registered_model_alias(model_name, PREVIOUS, current)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    if aliased_version(client, model_name, CHALLENGER) == version:
        client.delete_registered_model_alias(model_name, CHALLENGER)
    logger.info("%s version %s is the champion (previous: %s)", model_name, version, current or "none")


def record_gate(client: MlflowClient, model_name: str, version: str, decision: str, reason: str,
                evaluated: Mapping[str, Mapping[str, float] | None], extra: Mapping[str, str] | None = None) -> None:
    """The gate's outcome as version tags: gate_decision, gate_reason, gate_at, gate_<who>_<metric>, and
    ``extra`` (gate_test_data, gate_coverage, gate_best_baseline)."""
    tags = {"gate_decision": decision, "gate_reason": reason,
            "gate_at": datetime.now(UTC).isoformat(timespec="seconds"), **(extra or {})}
    for who, metrics in evaluated.items():
        if metrics is not None:
            tags.update({metric_key(m, f"gate_{who}"): f"{metrics[m]:.6g}" for m in GATE_METRICS})
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)


def gate_and_promote(client: MlflowClient, model_name: str, version: str | int, training_dir: Path | str,
                     tolerance: float, baseline_margin: float, min_coverage: float, device: str = "auto",
                     baselines: Sequence[str] = tuple(BASELINES)) -> GateDecision:
    """Evaluate ``version``, the current champion and the baselines on the test split of ``training_dir``
    (the production lake's training set of the day gated), then move aliases.

    Promoted: ``champion`` -> version (old champion -> ``previous``). Not promoted: ``challenger`` ->
    version. A candidate whose vocabulary covers less than ``min_coverage`` of the test events is
    refused before anything else is evaluated.
    """
    version = str(version)
    champion_version = aliased_version(client, model_name, CHAMPION)
    if champion_version == version:
        return GateDecision(True, f"version {version} is already the champion")
    resolved = resolve_device(device)
    events = read_test_events(training_dir)
    family, candidate = evaluate_version(client, model_name, version, events, resolved)
    extra = {"gate_test_data": str(Path(training_dir).resolve()), "gate_coverage": f"{candidate['coverage']:.6g}"}
    if candidate["coverage"] < min_coverage:
        decision = GateDecision(False, f"refused: its vocabulary covers {candidate['coverage']:.1%} of the "
                                       f"{events.num_rows} test events of {Path(training_dir).name} (at least "
                                       f"{min_coverage:.1%} required): a model of other data")
        evaluated: dict[str, Mapping[str, float] | None] = {"candidate": candidate}
    else:
        champion = None
        if champion_version is not None:
            champion = evaluate_version(client, model_name, champion_version, events, resolved)[1]
        baseline_metrics = evaluate_baselines_on(training_dir, events, baselines)
        decision = decide_promotion(candidate, champion, baseline_metrics, tolerance, baseline_margin, family)
        best = best_baselines(baseline_metrics, family)
        extra["gate_best_baseline"] = best_baseline_label(best)
        evaluated = {"candidate": candidate, "champion": champion,
                     "best_baseline": {m: baseline_metrics[name][m] for m, name in best.items()}}
    if champion_version is not None:
        decision = GateDecision(decision.promote, f"{decision.reason} (champion: version {champion_version})")
    record_gate(client, model_name, version, "promoted" if decision.promote else "rejected", decision.reason,
                evaluated, extra)
    if decision.promote:
        set_champion(client, model_name, version)
    else:
        client.set_registered_model_alias(model_name, CHALLENGER, version)
        logger.info("%s version %s not promoted (challenger): %s", model_name, version, decision.reason)
    return decision


def record_not_gated(client: MlflowClient, model_name: str, version: str | int, reason: str) -> None:
    """Record on the version that the gate never ran for it (its aliases are left alone)."""
    record_gate(client, model_name, str(version), "not gated", reason, {})
    logger.info("%s version %s not gated: %s", model_name, version, reason)


def force_promote(client: MlflowClient, model_name: str, version: str | int, reason: str = "") -> GateDecision:
    """Make ``version`` the champion without the gate, recorded as forced by the current user."""
    version = str(version)
    client.get_model_version(model_name, version)  # fails clearly when the version does not exist
    user = getpass.getuser()
    text = f"forced by {user}" + (f": {reason}" if reason else "")
    record_gate(client, model_name, version, "forced", text, {})
    client.set_model_version_tag(model_name, version, "gate_forced_by", user)
    set_champion(client, model_name, version)
    return GateDecision(True, text)


def describe_model(client: MlflowClient, model_name: str) -> str:
    """A readable table of the model's versions: aliases, logical date, test metrics, gate decision."""
    registered = registered_model(client, model_name)
    if registered is None:
        return f"registered model {model_name!r} not found"
    versions = sorted(client.search_model_versions(f"name = '{model_name}'"), key=lambda v: int(v.version),
                      reverse=True)
    # Version search results carry no aliases on every store: take them from the registered model.
    by_version: dict[str, list[str]] = {}
    for alias, number in registered.aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    header = ["version", "aliases", "logical_date", "recall@20", "mrr@20", "gate", "created", "run_id"]
    rows = [[v.version, ",".join(sorted(by_version.get(str(v.version), []))) or "-", v.tags.get("logical_date", "-"),
             v.tags.get("test_recall_20", "-"), v.tags.get("test_mrr_20", "-"), v.tags.get("gate_decision", "-"),
             datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M"),
             v.run_id or "-"] for v in versions]
    aliases = ", ".join(f"@{alias} -> {version}" for alias, version in sorted(registered.aliases.items()))
    return "\n".join([f"{model_name}: {len(versions)} version(s); {aliases or 'no aliases'}",
                      format_table(header, rows)])


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in [header, *rows])


def gated_day(client: MlflowClient, model_name: str, version: str) -> date:
    """The day a version is gated for: its ``logical_date`` tag."""
    found = client.get_model_version(model_name, version).tags.get("logical_date")
    if not found:
        raise ValueError(f"{model_name} version {version} has no logical_date tag; pass --ds")
    return date.fromisoformat(found)


def production_test_data(settings: Settings, day: date) -> Path:
    """The production lake's training set of ``day``: the only data the gate evaluates on."""
    return local_path(settings.layout.training_set(day))


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.registry", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="aliases and versions with their metrics")
    show.add_argument("--model", default=None, help="registered model name (default: Settings.model_name)")
    promote = commands.add_parser("promote", help="run the promotion gate on a version (or --force it)")
    promote.add_argument("--model", default=None, help="registered model name (default: Settings.model_name)")
    promote.add_argument("--version", required=True, help="the version to promote")
    promote.add_argument("--ds", type=date.fromisoformat, default=None,
                         help="the day whose test split (of the production lake's training set, Settings.lake) "
                              "the gate uses (default: the version's logical_date)")
    promote.add_argument("--force", action="store_true", help="skip the gate; recorded as forced")
    promote.add_argument("--reason", default="", help="why a promotion is forced (recorded)")
    args = parser.parse_args(argv)
    settings = settings or load_settings()
    model_name = args.model or settings.model_name
    client = connect(settings)
    if args.command == "show":
        print(describe_model(client, model_name))
        return 0
    if args.force:
        decision = force_promote(client, model_name, args.version, args.reason)
    else:
        day = args.ds or gated_day(client, model_name, args.version)
        decision = gate_and_promote(client, model_name, args.version, production_test_data(settings, day),
                                    settings.gate_tolerance, settings.gate_baseline_margin,
                                    settings.gate_min_coverage, settings.device)
    print(f"{model_name} version {args.version}: {'promoted' if decision.promote else 'not promoted'}: "
          f"{decision.reason}")
    return 0 if decision.promote else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
