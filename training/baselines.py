"""Classic next-item baselines a session model has to beat, each a ``SessionScorer`` (training/evaluate.py).

``pop``, ``spop``, ``iknn`` and ``bprmf`` are the baselines of Hidasi et al., ICLR 2016; ``sr`` and
``vsknn`` those of Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", 2018.
Every baseline keeps each slot's session prefix and scores all items for the active slots with batched
array operations. Item-to-item structures keep only the top-N entries per item, so memory grows with
n_items * N, never n_items ** 2.

``sr`` and ``vsknn`` are also servable families: fitting them builds the model/neighbours.py model that
is saved and served, and they score through it (:class:`ModelBackedScorer`); the others are
evaluation-only. :class:`SessionModelScorer` evaluates any fitted or loaded SessionModel the same way.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from model.data import SessionDataset
from model.families import SessionModel
from model.neighbours import ItemNeighbours, VSKNNModel, session_matrix

logger = logging.getLogger(__name__)


def check_parameters(owner: str, positive_ints: dict[str, object] | None = None,
                     non_negative: dict[str, object] | None = None) -> None:
    """Raise a ValueError naming the first parameter that is not a positive int / a number >= 0."""
    for name, value in (positive_ints or {}).items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    for name, value in (non_negative or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValueError(f"{owner}: {name} must be a number >= 0, got {value!r}")


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Run torch on one intra-op thread within the block, then restore the previous setting.

    Many tiny per-batch ops (BPR training) gain nothing from more threads and, on a busy machine, lose up
    to 10x wall time to thread hand-offs (measured on 2 shared cores).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class PrefixScorer(ABC):
    """Base of the baselines: fit on train, keep per-slot session prefixes, score from the prefixes.

    ``_score`` receives the active slots' prefixes as an int64 array [A, L] padded with -1 on the right
    and their lengths [A] (all >= 1), and returns float32 scores [A, n_items].
    """

    randomised: ClassVar[bool] = False

    def __init__(self) -> None:
        self._n_items: int | None = None
        self._prefix = np.zeros((0, 0), np.int64)
        self._lengths = np.zeros(0, np.int64)

    @property
    def n_items(self) -> int:
        if self._n_items is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train) first")
        return self._n_items

    @property
    def fitted(self) -> bool:
        return self._n_items is not None

    def fit(self, train: SessionDataset) -> Self:
        if not isinstance(train, SessionDataset):
            raise TypeError(f"train must be a SessionDataset, got {type(train)}")
        if not train.n_events:
            raise ValueError(f"{type(self).__name__}: the training data has no events")
        self._fit(train)
        self._n_items = train.n_items
        return self

    def begin(self, n_slots: int) -> None:
        if isinstance(n_slots, bool) or not isinstance(n_slots, int) or n_slots < 1:
            raise ValueError(f"n_slots must be a positive integer, got {n_slots!r}")
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(train) first")
        self._prefix = np.full((n_slots, 8), -1, np.int64)
        self._lengths = np.zeros(n_slots, np.int64)

    def reset(self, slots: torch.Tensor) -> None:
        slots = self._slot_array(slots)
        self._prefix[slots] = -1
        self._lengths[slots] = 0

    def step(self, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        slots = self._slot_array(slots)
        items = items.cpu().numpy() if isinstance(items, torch.Tensor) else None
        if items is None or items.shape != slots.shape or items.dtype != np.int64:
            raise ValueError(f"items must be a LongTensor with one item per slot ({len(slots)})")
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"item indexes must lie in [0, {self.n_items})")
        if len(slots) and self._lengths[slots].max() >= self._prefix.shape[1]:
            grown = np.full((len(self._prefix), 2 * self._prefix.shape[1]), -1, np.int64)
            grown[:, :self._prefix.shape[1]] = self._prefix
            self._prefix = grown
        self._prefix[slots, self._lengths[slots]] = items
        self._lengths[slots] += 1
        lengths = self._lengths[slots]
        return self._score(self._prefix[slots, :lengths.max(initial=0)], lengths)

    def _slot_array(self, slots: torch.Tensor) -> np.ndarray:
        if not isinstance(slots, torch.Tensor) or slots.dtype != torch.long or slots.ndim != 1:
            raise ValueError("slots must be a 1-D LongTensor of slot indexes")
        slots = slots.cpu().numpy()
        if len(slots) and (slots.min() < 0 or slots.max() >= len(self._lengths)):
            raise ValueError(f"slot indexes must lie in [0, {len(self._lengths)}); call begin(n_slots) first")
        if len(np.unique(slots)) != len(slots):
            raise ValueError("slot indexes must be distinct")
        return slots

    @abstractmethod
    def _fit(self, train: SessionDataset) -> None:
        """Learn from the training sessions."""

    @abstractmethod
    def _score(self, prefix: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
        """Scores over all items for each slot's session prefix."""


