"""Each loss against a direct, row-by-row transcription of its formula in GRU4REC.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.losses import bpr, bpr_max, cross_entropy, logq_tables, make_loss, top1, top1_max


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def negatives(row: list[float], i: int) -> list[float]:
    return [o for j, o in enumerate(row) if j != i]


def negative_softmax(row: list[float], i: int) -> list[float]:
    exp = [math.exp(o) for o in negatives(row, i)]
    return [e / sum(exp) for e in exp]


def naive_cross_entropy(scores: list[list[float]]) -> float:
    losses = []
    for i, row in enumerate(scores):
        softmax = math.exp(row[i]) / sum(math.exp(o) for o in row)
        losses.append(-math.log(softmax + 1e-24))
    return sum(losses) / len(losses)


def naive_bpr_max(scores: list[list[float]], bpreg: float) -> float:
    losses = []
    for i, row in enumerate(scores):
        s, neg = negative_softmax(row, i), negatives(row, i)
        ranked = sum(sj * sigmoid(row[i] - oj) for sj, oj in zip(s, neg, strict=True))
        losses.append(-math.log(ranked + 1e-24) + bpreg * sum(sj * oj**2 for sj, oj in zip(s, neg, strict=True)))
    return sum(losses) / len(losses)


def naive_top1_max(scores: list[list[float]]) -> float:
    losses = []
    for i, row in enumerate(scores):
        s, neg = negative_softmax(row, i), negatives(row, i)
        losses.append(sum(sj * (sigmoid(oj - row[i]) + sigmoid(oj**2)) for sj, oj in zip(s, neg, strict=True)))
    return sum(losses) / len(losses)


def naive_bpr(scores: list[list[float]]) -> float:
    losses = []
    for i, row in enumerate(scores):
        neg = negatives(row, i)
        losses.append(-sum(math.log(sigmoid(row[i] - oj)) for oj in neg) / len(neg))
    return sum(losses) / len(losses)


def naive_top1(scores: list[list[float]]) -> float:
    losses = []
    for i, row in enumerate(scores):
        neg = negatives(row, i)
        losses.append(sum(sigmoid(oj - row[i]) + sigmoid(oj**2) for oj in neg) / len(neg))
    return sum(losses) / len(losses)


@pytest.fixture
def scores() -> torch.Tensor:
    """3 rows (targets on the diagonal) and 3 in-batch + 4 sampled columns."""
    return torch.tensor(np.random.default_rng(0).normal(0, 1.5, (3, 7)), dtype=torch.float64)


def test_cross_entropy(scores: torch.Tensor) -> None:
    assert cross_entropy(scores).item() == pytest.approx(naive_cross_entropy(scores.tolist()), rel=1e-12)


def test_cross_entropy_epsilon_caps_a_hopeless_row() -> None:
    scores = torch.tensor([[-100.0, 100.0]], dtype=torch.float64)
    assert cross_entropy(scores).item() == pytest.approx(-math.log(math.exp(-200) + 1e-24), rel=1e-9)


def test_logq_tables_and_corrected_cross_entropy(scores: torch.Tensor) -> None:
    support = np.array([10, 1, 0, 50, 7])
    by_target, by_sample = logq_tables(support, logq=0.8, alpha=0.5)
    expected = np.log(np.maximum(support, 1))
    assert np.allclose(by_target.numpy(), 0.8 * expected, atol=1e-6)
    assert np.allclose(by_sample.numpy(), 0.8 * 0.5 * expected, atol=1e-6)
    # Columns: the rows' targets are items 0, 3, 1; the sampled columns items 4, 2, 0, 3.
    targets, sampled = [0, 3, 1], [4, 2, 0, 3]
    correction = [0.8 * math.log(max(support[t], 1)) for t in targets]
    correction += [0.8 * math.log(max(support[s], 1) ** 0.5) for s in sampled]
    corrected = [[o - c for o, c in zip(row, correction, strict=True)] for row in scores.tolist()]
    shift = torch.cat((by_target[targets], by_sample[sampled])).double()
    assert cross_entropy(scores - shift).item() == pytest.approx(naive_cross_entropy(corrected), rel=1e-6)


@pytest.mark.parametrize("bpreg", [0.0, 1.0, 1.95])
def test_bpr_max(scores: torch.Tensor, bpreg: float) -> None:
    assert bpr_max(scores, bpreg).item() == pytest.approx(naive_bpr_max(scores.tolist(), bpreg), rel=1e-12)


def test_bpr_max_with_elu(scores: torch.Tensor) -> None:
    loss = make_loss("bpr-max", bpreg=0.5, elu_param=0.5)
    activated = [[o if o > 0 else 0.5 * (math.exp(o) - 1) for o in row] for row in scores.tolist()]
    assert loss(scores).item() == pytest.approx(naive_bpr_max(activated, 0.5), rel=1e-12)


def test_top1_max(scores: torch.Tensor) -> None:
    assert top1_max(scores).item() == pytest.approx(naive_top1_max(scores.tolist()), rel=1e-12)


def test_bpr(scores: torch.Tensor) -> None:
    assert bpr(scores).item() == pytest.approx(naive_bpr(scores.tolist()), rel=1e-12)


def test_top1(scores: torch.Tensor) -> None:
    assert top1(scores).item() == pytest.approx(naive_top1(scores.tolist()), rel=1e-12)


@pytest.mark.parametrize("name", ["cross-entropy", "bpr-max", "top1-max", "bpr", "top1"])
def test_gradients_flow_and_push_the_target_up(name: str, scores: torch.Tensor) -> None:
    scores = scores.clone().requires_grad_()
    make_loss(name, bpreg=1.0)(scores).backward()
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad.diagonal() < 0).all(), "descending the loss raises each row's target score"


@pytest.mark.parametrize("name", ["cross-entropy", "bpr-max", "top1-max", "bpr", "top1"])
def test_a_single_column_gives_zero_loss(name: str) -> None:
    scores = torch.tensor([[0.3]], requires_grad=True)
    loss = make_loss(name)(scores)
    loss.backward()
    assert loss.item() == 0.0 and scores.grad.item() == 0.0


def test_elu_is_ignored_by_cross_entropy(scores: torch.Tensor) -> None:
    assert make_loss("cross-entropy", elu_param=1.0)(scores).item() == cross_entropy(scores).item()


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make_loss("hinge")
