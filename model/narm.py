"""NARM, the neural attentive session recommender (Li et al., CIKM 2017, arXiv 1711.04725).

Items are embedded (one table for input and output), a GRU runs over the session, and the session at
position t is represented by two encoders concatenated, attention context first:

    local:   c_l = sum_{j <= t} a_tj h_j,   a_t = softmax_j(v^T sigmoid(A_1 h_t + A_2 h_j))   (j <= t only)
    global:  c_g = h_t
    score(i) = emb_i^T B [c_l; c_g]   for every item i (the bilinear decoder)

The attention weights are normalised over the positions seen so far (the authors' code does so; the
paper writes the unnormalised sum), and a position never attends to a later one, so one GRU pass and one
causally masked attention give the representation of every prefix of a session at once
(:meth:`NARM.prefix_representations`, what training uses). Dropout acts on the embedded items before the
GRU and on [c_l; c_g] before the decoder.

The GRU is torch's standard ``nn.GRU`` (sigmoid gates, reset gate applied to the recurrent product)
rather than the authors' hard-sigmoid variant. Initialisation follows the authors: normal with standard
deviation sqrt(2 / fan_in) for the item embedding (fan-in: the one-hot input, n_items), the GRU's input
matrices, the attention matrices and the decoder; orthogonal recurrent matrices; zero biases.

Only the most recent ``max_session_events`` events of a session are used, in training and in scoring,
so one very long session has a bounded cost.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.storage import network_fields


@dataclass(frozen=True)
class NARMConfig:
    """Network shape: paper defaults (D 50, H 100, dropout 0.25 on items and 0.5 on the representation)."""

    n_items: int
    embedding: int = 50
    hidden: int = 100
    dropout_embed: float = 0.25
    dropout_context: float = 0.5
    max_session_events: int = 50

    def __post_init__(self) -> None:
        for name in ("n_items", "embedding", "hidden", "max_session_events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("dropout_embed", "dropout_context"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NARMConfig:
        return cls(**network_fields(cls, d))


def _he_normal_(tensor: torch.Tensor, fan_in: int) -> None:
    nn.init.normal_(tensor, 0.0, math.sqrt(2.0 / fan_in))


class NARM(nn.Module):
    """Embedding -> GRU -> [attention context; last state] -> bilinear decoder over every item."""

    family = "narm"

    def __init__(self, config: NARMConfig) -> None:
        super().__init__()
        self.config = config
        d, h = config.embedding, config.hidden
        self.item_embedding = nn.Parameter(torch.empty(config.n_items, d))
        self.gru = nn.GRU(d, h, batch_first=True)
        self.attention_query = nn.Linear(h, h, bias=False)  # A_1, applied to the last state
        self.attention_key = nn.Linear(h, h, bias=False)  # A_2, applied to every state
        self.attention_weight = nn.Linear(h, 1, bias=False)  # v
        self.decoder = nn.Linear(2 * h, d, bias=False)  # B
        self.reset_parameters()

    @property
    def n_items(self) -> int:
        return self.config.n_items

    @property
    def device(self) -> torch.device:
        return self.item_embedding.device

    @property
    def max_session_events(self) -> int:
        return self.config.max_session_events

    def reset_parameters(self) -> None:
        h = self.config.hidden
        with torch.no_grad():
            _he_normal_(self.item_embedding, self.config.n_items)
            _he_normal_(self.gru.weight_ih_l0, self.config.embedding)
            for block in self.gru.weight_hh_l0.split(h, dim=0):
                nn.init.orthogonal_(block)
            self.gru.bias_ih_l0.zero_()
            self.gru.bias_hh_l0.zero_()
            for layer in (self.attention_query, self.attention_key, self.attention_weight):
                _he_normal_(layer.weight, h)
            _he_normal_(self.decoder.weight, 2 * h)

    def item_parameter_names(self) -> set[str]:
        """Parameters with one row per item (a mini-batch may update only the rows it touches)."""
        return {"item_embedding"}

    def _dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        return F.dropout(x, p, training=True) if self.training and p > 0 else x

    def encode(self, embedded: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        """GRU states [B, L, H] of right-padded embedded sessions [B, L, D] (padding only follows).

        States at padded positions are computed but never used: the GRU reads left to right, so a
        session's states do not depend on the padding after it.
        """
        states, _ = self.gru(self._dropout(embedded, self.config.dropout_embed),
                             None if h0 is None else h0.unsqueeze(0))
        return states

    def _attention_logits(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """v^T sigmoid(q + k) for every (query, key) pair: queries [B, T, H], keys [B, L, H] -> [B, T, L]."""
        return self.attention_weight(torch.sigmoid(queries.unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)

    def prefix_attention(self, states: torch.Tensor) -> torch.Tensor:
        """Attention of every position t (query h_t) over positions 0..t: [B, L(t), L(j)], zero for j > t."""
        length = states.shape[1]
        logits = self._attention_logits(self.attention_query(states), self.attention_key(states))
        later = torch.ones(length, length, dtype=torch.bool, device=states.device).triu(1)
        return torch.softmax(logits.masked_fill(later, float("-inf")), dim=-1)

    def prefix_representations(self, states: torch.Tensor) -> torch.Tensor:
        """[c_l; c_g] after every position [B, L, 2H]: position t attends to positions 0..t only."""
        return torch.cat((torch.bmm(self.prefix_attention(states), states), states), dim=-1)

    def _last_attention(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Attention of each session's last state over its positions, on the valid positions only.

        Returns (the N valid states [N, H] session by session, each one's session [N], their weights [N],
        the last states [n, H]): padding costs nothing, however long the longest session of the batch.
        """
        n, device = len(lengths), states.device
        valid = torch.arange(states.shape[1], device=device).unsqueeze(0) < lengths.unsqueeze(1)
        kept = states[valid]
        session = torch.repeat_interleave(torch.arange(n, device=device), lengths)
        last = states[torch.arange(n, device=device), lengths - 1]
        logits = self.attention_weight(torch.sigmoid(self.attention_query(last).index_select(0, session)
                                                     + self.attention_key(kept))).squeeze(-1)
        peak = torch.full((n,), float("-inf"), device=device, dtype=logits.dtype)
        peak = peak.scatter_reduce(0, session, logits, "amax")
        weights = (logits - peak.index_select(0, session)).exp()
        total = torch.zeros(n, device=device, dtype=logits.dtype).index_add(0, session, weights)
        return kept, session, weights / total.index_select(0, session), last

    def attention_weights(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Each session's attention over its positions with its last state as the query: [n, L], zero on
        padding. ``states`` [n, L, H] right-padded, ``lengths`` [n] >= 1."""
        _, session, weights, _ = self._last_attention(states, lengths)
        valid = torch.arange(states.shape[1], device=states.device).unsqueeze(0) < lengths.unsqueeze(1)
        return torch.zeros(valid.shape, device=states.device, dtype=weights.dtype).masked_scatter(valid, weights)

    def last_representations(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[c_l; c_g] after each session's last event [n, 2H] (``lengths`` >= 1)."""
        kept, session, weights, last = self._last_attention(states, lengths)
        context = torch.zeros_like(last).index_add(0, session, weights.unsqueeze(1) * kept)
        return torch.cat((context, last), dim=-1)

    def project(self, representations: torch.Tensor) -> torch.Tensor:
        """B [c_l; c_g] (after dropout): the vector every item embedding is scored against, [..., D]."""
        return self.decoder(self._dropout(representations, self.config.dropout_context))

    def score(self, projected: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every item ([N, n_items]) or of the rows ``items`` ([N, K]) from projections [N, D]."""
        table = self.item_embedding if items is None else self.item_embedding.index_select(0, items)
        return projected @ table.t()

    @torch.no_grad()
    def score_sessions(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Next-item scores [n, n_items] of right-padded sessions ``items`` [n, L] with ``lengths`` [n] >= 1.

        Only each session's most recent ``max_session_events`` events are read. No grad, on the network's
        device; call ``eval()`` first (the Recommender does) or dropout applies.
        """
        if items.ndim != 2 or lengths.shape != (items.shape[0],):
            raise ValueError(f"expected items [n, L] and lengths [n], got {tuple(items.shape)} and "
                             f"{tuple(lengths.shape)}")
        device = self.device
        items, lengths = items.to(device, torch.long), lengths.to(device, torch.long)
        if len(lengths) and (lengths.min() < 1 or lengths.max() > items.shape[1]):
            raise ValueError(f"lengths must lie in [1, {items.shape[1]}]")
        if not len(lengths):
            return torch.zeros(0, self.n_items, device=device)
        window = recent_window(items, lengths, self.max_session_events)
        kept = lengths.clamp(max=self.max_session_events)
        # Packed, the GRU runs only each session's own steps, not the longest one's.
        packed = pack_padded_sequence(self.item_embedding[window], kept.cpu(), batch_first=True,
                                      enforce_sorted=False)
        states, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True)
        return self.score(self.project(self.last_representations(states, kept)))


def recent_window(items: torch.Tensor, lengths: torch.Tensor, cap: int) -> torch.Tensor:
    """Each row's last min(length, cap) items, moved to the front: [n, min(L, cap)], right-padded with 0."""
    width = min(items.shape[1], cap)
    start = (lengths - cap).clamp(min=0)
    columns = start.unsqueeze(1) + torch.arange(width, device=items.device).unsqueeze(0)
    inside = columns < lengths.unsqueeze(1)
    return torch.where(inside, items.gather(1, columns.clamp(max=items.shape[1] - 1)), 0)


class NARMScorer:
    """The evaluator's stepwise protocol (training/evaluate.py) over NARM, one event per slot per step.

    Each slot keeps its GRU state and the states of its last ``max_session_events`` events; the new
    event's state is one GRU step from the kept state, so a step costs one GRU step plus one attention
    over the kept states. Once a session outgrows the cap, its window of recent items is re-encoded from a
    zero state each step, exactly as :meth:`NARM.score_sessions` reads it.
    """

    def __init__(self, model: NARM, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.n_items = model.n_items
        self._states = self._items = self._count = self._hidden = None

    def begin(self, n_slots: int) -> None:
        self.model.eval()
        cap, hidden = self.model.max_session_events, self.model.config.hidden
        self._states = torch.zeros(n_slots, cap, hidden, device=self.device)
        self._items = torch.zeros(n_slots, cap, dtype=torch.long, device=self.device)
        self._count = torch.zeros(n_slots, dtype=torch.long, device=self.device)
        self._hidden = torch.zeros(n_slots, hidden, device=self.device)

    def reset(self, slots: torch.Tensor) -> None:
        slots = slots.to(self.device, torch.long)
        self._count.index_fill_(0, slots, 0)
        self._hidden.index_fill_(0, slots, 0.0)

    @torch.no_grad()
    def step(self, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self._states is None:
            raise RuntimeError("NARMScorer.step called before begin()")
        model, cap = self.model, self.model.max_session_events
        slots, items = slots.to(self.device, torch.long), items.to(self.device, torch.long)
        count = self._count.index_select(0, slots)
        full = count >= cap
        growing, sliding = slots[~full], slots[full]
        if len(growing):
            position = self._count.index_select(0, growing)
            new = model.encode(model.item_embedding[items[~full]].unsqueeze(1),
                               self._hidden.index_select(0, growing)).squeeze(1)
            self._hidden.index_copy_(0, growing, new)
            self._states[growing, position] = new
            self._items[growing, position] = items[~full]
            self._count.index_add_(0, growing, torch.ones_like(growing))
        if len(sliding):
            window = torch.cat((self._items[sliding, 1:], items[full].unsqueeze(1)), dim=1)
            states = model.encode(model.item_embedding[window])
            self._items[sliding] = window
            self._states[sliding] = states
            self._hidden[sliding] = states[:, -1]
        lengths = self._count.index_select(0, slots)
        states = self._states[:, :int(lengths.max())].index_select(0, slots)
        return model.score(model.project(model.last_representations(states, lengths)))
