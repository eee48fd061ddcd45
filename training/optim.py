"""Optimizers with sparse updates of item tables, as GRU4Rec trains them.

Item tables (output embedding, item bias, input embedding or one-hot input weights) have one row per
item, and a mini-batch touches only the rows of its inputs, targets and sampled negatives. Training
gathers those rows as autograd leaves (:class:`ItemRows`), so backward yields gradients for the
gathered rows only, never a dense [n_items, d] gradient; the optimizer then updates only the rows each
table uses in the step (its accumulator, momentum and value): an output table's rows of the targets and
negatives, an input table's rows of the inputs, both for the tied embedding. A row the step gathered
for another table (the bias of an item that is only an input) keeps its value and its momentum, as in
the paper's sparse update. The other parameters (GRU weights) are updated densely.

Adagrad with momentum (GRU4REC.md): acc += g^2; step = -lr * g / sqrt(acc + 1e-6);
mom = momentum * mom + step; p += mom. Adam is offered too (lazy on item rows, like SparseAdam).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch
from torch import nn

ADAGRAD_EPSILON = 1e-6
OPTIMIZERS = ("adagrad", "adam")


class ItemRows:
    """The distinct item rows of one mini-batch, gathered from item tables as autograd leaves.

    ``items`` holds every item index the mini-batch uses (inputs, targets, negatives); ``inverse`` maps
    each of them to its row in the gathered tables. Backward then yields one gradient per distinct row,
    duplicates already summed, and the optimizer updates the rows each table uses (see :meth:`gather`).
    """

    def __init__(self, items: torch.Tensor) -> None:
        self.index, self.inverse = torch.unique(items, return_inverse=True)
        self._leaves: dict[int, tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = {}

    def gather(self, table: nn.Parameter, used: slice = slice(None)) -> torch.Tensor:
        """The mini-batch's rows of ``table`` (the same leaf when asked again).

        ``used``: the positions of ``items`` through which the caller uses this table (default all);
        only the rows they select move in the update. A table used twice (the tied embedding, as input
        and output) is asked twice and moves the rows of both.
        """
        if id(table) not in self._leaves:
            rows = table.detach().index_select(0, self.index).requires_grad_()
            mask = torch.zeros(len(self.index), dtype=torch.bool, device=self.index.device)
            self._leaves[id(table)] = (table, rows, mask)
        _, rows, mask = self._leaves[id(table)]
        mask[self.inverse[used]] = True
        return rows

    def gradients(self) -> list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]:
        """(table, index of its used rows, their gradient) after backward."""
        return [(table, self.index[used], rows.grad[used]) for table, rows, used in self._leaves.values()
                if rows.grad is not None]


class RowSparseOptimizer(ABC):
    """Dense updates for ordinary parameters, row-wise updates for item tables; subclasses give the rule."""

    state_names: tuple[str, ...] = ()

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]], item_names: set[str],
                 lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"learning rate must be positive, got {lr!r}")
        self.lr = lr
        self.parameters = dict(named_parameters)
        missing = item_names - set(self.parameters)
        if missing:
            raise ValueError(f"item tables {sorted(missing)} are not among the parameters")
        self.item_names = set(item_names)
        self._names = {id(p): name for name, p in self.parameters.items()}
        self.steps = 0
        self.state = {name: {key: torch.zeros_like(p) for key in self.state_names}
                      for name, p in self.parameters.items()}

    @torch.no_grad()
    def step(self, rows: ItemRows) -> None:
        """Apply the dense gradients in ``.grad`` and the item-row gradients collected by ``rows``."""
        self.steps += 1
        for name, p in self.parameters.items():
            if name not in self.item_names and p.grad is not None:
                self._update_dense(p, p.grad, self.state[name])
        for table, index, grad in rows.gradients():
            self._update_rows(table, index, grad, self.state[self._names[id(table)]])

    def zero_grad(self) -> None:
        for p in self.parameters.values():
            p.grad = None

    def state_dict(self) -> dict:
        return {"steps": self.steps, "state": {name: dict(s) for name, s in self.state.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["state"]) != set(self.state):
            raise ValueError(f"optimizer state is for parameters {sorted(state['state'])}, "
                             f"expected {sorted(self.state)}")
        for name, buffers in state["state"].items():
            for key, value in buffers.items():
                self.state[name][key].copy_(value)
        self.steps = int(state["steps"])

    @abstractmethod
    def _update_dense(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        """Update all of ``p`` in place from its gradient."""

    @abstractmethod
    def _update_rows(self, p: torch.Tensor, index: torch.Tensor, grad: torch.Tensor,
                     state: dict[str, torch.Tensor]) -> None:
        """Update rows ``index`` (unique) of ``p`` in place from their gradient ``grad``."""


class AdagradMomentum(RowSparseOptimizer):
    """Adagrad with momentum; item rows update their accumulator and momentum only when touched."""

    state_names = ("accumulator", "momentum")

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]], item_names: set[str], lr: float,
                 momentum: float = 0.0) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = momentum
        if momentum == 0.0:
            self.state_names = ("accumulator",)
        super().__init__(named_parameters, item_names, lr)

    def _update_dense(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        acc = state["accumulator"].addcmul_(grad, grad)
        step = grad * (acc + ADAGRAD_EPSILON).rsqrt_()
        if self.momentum:
            p.add_(state["momentum"].mul_(self.momentum).add_(step, alpha=-self.lr))
        else:
            p.add_(step, alpha=-self.lr)

    def _update_rows(self, p: torch.Tensor, index: torch.Tensor, grad: torch.Tensor,
                     state: dict[str, torch.Tensor]) -> None:
        # index_add_ of a delta is cheaper on CPU than index_select + index_copy_ of whole rows.
        state["accumulator"].index_add_(0, index, grad * grad)
        step = grad.mul_(state["accumulator"].index_select(0, index).add_(ADAGRAD_EPSILON).rsqrt_()).mul_(-self.lr)
        if self.momentum:
            step = state["momentum"].index_select(0, index).mul_(self.momentum).add_(step)
            state["momentum"].index_copy_(0, index, step)
        p.index_add_(0, index, step)


class Adam(RowSparseOptimizer):
    """Adam; item rows update their moments only when touched (lazy, as torch's SparseAdam)."""

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]], item_names: set[str], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.betas = betas
        self.eps = eps
        super().__init__(named_parameters, item_names, lr)

    def _step_size(self) -> float:
        beta1, beta2 = self.betas
        return self.lr * (1 - beta2**self.steps) ** 0.5 / (1 - beta1**self.steps)

    def _moments(self, m: torch.Tensor, v: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        beta1, beta2 = self.betas
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        return m / (v.sqrt() + self.eps) * -self._step_size()

    def _update_dense(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        p.add_(self._moments(state["exp_avg"], state["exp_avg_sq"], grad))

    def _update_rows(self, p: torch.Tensor, index: torch.Tensor, grad: torch.Tensor,
                     state: dict[str, torch.Tensor]) -> None:
        m = state["exp_avg"].index_select(0, index)
        v = state["exp_avg_sq"].index_select(0, index)
        update = self._moments(m, v, grad)
        state["exp_avg"].index_copy_(0, index, m)
        state["exp_avg_sq"].index_copy_(0, index, v)
        p.index_add_(0, index, update)


def make_optimizer(name: str, model: nn.Module, item_names: set[str], lr: float,
                   momentum: float) -> RowSparseOptimizer:
    """``adagrad`` (with momentum) or ``adam`` over ``model``'s parameters."""
    if name == "adagrad":
        return AdagradMomentum(model.named_parameters(), item_names, lr, momentum)
    if name == "adam":
        return Adam(model.named_parameters(), item_names, lr)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