class Pop(PrefixScorer):
    """Most popular: every session gets the items' event counts in train as scores."""

    def _fit(self, train: SessionDataset) -> None:
        self._counts = torch.from_numpy(np.bincount(train.item_idx, minlength=train.n_items).astype(np.float32))

    def _score(self, prefix: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
        return self._counts.repeat(len(lengths), 1)


class SPop(PrefixScorer):
    """Session popularity: an item's count in the session so far, ties broken by train popularity."""

    def _fit(self, train: SessionDataset) -> None:
        counts = np.bincount(train.item_idx, minlength=train.n_items).astype(np.float64)
        self._tiebreak = torch.from_numpy((counts / (counts.max() + 1.0)).astype(np.float32))  # in [0, 1)

    def _score(self, prefix: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
        scores = self._tiebreak.repeat(len(lengths), 1)
        rows, cols = np.nonzero(prefix >= 0)
        index = (torch.from_numpy(rows), torch.from_numpy(prefix[rows, cols]))
        scores.index_put_(index, torch.ones(len(rows)), accumulate=True)
        return scores


class ModelBackedScorer(PrefixScorer):
    """A baseline that scores through a SessionModel (``self.model``, built by ``_fit``)."""

    model: SessionModel

    def _score(self, prefix: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
        return self.model.score_sessions(torch.from_numpy(np.maximum(prefix, 0)), torch.from_numpy(lengths))


class SessionModelScorer(ModelBackedScorer):
    """The evaluator's scorer over an already fitted or loaded SessionModel (any family).

    Each step scores the slots' whole prefixes again: right for models that look at the whole session;
    a recurrent family gives the evaluator a step-wise scorer instead (training/families.py).
    """

    def __init__(self, model: SessionModel) -> None:
        super().__init__()
        self.model = model
        self._n_items = model.n_items

    def _fit(self, train: SessionDataset) -> None:
        raise TypeError(f"{type(self).__name__} wraps a fitted model; it is not fitted itself")


class NeighbourScorer(ModelBackedScorer):
    """Scores a session by its last item's row of a top-N item-to-item table (``_fit`` builds it)."""

    def _set_table(self, matrix: sp.coo_matrix, n: int) -> None:
        self.model = ItemNeighbours.from_matrix(matrix, n)


class ItemKNN(NeighbourScorer):
    """Item-kNN (Hidasi et al. 2016): regularised cosine similarity of items over sessions.

    sim(i, j) = c_ij / sqrt((s_i + lam) * (s_j + lam)), where c_ij counts the train sessions holding both
    items and s_i those holding i; ``lam`` damps coincidental high similarities of rare items. Each item
    keeps its ``n_neighbours`` most similar other items; the rest score 0.
    """

    def __init__(self, lam: float = 20.0, n_neighbours: int = 100) -> None:
        super().__init__()
        check_parameters("ItemKNN", {"n_neighbours": n_neighbours}, {"lam": lam})
        self.lam, self.n_neighbours = lam, n_neighbours

    def _fit(self, train: SessionDataset) -> None:
        sessions = session_matrix(train)
        co = (sessions.T @ sessions).tocoo()
        support = co.diagonal()
        off = co.row != co.col
        rows, cols = co.row[off], co.col[off]
        sims = co.data[off] / np.sqrt((support[rows] + self.lam) * (support[cols] + self.lam))
        self._set_table(sp.coo_matrix((sims, (rows, cols)), shape=co.shape), self.n_neighbours)


class SequentialRules(NeighbourScorer):
    """Sequential rules (Ludewig & Jannach 2018): a -> b when b follows a in a train session.

    A rule's weight sums 1 / distance over its occurrences with distance (steps) <= ``max_distance``
    (a -> a included: repeated clicks are a real pattern). Each item's rules are normalised to sum to 1
    and its ``n_rules`` strongest are kept.
    """

    def __init__(self, max_distance: int = 10, n_rules: int = 100) -> None:
        super().__init__()
        check_parameters("SequentialRules", {"max_distance": max_distance, "n_rules": n_rules})
        self.max_distance, self.n_rules = max_distance, n_rules

    def _fit(self, train: SessionDataset) -> None:
        session_of = np.repeat(np.arange(train.n_sessions), train.lengths())
        rows, cols, weights = [], [], []
        for distance in range(1, self.max_distance + 1):
            first = np.flatnonzero(session_of[:-distance] == session_of[distance:])
            rows.append(train.item_idx[first])
            cols.append(train.item_idx[first + distance])
            weights.append(np.full(len(first), 1.0 / distance))
        shape = (train.n_items, train.n_items)
        rules = sp.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
        totals = np.asarray(rules.sum(axis=1)).ravel()
        rules = sp.diags(1.0 / np.maximum(totals, 1e-12)) @ rules
        self._set_table(rules.tocoo(), self.n_rules)


class BPRMF(PrefixScorer):
    """BPR matrix factorisation over (session, item) pairs, sessions as users (Rendle et al. 2009).

    Trained with Adagrad on mini-batches of (session, positive item, uniform negative item) triples.
    As in Hidasi et al. 2016, a test session is represented by the mean latent vector of its items so far:
    scores = mean(item factors of the prefix) @ item factors.T + item bias. Deterministic given ``seed``.
    After ``fit``, ``item_factors`` [n_items, n_factors] and ``item_bias`` [n_items] hold the model.
    """

    randomised = True

    def __init__(self, n_factors: int = 64, epochs: int = 10, lr: float = 0.1, reg: float = 1e-4,
                 batch_size: int = 4096, seed: int = 1) -> None:
        super().__init__()
        check_parameters("BPRMF", {"n_factors": n_factors, "epochs": epochs, "batch_size": batch_size},
                         {"lr": lr, "reg": reg})
        if not lr > 0 or isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"BPRMF: lr must be > 0 and seed an integer, got lr={lr!r}, seed={seed!r}")
        self.n_factors, self.epochs, self.lr, self.reg = n_factors, epochs, lr, reg
        self.batch_size, self.seed = batch_size, seed

    def _fit(self, train: SessionDataset) -> None:
        with single_threaded_torch():
            self._train(train)

    def _train(self, train: SessionDataset) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        pairs = session_matrix(train).tocoo()
        users = torch.from_numpy(pairs.row.astype(np.int64))
        positives = torch.from_numpy(pairs.col.astype(np.int64))
        user_factors = nn.Parameter(0.1 * torch.randn(train.n_sessions, self.n_factors, generator=generator))
        item_factors = nn.Parameter(0.1 * torch.randn(train.n_items, self.n_factors, generator=generator))
        item_bias = nn.Parameter(torch.zeros(train.n_items, 1))
        optimizer = torch.optim.Adagrad([user_factors, item_factors, item_bias], lr=self.lr)
        for epoch in range(self.epochs):
            order = torch.randperm(len(users), generator=generator)
            negatives = torch.randint(train.n_items, (len(users),), generator=generator)
            total = 0.0
            for batch in order.split(self.batch_size):
                loss = self._loss(user_factors, item_factors, item_bias,
                                  users[batch], positives[batch], negatives[batch])
                optimizer.zero_grad()
                loss.backward()
                with torch.sparse.check_sparse_tensor_invariants(enable=False):
                    optimizer.step()
                total += loss.item() * len(batch)
            logger.debug("bprmf epoch %d: loss %.4f", epoch + 1, total / len(users))
        self.item_factors = item_factors.detach().clone()
        self.item_bias = item_bias.detach().squeeze(1).clone()

    def _loss(self, user_factors: torch.Tensor, item_factors: torch.Tensor, item_bias: torch.Tensor,
              users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """BPR loss of a batch of triples with L2 on the factors involved (sparse gradients)."""
        u = nn.functional.embedding(users, user_factors, sparse=True)
        i = nn.functional.embedding(positives, item_factors, sparse=True)
        j = nn.functional.embedding(negatives, item_factors, sparse=True)
        bias = nn.functional.embedding(torch.stack([positives, negatives], 1), item_bias, sparse=True)
        margin = (u * (i - j)).sum(1) + bias[:, 0, 0] - bias[:, 1, 0]
        penalty = (u.square() + i.square() + j.square()).sum(1)
        return (self.reg * penalty - nn.functional.logsigmoid(margin)).mean()

    def _score(self, prefix: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
        mask = torch.from_numpy(prefix >= 0).unsqueeze(2)
        vectors = self.item_factors[torch.from_numpy(np.maximum(prefix, 0))] * mask
        session = vectors.sum(1) / torch.from_numpy(lengths).unsqueeze(1)
        return session @ self.item_factors.T + self.item_bias


class VSKNN(ModelBackedScorer):
    """V-SKNN (Ludewig & Jannach 2018): session kNN with a position-weighted session vector; the scoring
    is :class:`model.neighbours.VSKNNModel`'s, fitted on the train sessions."""

    def __init__(self, k: int = 100, sample_size: int = 1000, idf: bool = False) -> None:
        super().__init__()
        check_parameters("VSKNN", {"k": k, "sample_size": sample_size})
        self.k, self.sample_size, self.idf = k, sample_size, idf

    def _fit(self, train: SessionDataset) -> None:
        self.model = VSKNNModel.from_dataset(train, k=self.k, sample_size=self.sample_size, idf=self.idf)


BASELINES: dict[str, type[PrefixScorer]] = {
    "pop": Pop, "spop": SPop, "iknn": ItemKNN, "bprmf": BPRMF, "sr": SequentialRules, "vsknn": VSKNN,
}


def fit_baselines(train: SessionDataset, names: Sequence[str] | None = None,
                  seed: int = 1) -> dict[str, PrefixScorer]:
    """Fit the named baselines (all of ``BASELINES`` by default) with default parameters on ``train``."""
    if isinstance(names, str):
        raise TypeError(f"names must be a sequence of baseline names, not the string {names!r}")
    names = list(BASELINES) if names is None else list(names)
    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; expected some of {sorted(BASELINES)}")
    fitted: dict[str, PrefixScorer] = {}
    for name in names:
        start = time.perf_counter()
        cls = BASELINES[name]
        fitted[name] = (cls(seed=seed) if cls.randomised else cls()).fit(train)
        logger.info("fitted %s in %.2f s", name, time.perf_counter() - start)
    return fitted
