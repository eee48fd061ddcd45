"""Full-ranking, session-parallel evaluation of next-item scorers (see GRU4REC.md, "Evaluation protocol").

Every event of a test session except the last is an input; the session's next item is the target and is
ranked against all items. Ranks are conservative: rank = number of items scoring >= the target, so ties
count against the model (a constant-score model gets Recall@K of about K / n_items). Sessions with a
single event have no target and are skipped.

Beyond accuracy, from the same pass: NDCG@K; Recall@K by session prefix length; catalogue coverage (share
of items in at least one top-K list) and popularity bias (mean training-popularity percentile of the
recommended items). Top-K lists break ties at the K-th score by item index, so they are deterministic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from model.data import SessionDataset

logger = logging.getLogger(__name__)

# Recall by session prefix length (events seen so far, the current one included): (label, low, high).
PREFIX_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("1", 1, 1), ("2", 2, 2), ("3-4", 3, 4), ("5-9", 5, 9), ("10plus", 10, np.inf))
# Length of the recommendation lists that coverage and popularity are measured on, unless told.
LIST_LENGTH = 20


@runtime_checkable
class SessionScorer(Protocol):
    """Scores every item as the next one of up to ``n_slots`` sessions advanced in parallel."""

    n_items: int

    def begin(self, n_slots: int) -> None:
        """Allocate per-slot state; all slots start empty."""

    def reset(self, slots: torch.Tensor) -> None:
        """Clear the state of ``slots`` (LongTensor of slot indexes) that start a new session."""

    def step(self, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Advance ``slots`` by one item each; return FloatTensor[len(slots), n_items] next-item scores."""


def conservative_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each row's target among all columns: items scoring >= the target (ties count)."""
    if scores.ndim != 2 or not scores.is_floating_point():
        raise ValueError(f"scores must be a 2-D floating tensor, got {scores.dtype} of shape {tuple(scores.shape)}")
    if targets.shape != (scores.shape[0],):
        raise ValueError(f"expected {scores.shape[0]} targets, got shape {tuple(targets.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; a scorer must return finite or infinite numbers only")
    targets = targets.to(device=scores.device, dtype=torch.long)
    target_scores = scores.gather(1, targets.unsqueeze(1))
    return (scores >= target_scores).sum(dim=1)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K (share of ranks <= K), MRR@K (mean of 1/rank, 0 beyond K) and NDCG@K (mean of
    1/log2(rank + 1), 0 beyond K: one relevant item per event, so the ideal DCG is 1) for each K.

    Ranks are sorted first, so the sums (and the metrics, to the last bit) do not depend on their order.
    """
    ranks = np.sort(np.asarray(ranks, dtype=np.float64))
    if not len(ranks) or ranks.min() < 1:
        raise ValueError("ranks must be a non-empty array of values >= 1")
    metrics: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        metrics[f"recall@{k}"] = float(hit.mean())
        metrics[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    return metrics


def prefix_bucket_metrics(ranks: np.ndarray, prefix_lengths: np.ndarray, k: int) -> dict[str, float]:
    """Recall@K of the events whose session prefix (events seen so far, the current one included) falls
    in each of ``PREFIX_BUCKETS``, keyed ``recall@K_prefix_<bucket>``; buckets without events are left out."""
    ranks, prefix_lengths = np.asarray(ranks), np.asarray(prefix_lengths)
    if ranks.shape != prefix_lengths.shape:
        raise ValueError(f"{len(ranks)} ranks but {len(prefix_lengths)} prefix lengths")
    metrics = {}
    for label, low, high in PREFIX_BUCKETS:
        inside = (prefix_lengths >= low) & (prefix_lengths <= high)
        if inside.any():
            metrics[f"recall@{k}_prefix_{label}"] = float((ranks[inside] <= k).mean())
    return metrics


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of each row's top ``k`` columns; ties at the k-th score go to the lowest item indexes,
    so the lists (and the coverage counted from them) do not depend on batching."""
    k = min(k, scores.shape[1])
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    room = k - above.sum(dim=1, keepdim=True)
    return above | (tied & (tied.cumsum(dim=1) <= room))


def popularity_percentiles(popularity: np.ndarray) -> np.ndarray:
    """Each item's popularity percentile in (0, 1]: its mean rank among all items by count (ties share
    the average rank) over the number of items; the single most popular item has 1."""
    popularity = np.asarray(popularity)
    if popularity.ndim != 1 or not len(popularity):
        raise ValueError(f"popularity must be a non-empty 1-D array of item counts, got shape {popularity.shape}")
    ordered = np.sort(popularity)
    below = np.searchsorted(ordered, popularity, side="left")
    equal = np.searchsorted(ordered, popularity, side="right") - below
    return (below + (equal + 1) / 2) / len(popularity)


def list_metrics(recommended: np.ndarray, k: int, popularity: np.ndarray | None) -> dict[str, float]:
    """From how often each item was in a top-``k`` list: ``coverage@k`` (share of the catalogue recommended
    at least once) and, with training ``popularity`` counts, ``popularity@k`` (mean popularity percentile
    of the recommended items, over all lists and positions)."""
    metrics = {f"coverage@{k}": float((recommended > 0).mean())}
    if popularity is not None:
        if len(popularity) != len(recommended):
            raise ValueError(f"popularity has {len(popularity)} items but the scorer ranks {len(recommended)}")
        weights = recommended / recommended.sum()
        metrics[f"popularity@{k}"] = float(np.dot(weights, popularity_percentiles(popularity)))
    return metrics


