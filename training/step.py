"""GRU4Rec's training step written out by hand: forward, backward and sparse Adagrad without autograd.

The same maths as the autograd step in ``training/trainer.py`` (which remains the path for the
configurations this one does not cover, see :func:`unsupported`), doing only the work it needs:

- Index work ahead of the steps: for a block of steps at once, the extra negatives, each step's distinct
  items (a sort per step, no ``unique``), every column's position among them, the weight of each item
  among the scored columns (logQ included) and the rows each item table uses.
- Losses in item space: a scored column is a copy of a distinct item's score, so the softmax over the
  columns is one over the distinct items, each weighted by its columns (``log w`` added to its score).
  Duplicate columns are never spread out and gathered back.
- Hand-written GRU and loss gradients; the dense weights and their Adagrad state live in one flat buffer
  each (the network's parameters are views of it), so their update is five operations in all.
- Item rows: one gather per table, gradients summed per distinct item, and an update of the rows the
  table uses this step (accumulator, momentum, value), other gathered rows untouched.
- Fixed shapes: the batch has its full width every step (empty slots are masked dummy rows, see
  :func:`training.batcher.fixed_slots`). On CUDA the distinct items are also padded to a fixed count,
  nothing in a step waits for the host, and after a few eager steps the step is captured once as a CUDA
  graph and replayed. On CPU each step's distinct items are trimmed to their count (less matrix work).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from model.network import GRU4Rec
from training.batcher import EpochPlan, fixed_slots
from training.losses import EPSILON, logq_tables
from training.optim import ADAGRAD_EPSILON, AdagradMomentum
from training.sampler import NegativeSampler

logger = logging.getLogger(__name__)

LOSSES = ("cross-entropy", "bpr-max")
# Steps whose index work is prepared at once: large enough to amortise it, small enough for memory
# (at most about this many numbers per prepared array).
BLOCK_STEPS = 256
BLOCK_NUMBERS = 1 << 22
# Eager steps on a side stream before a CUDA graph is captured (cuBLAS and allocator warm-up).
WARMUP_STEPS = 3


def unsupported(loss: str, optimizer: str, input_mode: str) -> str | None:
    """Why the hand-written step does not cover a configuration (None: it does)."""
    if loss not in LOSSES:
        return f"loss {loss!r} (written out: {', '.join(LOSSES)})"
    if optimizer != "adagrad":
        return f"optimizer {optimizer!r} (written out: adagrad)"
    if input_mode == "onehot":
        return "one-hot input"
    return None


class StepIndex(NamedTuple):
    """One step's index work. ``items`` are its distinct items (padded with item 0 where fixed-size) and
    ``*_pos`` positions among them. ``log_weight``: each item's log weight among the scored columns
    (cross-entropy: logQ included, -inf for items no column scores; bpr-max: its column count instead).
    ``target_shift``: what turns a row's logit of its target item into the logit of its own target column
    (0 for empty slots). ``used_*``: 1 for the rows the item tables use (output embedding, bias, input
    table), None where every row is used."""

    items: torch.Tensor
    input_pos: torch.Tensor
    target_pos: torch.Tensor
    log_weight: torch.Tensor
    target_shift: torch.Tensor
    used_embedding: torch.Tensor | None
    used_bias: torch.Tensor
    used_input: torch.Tensor | None
    live: torch.Tensor
    carry: torch.Tensor
    dropout: torch.Tensor | None


class _Layer(NamedTuple):
    """What one GRU layer's backward needs from its forward."""

    inputs: torch.Tensor
    hidden: torch.Tensor
    gates: torch.Tensor
    reset_hidden: torch.Tensor
    candidate: torch.Tensor
    mask: torch.Tensor | None


