"""``make run``: the nightly pipeline on the embedded defaults, through Airflow, in a few minutes.

    python -m sessionrec.run [--days 4] [--events 40000]

1. When the landing zone is empty, a synthetic clickstream of ``--days`` days ending yesterday (UTC) is
   generated into it; later runs reuse what is there and work on its latest day.
2. Airflow gets its own home under ``<Settings.home>/airflow`` (SQLite; created on the first run).
3. The earlier days of the training window that have no sessions yet are sessionized in one local
   Spark session (the job's own function; one JVM instead of one per day).
4. ``clickstream_sessionize``, ``gru4rec_train`` and ``gru4rec_score`` run for the latest day with
   ``airflow dags test``: real DAG runs, recorded in Airflow's database and visible in ``make ui``,
   without a scheduler. Every task is idempotent, so a rerun replaces the latest day's outputs and
   registers one more model version.
5. A summary: sessions, the model against its baselines, the champion, the warehouse rows, the UIs.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sessionrec import airflow_env
from sessionrec.config import Settings, load_settings, redact
from sessionrec.layout import PARTITION_PREFIX, local_path, partition_day

log = logging.getLogger(__name__)

# The demo clickstream: small enough for a few minutes on 2 cores, large enough for GRU4Rec to beat
# most-popular clearly on it.
DEMO_DAYS = 4
DEMO_EVENTS = 40_000
DEMO_ITEMS = 1000
# Hyperparameters of the demo training run (Params of gru4rec_train); the rest is the default preset.
DEMO_TRAINING = {"epochs": 5, "n_sample": 512}
# `make run` retries a failed task after 10 s, not Airflow's default 5 minutes.
RETRY_DELAY_S = 10


@dataclass
class Timings:
    """Wall time per stage, in the order the stages ran."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - started

    def table(self) -> str:
        total = sum(self.stages.values())
        rows = [f"  {name:<50} {seconds:7.1f} s" for name, seconds in self.stages.items()]
        return "\n".join([*rows, f"  {'total':<50} {total:7.1f} s"])


def landing_days(settings: Settings) -> list[date]:
    """The days present in the landing zone (``raw/clicks/ds=D`` folders holding a visible file)."""
    root = local_path(settings.layout.landing.clicks)
    if not root.is_dir():
        return []
    return sorted(partition_day(folder.name) for folder in root.glob(f"{PARTITION_PREFIX}*")
                  if any(not child.name.startswith(".") for child in folder.iterdir()))


def generate_demo_data(settings: Settings, end_day: date, days: int, events: int) -> dict[str, int]:
    """A synthetic clickstream of ``days`` days ending ``end_day``, written to the landing zone."""
    from jobs.generate import generate_clickstream, write_landing_zone

    table = generate_clickstream(end_day, days, events, n_items=DEMO_ITEMS)
    return write_landing_zone(table, settings.raw)


def sessionize_days(settings: Settings, days: Sequence[date]) -> None:
    """Sessionize ``days`` with the job's function in one local Spark session."""
    from jobs.sessionize import CrawlerRules, sessionize
    from jobs.spark import job_session

    with job_session("make-run-sessionize", settings.spark_master, settings) as spark:
        for day in days:
            stats = sessionize(spark, settings.raw, settings.lake, day, gap_minutes=settings.gap_minutes,
                               max_quarantine_share=settings.max_quarantine_share,
                               crawlers=CrawlerRules.from_settings(settings))
            log.info("sessionized %s: %d sessions", day, stats["sessions"])


def is_sessionized(settings: Settings, day: date) -> bool:
    """Whether day D's sessionize stats exist (the sessionize job writes them last)."""
    return local_path(settings.layout.sessionize_stats(day)).is_file()


