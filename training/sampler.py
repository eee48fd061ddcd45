"""Extra negative items for output sampling, drawn with probability proportional to support ** alpha.

Drawing a few thousand ids per mini-batch is slow, so a buffer of many batches' worth is drawn at once
and refilled when used up. The draw uses Walker's alias method: two random numbers and two table
lookups per id, about 5x cheaper than an inverse-CDF binary search (0.06 s instead of 0.27 s for 4M ids
over the Yoochoose sample's 2,933 items, 1 CPU thread). Building the table is linear in the items
(about 1 s for a million). The sampler's state is the generator state the current buffer was drawn
from plus the position in it: enough to rebuild the buffer exactly when a checkpointed run resumes.
"""

from __future__ import annotations

import numpy as np
import torch


def sampling_weights(counts: np.ndarray, alpha: float) -> np.ndarray:
    """support ** alpha (alpha 0: uniform over all items, 1: proportional to popularity)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or not len(counts) or (counts < 0).any():
        raise ValueError("item support must be a non-empty vector of non-negative counts")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"sample_alpha must be in [0, 1], got {alpha!r}")
    weights = counts**alpha
    if weights.sum() <= 0:
        raise ValueError("item support is zero for every item; nothing to sample from")
    return weights


def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table (Vose's construction): column ``i`` keeps ``i`` with probability ``keep[i]``,
    else yields ``alias[i]``; a uniformly chosen column then gives each item its share of ``weights``."""
    n = len(weights)
    scaled = np.asarray(weights, dtype=np.float64) * (n / weights.sum())
    keep, alias = np.ones(n), np.arange(n)
    small, large = list(np.flatnonzero(scaled < 1.0)), list(np.flatnonzero(scaled >= 1.0))
    while small and large:
        low, high = small.pop(), large.pop()
        keep[low], alias[low] = scaled[low], high
        scaled[high] -= 1.0 - scaled[low]
        (small if scaled[high] < 1.0 else large).append(high)
    return keep, alias


class NegativeSampler:
    """Serves ``n_sample`` ids per call from a buffer of ``buffer_batches`` pre-drawn rows."""

    def __init__(self, counts: np.ndarray, alpha: float, n_sample: int, buffer_batches: int,
                 seed: int, device: torch.device | str = "cpu") -> None:
        if n_sample < 1 or buffer_batches < 1:
            raise ValueError(f"n_sample and buffer_batches must be positive, got {n_sample}, {buffer_batches}")
        keep, alias = alias_table(sampling_weights(counts, alpha))
        self._keep, self._alias = torch.from_numpy(keep), torch.from_numpy(alias)
        self.n_sample = n_sample
        self.buffer_batches = buffer_batches
        self.device = torch.device(device)
        self._generator = torch.Generator().manual_seed(seed)
        self._fill_state = self._generator.get_state()
        self._buffer = torch.empty(0, n_sample, dtype=torch.long)
        self._position = 0

    def _refill(self) -> None:
        self._fill_state = self._generator.get_state()
        size = self.buffer_batches * self.n_sample
        column = torch.randint(len(self._keep), (size,), generator=self._generator)
        stay = torch.rand(size, generator=self._generator, dtype=torch.float64) < self._keep.index_select(0, column)
        ids = torch.where(stay, column, self._alias.index_select(0, column))
        self._buffer = ids.view(self.buffer_batches, self.n_sample).to(self.device)
        self._position = 0

    def next(self) -> torch.Tensor:
        """The next ``n_sample`` item indexes (LongTensor on the device)."""
        if self._position >= len(self._buffer):
            self._refill()
        row = self._buffer[self._position]
        self._position += 1
        return row

    def take(self, count: int) -> torch.Tensor:
        """The next ``count`` rows of ids at once ([count, n_sample]): the same ids as ``count`` calls of next()."""
        parts = []
        while count:
            if self._position >= len(self._buffer):
                self._refill()
            n = min(count, len(self._buffer) - self._position)
            parts.append(self._buffer[self._position:self._position + n])
            self._position += n
            count -= n
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict:
        return {"fill_state": self._fill_state.clone(), "position": self._position,
                "filled": bool(len(self._buffer))}

    def load_state_dict(self, state: dict) -> None:
        """Rebuild the buffer from the generator state it was drawn from, at the saved position."""
        self._generator.set_state(state["fill_state"])
        if state["filled"]:
            self._refill()
            self._position = int(state["position"])
        else:
            self._fill_state = self._generator.get_state()
            self._buffer = torch.empty(0, self.n_sample, dtype=torch.long)
            self._position = 0
