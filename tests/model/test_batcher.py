"""What a mini-batch is made of: session-parallel rows (training/batcher.py), negatives (training/sampler.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import SessionDataset
from training.batcher import SessionParallelBatches, fixed_slots, plan_epoch
from training.sampler import NegativeSampler, alias_table, sampling_weights


def dataset(lengths: list[int]) -> SessionDataset:
    """Sessions of the given lengths in order; event ``e`` has item ``e`` so rows can be traced back."""
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    n_events = int(offsets[-1])
    return SessionDataset(np.arange(n_events, dtype=np.int64), offsets,
                          np.array([f"s{i}" for i in range(len(lengths))], dtype=object), n_events)


def steps(plan):
    return [(plan.inputs[lo:hi].tolist(), plan.targets[lo:hi].tolist(), plan.starts[lo:hi].tolist())
            for lo, hi in zip(plan.offsets[:-1], plan.offsets[1:], strict=True)]


def test_schedule_by_hand() -> None:
    # A = events 0,1,2; B = 3,4; C = 5,6,7,8. Two slots: B ends first and its slot takes C; when A ends
    # nothing is left, so the batch shrinks to C's row alone.
    plan = plan_epoch(dataset([3, 2, 4]), batch_size=2)
    assert steps(plan) == [
        ([0, 3], [1, 4], [True, True]),
        ([1, 5], [2, 6], [False, True]),
        ([6], [7], [False]),
        ([7], [8], [False]),
    ]
    assert set(plan.keep) == {2}
    assert plan.keep[2].tolist() == [1]


@pytest.mark.parametrize("batch_size", [1, 3, 8, 100])
def test_every_event_but_the_last_is_an_input_exactly_once(batch_size: int) -> None:
    data = dataset([2, 5, 3, 7, 2, 2, 4, 9, 3, 2, 6])
    plan = plan_epoch(data, batch_size)
    last = data.offsets[1:] - 1
    expected = np.setdiff1d(np.arange(data.n_events), last)
    assert sorted(plan.inputs.tolist()) == expected.tolist()
    assert np.array_equal(plan.targets, plan.inputs + 1)
    assert plan.n_pairs == data.n_pairs


@pytest.mark.parametrize("batch_size", [1, 3, 4, 8])
def test_hidden_state_resets_exactly_at_session_boundaries(batch_size: int) -> None:
    data = dataset([2, 5, 3, 7, 2, 2, 4, 9, 3, 2, 6])
    starts = set(data.offsets[:-1].tolist())
    ends = set((data.offsets[1:] - 2).tolist())  # the last input event of each session
    plan = plan_epoch(data, batch_size)
    previous: list[int] = []
    for t, (inputs, _, fresh) in enumerate(steps(plan)):
        carried = previous if t not in plan.keep else [previous[r] for r in plan.keep[t]]
        if t and t not in plan.keep:
            assert len(inputs) == len(previous)
        for row, (event, new) in enumerate(zip(inputs, fresh, strict=True)):
            assert new == (event in starts)
            if t and new:
                assert carried[row] in ends, "a slot took a new session before its session ended"
            elif t:
                assert event == carried[row] + 1, "a slot's session continues with its next event"
        previous = inputs


def test_batch_shrinks_at_the_end_without_padding() -> None:
    data = dataset([6, 2, 2, 2, 3, 5])
    plan = plan_epoch(data, batch_size=4)
    sizes = np.diff(plan.offsets)
    assert sizes[0] == 4 and sizes.max() == 4
    shrink = int(np.argmax(sizes < 4))
    assert (np.diff(sizes[shrink:]) <= 0).all()
    assert sizes[-1] >= 1 and sizes.sum() == data.n_pairs
    for t, rows in plan.keep.items():
        assert sizes[t] == len(rows) < sizes[t - 1]
        assert (np.diff(rows) > 0).all(), "surviving rows keep their order"


def test_sessions_enter_in_dataset_order_and_single_events_are_skipped() -> None:
    data = dataset([3, 1, 4, 2, 1, 5, 2])
    plan = plan_epoch(data, batch_size=2)
    first_inputs = plan.inputs[plan.starts]
    assert first_inputs.tolist() == [0, 4, 8, 11, 16]  # sessions 0, 2, 3, 5, 6 by their first event
    assert plan.n_pairs == data.n_pairs


def test_batch_size_larger_than_the_number_of_sessions() -> None:
    plan = plan_epoch(dataset([3, 2]), batch_size=32)
    assert np.diff(plan.offsets).tolist() == [2, 1]


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        plan_epoch(dataset([3, 2]), batch_size=0)
    with pytest.raises(ValueError, match="no training pairs"):
        plan_epoch(dataset([1, 1]), batch_size=2)


def test_batches_are_views_of_the_plan() -> None:
    plan = plan_epoch(dataset([3, 2, 4]), batch_size=2)
    batches = list(SessionParallelBatches(plan))
    assert len(batches) == plan.n_steps == 4
    assert [b.inputs.tolist() for b in batches] == [[0, 3], [1, 5], [6], [7]]
    assert [b.carry.squeeze(1).tolist() for b in batches] == [[0.0, 0.0], [1.0, 0.0], [1.0], [1.0]]
    assert [None if b.keep is None else b.keep.tolist() for b in batches] == [None, None, [1], None]
    assert SessionParallelBatches(plan).step_sizes().tolist() == [2.0, 2.0, 1.0, 1.0]


# --- negative sampling ---

def test_samples_follow_support_to_the_power_alpha() -> None:
    counts = np.array([1, 4, 9, 16, 100, 0])
    for alpha in (0.0, 0.5, 1.0):
        sampler = NegativeSampler(counts, alpha, n_sample=1000, buffer_batches=200, seed=5)
        draws = torch.cat([sampler.next() for _ in range(200)]).numpy()
        expected = sampling_weights(counts, alpha)
        expected = expected / expected.sum()
        observed = np.bincount(draws, minlength=len(counts)) / len(draws)
        # 200,000 draws: the standard error of each share is below 0.0012.
        assert np.abs(observed - expected).max() < 0.006, (alpha, observed, expected)
        if alpha > 0:
            assert observed[-1] == 0.0, "an item without support is never drawn"


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0], [5.0, 0.0, 1.0, 2.0], [1e-9, 3.0, 1e3, 0.5, 0.0, 7.0]])
def test_alias_table_encodes_the_weights_exactly(weights: list[float]) -> None:
    keep, alias = alias_table(np.array(weights))
    n = len(weights)
    share = keep / n  # a column keeps its own item with probability keep, else yields its alias
    np.add.at(share, alias, (1.0 - keep) / n)
    assert np.allclose(share, np.array(weights) / sum(weights), atol=1e-12)


def test_buffer_is_refilled_when_used_up() -> None:
    sampler = NegativeSampler(np.ones(50), 0.5, n_sample=7, buffer_batches=3, seed=1)
    rows = [sampler.next().clone() for _ in range(7)]
    assert all(row.shape == (7,) for row in rows)
    assert not torch.equal(torch.stack(rows[:3]), torch.stack(rows[3:6])), "a refill draws new ids"
    assert sampler.state_dict()["position"] == 1


def test_sampler_state_restores_the_same_stream() -> None:
    counts = np.arange(1, 40)
    original = NegativeSampler(counts, 0.3, n_sample=5, buffer_batches=4, seed=2)
    for _ in range(6):
        original.next()
    restored = NegativeSampler(counts, 0.3, n_sample=5, buffer_batches=4, seed=99)
    restored.load_state_dict(original.state_dict())
    for _ in range(10):
        assert torch.equal(original.next(), restored.next())


def test_sampler_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="sample_alpha"):
        sampling_weights(np.ones(3), 1.5)
    with pytest.raises(ValueError, match="zero for every item"):
        sampling_weights(np.zeros(3), 0.5)
    with pytest.raises(ValueError, match="positive"):
        NegativeSampler(np.ones(3), 0.5, n_sample=0, buffer_batches=1, seed=1)


def test_take_serves_the_same_ids_as_next_across_refills() -> None:
    one, block = (NegativeSampler(np.ones(50), 0.5, n_sample=7, buffer_batches=3, seed=1) for _ in range(2))
    expected = torch.stack([one.next() for _ in range(8)])
    assert torch.equal(torch.cat([block.take(2), block.take(5), block.take(1)]), expected)


def test_fixed_slots_place_each_row_in_its_slot() -> None:
    """Sessions of 3, 2 and 4 events in 2 slots (as test_schedule_by_hand): slot 0 empties after step 1."""
    plan = plan_epoch(dataset([3, 2, 4]), batch_size=2)
    slots = fixed_slots(plan)
    assert slots.live.tolist() == [[True, True], [True, True], [False, True], [False, True]]
    assert slots.inputs.tolist() == [[0, 3], [1, 5], [0, 6], [0, 7]]
    for t in range(plan.n_steps):
        rows = slice(plan.offsets[t], plan.offsets[t + 1])
        assert slots.inputs[t][slots.live[t]].tolist() == plan.inputs[rows].tolist()
        assert slots.targets[t][slots.live[t]].tolist() == plan.targets[rows].tolist()
        assert slots.carry[t][slots.live[t]].tolist() == (~plan.starts[rows]).tolist()
    assert not slots.carry[~slots.live].any() and not slots.inputs[~slots.live].any()