@dataclass
class EventResults:
    """Per target event: its conservative rank and prefix length; per item: times in a top-K list."""

    ranks: np.ndarray
    prefix_lengths: np.ndarray
    recommended: np.ndarray


def _check_arguments(scorer: SessionScorer, data: SessionDataset, ks: Sequence[int], batch_size: int) -> None:
    if not isinstance(scorer, SessionScorer):
        raise TypeError(f"scorer must implement SessionScorer (n_items, begin, reset, step), got {type(scorer)}")
    if not isinstance(data, SessionDataset):
        raise TypeError(f"data must be a SessionDataset, got {type(data)}")
    if scorer.n_items != data.n_items:
        raise ValueError(f"scorer ranks {scorer.n_items} items but the data has {data.n_items}; "
                         "build the test set with the scorer's vocabulary")
    if not len(ks) or any(isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct, got {ks!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _checked_scores(scorer: SessionScorer, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    scores = scorer.step(slots, items)
    expected = (len(slots), scorer.n_items)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != expected:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"{type(scorer).__name__}.step returned {shape}; expected a tensor of shape {expected}")
    return scores


def session_events(scorer: SessionScorer, data: SessionDataset, batch_size: int = 512,
                   list_length: int = LIST_LENGTH) -> EventResults:
    """Rank every target, feeding sessions through ``batch_size`` parallel slots, and count each item's
    appearances in the top-``list_length`` lists."""
    sessions = np.flatnonzero(data.lengths() >= 2)
    n_slots = min(batch_size, len(sessions))
    scorer.begin(n_slots)
    slot_session = sessions[:n_slots].copy()
    position = data.offsets[slot_session].copy()
    active = np.arange(n_slots)
    taken = n_slots
    ranks: list[np.ndarray] = []
    prefix_lengths: list[np.ndarray] = []
    recommended = torch.zeros(data.n_items, dtype=torch.long)
    while len(active):
        events = position[active]
        slots = torch.from_numpy(active)
        scores = _checked_scores(scorer, slots, torch.from_numpy(data.item_idx[events]))
        ranks.append(conservative_ranks(scores, torch.from_numpy(data.item_idx[events + 1])).cpu().numpy())
        prefix_lengths.append(events - data.offsets[slot_session[active]] + 1)
        recommended += top_k_mask(scores, list_length).sum(dim=0).cpu()
        position[active] += 1
        finished = active[position[active] + 1 >= data.offsets[slot_session[active] + 1]]
        refill = finished[:len(sessions) - taken]
        if len(refill):
            slot_session[refill] = sessions[taken:taken + len(refill)]
            position[refill] = data.offsets[slot_session[refill]]
            taken += len(refill)
            scorer.reset(torch.from_numpy(refill))
        active = np.setdiff1d(active, finished[len(refill):], assume_unique=True)
    empty = np.zeros(0, dtype=np.int64)
    return EventResults(np.concatenate(ranks) if ranks else empty,
                        np.concatenate(prefix_lengths) if prefix_lengths else empty, recommended.numpy())


def session_ranks(scorer: SessionScorer, data: SessionDataset, batch_size: int = 512) -> np.ndarray:
    """Conservative rank of every target, feeding sessions through ``batch_size`` parallel slots."""
    return session_events(scorer, data, batch_size).ranks


def evaluate(scorer: SessionScorer, data: SessionDataset, ks: Sequence[int] = (1, 5, 10, 20),
             batch_size: int = 512, popularity: np.ndarray | None = None) -> dict[str, float]:
    """Every metric over every next-item event of ``data``, plus ``n_events`` and ``n_sessions``.

    Accuracy: ``recall@K``, ``mrr@K`` and ``ndcg@K`` for each K in ``ks``. With L the largest K:
    ``recall@L_prefix_<bucket>`` by session prefix length, ``coverage@L`` and, given ``popularity``
    (training event counts per item index, e.g. ``Vocabulary.counts``), ``popularity@L``.
    """
    _check_arguments(scorer, data, ks, batch_size)
    n_sessions = int((data.lengths() >= 2).sum())
    if not n_sessions:
        raise ValueError(f"nothing to evaluate: none of the {data.n_sessions} sessions has two or more events")
    longest = max(ks)
    with torch.no_grad():
        results = session_events(scorer, data, batch_size, longest)
    metrics = metrics_from_ranks(results.ranks, ks)
    metrics.update(prefix_bucket_metrics(results.ranks, results.prefix_lengths, longest))
    metrics.update(list_metrics(results.recommended, longest, popularity))
    metrics.update(n_events=len(results.ranks), n_sessions=n_sessions)
    logger.info("evaluated %s on %d events of %d sessions: %s", type(scorer).__name__, len(results.ranks),
                n_sessions, {k: round(v, 4) for k, v in metrics.items()})
    return metrics
