"""The project's one configuration object.

Every default lives in this file. Each field can be overridden by an environment variable named
``SESSIONREC_<FIELD>`` (upper case), and per run by Airflow Params or CLI flags. The MLflow stores also
honour MLflow's own ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` (:data:`STANDARD_ENV`; a
``SESSIONREC_`` variable wins over them). No other module reads the environment for project settings:
they call :func:`load_settings` and pass values on.

The embedded defaults keep all local state under ``var/`` in the repository, so ``make run`` needs no
servers; production is only configuration (see README, "Configuration").
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sessionrec.layout import Lake, WorkArea

ENV_PREFIX = "SESSIONREC_"
# Fields that fall back to a tool's own standard variable. Order, first set wins:
# SESSIONREC_<FIELD>, then the standard variable, then the default in Settings.
STANDARD_ENV = {"mlflow_tracking_uri": "MLFLOW_TRACKING_URI", "mlflow_registry_uri": "MLFLOW_REGISTRY_URI"}
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _default_home() -> Path:
    return PROJECT_ROOT / "var"


@dataclass(frozen=True)
class Settings:
    """Where things live and the knobs operators turn. Paths under ``home`` unless overridden."""

    home: Path = field(default_factory=_default_home)
    # Lake root: a local folder or an s3a://, gs://, hdfs:// URI. Empty means <home>/lake.
    lake: str = ""
    # Landing zone root holding clicks/ds=YYYY-MM-DD/. Empty means <lake>/raw.
    raw: str = ""
    spark_master: str = "local[*]"
    spark_driver_memory: str = "2g"
    # Folder of the driver JVM's class-data-sharing archives (one per job) for jobs that start a local
    # Spark themselves; empty: none (jobs/spark.py).
    spark_class_archive: str = ""
    # MLflow stores. Empty: the standard MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI when set (see
    # STANDARD_ENV), else the embedded SQLite file; the registry defaults to the tracking store.
    mlflow_tracking_uri: str = ""
    mlflow_registry_uri: str = ""
    mlflow_artifact_root: str = ""
    model_name: str = "gru4rec"
    warehouse_url: str = ""
    # Sessionization.
    gap_minutes: int = 30
    max_quarantine_share: float = 0.05
    # Training set and training.
    training_days: int = 7
    min_item_support: int = 5
    min_session_length: int = 2
    device: str = "auto"
    # Hyperparameter search (training/tune.py). The study database: empty means SQLite under
    # <home>/optuna; production: the stack's PostgreSQL (postgresql+psycopg://user:password@host/db).
    tune_storage: str = ""
    # Trials one search runs at once on one machine (processes sharing the study); 0: one per CPU core.
    tune_workers: int = 1
    tune_trials: int = 30
    tune_metric: str = "mrr@20"
    # A trial whose worker has not beaten its heartbeat for twice this long is failed and run again.
    tune_heartbeat_s: int = 30
    # The gru4rec_tune DAG's schedule (cron, UTC; for example weekly "0 3 * * 0"); empty: manual runs only.
    tune_cron: str = ""
    # Promotion gate: candidate may trail the champion by at most this much (absolute) on Recall@20 and
    # MRR@20, and reach on both the best baseline's (other than its own family) plus this margin.
    gate_tolerance: float = 0.01
    gate_baseline_margin: float = 0.0
    # The gate refuses a candidate whose vocabulary holds the items of less than this share of the day's
    # test events (a model trained on another clickstream).
    gate_min_coverage: float = 0.5
    # Model families nightly training fits (comma-separated, training/families.py); the one best on the
    # validation split by selection_metric is the candidate. Families within selection_tolerance (absolute)
    # of the best count as tied, and the tie goes to MRR@20: a sliver of recall does not outweigh a ranking
    # far worse, on which the gate would then refuse the candidate.
    families: str = "gru4rec,sr,vsknn"
    selection_metric: str = "recall@20"
    selection_tolerance: float = 0.01
    # Scoring.
    top_k: int = 20
    exclude_last_item: bool = True
    # Airflow placement of the GPU task and the nightly schedule (UTC).
    gpu_queue: str = "gpu"
    gpu_pool: str = "gpu"
    nightly_cron: str = "30 2 * * *"
    # Failure notifications (dags/dag_support/notify.py): "log", "smtp" or "webhook"; the Airflow
    # connection they use (smtp: an SMTP connection, empty means smtp_default; webhook: an HTTP
    # connection holding the chat's incoming-webhook URL) and, for smtp, the comma-separated recipients.
    notifier: str = "log"
    notify_conn_id: str = ""
    notify_to: str = ""
    # Crawler sessions (jobs/sessionize.py): more than crawler_max_events events, or at least
    # crawler_rate_min_events events at more than crawler_max_events_per_minute on average over the
    # session. Flagged, left out of training sets; scoring reads every session's last crawler_max_events.
    crawler_max_events: int = 200
    crawler_max_events_per_minute: float = 30.0
    crawler_rate_min_events: int = 20
    # Health of a night's scoring (gru4rec_score's check): the largest share of sessions that may be served
    # the most-popular fallback, and the largest drop of the day's sessions against the previous days' mean.
    max_fallback_share: float = 0.2
    max_session_drop: float = 0.5

    def __post_init__(self) -> None:
        home = Path(self.home)
        object.__setattr__(self, "home", home)
        object.__setattr__(self, "lake", (self.lake or str(home / "lake")).rstrip("/"))
        object.__setattr__(self, "raw", Lake(self.lake, self.raw).raw)
        if not self.mlflow_tracking_uri:
            object.__setattr__(self, "mlflow_tracking_uri", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
        if not self.mlflow_registry_uri:
            object.__setattr__(self, "mlflow_registry_uri", self.mlflow_tracking_uri)
        if not self.mlflow_artifact_root:
            object.__setattr__(self, "mlflow_artifact_root", str(home / "mlflow" / "artifacts"))
        if not self.warehouse_url:
            object.__setattr__(self, "warehouse_url", f"duckdb:///{home / 'warehouse.duckdb'}")
        if self.gap_minutes <= 0:
            raise ValueError(f"gap_minutes must be positive, got {self.gap_minutes}")
        if not 0.0 <= self.max_quarantine_share <= 1.0:
            raise ValueError(f"max_quarantine_share must be in [0, 1], got {self.max_quarantine_share}")
        if not 0.0 <= self.gate_min_coverage <= 1.0:
            raise ValueError(f"gate_min_coverage must be in [0, 1], got {self.gate_min_coverage}")
        if self.selection_tolerance < 0.0:
            raise ValueError(f"selection_tolerance must not be negative, got {self.selection_tolerance}")
        if not self.family_names:
            raise ValueError(f"families must name at least one model family, got {self.families!r}")

    @property
    def family_names(self) -> tuple[str, ...]:
        """``families`` as a tuple of names (checked against training/families.py where models are fitted)."""
        return tuple(name.strip() for name in self.families.split(",") if name.strip())

    @property
    def layout(self) -> Lake:
        """Every location in the lake and the landing zone (sessionrec/layout.py)."""
        return Lake(self.lake, self.raw)

    @property
    def work_area(self) -> WorkArea:
        """Local working folders under ``home``: training checkpoints and models, Spark scratch."""
        return WorkArea(self.home)

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (derived paths are recomputed only if left empty)."""
        return dataclasses.replace(self, **changes)


def _parse(raw: str, target: type, name: str) -> object:
    if target is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: expected true/false")
    try:
        return target(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: expected {target.__name__}") from exc


def env_names() -> list[str]:
    """Every environment variable the settings read (used by the deployment checks)."""
    return [f"{ENV_PREFIX}{f.name.upper()}" for f in fields(Settings)]


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Defaults, then the standard variables of :data:`STANDARD_ENV` (``MLFLOW_TRACKING_URI``, ...), then
    ``SESSIONREC_*`` environment variables, then explicit keyword overrides."""
    env = os.environ if env is None else env
    types = typing.get_type_hints(Settings)
    values: dict[str, object] = {}
    for f in fields(Settings):
        key = f"{ENV_PREFIX}{f.name.upper()}"
        if env.get(key, "") != "":
            values[f.name] = _parse(env[key], types[f.name], f.name)
        elif env.get(STANDARD_ENV.get(f.name, ""), "") != "":
            values[f.name] = env[STANDARD_ENV[f.name]]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``: how a configured URL may appear in logs and records."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
