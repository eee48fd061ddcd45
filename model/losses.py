"""GRU4Rec's losses over the scored columns of a mini-batch (Hidasi & Karatzoglou 2018).

``scores`` is [B, K]: row ``i``'s target is column ``i`` (the batch's targets come first, then the extra
negatives shared by all rows); every other column is a negative for that row. Each loss returns the
mean over rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

EPSILON = 1e-24
LOSSES = ("cross-entropy", "bpr-max", "top1-max", "bpr", "top1")

Loss = Callable[[torch.Tensor], torch.Tensor]


def logq_tables(support: np.ndarray, logq: float, alpha: float,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per item, what to subtract from its score before the softmax: logq * log Q(item).

    In-batch target columns were sampled in proportion to support (first table), the extra negatives
    in proportion to support ** alpha (second table). Items without support count as support 1.
    """
    log_support = torch.from_numpy(np.log(np.maximum(np.asarray(support, dtype=np.float64), 1.0)))
    return ((log_support * logq).to(device, torch.float32),
            (log_support * (logq * alpha)).to(device, torch.float32))


def _target_scores(scores: torch.Tensor) -> torch.Tensor:
    return scores.diagonal().unsqueeze(1)


def _negative_mask(scores: torch.Tensor) -> torch.Tensor:
    """True at each row's own target column."""
    return torch.eye(scores.shape[0], scores.shape[1], dtype=torch.bool, device=scores.device)


def _negative_softmax(scores: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores.masked_fill(own, float("-inf")), dim=1)


def _no_negatives(scores: torch.Tensor) -> torch.Tensor:
    """A single scored column leaves nothing to rank against: zero loss, still attached to the graph."""
    return scores.sum() * 0.0


def cross_entropy(scores: torch.Tensor) -> torch.Tensor:
    """-log(softmax(O)_i + 1e-24); apply :func:`logq_correction` to ``scores`` beforehand."""
    return -(torch.softmax(scores, dim=1).diagonal() + EPSILON).log().mean()


def bpr_max(scores: torch.Tensor, bpreg: float) -> torch.Tensor:
    """-log(sum_j s_j sigmoid(o_i - o_j) + 1e-24) + bpreg * sum_j s_j o_j^2, s = softmax over negatives."""
    if scores.shape[1] < 2:
        return _no_negatives(scores)
    own = _negative_mask(scores)
    weights = _negative_softmax(scores, own)
    ranked = (weights * torch.sigmoid(_target_scores(scores) - scores)).sum(dim=1)
    regulariser = (weights * scores.square()).sum(dim=1)
    return (-(ranked + EPSILON).log() + bpreg * regulariser).mean()


def top1_max(scores: torch.Tensor) -> torch.Tensor:
    """sum_j s_j (sigmoid(o_j - o_i) + sigmoid(o_j^2)), s = softmax over negatives."""
    if scores.shape[1] < 2:
        return _no_negatives(scores)
    weights = _negative_softmax(scores, _negative_mask(scores))
    terms = torch.sigmoid(scores - _target_scores(scores)) + torch.sigmoid(scores.square())
    return (weights * terms).sum(dim=1).mean()


def bpr(scores: torch.Tensor) -> torch.Tensor:
    """2016 BPR: -mean_j log sigmoid(o_i - o_j) over the row's negatives."""
    if scores.shape[1] < 2:
        return _no_negatives(scores)
    terms = F.logsigmoid(_target_scores(scores) - scores).masked_fill(_negative_mask(scores), 0.0)
    return -(terms.sum(dim=1) / (scores.shape[1] - 1)).mean()


def top1(scores: torch.Tensor) -> torch.Tensor:
    """2016 TOP1: mean_j (sigmoid(o_j - o_i) + sigmoid(o_j^2)) over the row's negatives."""
    if scores.shape[1] < 2:
        return _no_negatives(scores)
    terms = torch.sigmoid(scores - _target_scores(scores)) + torch.sigmoid(scores.square())
    terms = terms.masked_fill(_negative_mask(scores), 0.0)
    return (terms.sum(dim=1) / (scores.shape[1] - 1)).mean()


def make_loss(name: str, bpreg: float = 1.0, elu_param: float = 0.0) -> Loss:
    """The loss ``name`` as a function of the scores; ranking losses first apply elu(O, elu_param) if > 0."""
    if name == "cross-entropy":
        return cross_entropy
    ranking: dict[str, Loss] = {"bpr-max": lambda o: bpr_max(o, bpreg), "top1-max": top1_max, "bpr": bpr,
                                "top1": top1}
    if name not in ranking:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
    loss = ranking[name]
    if elu_param > 0:
        return lambda o: loss(F.elu(o, alpha=elu_param))
    return loss
