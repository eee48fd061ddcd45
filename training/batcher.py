"""Session-parallel mini-batches (Hidasi et al. 2016, section 3.1.1).

``B`` slots each hold one session, taken in order of the sessions' first event time. At every step a
slot's input is its session's item ``t`` and its target item ``t + 1``. When a session has no next item,
its slot takes the next unused session and that slot's hidden state is zeroed in every layer; when no
session is left, the slot is dropped and the batch shrinks (no padding). Every event except the last of
each session is an input exactly once per epoch.

The schedule is the same every epoch, so it is planned once with numpy (:func:`plan_epoch`) and walked as
tensor views on the training device (:class:`SessionParallelBatches`), keeping Python work per step small.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from model.data import SessionDataset


@dataclass(frozen=True)
class EpochPlan:
    """Every training pair of an epoch in step order; step ``t`` holds rows ``offsets[t]:offsets[t + 1]``.

    ``starts`` marks rows whose session begins at that step (hidden state zeroed before the step).
    ``keep[t]``, only for steps where the batch shrinks, lists the rows of step ``t - 1`` that go on.
    ``slots`` is each row's slot (rows of a step are in slot order).
    """

    inputs: np.ndarray
    targets: np.ndarray
    starts: np.ndarray
    offsets: np.ndarray
    keep: dict[int, np.ndarray]
    slots: np.ndarray

    @property
    def n_steps(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_pairs(self) -> int:
        return len(self.inputs)


def _assign_slots(pairs: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Slot and start step of each session (sessions in order, each with ``pairs`` steps)."""
    n_slots = min(batch_size, len(pairs))
    slot = np.empty(len(pairs), dtype=np.int64)
    start = np.empty(len(pairs), dtype=np.int64)
    slot[:n_slots] = np.arange(n_slots)
    start[:n_slots] = 0
    # A slot frees up when its session's pairs are done; free slots take sessions in slot order.
    free = [(int(pairs[s]), s) for s in range(n_slots)]
    heapq.heapify(free)
    for session in range(n_slots, len(pairs)):
        step, s = heapq.heappop(free)
        slot[session], start[session] = s, step
        heapq.heappush(free, (step + int(pairs[session]), s))
    return slot, start


def plan_epoch(data: SessionDataset, batch_size: int) -> EpochPlan:
    """The session-parallel schedule of one epoch over ``data`` with ``batch_size`` slots."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    lengths = data.lengths()
    sessions = np.flatnonzero(lengths >= 2)
    if not len(sessions):
        raise ValueError(f"no training pairs: none of the {data.n_sessions} sessions has two or more events")
    pairs = lengths[sessions] - 1
    slot, start = _assign_slots(pairs, batch_size)

    owner = np.repeat(np.arange(len(sessions)), pairs)
    position = np.arange(len(owner)) - np.repeat(np.cumsum(pairs) - pairs, pairs)
    step = start[owner] + position
    row_slot = slot[owner]
    order = np.lexsort((row_slot, step))
    events = data.offsets[sessions][owner[order]] + position[order]
    sizes = np.bincount(step)

    keep: dict[int, np.ndarray] = {}
    ordered_slots = row_slot[order]
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    for t in np.flatnonzero(sizes[1:] < sizes[:-1]) + 1:
        previous = ordered_slots[offsets[t - 1]:offsets[t]]
        keep[int(t)] = np.searchsorted(previous, ordered_slots[offsets[t]:offsets[t + 1]])
    return EpochPlan(inputs=data.item_idx[events], targets=data.item_idx[events + 1],
                     starts=position[order] == 0, offsets=offsets, keep=keep, slots=ordered_slots)


@dataclass(frozen=True)
class FixedSlots:
    """An :class:`EpochPlan` with fixed shapes: [n_steps, width] per step, slot ``s`` always in column ``s``.

    A slot with no session left is a dummy row: ``live`` False, item 0 as input and target, ``carry`` 0.
    The same work as the shrinking batch, with static shapes (what a GPU step captured once needs).
    """

    inputs: np.ndarray
    targets: np.ndarray
    live: np.ndarray
    carry: np.ndarray


def fixed_slots(plan: EpochPlan) -> FixedSlots:
    """The plan's rows placed by (step, slot); ``carry`` is 0 where a session starts or a slot is empty."""
    width = int(plan.offsets[1] - plan.offsets[0])
    step = np.repeat(np.arange(plan.n_steps), np.diff(plan.offsets))
    shape = (plan.n_steps, width)
    inputs, targets = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    live, carry = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    inputs[step, plan.slots], targets[step, plan.slots] = plan.inputs, plan.targets
    live[step, plan.slots], carry[step, plan.slots] = True, ~plan.starts
    return FixedSlots(inputs=inputs, targets=targets, live=live, carry=carry)


class Batch(NamedTuple):
    """One step: ``carry`` [b, 1] is 0 for rows starting a session, else 1; ``keep`` rows of the last step."""

    inputs: torch.Tensor
    targets: torch.Tensor
    carry: torch.Tensor
    keep: torch.Tensor | None


class SessionParallelBatches:
    """An :class:`EpochPlan` on a device; iterating yields one :class:`Batch` per step (tensor views)."""

    def __init__(self, plan: EpochPlan, device: torch.device | str = "cpu") -> None:
        self.plan = plan
        self._inputs = torch.from_numpy(plan.inputs).to(device)
        self._targets = torch.from_numpy(plan.targets).to(device)
        self._carry = torch.from_numpy(~plan.starts).to(device=device, dtype=torch.float32).unsqueeze(1)
        self._keep = {t: torch.from_numpy(rows).to(device) for t, rows in plan.keep.items()}
        self._bounds = plan.offsets.tolist()

    def __len__(self) -> int:
        return self.plan.n_steps

    def __iter__(self) -> Iterator[Batch]:
        bounds = self._bounds
        for t in range(len(bounds) - 1):
            lo, hi = bounds[t], bounds[t + 1]
            yield Batch(self._inputs[lo:hi], self._targets[lo:hi], self._carry[lo:hi], self._keep.get(t))

    def step_sizes(self) -> torch.Tensor:
        """Rows per step, on the device (to weight per-step mean losses into an epoch mean)."""
        return torch.from_numpy(np.diff(self.plan.offsets)).to(self._inputs.device, torch.float32)
