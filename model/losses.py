"""GRU4Rec's losses over the scored columns of a mini-batch (Hidasi & Karatzoglou 2018).

``scores`` is [B, K]: row ``i``'s target is column ``i`` (the batch's targets come first, then the extra
negatives shared by all rows); every other column is a negative for that row, except those marked in the
optional ``excluded`` mask [B, K]. The trainer marks there the row's accidental hits (:func:`accidental_hits`):
other columns holding the row's own target item, such as another row with the same target or an extra
sample that drew it. Left in, they are the positive scored as a negative, pushed down and up at once.
Each loss returns the mean over rows; a row without negatives contributes zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

EPSILON = 1e-24
LOSSES = ("cross-entropy", "bpr-max", "top1-max", "bpr", "top1")

Loss = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def accidental_hits(columns: torch.Tensor, n_rows: int) -> torch.Tensor:
    """[n_rows, K] True where column ``k`` holds row ``i``'s target item but is not its target column ``i``.

    ``columns`` are the item ids (or any per-item key) of the K scored columns, the rows' targets first.
    """
    hits = columns.unsqueeze(0) == columns[:n_rows].unsqueeze(1)
    return hits.fill_diagonal_(False)


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


def _negatives(scores: torch.Tensor, excluded: torch.Tensor | None) -> torch.Tensor:
    """True at each row's negatives: every column but its own target and its excluded ones."""
    negatives = ~torch.eye(scores.shape[0], scores.shape[1], dtype=torch.bool, device=scores.device)
    return negatives if excluded is None else negatives & ~excluded


def _negative_softmax(scores: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Softmax over each row's negatives (zero elsewhere; all zero for a row without negatives).

    The other columns are filled with the lowest finite number rather than -inf, so a row without
    negatives gives finite zeros instead of NaN in both passes.
    """
    lowest = torch.finfo(scores.dtype).min
    return torch.softmax(scores.masked_fill(~negatives, lowest), dim=1).masked_fill(~negatives, 0.0)


def _mean_over_rows_with_negatives(row_losses: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    return (row_losses * negatives.any(dim=1)).mean()


def cross_entropy(scores: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """-log(softmax(O)_i + 1e-24) without the excluded columns; apply the logQ correction to ``scores`` first."""
    if excluded is not None:
        scores = scores.masked_fill(excluded, float("-inf"))
    return -(torch.softmax(scores, dim=1).diagonal() + EPSILON).log().mean()


def bpr_max(scores: torch.Tensor, bpreg: float, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """-log(sum_j s_j sigmoid(o_i - o_j) + 1e-24) + bpreg * sum_j s_j o_j^2, s = softmax over negatives."""
    negatives = _negatives(scores, excluded)
    weights = _negative_softmax(scores, negatives)
    ranked = (weights * torch.sigmoid(_target_scores(scores) - scores)).sum(dim=1)
    regulariser = (weights * scores.square()).sum(dim=1)
    return _mean_over_rows_with_negatives(-(ranked + EPSILON).log() + bpreg * regulariser, negatives)


def top1_max(scores: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """sum_j s_j (sigmoid(o_j - o_i) + sigmoid(o_j^2)), s = softmax over negatives."""
    weights = _negative_softmax(scores, _negatives(scores, excluded))
    terms = torch.sigmoid(scores - _target_scores(scores)) + torch.sigmoid(scores.square())
    return (weights * terms).sum(dim=1).mean()


def _mean_over_negatives(terms: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Per row, the mean of ``terms`` over its negatives (0 without any); then the mean over rows."""
    counts = negatives.sum(dim=1).clamp(min=1)
    return ((terms * negatives).sum(dim=1) / counts).mean()


def bpr(scores: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """2016 BPR: -mean_j log sigmoid(o_i - o_j) over the row's negatives."""
    return -_mean_over_negatives(F.logsigmoid(_target_scores(scores) - scores), _negatives(scores, excluded))


def top1(scores: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """2016 TOP1: mean_j (sigmoid(o_j - o_i) + sigmoid(o_j^2)) over the row's negatives."""
    terms = torch.sigmoid(scores - _target_scores(scores)) + torch.sigmoid(scores.square())
    return _mean_over_negatives(terms, _negatives(scores, excluded))


def make_loss(name: str, bpreg: float = 1.0, elu_param: float = 0.0) -> Loss:
    """The loss ``name`` as a function of (scores, excluded); ranking losses first apply elu(O, elu_param) if > 0."""
    if name == "cross-entropy":
        return cross_entropy
    ranking: dict[str, Loss] = {"bpr-max": lambda o, excluded=None: bpr_max(o, bpreg, excluded),
                                "top1-max": top1_max, "bpr": bpr, "top1": top1}
    if name not in ranking:
        raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
    loss = ranking[name]
    if elu_param > 0:
        return lambda o, excluded=None: loss(F.elu(o, alpha=elu_param), excluded)
    return loss
