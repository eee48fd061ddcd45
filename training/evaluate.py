"""Full-ranking, session-parallel evaluation of next-item scorers (see GRU4REC.md, "Evaluation protocol").

Every event of a test session except the last is an input; the session's next item is the target and is
ranked against all items. Ranks are conservative: rank = number of items scoring >= the target, so ties
count against the model (a constant-score model gets Recall@K of about K / n_items). Sessions with a
single event have no target and are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from model.data import SessionDataset

logger = logging.getLogger(__name__)


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
    """Recall@K (share of ranks <= K) and MRR@K (mean of 1/rank, 0 beyond K) for each K.

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
    return metrics


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


def session_ranks(scorer: SessionScorer, data: SessionDataset, batch_size: int = 512) -> np.ndarray:
    """Conservative rank of every target, feeding sessions through ``batch_size`` parallel slots."""
    sessions = np.flatnonzero(data.lengths() >= 2)
    n_slots = min(batch_size, len(sessions))
    scorer.begin(n_slots)
    slot_session = sessions[:n_slots].copy()
    position = data.offsets[slot_session].copy()
    active = np.arange(n_slots)
    taken = n_slots
    ranks: list[np.ndarray] = []
    while len(active):
        events = position[active]
        slots = torch.from_numpy(active)
        scores = _checked_scores(scorer, slots, torch.from_numpy(data.item_idx[events]))
        ranks.append(conservative_ranks(scores, torch.from_numpy(data.item_idx[events + 1])).cpu().numpy())
        position[active] += 1
        finished = active[position[active] + 1 >= data.offsets[slot_session[active] + 1]]
        refill = finished[:len(sessions) - taken]
        if len(refill):
            slot_session[refill] = sessions[taken:taken + len(refill)]
            position[refill] = data.offsets[slot_session[refill]]
            taken += len(refill)
            scorer.reset(torch.from_numpy(refill))
        active = np.setdiff1d(active, finished[len(refill):], assume_unique=True)
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def evaluate(scorer: SessionScorer, data: SessionDataset, ks: Sequence[int] = (1, 5, 10, 20),
             batch_size: int = 512) -> dict[str, float]:
    """Recall@K and MRR@K over every next-item event of ``data``, plus ``n_events`` and ``n_sessions``."""
    _check_arguments(scorer, data, ks, batch_size)
    n_sessions = int((data.lengths() >= 2).sum())
    if not n_sessions:
        raise ValueError(f"nothing to evaluate: none of the {data.n_sessions} sessions has two or more events")
    with torch.no_grad():
        ranks = session_ranks(scorer, data, batch_size)
    metrics = metrics_from_ranks(ranks, ks)
    metrics.update(n_events=len(ranks), n_sessions=n_sessions)
    logger.info("evaluated %s on %d events of %d sessions: %s", type(scorer).__name__, len(ranks), n_sessions,
                {k: round(v, 4) for k, v in metrics.items()})
    return metrics
