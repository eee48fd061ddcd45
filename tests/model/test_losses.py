"""Each loss against a direct, row-by-row transcription of its formula in GRU4REC.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.losses import bpr, bpr_max, column_scores, cross_entropy, logq_tables, make_loss, top1, top1_max


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


Excluded = set[tuple[int, int]]


def negatives(row: list[float], i: int, excluded: Excluded = frozenset()) -> list[float]:
    """Row ``i``'s negative scores: every column but its target and its excluded (row, column) pairs."""
    return [o for j, o in enumerate(row) if j != i and (i, j) not in excluded]


def negative_softmax(row: list[float], i: int, excluded: Excluded = frozenset()) -> list[float]:
    exp = [math.exp(o) for o in negatives(row, i, excluded)]
    return [e / sum(exp) for e in exp]


def ce_row(row: list[float], i: int, excluded: Excluded) -> float:
    softmax = math.exp(row[i]) / (math.exp(row[i]) + sum(math.exp(o) for o in negatives(row, i, excluded)))
    return -math.log(softmax + 1e-24)


def bpr_max_row(row: list[float], i: int, excluded: Excluded, bpreg: float = 1.0) -> float:
    s, neg = negative_softmax(row, i, excluded), negatives(row, i, excluded)
    ranked = sum(sj * sigmoid(row[i] - oj) for sj, oj in zip(s, neg, strict=True))
    return -math.log(ranked + 1e-24) + bpreg * sum(sj * oj**2 for sj, oj in zip(s, neg, strict=True))


def top1_max_row(row: list[float], i: int, excluded: Excluded) -> float:
    s, neg = negative_softmax(row, i, excluded), negatives(row, i, excluded)
    return sum(sj * (sigmoid(oj - row[i]) + sigmoid(oj**2)) for sj, oj in zip(s, neg, strict=True))


def bpr_row(row: list[float], i: int, excluded: Excluded) -> float:
    neg = negatives(row, i, excluded)
    return -sum(math.log(sigmoid(row[i] - oj)) for oj in neg) / len(neg)


def top1_row(row: list[float], i: int, excluded: Excluded) -> float:
    neg = negatives(row, i, excluded)
    return sum(sigmoid(oj - row[i]) + sigmoid(oj**2) for oj in neg) / len(neg)


def naive(row_loss, scores: list[list[float]], excluded: Excluded = frozenset(), skip: int | None = None) -> float:
    """Mean over all rows of ``row_loss``; row ``skip`` counts as zero."""
    return sum(row_loss(row, i, excluded) for i, row in enumerate(scores) if i != skip) / len(scores)


def naive_cross_entropy(scores: list[list[float]]) -> float:
    return naive(ce_row, scores)


def naive_bpr_max(scores: list[list[float]], bpreg: float) -> float:
    return naive(lambda row, i, ex: bpr_max_row(row, i, ex, bpreg), scores)


def naive_top1_max(scores: list[list[float]]) -> float:
    return naive(top1_max_row, scores)


def naive_bpr(scores: list[list[float]]) -> float:
    return naive(bpr_row, scores)


def naive_top1(scores: list[list[float]]) -> float:
    return naive(top1_row, scores)


ROW_LOSSES = {"cross-entropy": ce_row, "bpr-max": bpr_max_row, "top1-max": top1_max_row, "bpr": bpr_row,
              "top1": top1_row}


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


def test_column_scores_spread_item_scores_and_remove_accidental_hits() -> None:
    # 3 rows over 4 distinct items; rows' targets are items 2, 0, 2, then samples of items 0, 3, 2.
    item_scores = torch.arange(12, dtype=torch.float64).view(3, 4)
    columns = torch.tensor([2, 0, 2, 0, 3, 2])
    assert column_scores(item_scores, columns, remove_accidental_hits=False).tolist() == \
        [[2, 0, 2, 0, 3, 2], [6, 4, 6, 4, 7, 6], [10, 8, 10, 8, 11, 10]]
    inf = float("-inf")
    assert column_scores(item_scores, columns, remove_accidental_hits=True).tolist() == \
        [[2, 0, inf, 0, 3, inf], [6, 4, 6, inf, 7, 6], [inf, 8, 10, 8, 11, inf]]


def test_removed_hits_pass_no_gradient() -> None:
    item_scores = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    columns = torch.tensor([2, 0, 2, 0, 3, 2])
    cross_entropy(column_scores(item_scores, columns, remove_accidental_hits=True)).backward()
    assert torch.isfinite(item_scores.grad).all()
    # Row 0 keeps item 2 only as its target (column 0), beside item 0 twice and item 3 once.
    o = item_scores.detach()[0].tolist()
    target_share = math.exp(o[2]) / (math.exp(o[2]) + 2 * math.exp(o[0]) + math.exp(o[3]))
    assert item_scores.grad[0, 2].item() == pytest.approx((target_share - 1) / 3, rel=1e-9)


def excluded_scores(scores: torch.Tensor, excluded: Excluded) -> torch.Tensor:
    scores = scores.clone()
    for i, j in excluded:
        scores[i, j] = float("-inf")
    return scores


@pytest.mark.parametrize("name", ["cross-entropy", "bpr-max", "top1-max", "bpr", "top1"])
@pytest.mark.parametrize("elu_param", [0.0, 0.5])
def test_columns_scored_minus_infinity_are_left_out(name: str, elu_param: float, scores: torch.Tensor) -> None:
    excluded = {(0, 2), (0, 5), (1, 3), (2, 0)}
    leaf = excluded_scores(scores, excluded).requires_grad_()
    loss = make_loss(name, bpreg=1.0, elu_param=elu_param)(leaf)
    loss.backward()
    rows = scores.tolist()
    if elu_param and name != "cross-entropy":
        rows = [[o if o > 0 else elu_param * (math.exp(o) - 1) for o in row] for row in rows]
    assert loss.item() == pytest.approx(naive(ROW_LOSSES[name], rows, excluded), rel=1e-12)
    assert loss.item() != pytest.approx(naive(ROW_LOSSES[name], rows), rel=1e-6), "the exclusion changes the loss"
    assert torch.isfinite(leaf.grad).all() and all(leaf.grad[i, j] == 0 for i, j in excluded)


@pytest.mark.parametrize("name", ["cross-entropy", "bpr-max", "top1-max", "bpr", "top1"])
def test_a_row_whose_columns_are_all_excluded_adds_nothing(name: str, scores: torch.Tensor) -> None:
    excluded = {(1, j) for j in range(scores.shape[1]) if j != 1}
    leaf = excluded_scores(scores, excluded).requires_grad_()
    loss = make_loss(name, bpreg=1.0)(leaf)
    loss.backward()
    assert loss.item() == pytest.approx(naive(ROW_LOSSES[name], scores.tolist(), skip=1), rel=1e-12)
    assert torch.isfinite(leaf.grad).all() and (leaf.grad[1] == 0).all()


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make_loss("hinge")
