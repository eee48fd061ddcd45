"""Adagrad with momentum and its sparse item-row updates (training/optim.py), against the formula in GRU4REC.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.optim import AdagradMomentum, Adam, ItemRows, make_optimizer

LR, MOMENTUM, EPS = 0.2, 0.3, 1e-6


def adagrad_reference(p: np.ndarray, grads: list[np.ndarray], lr: float, momentum: float) -> np.ndarray:
    """acc += g^2; step = -lr * g / sqrt(acc + 1e-6); mom = momentum * mom + step; p += mom."""
    acc, mom, p = np.zeros_like(p), np.zeros_like(p), p.copy()
    for g in grads:
        acc += g * g
        mom = momentum * mom - lr * g / np.sqrt(acc + EPS)
        p += mom
    return p


def test_dense_update_follows_the_formula() -> None:
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(3)]
    weight = nn.Parameter(torch.tensor(start))
    optimizer = AdagradMomentum([("w", weight)], set(), LR, MOMENTUM)
    for g in grads:
        weight.grad = torch.tensor(g)
        optimizer.step(ItemRows(torch.zeros(0, dtype=torch.long)))
        optimizer.zero_grad()
    assert np.allclose(weight.detach().numpy(), adagrad_reference(start, grads, LR, MOMENTUM), atol=1e-12)


def test_item_rows_sum_duplicate_gradients() -> None:
    table = nn.Parameter(torch.randn(6, 2, dtype=torch.float64))
    items = torch.tensor([4, 1, 4, 4, 0])
    rows = ItemRows(items)
    assert rows.index.tolist() == [0, 1, 4]
    gathered = rows.gather(table)
    assert rows.gather(table) is gathered
    (gathered.index_select(0, rows.inverse) * torch.arange(1.0, 6.0, dtype=torch.float64).unsqueeze(1)).sum().backward()
    dense = table.detach().clone().requires_grad_()
    (dense[items] * torch.arange(1.0, 6.0, dtype=torch.float64).unsqueeze(1)).sum().backward()
    ((_, index, grad),) = rows.gradients()
    assert torch.equal(index, rows.index)
    assert torch.equal(grad, dense.grad[rows.index])
    assert table.grad is None, "no dense gradient is ever formed for an item table"


def test_sparse_rows_update_by_the_formula_and_untouched_rows_stay_put() -> None:
    rng = np.random.default_rng(1)
    start = rng.normal(size=(5, 3))
    table = nn.Parameter(torch.tensor(start))
    optimizer = AdagradMomentum([("items", table)], {"items"}, LR, MOMENTUM)
    # Step 1 touches rows 1 and 3; step 2 touches rows 3 and 4 (row 3 twice). Row 1 keeps momentum from
    # step 1 but must not move in step 2; rows 0 and 2 are never touched.
    batches = [torch.tensor([1, 3]), torch.tensor([3, 4, 3])]
    grads = [rng.normal(size=(2, 3)), rng.normal(size=(3, 3))]
    snapshots = []
    for items, g in zip(batches, grads, strict=True):
        rows = ItemRows(items)
        (rows.gather(table).index_select(0, rows.inverse) * torch.tensor(g)).sum().backward()
        optimizer.step(rows)
        snapshots.append(table.detach().clone())
    assert torch.equal(snapshots[1][1], snapshots[0][1]), "a row outside the mini-batch keeps its value"
    for row in (0, 2):
        assert torch.equal(snapshots[1][row], torch.tensor(start[row]))
    assert torch.all(optimizer.state["items"]["accumulator"][[0, 2]] == 0)
    assert torch.all(optimizer.state["items"]["momentum"][[0, 2]] == 0)
    row3 = adagrad_reference(start[3], [grads[0][1], grads[1][0] + grads[1][2]], LR, MOMENTUM)
    row4 = adagrad_reference(start[4], [grads[1][1]], LR, MOMENTUM)
    row1 = adagrad_reference(start[1], [grads[0][0]], LR, MOMENTUM)
    assert np.allclose(snapshots[1][3].numpy(), row3, atol=1e-12)
    assert np.allclose(snapshots[1][4].numpy(), row4, atol=1e-12)
    assert np.allclose(snapshots[1][1].numpy(), row1, atol=1e-12)


def test_only_the_rows_a_table_uses_move_and_keep_their_momentum_otherwise() -> None:
    """Item 0 is an output in step 1 and only an input in step 2: its bias row must not drift on its
    momentum in step 2 (the tied embedding row, used as the input, does move)."""
    embedding = nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    bias = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = AdagradMomentum([("embedding", embedding), ("bias", bias)], {"embedding", "bias"}, LR, MOMENTUM)
    for items in ([1, 0], [0, 2]):  # [input, target]
        rows = ItemRows(torch.tensor(items))
        used_in, used_out = slice(None, 1), slice(1, None)
        table = rows.gather(embedding, used_in)
        assert rows.gather(embedding, used_out) is table
        x = table.index_select(0, rows.inverse[:1])
        out = rows.inverse[1:]
        (x @ table.index_select(0, out).t() + rows.gather(bias, used_out).index_select(0, out)).sum().backward()
        before = bias.detach().clone(), embedding.detach().clone(), optimizer.state["bias"]["momentum"].clone()
        optimizer.step(rows)
    bias_before, embedding_before, momentum_before = before
    assert momentum_before[0] != 0, "step 1 gave item 0's bias a momentum"
    assert bias[0] == bias_before[0], "item 0 is only an input in step 2: its bias keeps its value"
    assert torch.equal(optimizer.state["bias"]["momentum"][0], momentum_before[0])
    assert bias[2] != bias_before[2] and not torch.equal(embedding[0], embedding_before[0])


def test_without_momentum_keeps_no_momentum_state() -> None:
    weight = nn.Parameter(torch.ones(2))
    optimizer = AdagradMomentum([("w", weight)], set(), LR, 0.0)
    assert set(optimizer.state["w"]) == {"accumulator"}
    weight.grad = torch.tensor([1.0, -2.0])
    optimizer.step(ItemRows(torch.zeros(0, dtype=torch.long)))
    assert torch.allclose(weight.detach(), torch.tensor([1 - LR / (1 + EPS) ** 0.5, 1 + LR * 2 / (4 + EPS) ** 0.5]))


def test_adam_matches_torch_on_dense_parameters() -> None:
    torch.manual_seed(0)
    ours = nn.Parameter(torch.randn(4, 3))
    theirs = nn.Parameter(ours.detach().clone())
    optimizer = Adam([("w", ours)], set(), lr=0.01)
    reference = torch.optim.Adam([theirs], lr=0.01)
    for _ in range(5):
        g = torch.randn(4, 3)
        ours.grad, theirs.grad = g.clone(), g.clone()
        optimizer.step(ItemRows(torch.zeros(0, dtype=torch.long)))
        reference.step()
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_adam_leaves_untouched_rows_alone() -> None:
    table = nn.Parameter(torch.randn(4, 2))
    start = table.detach().clone()
    optimizer = Adam([("items", table)], {"items"}, lr=0.1)
    rows = ItemRows(torch.tensor([2]))
    rows.gather(table).sum().backward()
    optimizer.step(rows)
    assert torch.equal(table[[0, 1, 3]], start[[0, 1, 3]])
    assert not torch.equal(table[2], start[2])


def test_state_dict_round_trip() -> None:
    weight = nn.Parameter(torch.ones(3))
    optimizer = AdagradMomentum([("w", weight)], set(), LR, MOMENTUM)
    weight.grad = torch.ones(3)
    optimizer.step(ItemRows(torch.zeros(0, dtype=torch.long)))
    other = AdagradMomentum([("w", nn.Parameter(torch.ones(3)))], set(), LR, MOMENTUM)
    other.load_state_dict(optimizer.state_dict())
    assert other.steps == 1
    assert torch.equal(other.state["w"]["momentum"], optimizer.state["w"]["momentum"])
    with pytest.raises(ValueError, match="optimizer state is for parameters"):
        AdagradMomentum([("v", nn.Parameter(torch.ones(3)))], set(), LR).load_state_dict(optimizer.state_dict())


def test_rejects_bad_settings() -> None:
    weight = nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="momentum"):
        AdagradMomentum([("w", weight)], set(), LR, 1.0)
    with pytest.raises(ValueError, match="learning rate"):
        AdagradMomentum([("w", weight)], set(), 0.0)
    with pytest.raises(ValueError, match="not among the parameters"):
        AdagradMomentum([("w", weight)], {"items"}, LR)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_optimizer("sgd", nn.Linear(2, 2), set(), LR, 0.0)