class FastStep:
    """Trains ``model`` over ``plan`` with the hand-written step; ``optimizer`` holds the Adagrad state."""

    def __init__(self, model: GRU4Rec, optimizer: AdagradMomentum, sampler: NegativeSampler | None,
                 plan: EpochPlan, support: np.ndarray, loss: str, batch_size: int, logq: float,
                 sample_alpha: float, bpreg: float, elu_param: float, remove_accidental_hits: bool,
                 device: torch.device, fixed_items: bool | None = None, cuda_graph: bool | None = None) -> None:
        optimizer_name = "adagrad" if isinstance(optimizer, AdagradMomentum) else type(optimizer).__name__.lower()
        reason = unsupported(loss, optimizer_name, model.config.input_mode)
        if reason is not None:
            raise ValueError(f"the hand-written step does not cover {reason}")
        self.model, self.optimizer, self.sampler = model, optimizer, sampler
        self.loss, self.bpreg, self.elu_param = loss, bpreg, elu_param
        self.remove_hits = remove_accidental_hits
        self.scale = 1.0 / batch_size
        self.device = device
        self.dtype = model.item_embedding.dtype
        self.fixed_items = device.type == "cuda" if fixed_items is None else fixed_items
        self.use_graph = device.type == "cuda" if cuda_graph is None else cuda_graph
        if self.use_graph and not self.fixed_items:
            raise ValueError("a CUDA graph needs fixed shapes (fixed_items)")
        self.plan = plan
        slots = fixed_slots(plan)
        self.width = slots.inputs.shape[1]
        self.inputs = torch.from_numpy(slots.inputs).to(device)
        self.targets = torch.from_numpy(slots.targets).to(device)
        self.live = torch.from_numpy(slots.live).to(device, self.dtype)
        self.carry = torch.from_numpy(slots.carry).to(device, self.dtype).unsqueeze(2)
        self.n_sample = sampler.n_sample if sampler is not None else 0
        # Per item, the log weight of one column of it in the softmax: logQ divides a target column's term
        # by support ** logq, an extra negative's by support ** (logq * alpha); without logQ, 1.
        if loss == "cross-entropy" and logq > 0:
            targets, negatives = logq_tables(support, logq, sample_alpha, device)
            self.target_log_weight, self.negative_log_weight = -targets.to(self.dtype), -negatives.to(self.dtype)
        else:
            self.target_log_weight = self.negative_log_weight = torch.zeros(len(support), dtype=self.dtype,
                                                                            device=device)
        self._flatten_dense()
        self.input_table = model.input_table if model.config.input_mode != "tied" else None
        self._dropout_layout()
        per_step = self.width * (2 * self.width + self.n_sample + (len(self.keep) if self.keep is not None else 0))
        self.block_steps = max(1, min(BLOCK_STEPS, BLOCK_NUMBERS // per_step))
        self.hidden = model.init_hidden(self.width, device)
        self.total_loss = torch.zeros((), dtype=self.dtype, device=device)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: StepIndex | None = None
        self._steps_run = 0

    # --- parameters ---

    def _flatten_dense(self) -> None:
        """Make the dense parameters and their Adagrad state views of one flat buffer each."""
        item_names = self.model.item_parameter_names()
        named = [(n, p) for n, p in self.model.named_parameters() if n not in item_names]
        total = sum(p.numel() for _, p in named)
        self.flat = torch.empty(total, dtype=self.dtype, device=self.device)
        self.flat_grad = torch.zeros_like(self.flat)
        state_keys = self.optimizer.state_names
        self.flat_state = {key: torch.empty_like(self.flat) for key in state_keys}
        self.grads: dict[str, torch.Tensor] = {}
        offset = 0
        for name, p in named:
            n = p.numel()
            self.flat[offset:offset + n].copy_(p.detach().reshape(-1))
            p.data = self.flat[offset:offset + n].view_as(p)
            self.grads[name] = self.flat_grad[offset:offset + n].view_as(p)
            for key in state_keys:
                self.flat_state[key][offset:offset + n].copy_(self.optimizer.state[name][key].reshape(-1))
                self.optimizer.state[name][key] = self.flat_state[key][offset:offset + n].view_as(p)
            offset += n
        self.layer_grads = [(self.grads[f"layers.{i}.weight_input"], self.grads[f"layers.{i}.weight_hidden_gates"],
                             self.grads[f"layers.{i}.weight_hidden_candidate"], self.grads[f"layers.{i}.bias"])
                            for i in range(len(self.model.layers))]

    def _dropout_layout(self) -> None:
        """Where each dropout mask sits in a step's ``dropout`` columns: the input, then every layer."""
        config = self.model.config
        sizes = [(config.dropout_embed, self.model.layers[0].weight_input.shape[0])]
        sizes += [(config.dropout_hidden, layer.hidden_size) for layer in self.model.layers]
        keep, self.mask_bounds = [], []
        for p, size in sizes:
            if p > 0:
                self.mask_bounds.append((len(keep), len(keep) + size))
                keep += [1.0 - p] * size
            else:
                self.mask_bounds.append((None, None))
        self.keep = torch.tensor(keep, dtype=self.dtype, device=self.device) if keep else None

    # --- index work, a block of steps at a time ---

    def _prepare(self, start: int, stop: int) -> list[StepIndex]:
        count, width, n_items = stop - start, self.width, self.model.n_items
        inputs, targets, live = self.inputs[start:stop], self.targets[start:stop], self.live[start:stop]
        negatives = (self.sampler.take(count) if self.sampler is not None
                     else torch.empty(count, 0, dtype=torch.long, device=self.device))
        columns = torch.cat((inputs, targets, negatives), dim=1)
        n_columns = columns.shape[1]
        # One sort of (step, item) keys: each step's keys stay in its own row, in item order (several
        # times faster than sorting the rows one by one).
        step = torch.arange(count, device=self.device).unsqueeze(1)
        ordered, order = (columns + step * n_items).view(-1).sort()
        ordered = ordered.view(count, n_columns) - step * n_items
        order = order.view(count, n_columns) - step * n_columns
        first = torch.ones_like(ordered, dtype=torch.bool)
        first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        rank = first.cumsum(1) - 1
        position = torch.empty_like(rank).scatter_(1, order, rank)
        items = torch.zeros_like(ordered).scatter_(1, rank, ordered)
        input_pos, output_pos = position[:, :width], position[:, width:]
        target_pos = output_pos[:, :width]
        output_live = torch.cat((live, live.new_ones(count, self.n_sample)), dim=1)

        def spread(positions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            return torch.zeros(columns.shape, dtype=self.dtype, device=self.device).scatter_add_(1, positions, values)

        used_in, used_out = spread(input_pos, live) > 0, spread(output_pos, output_live) > 0
        used_embedding = (used_in | used_out) if self.input_table is None else used_out
        target_log_weight = self.target_log_weight[targets]
        if self.loss == "cross-entropy":
            column_weight = torch.cat((target_log_weight, self.negative_log_weight[negatives]), dim=1).exp_()
            log_weight = spread(output_pos, column_weight.mul_(output_live)).log_()
            # An empty slot's dummy target may weigh nothing (log weight -inf): its shift is 0, not NaN.
            target_shift = (target_log_weight - log_weight.gather(1, target_pos)).mul_(live).nan_to_num_(nan=0.0)
        else:
            log_weight = spread(output_pos, output_live)  # column counts, logged in the step
            target_shift = torch.zeros_like(live)
        floats = {name: mask.to(self.dtype) for name, mask in
                  (("embedding", used_embedding), ("bias", used_out), ("input", used_in))}
        dropout = self._dropout_masks(count)
        fields = [items, input_pos, target_pos, log_weight, target_shift, floats["embedding"].unsqueeze(2),
                  floats["bias"], floats["input"].unsqueeze(2), live, self.carry[start:stop], dropout]
        if self.fixed_items:
            return [StepIndex(*(f[t] if f is not None else None for f in fields)) for t in range(count)]
        sizes = (rank[:, -1] + 1).tolist()
        all_embedding = (used_embedding.sum(1) == rank[:, -1] + 1).tolist()
        all_input = (used_in.sum(1) == rank[:, -1] + 1).tolist()
        steps = []
        for t, size in enumerate(sizes):
            steps.append(StepIndex(
                items[t, :size], input_pos[t], target_pos[t], log_weight[t, :size], target_shift[t],
                None if all_embedding[t] else fields[5][t, :size], fields[6][t, :size],
                None if all_input[t] else fields[7][t, :size], live[t], fields[9][t],
                dropout[t] if dropout is not None else None))
        return steps

    def _dropout_masks(self, count: int) -> torch.Tensor | None:
        """Inverted-dropout masks of a block of steps, [count, width, embedding + layers] (kept: 1 / keep).

        One draw per block: drawing per step and layer costs more than the layer's arithmetic on CPU."""
        if self.keep is None:
            return None
        draw = torch.rand(count, self.width, len(self.keep), device=self.device, dtype=self.dtype)
        return (draw < self.keep).to(self.dtype).div_(self.keep)

    # --- the step ---

    def _gru_forward(self, x: torch.Tensor, masks: list[torch.Tensor | None] | None) -> tuple[torch.Tensor,
                                                                                            list[_Layer]]:
        saved = []
        for index, (layer, h) in enumerate(zip(self.model.layers, self.hidden, strict=True)):
            hidden_size = layer.hidden_size
            gates = torch.addmm(layer.bias, x, layer.weight_input)
            reset_update = torch.addmm(gates[:, :2 * hidden_size], h, layer.weight_hidden_gates).sigmoid_()
            reset_hidden = reset_update[:, :hidden_size] * h
            candidate = torch.addmm(gates[:, 2 * hidden_size:], reset_hidden, layer.weight_hidden_candidate).tanh_()
            output = torch.lerp(h, candidate, reset_update[:, hidden_size:])
            mask = masks[index] if masks is not None else None
            if mask is not None:
                output = output * mask
            saved.append(_Layer(x, h, reset_update, reset_hidden, candidate, mask))
            x = output
        return x, saved

    def _gru_backward(self, d_output: torch.Tensor, saved: list[_Layer]) -> torch.Tensor:
        """Fills the dense gradients; returns the gradient of the first layer's input."""
        for index in range(len(saved) - 1, -1, -1):
            layer, (x, h, reset_update, reset_hidden, candidate, mask) = self.model.layers[index], saved[index]
            g_input, g_gates, g_candidate, g_bias = self.layer_grads[index]
            hidden_size = layer.hidden_size
            d_new = d_output * mask if mask is not None else d_output
            update = reset_update[:, hidden_size:]
            d_gates = reset_update.new_empty(len(x), 3 * hidden_size)
            d_candidate = torch.mul(d_new, update).mul_(1 - candidate * candidate)
            d_gates[:, 2 * hidden_size:] = d_candidate
            torch.mm(reset_hidden.t(), d_candidate, out=g_candidate)
            d_gates[:, :hidden_size] = torch.mm(d_candidate, layer.weight_hidden_candidate.t()).mul_(h)
            torch.mul(d_new, candidate - h, out=d_gates[:, hidden_size:2 * hidden_size])
            d_gates[:, :2 * hidden_size].mul_(reset_update * (1 - reset_update))
            torch.mm(h.t(), d_gates[:, :2 * hidden_size], out=g_gates)
            torch.mm(x.t(), d_gates, out=g_input)
            torch.sum(d_gates, 0, out=g_bias)
            d_output = d_gates @ layer.weight_input.t()
        return d_output

    def _cross_entropy(self, logits: torch.Tensor, s: StepIndex, target: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
        """(summed loss of the live rows, d loss / d scores) from ``logits`` = scores + log weights [B, U]."""
        own = logits.gather(1, target).add_(s.target_shift.unsqueeze(1))
        if self.remove_hits:  # the row's own item counts its own column only
            logits.scatter_(1, target, own)
        top = logits.amax(1, keepdim=True)
        probabilities = logits.sub_(top).exp_()
        total = probabilities.sum(1, keepdim=True)
        p = own.sub_(top).exp_().div_(total)
        row_loss = (p + EPSILON).log_().neg_()
        coefficient = p.div_(p + EPSILON).mul_(s.live.unsqueeze(1)).mul_(self.scale)
        d_scores = probabilities.mul_(coefficient / total)
        d_scores.scatter_add_(1, target, coefficient.neg())
        return torch.dot(row_loss.squeeze(1), s.live), d_scores

    def _bpr_max(self, scores: torch.Tensor, s: StepIndex, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss of the live rows, d loss / d scores); ``s.log_weight`` holds column counts here."""
        o = F.elu(scores, alpha=self.elu_param) if self.elu_param > 0 else scores
        counts = s.log_weight.expand_as(scores)
        counts = (counts.scatter(1, target, 0.0) if self.remove_hits
                  else counts.scatter_add(1, target, torch.full_like(target, -1.0, dtype=scores.dtype)).clamp_(min=0))
        negative = counts > 0
        lowest = torch.finfo(scores.dtype).min
        weights = torch.softmax(counts.log_().clamp_(min=lowest).add_(o), dim=1).mul_(negative)
        sig = torch.sigmoid(o.gather(1, target) - o)
        weighted_sig = weights * sig
        ranked = weighted_sig.sum(1, keepdim=True)
        square = o * o
        regulariser = (weights * square).sum(1, keepdim=True)
        has = negative.any(1, keepdim=True).to(scores.dtype)
        row_loss = ((ranked + EPSILON).log().neg_() + self.bpreg * regulariser) * has
        coefficient = has.mul_(s.live.unsqueeze(1)).mul_(self.scale)
        inverse_ranked = (ranked + EPSILON).reciprocal_()
        # d/do_u of -log(R) + bpreg * G with R = sum s_u sig_u, G = sum s_u o_u^2, s = softmax over negatives.
        d_o = (sig * sig - ranked).mul_(weights).mul_(-inverse_ranked)
        d_o.add_((square - regulariser).add_(o, alpha=2.0).mul_(weights), alpha=self.bpreg)
        to_target = (weighted_sig * (1 - sig)).sum(1, keepdim=True).mul_(-inverse_ranked)
        d_o.scatter_add_(1, target, to_target).mul_(coefficient)
        if self.elu_param > 0:
            d_o.mul_(torch.where(scores > 0, 1.0, o + self.elu_param))
        return torch.dot(row_loss.squeeze(1), s.live), d_o

    def _step(self, s: StepIndex) -> None:
        model = self.model
        for h in self.hidden:
            h.mul_(s.carry)
        embedding = model.item_embedding.index_select(0, s.items)
        bias = model.item_bias.index_select(0, s.items)
        input_rows = embedding if self.input_table is None else self.input_table.index_select(0, s.items)
        x = input_rows.index_select(0, s.input_pos)
        masks = [s.dropout[:, a:b] if a is not None else None for a, b in self.mask_bounds] \
            if s.dropout is not None else None
        embed_mask = masks.pop(0) if masks is not None else None
        if embed_mask is not None:
            x = x * embed_mask
        output, saved = self._gru_forward(x, masks)
        target = s.target_pos.unsqueeze(1)
        if self.loss == "cross-entropy":
            loss, d_scores = self._cross_entropy(torch.addmm(bias + s.log_weight, output, embedding.t()), s, target)
        else:
            loss, d_scores = self._bpr_max(torch.addmm(bias, output, embedding.t()), s, target)
        self.total_loss.add_(loss)
        g_embedding = d_scores.t().mm(output)
        g_bias = d_scores.sum(0)
        d_x = self._gru_backward(d_scores.mm(embedding), saved)
        if embed_mask is not None:
            d_x.mul_(embed_mask)
        g_input = g_embedding if self.input_table is None else torch.zeros_like(input_rows)
        g_input.index_add_(0, s.input_pos, d_x)
        self._update_dense()
        state = self.optimizer.state
        self._update_rows(model.item_embedding, state["item_embedding"], s.items, g_embedding, s.used_embedding)
        self._update_rows(model.item_bias, state["item_bias"], s.items, g_bias, s.used_bias)
        if self.input_table is not None:
            self._update_rows(self.input_table, state["input_embedding"], s.items, g_input, s.used_input)
        for h, layer in zip(self.hidden, saved[1:] + [None], strict=True):
            h.copy_(output if layer is None else layer.inputs)

    def _update_dense(self) -> None:
        """Adagrad with momentum on the flat dense weights (``pow(-0.5)``: a faster rsqrt on CPU)."""
        optimizer, grad = self.optimizer, self.flat_grad
        step = grad * self.flat_state["accumulator"].addcmul_(grad, grad).add(ADAGRAD_EPSILON).pow_(-0.5)
        if optimizer.momentum:
            self.flat.add_(self.flat_state["momentum"].mul_(optimizer.momentum).add_(step, alpha=-optimizer.lr))
        else:
            self.flat.add_(step, alpha=-optimizer.lr)

    def _update_rows(self, table: torch.Tensor, state: dict[str, torch.Tensor], index: torch.Tensor,
                     grad: torch.Tensor, used: torch.Tensor | None) -> None:
        """Adagrad with momentum on rows ``index``; ``used`` (None: all) marks the rows the table uses.

        Rows it does not use have a zero gradient: their accumulator gets zero added, and their momentum
        and value are left as they are. Everything is added as deltas through ``index_add_``, which stays
        right with the duplicate padding rows of fixed shapes (and is the fastest row write on CPU).
        """
        optimizer = self.optimizer
        accumulator = state["accumulator"]
        accumulator.index_add_(0, index, grad * grad)
        step = accumulator.index_select(0, index).add_(ADAGRAD_EPSILON).pow_(-0.5).mul_(grad).mul_(-optimizer.lr)
        if optimizer.momentum:
            momentum = state["momentum"].index_select(0, index)
            step.add_(momentum, alpha=optimizer.momentum)
            if used is not None:
                step.mul_(used)
                momentum.mul_(used)
            state["momentum"].index_add_(0, index, step - momentum)
        table.index_add_(0, index, step)

    # --- the epoch ---

    def epoch(self, on_progress: Callable[[int, int], None] | None, progress_every: int) -> float:
        """One pass over the plan; returns the mean loss per training pair."""
        self.model.train()
        for h in self.hidden:
            h.zero_()
        self.total_loss.zero_()
        offsets, steps = self.plan.offsets, self.plan.n_steps
        with torch.no_grad():
            for start in range(0, steps, self.block_steps):
                stop = min(start + self.block_steps, steps)
                for t, index in enumerate(self._prepare(start, stop), start=start):
                    self._run(index)
                    self.optimizer.steps += 1
                    if on_progress is not None and ((t + 1) % progress_every == 0 or t + 1 == steps):
                        on_progress(int(offsets[t + 1]), self.plan.n_pairs)
        return self.total_loss.item() / self.plan.n_pairs

    def _run(self, index: StepIndex) -> None:
        if not self.use_graph:
            self._step(index)
            return
        if self._graph is None:
            self._steps_run += 1
            if self._steps_run <= WARMUP_STEPS:
                stream = torch.cuda.Stream(self.device)
                stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(stream):
                    self._step(index)
                torch.cuda.current_stream(self.device).wait_stream(stream)
                return
            self._capture(index)
        for buffer, value in zip(self._static, index, strict=True):
            if buffer is not None:
                buffer.copy_(value, non_blocking=True)
        self._graph.replay()

    def _capture(self, index: StepIndex) -> None:
        """Record one step as a CUDA graph reading its indexes from static buffers."""
        self._static = StepIndex(*(value.clone() if value is not None else None for value in index))
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(self._static)
        self._graph = graph
        logger.info("captured the training step as a CUDA graph")

