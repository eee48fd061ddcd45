"""Servable neighbourhood models: sequential rules (SR) and V-SKNN, kept as plain tables.

Both are ``SessionModel`` families (model/families.py) whose fitted statistics are all they need:

- :class:`ItemNeighbours` (family ``sr``): a top-N item-to-item table; a session scores the row of its
  last item. Stored as ``rules.parquet`` (item_idx, rank, next_idx, weight).
- :class:`VSKNNModel` (family ``vsknn``): the training sessions as binary item sets (Ludewig & Jannach
  2018); a session is a position-weighted item vector compared with the most recent training sessions
  sharing an item. Stored as ``sessions.parquet`` (session, item_idx), sessions numbered oldest first.

The training baselines of the same names (training/baselines.py) fit these tables and score through
these classes, so the evaluated baseline and the served model are one piece of code. Everything here
runs on the CPU with numpy/scipy; loading reads Parquet only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch

from model.data import SessionDataset
from model.storage import check_indexes, read_table, write_table

RULES_FILE = "rules.parquet"
RULES_SCHEMA = pa.schema([("item_idx", pa.int32()), ("rank", pa.int32()), ("next_idx", pa.int32()),
                          ("weight", pa.float32())])
SESSIONS_FILE = "sessions.parquet"
SESSIONS_SCHEMA = pa.schema([("session", pa.int64()), ("item_idx", pa.int32())])
CPU = torch.device("cpu")


def session_matrix(data: SessionDataset) -> sp.csr_matrix:
    """Sessions as binary item vectors: float32 CSR of shape [n_sessions, n_items]."""
    rows = np.repeat(np.arange(data.n_sessions), data.lengths())
    matrix = sp.csr_matrix((np.ones(data.n_events, np.float32), (rows, data.item_idx)),
                           shape=(data.n_sessions, data.n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def first_per_row(rows: np.ndarray, n_rows: int, n: int, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` entries of each row, each row ordered by ``keys`` (``np.lexsort`` order: the last key
    is the most significant). Returns (entry indexes, their 0-based rank within their row)."""
    order = np.lexsort((*keys, rows))
    counts = np.bincount(rows, minlength=n_rows)
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = rank < n
    return order[keep], rank[keep]