def run_dag(dag_id: str, conf: Mapping[str, Any], env: Mapping[str, str], log_dir: Path) -> Path:
    """One DAG run with ``airflow dags test``; its full output goes to a log file. Raises on failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    log_file = log_dir / f"{dag_id}-{stamp}.log"
    log.info("airflow dags test %s %s (log: %s)", dag_id, json.dumps(conf), log_file)
    with log_file.open("w") as out:
        result = subprocess.run(airflow_env.airflow_command(["dags", "test", dag_id, "--conf", json.dumps(conf)]),
                                env=dict(env), cwd=env["AIRFLOW_HOME"], stdout=out, stderr=subprocess.STDOUT,
                                check=False)
    if result.returncode != 0:
        raise RuntimeError(f"DAG {dag_id} failed (exit {result.returncode}) for {json.dumps(conf)}; "
                           f"the task logs are in {log_file}")
    return log_file


@dataclass(frozen=True)
class Plan:
    latest: date
    earlier: list[date]


def plan_days(settings: Settings, days: list[date], window: int) -> Plan:
    """The latest landing day, and the earlier days of its training window still to sessionize."""
    latest = days[-1]
    first = latest - timedelta(days=window - 1)
    earlier = [day for day in days[:-1] if day >= first and not is_sessionized(settings, day)]
    return Plan(latest, earlier)


def summary(settings: Settings, day: date) -> str:
    """Sessions, model metrics against baselines, the gate, warehouse rows, how to open the UIs."""
    from jobs.warehouse import connect
    from lifecycle.connection import connect as connect_mlflow
    from lifecycle.registry import FAMILY_TAG
    from lifecycle.resolver import CHAMPION, resolve_version

    stats = json.loads(local_path(settings.layout.sessionize_stats(day)).read_text())
    lines = [f"Day {day.isoformat()}: {stats['sessions']} sessions, {stats['events']} events "
             f"({stats['rows_quarantined']} of {stats['rows_read']} raw rows quarantined)"]
    client = connect_mlflow(settings)
    experiments = client.search_experiments(filter_string=f"name = '{settings.model_name}'")
    runs = client.search_runs([e.experiment_id for e in experiments],
                              filter_string=f"tags.logical_date = '{day.isoformat()}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if runs:
        metrics, family = runs[0].data.metrics, runs[0].data.tags.get(FAMILY_TAG, "gru4rec")
        lines.append(f"Candidate {family} (best on validation), MLflow run {runs[0].info.run_id}: "
                     f"Recall@20 {metrics['test_recall_20']:.4f}, MRR@20 {metrics['test_mrr_20']:.4f} on the test day")
        for kind, prefix, suffix in (("family", "family_", "_test_recall_20"), ("baseline", "baseline_", "_recall_20")):
            for key in sorted(k for k in metrics if k.startswith(prefix) and k.endswith(suffix)):
                name = key.removeprefix(prefix).removesuffix(suffix)
                mrr = metrics.get(key.removesuffix("recall_20") + "mrr_20", float("nan"))
                lines.append(f"  {kind:<8} {name:<10} Recall@20 {metrics[key]:.4f}, MRR@20 {mrr:.4f}")
    versions = client.search_model_versions(f"name = '{settings.model_name}'", order_by=["version_number DESC"],
                                            max_results=1)
    if versions:
        tags = versions[0].tags
        lines.append(f"Gate on version {versions[0].version}: {tags.get('gate_decision', '?')} "
                     f"({tags.get('gate_reason', 'no reason recorded')})")
    champion = resolve_version(client, CHAMPION, settings.model_name)
    with connect(settings.warehouse_url) as warehouse:
        rows = warehouse.count(day)
    lines += [
        f"Champion: {settings.model_name} version {champion}",
        f"Warehouse {redact(settings.warehouse_url)}: {rows} rows in session_recommendations for ds={day}",
        "UIs: `make ui`, then Airflow at http://localhost:8080 (DAG runs, logs, the trigger form) and "
        "MLflow at http://localhost:5000 (runs, metrics, registry)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessionrec.run", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--days", type=int, default=DEMO_DAYS, help="days to generate into an empty landing zone")
    parser.add_argument("--events", type=int, default=DEMO_EVENTS, help="events to generate over those days")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if (pid := airflow_env.services_running(settings)) is not None:
        print(f"`make ui` is running (pid {pid}) on {airflow_env.airflow_home(settings)}: its scheduler would "
              "also pick up these runs. Stop it (Ctrl-C) and run again.", file=sys.stderr)
        return 1
    timings = Timings()
    days = landing_days(settings)
    if not days:
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        with timings.stage("generate clickstream"):
            written = generate_demo_data(settings, yesterday, args.days, args.events)
        log.info("generated %d events over %d days into %s", sum(written.values()), len(written), settings.raw)
        days = landing_days(settings)
    window = min(len(days), settings.training_days)
    plan = plan_days(settings, days, window)
    env = airflow_env.airflow_env(settings, retry_delay_s=RETRY_DELAY_S)
    with timings.stage("prepare Airflow"):
        airflow_env.prepare(settings, env)
    log_dir = airflow_env.airflow_home(settings) / "dag-test-logs"
    if plan.earlier:
        with timings.stage(f"sessionize {len(plan.earlier)} earlier day(s) (one Spark session)"):
            sessionize_days(settings, plan.earlier)
    ds = plan.latest.isoformat()
    with timings.stage(f"clickstream_sessionize {ds}"):
        run_dag("clickstream_sessionize", {"ds": ds}, env, log_dir)
    with timings.stage(f"gru4rec_train {ds}"):
        run_dag("gru4rec_train", {"ds": ds, "training_days": window, **DEMO_TRAINING}, env, log_dir)
    with timings.stage(f"gru4rec_score {ds}"):
        run_dag("gru4rec_score", {"ds": ds}, env, log_dir)
    print()
    print(summary(settings, plan.latest))
    print("Wall time by stage:")
    print(timings.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
