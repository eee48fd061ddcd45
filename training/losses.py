"""GRU4Rec's losses over the scored columns of a mini-batch (Hidasi & Karatzoglou 2018).

``scores`` is [B, K]: row ``i``'s target is column ``i`` (the batch's targets come first, then the extra
negatives shared by all rows); every other column is a negative for that row, except columns scored
``-inf``, which take no part. :func:`column_scores` scores a row's accidental hits -inf that way: the
other columns holding its own target item, such as another row with the same target or an extra sample
that drew it. Left in, they are the positive scored as a negative, pushed down and up at once.
Each loss returns the mean over rows; a row without negatives contributes zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

EPSILON = 1e-24
LOSSES = ("cross-entropy", "bpr-max", "top1-max", "bpr", "top1")

Loss = Callable[[torch.Tensor], torch.Tensor]


def column_scores(item_scores: torch.Tensor, columns: torch.Tensor, remove_accidental_hits: bool) -> torch.Tensor:
    """The scored columns' scores [B, K] from each row's scores of the mini-batch's distinct items [B, U].

    ``columns`` [K] maps every column to its distinct item, the B rows' targets first. With
    ``remove_accidental_hits`` each row's own target item scores -inf in all its columns but column ``i``.
    Masking the B target entries before spreading them to columns costs two small copies, several times
    less than comparing and masking the [B, K] matrix.
    """
    if not remove_accidental_hits:
        return item_scores.index_select(1, columns)
    own = columns[:item_scores.shape[0]].unsqueeze(1)
    spread = item_scores.scatter(1, own, float("-inf")).index_select(1, columns)
    return spread.diagonal_scatter(item_scores.gather(1, own).squeeze(1))


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


def _negatives(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores with the -inf columns set to 0, True at each row's negatives).

    Zeroing the -inf columns through ``where`` keeps them out of every later term, in both passes: a
    0 * inf product would be NaN.
    """
    finite = torch.isfinite(scores)
    own = torch.eye(scores.shape[0], scores.shape[1], dtype=torch.bool, device=scores.device)
    return torch.where(finite, scores, 0.0), finite & ~own


def _negative_softmax(scores: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Softmax over each row's negatives (zero elsewhere; all zero for a row without negatives).

    The other columns are filled with the lowest finite number rather than -inf, so a row without
    negatives gives finite zeros instead of NaN in both passes.
    """
    lowest = torch.finfo(scores.dtype).min
    return torch.softmax(scores.masked_fill(~negatives, lowest), dim=1).masked_fill(~negatives, 0.0)


def cross_entropy(scores: torch.Tensor) -> torch.Tensor:
    """-log(softmax(O)_i + 1e-24); -inf columns drop out. Apply the logQ correction to ``scores`` first."""
    return -(torch.softmax(scores, dim=1).diagonal() + EPSILON).log().mean()


def bpr_max(scores: torch.Tensor, bpreg: float) -> torch.Tensor:
    """-log(sum_j s_j sigmoid(o_i - o_j) + 1e-24) + bpreg * sum_j s_j o_j^2, s = softmax over negatives."""
    scores, negatives = _negatives(scores)
    weights = _negative_softmax(scores, negatives)
    ranked = (weights * torch.sigmoid(_target_scores(scores) - scores)).sum(dim=1)
    regulariser = (weights * scores.square()).sum(dim=1)
    row_losses = -(ranked + EPSILON).log() + bpreg * regulariser
    return (row_losses * negatives.any(dim=1)).mean()


def top1_max(scores: torch.Tensor) -> torch.Tensor:
    """sum_j s_j (sigmoid(o_j - o_i) + sigmoid(o_j^2)), s = softmax over negatives."""
    scores, negatives = _negatives(scores)
    weights = _negative_softmax(scores, negatives)
    terms = torch.sigmoid(scores - _target_scores(scores)) + torch.sigmoid(scores.square())
    return (weights * terms).sum(dim=1).mean()


def _mean_over_negatives(terms: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Per row, the mean of ``terms`` over its negatives (0 without any); then the mean over rows."""
    counts = negatives.sum(dim=1).clamp(min=1)
    return ((terms * negatives).sum(dim=1) / counts).mean()


def bpr(scores: torch.Tensor) -> torch.Tensor:
    """2016 BPR: -mean_j log sigmoid(o_i - o_j) over the row's negatives."""
    scores, negatives = _negatives(scores)
    return -_mean_over_negatives(F.logsigmoid(_target_scores(scores) - scores), negatives)


def top1(scores: torch.Tensor) -> torch.Tensor:
    """2016 TOP1: mean_j (sigmoid(o_j - o_i) + sigmoid(o_j^2)) over the row's negatives."""
    scores, negatives = _negatives(scores)
    terms = torch.sigmoid(scores - _target_scores(scores)) + torch.sigmoid(scores.square())
    return _mean_over_negatives(terms, negatives)


def _elu_keeping_excluded(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """elu(O, alpha), leaving -inf columns at -inf (elu would map them to -alpha, a real score)."""
    return torch.where(torch.isfinite(scores), F.elu(scores, alpha=alpha), scores)


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
        return lambda o: loss(_elu_keeping_excluded(o, elu_param))
    return loss