def _last_items(items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    items, lengths = items.to(CPU, torch.long), lengths.to(CPU, torch.long)
    return items[torch.arange(len(lengths)), lengths - 1]


def _prefixes(items: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded items as int64 numpy with -1 beyond each length, and the lengths."""
    prefix = items.to(CPU, torch.long).numpy().copy()
    lengths = lengths.to(CPU, torch.long).numpy()
    prefix[np.arange(prefix.shape[1])[None, :] >= lengths[:, None]] = -1
    return prefix, lengths


class CPUModel:
    """What a table model shares: it runs on the CPU and has no training mode."""

    @property
    def device(self) -> torch.device:
        return CPU

    def to(self, device: torch.device | str) -> CPUModel:
        return self

    def eval(self) -> CPUModel:
        return self


class ItemNeighbours(CPUModel):
    """A top-N item-to-item table: a session scores ``weights`` of its last item's ``neighbours``.

    ``neighbours`` and ``weights`` are [n_items, width], each row in rank order; unused slots hold item
    0 with weight 0 (adding nothing).
    """

    family = "sr"

    def __init__(self, neighbours: torch.Tensor, weights: torch.Tensor) -> None:
        if neighbours.shape != weights.shape or neighbours.ndim != 2:
            raise ValueError(f"neighbours {tuple(neighbours.shape)} and weights {tuple(weights.shape)} must be "
                             "matrices of the same shape")
        self.neighbours, self.weights = neighbours.long(), weights.float()

    @property
    def n_items(self) -> int:
        return self.neighbours.shape[0]

    @classmethod
    def from_matrix(cls, matrix: sp.coo_matrix, n: int) -> ItemNeighbours:
        """Each row's ``n`` largest entries of a square item-to-item matrix (ties to the lower item index)."""
        kept, rank = first_per_row(matrix.row, matrix.shape[0], n, matrix.col, -matrix.data)
        return cls._from_entries(matrix.shape[0], matrix.row[kept], rank, matrix.col[kept], matrix.data[kept])

    @classmethod
    def _from_entries(cls, n_items: int, rows: np.ndarray, rank: np.ndarray, cols: np.ndarray,
                      weights: np.ndarray) -> ItemNeighbours:
        width = int(rank.max(initial=-1)) + 1
        neighbours = torch.zeros((n_items, width), dtype=torch.long)
        table = torch.zeros((n_items, width), dtype=torch.float32)
        index = (torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(rank.astype(np.int64)))
        neighbours[index] = torch.from_numpy(cols.astype(np.int64))
        table[index] = torch.from_numpy(weights.astype(np.float32))
        return cls(neighbours, table)

    def to_table(self) -> pa.Table:
        rows, rank = torch.nonzero(self.weights, as_tuple=True)
        return pa.table({"item_idx": rows.numpy().astype(np.int32), "rank": rank.numpy().astype(np.int32),
                         "next_idx": self.neighbours[rows, rank].numpy().astype(np.int32),
                         "weight": self.weights[rows, rank].numpy()}, schema=RULES_SCHEMA)

    @torch.no_grad()
    def score_sessions(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        last = _last_items(items, lengths)
        scores = torch.zeros((len(last), self.n_items))
        return scores.scatter_add_(1, self.neighbours[last], self.weights[last])

    def save(self, directory: Path) -> dict:
        write_table(self.to_table(), directory / RULES_FILE)
        return {"n_items": self.n_items}

    @classmethod
    def load(cls, directory: Path, config: dict, device: torch.device) -> ItemNeighbours:
        path = directory / RULES_FILE
        _check_config(directory, config, {"n_items"})
        table = read_table(path, RULES_SCHEMA)
        columns = {name: table.column(name).to_numpy() for name in RULES_SCHEMA.names}
        n_items = config["n_items"]
        for name, bound in (("item_idx", n_items), ("next_idx", n_items), ("rank", max(len(table), 1))):
            check_indexes(path, name, torch.from_numpy(columns[name].astype(np.int64)), bound)
        keys = columns["item_idx"].astype(np.int64) * (len(table) + 1) + columns["rank"]
        if len(np.unique(keys)) != len(keys):
            raise ValueError(f"{path}: (item_idx, rank) must be unique")
        return cls._from_entries(n_items, columns["item_idx"], columns["rank"], columns["next_idx"],
                                 columns["weight"])


class VSKNNModel(CPUModel):
    """V-SKNN (Ludewig & Jannach 2018): session kNN with a position-weighted session vector.

    The current session is a vector with weight p / L on its item at position p (1-based, L = length so
    far; a repeated item keeps its latest weight), times the item's IDF log(n_sessions / sessions with the
    item) when ``idf``. Its similarity to a train session (a binary vector) is the dot product. Of the train
    sessions sharing an item, the ``sample_size`` most recent (latest first event) are candidates and the
    ``k`` most similar of them the neighbours (ties to the more recent); an item scores the sum of the
    similarities of the neighbours holding it. A step's cost grows with the number of train sessions that
    share an item with the scored sessions (every one is scored before sampling).
    """

    family = "vsknn"

    def __init__(self, sessions: sp.csr_matrix, k: int = 100, sample_size: int = 1000, idf: bool = False) -> None:
        for name, value in (("k", k), ("sample_size", sample_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VSKNN: {name} must be a positive integer, got {value!r}")
        if not isinstance(idf, bool):
            raise ValueError(f"VSKNN: idf must be true or false, got {idf!r}")
        self.k, self.sample_size, self.idf = k, sample_size, idf
        self._sessions = sessions.tocsr()
        self._sessions_t = self._sessions.T.tocsr()
        n_sessions = self._sessions.shape[0]
        holding = np.maximum(np.diff(self._sessions_t.indptr), 1)
        self._idf = np.log(n_sessions / holding) if idf else np.ones(self._sessions.shape[1])

    @property
    def n_items(self) -> int:
        return self._sessions.shape[1]

    @classmethod
    def from_dataset(cls, train: SessionDataset, k: int = 100, sample_size: int = 1000,
                     idf: bool = False) -> VSKNNModel:
        return cls(session_matrix(train), k=k, sample_size=sample_size, idf=idf)

    def _query(self, prefix: np.ndarray, lengths: np.ndarray) -> sp.csr_matrix:
        rows, positions = np.nonzero(prefix >= 0)
        items = prefix[rows, positions]
        weights = (positions + 1) / lengths[rows]
        order = np.lexsort((weights, items, rows))
        latest = order[np.r_[(rows[order][1:] != rows[order][:-1]) | (items[order][1:] != items[order][:-1]), True]]
        values = weights[latest] * self._idf[items[latest]]
        return sp.csr_matrix((values, (rows[latest], items[latest])), shape=(len(lengths), self.n_items))

    @torch.no_grad()
    def score_sessions(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        prefix, lengths = _prefixes(items, lengths)
        n_rows = len(lengths)
        sims = (self._query(prefix, lengths) @ self._sessions_t).tocoo()
        recent, _ = first_per_row(sims.row, n_rows, self.sample_size, -sims.col)
        sims = sp.coo_matrix((sims.data[recent], (sims.row[recent], sims.col[recent])), shape=sims.shape)
        nearest, _ = first_per_row(sims.row, n_rows, self.k, -sims.col, -sims.data)
        neighbours = sp.csr_matrix((sims.data[nearest], (sims.row[nearest], sims.col[nearest])), shape=sims.shape)
        return torch.from_numpy((neighbours @ self._sessions).toarray().astype(np.float32))

    def save(self, directory: Path) -> dict:
        pairs = self._sessions.tocoo()
        order = np.lexsort((pairs.col, pairs.row))
        write_table(pa.table({"session": pairs.row[order].astype(np.int64),
                              "item_idx": pairs.col[order].astype(np.int32)}, schema=SESSIONS_SCHEMA),
                    directory / SESSIONS_FILE)
        return {"n_items": self.n_items, "n_sessions": self._sessions.shape[0], "k": self.k,
                "sample_size": self.sample_size, "idf": self.idf}

    @classmethod
    def load(cls, directory: Path, config: dict, device: torch.device) -> VSKNNModel:
        path = directory / SESSIONS_FILE
        _check_config(directory, config, {"n_items", "n_sessions", "k", "sample_size", "idf"})
        table = read_table(path, SESSIONS_SCHEMA)
        sessions = table.column("session").to_numpy().astype(np.int64)
        items = table.column("item_idx").to_numpy().astype(np.int64)
        n_sessions, n_items = config["n_sessions"], config["n_items"]
        if isinstance(n_sessions, bool) or not isinstance(n_sessions, int) or n_sessions < 1:
            raise ValueError(f"{directory / 'config.json'}: n_sessions must be a positive integer")
        check_indexes(path, "session", torch.from_numpy(sessions), n_sessions)
        check_indexes(path, "item_idx", torch.from_numpy(items), n_items)
        matrix = sp.csr_matrix((np.ones(len(items), np.float32), (sessions, items)), shape=(n_sessions, n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return cls(matrix, k=config["k"], sample_size=config["sample_size"], idf=config["idf"])


def _check_config(directory: Path, config: dict, keys: set[str]) -> None:
    if set(config) != keys:
        raise ValueError(f"{directory / 'config.json'}: network must hold exactly {sorted(keys)}, "
                         f"found {sorted(config)}")
