"""Where everything lives in the lake, the landing zone and the local working folder: the one place for it.

Every job, DAG, lifecycle step and driver asks this module for a path; none builds one itself. Locations
are strings joined with ``/``, so a lake at ``s3a://bucket/lake`` or ``hdfs://nn/lake`` works like a local
folder; :func:`local_path` turns a local location (a path or ``file://`` URI) into a ``Path`` where code
reads files without Spark.

The lake (docs/CONTRACTS.md; days are UTC dates, partitions are named ``ds=YYYY-MM-DD``)::

    raw/clicks/ds=D/                landing zone (its root may live elsewhere: Settings.raw)
    sessions/ds=D/                  sessionized events             jobs/sessionize.py
    quarantine/ds=D/                rejected rows with a reason    jobs/sessionize.py
    stats/ds=D.json                 sessionize counts              jobs/sessionize.py (written last)
    training/ds=D/                  train, test, train_tr, valid + items.parquet + stats.json
    tuned/<family>/params.json      tuned hyperparameters of a model family, beside the training sets
    recommendations/ds=D/           scored rows, bulk-loaded into the warehouse   jobs/score.py
    stats/score/ds=D.json           the score run record           jobs/score.py
    _staging/<job>-D-<unique>/      a job's output before it is swapped in by rename

The local working folder (``Settings.home``) holds what never goes to the lake: training checkpoints
and model folders (``models/ds=D/``) and Spark's scratch space (``spark/``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

CLICKS = "clicks"
PARTITION_PREFIX = "ds="
# The training set's splits and vocabulary file, as model/data.py reads them (model/ ships without this
# package, so it keeps its own names; tests/jobs/test_layout.py keeps the two equal).
SPLITS = ("train", "test", "train_tr", "valid")
ITEMS_FILE = "items.parquet"
STATS_FILE = "stats.json"
TUNED_PARAMS_FILE = "params.json"


Day = date | str


def partition(day: Day) -> str:
    """``ds=YYYY-MM-DD``: the name of a day's folder (or, with ``.json``, file).

    A string is taken as the day already written out, or as a template a DAG renders into one
    (``{{ ti.xcom_pull(...) }}``).
    """
    return f"{PARTITION_PREFIX}{day if isinstance(day, str) else day.isoformat()}"


def partition_day(name: str) -> date:
    """The day of a partition name (``ds=2026-11-21`` or ``ds=2026-11-21.json``)."""
    if not name.startswith(PARTITION_PREFIX):
        raise ValueError(f"{name!r}: expected a partition name ds=YYYY-MM-DD")
    return date.fromisoformat(name.removeprefix(PARTITION_PREFIX).removesuffix(".json"))


def join(root: str | Path, *parts: str) -> str:
    """``root/part/...`` for a local folder or a URI, without a doubled ``/``."""
    return "/".join([str(root).rstrip("/"), *parts])


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` is a URI other than ``file://`` (s3a://, gs://, hdfs://, ...)."""
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and scheme != "file"


def local_path(location: str | Path) -> Path:
    """The local ``Path`` of a folder or ``file://`` URI; other URIs are refused with the location named."""
    location = str(location)
    if is_remote(location):
        raise ValueError(f"{location}: expected a local folder or a file:// URI here, not a remote location")
    if location.startswith("file://"):
        return Path(url2pathname(urlsplit(location).path))
    return Path(location)


def training_split(folder: str | Path, split: str) -> str:
    """A split folder (``train``, ``test``, ``train_tr``, ``valid``) of the training set in ``folder``."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    return join(folder, split)


def training_items(folder: str | Path) -> str:
    """The item vocabulary of the training set in ``folder``."""
    return join(folder, ITEMS_FILE)


def training_stats(folder: str | Path) -> str:
    """The statistics file of the training set in ``folder``."""
    return join(folder, STATS_FILE)


@dataclass(frozen=True)
class LandingZone:
    """The landing zone: ``<root>/clicks/ds=D/`` holds day D's raw files (docs/CONTRACTS.md section 1)."""

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", str(self.root).rstrip("/"))

    @property
    def clicks(self) -> str:
        return join(self.root, CLICKS)

    def day(self, ds: Day) -> str:
        """``<root>/clicks/ds=D``."""
        return join(self.clicks, partition(ds))


@dataclass(frozen=True)
class Lake:
    """Every location of the lake rooted at ``root``; ``raw`` is the landing zone (default ``<root>/raw``)."""

    root: str
    raw: str = ""

    def __post_init__(self) -> None:
        root = str(self.root).rstrip("/")
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "raw", str(self.raw).rstrip("/") or join(root, "raw"))

    @property
    def landing(self) -> LandingZone:
        return LandingZone(self.raw)

    def raw_day(self, ds: Day) -> str:
        """``raw/clicks/ds=D``: day D's landing-zone folder."""
        return self.landing.day(ds)

    # --- sessionize ---

    @property
    def sessions_root(self) -> str:
        """The folder of every sessions partition (the sessions asset's location)."""
        return join(self.root, "sessions")

    def sessions(self, ds: Day) -> str:
        return join(self.sessions_root, partition(ds))

    def quarantine(self, ds: Day) -> str:
        return join(self.root, "quarantine", partition(ds))

    def sessionize_stats(self, ds: Day) -> str:
        """``stats/ds=D.json``: written last by the sessionize job, so its presence means D is complete."""
        return join(self.root, "stats", f"{partition(ds)}.json")

    # --- training sets and tuned settings ---

    def training_set(self, ds: Day) -> str:
        return join(self.root, "training", partition(ds))

    def training_split(self, ds: Day, split: str) -> str:
        return training_split(self.training_set(ds), split)

    def training_items(self, ds: Day) -> str:
        return training_items(self.training_set(ds))

    def training_stats(self, ds: Day) -> str:
        return training_stats(self.training_set(ds))

    def tuned_dir(self, family: str) -> str:
        """``tuned/<family>/``: what a hyperparameter search leaves for a model family."""
        if not family or "/" in family:
            raise ValueError(f"model family {family!r}: expected a plain name")
        return join(self.root, "tuned", family)

    def tuned_params(self, family: str) -> str:
        """``tuned/<family>/params.json``: the tuned preset nightly training starts from."""
        return join(self.tuned_dir(family), TUNED_PARAMS_FILE)

    # --- scoring ---

    def recommendations(self, ds: Day) -> str:
        return join(self.root, "recommendations", partition(ds))

    def score_stats(self, ds: Day) -> str:
        """``stats/score/ds=D.json``: the score run record."""
        return join(self.root, "stats", "score", f"{partition(ds)}.json")

    # --- staging ---

    def staging(self, job: str, ds: date) -> str:
        """A fresh folder under ``_staging/`` for one run of ``job`` for day ``ds`` (outputs are written there
        and swapped in by rename; the lake's own file system, so the rename is cheap)."""
        return join(self.root, "_staging", f"{job}-{ds.isoformat()}-{uuid.uuid4().hex}")


@dataclass(frozen=True)
class WorkArea:
    """The local working folder (``Settings.home``): training work and Spark scratch, never in the lake."""

    home: Path

    @property
    def models(self) -> Path:
        """Local training work of every day (checkpoints, saved model folders); not the registry."""
        return Path(self.home) / "models"

    def training_work(self, ds: Day) -> Path:
        """``models/ds=D/``: one day's checkpoints and saved model folder (a retry resumes from them)."""
        return self.models / partition(ds)

    def checkpoints(self, ds: Day) -> Path:
        return self.training_work(ds) / "checkpoints"

    def saved_model(self, ds: Day) -> Path:
        return self.training_work(ds) / "model"

    @property
    def spark_scratch(self) -> Path:
        """Spark's warehouse, Derby and temporary files of jobs started from this machine."""
        return Path(self.home) / "spark"
