"""Sessions driven by a latent shopping intent, with an exactly computable accuracy ceiling.

``python -m jobs.generate --mode intent`` draws its sessions from :class:`IntentModel`;
``python -m jobs.intents`` computes, for the test split of a training set built from them, the best
Recall@K / MRR@K any model can expect (Bayes-optimal) and what an oracle that sees only the current item
can expect::

    python -m jobs.intents --training-dir var/lake/training/ds=2026-11-21 --items 2000 --seed 1 [--k 20]

The generative process (numbers are the module constants):

- Each intent has a few home items (every item is the home of exactly one intent) and shares some more
  items drawn by global (Zipf) popularity, so popular items belong to several intents and the current item
  alone does not say which intent a session follows. Within its items an intent has Zipf-like weights
  ``q_z`` and, for each of its items, ``len(SUCCESSOR_WEIGHTS)`` successors drawn from ``q_z``.
- A session draws intent ``z`` from the prior, its first item from ``q_z``, and then each next item from
  ``r(j | i, z) = P_SUCCESSOR * successor_z(i, j) + P_INTENT * q_z(j) + P_GLOBAL * g(j)`` (an item
  outside ``z``, reached by a global jump, has no successors there: its successor mass goes to ``q_z``),
  conditioned on ``j != i``: consecutive repeats never occur, so sessionizing removes nothing.

The ceiling, per test event with prefix ``x_1..x_t``: the posterior over intents given the prefix, then the
predictive distribution ``p`` of the next item. Ranking by ``p`` maximises the expected Recall@K and
MRR@K; that expectation is the sum of the K largest ``p`` and ``sum_r p_(r) / r``. Under the project's
metric ties count against the model, so a scorer with tied scores can only do worse: equal probabilities
ranked in any strict order give the same expectation, which is the ceiling. The last-item oracle ranks by
``P(next | current item)``, which averages the intents over every position an item can occupy (weighted
by the session length distribution); its expectation is taken under the same ``p``. On a training set's
test split both are restricted to the vocabulary (the only items a model can rank, and the only targets
the split keeps).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds

from jobs.generate import ITEM_ID_OFFSET, MAX_SESSION_LENGTH, MEAN_SESSION_LENGTH

log = logging.getLogger(__name__)

HOME_ITEMS_PER_INTENT = 25
SHARED_ITEMS_PER_INTENT = 35
INTENT_ZIPF_EXPONENT = 0.8   # item weights within an intent
PRIOR_ZIPF_EXPONENT = 0.5    # intent prior
GLOBAL_ZIPF_EXPONENT = 1.0   # global popularity (jumps and shared items)
SUCCESSOR_WEIGHTS = (0.5, 0.25, 0.15, 0.1)
P_SUCCESSOR = 0.55
P_INTENT = 0.35
P_GLOBAL = 0.10
EVENT_CHUNK = 2048           # events whose predictive distributions are held at once


@dataclass(frozen=True)
class IntentModel:
    """The generative model's parameters, indexed by intent and item index."""

    prior: np.ndarray       # (Z,) intent probabilities
    weights: np.ndarray     # (Z, N) q_z: item distribution of each intent (0 outside the intent)
    successors: np.ndarray  # (Z, N, S) successor items of i within z (unused where i is not in z)
    popularity: np.ndarray  # (N,) g: global jump distribution

    @property
    def n_items(self) -> int:
        return self.weights.shape[1]

    @property
    def n_intents(self) -> int:
        return len(self.prior)

    def raw_next(self, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each previous item: (mass of each intent's q_z, True where the item belongs to the intent),
        both (E, Z). An item's successor mass goes to q_z when the item is not in z."""
        member = (self.weights[:, previous] > 0).T
        return np.where(member, P_INTENT, P_INTENT + P_SUCCESSOR), member

    def transition(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        """P(following | previous, z) for every intent z: (E, Z), repeats excluded and renormalised."""
        intent_mass, member = self.raw_next(previous)
        succ = self.successors[:, previous, :].transpose(1, 0, 2)  # (E, Z, S)
        weights = np.asarray(SUCCESSOR_WEIGHTS)
        to_following = ((succ == following[:, None, None]) * weights).sum(axis=2)
        raw = (P_SUCCESSOR * member * to_following + intent_mass * self.weights[:, following].T
               + P_GLOBAL * self.popularity[following][:, None])
        return np.where((following == previous)[:, None], 0.0, raw) / self._stay_complement(previous)

    def _stay_complement(self, previous: np.ndarray) -> np.ndarray:
        """1 - r(i | i, z) for each previous item i and intent z: (E, Z). Successors are never i itself."""
        intent_mass, _ = self.raw_next(previous)
        return 1.0 - intent_mass * self.weights[:, previous].T - P_GLOBAL * self.popularity[previous][:, None]

    def predictive(self, posterior: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """P(next item | intent posterior (E, Z), current item): (E, N), rows summing to 1."""
        w = posterior / self._stay_complement(previous)
        intent_mass, member = self.raw_next(previous)
        p = (w * intent_mass) @ self.weights + w.sum(axis=1, keepdims=True) * P_GLOBAL * self.popularity
        succ = self.successors[:, previous, :].transpose(1, 0, 2)  # (E, Z, S)
        values = (P_SUCCESSOR * w * member)[:, :, None] * np.asarray(SUCCESSOR_WEIGHTS)
        cells = (succ + (np.arange(len(previous)) * self.n_items)[:, None, None]).ravel()
        p += np.bincount(cells, values.ravel(), minlength=p.size).reshape(p.shape)
        p[np.arange(len(previous)), previous] = 0.0
        return p

    def start_log_posterior(self, first: np.ndarray) -> np.ndarray:
        """log P(z, x_1) for each first item (E, Z)."""
        with np.errstate(divide="ignore"):
            return np.log(self.prior)[None, :] + np.log(self.weights[:, first].T)


def _zipf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.power(rng.permutation(n) + 1.0, exponent)
    return weights / weights.sum()


def build_intent_model(rng: np.random.Generator, n_items: int) -> IntentModel:
    """Intents over ``n_items`` items (see the module docstring); deterministic given ``rng``."""
    if n_items < 2:
        raise ValueError(f"an intent model needs at least 2 items, got {n_items}")
    n_intents = max(1, math.ceil(n_items / HOME_ITEMS_PER_INTENT))
    popularity = _zipf(rng, n_items, GLOBAL_ZIPF_EXPONENT)
    home = rng.permutation(n_items) % n_intents
    weights = np.zeros((n_intents, n_items))
    successors = np.zeros((n_intents, n_items, len(SUCCESSOR_WEIGHTS)), dtype=np.int64)
    for z in range(n_intents):
        own = np.flatnonzero(home == z)
        others = np.flatnonzero(home != z)
        n_shared = min(SHARED_ITEMS_PER_INTENT, len(others))
        shared = (rng.choice(others, n_shared, replace=False, p=popularity[others] / popularity[others].sum())
                  if n_shared else others)
        members = np.concatenate([own, shared])  # at least 2: n_items >= 2 home items, or shared ones
        q = _zipf(rng, len(members), INTENT_ZIPF_EXPONENT)
        weights[z, members] = q
        picks = rng.choice(len(members), (len(members), len(SUCCESSOR_WEIGHTS)), p=q)
        own_position = np.arange(len(members))[:, None]
        picks = np.where(picks == own_position, (picks + 1) % len(members), picks)  # never the item itself
        successors[z, members] = members[picks]
    return IntentModel(_zipf(rng, n_intents, PRIOR_ZIPF_EXPONENT), weights, successors, popularity)


def _draw_rows(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One column per entry of ``rows`` from row-wise distributions given as cumulative sums (R, N)."""
    flat = (cdf + np.arange(len(cdf))[:, None]).ravel()  # each row's cdf ends at 1: shift row r by r
    positions = np.searchsorted(flat, rows + u * cdf[rows, -1], side="right")
    return np.clip(positions - rows * cdf.shape[1], 0, cdf.shape[1] - 1)


def sample_sessions(rng: np.random.Generator, model: IntentModel,
                    lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item index of every event, sessions back to back; intent of every session)."""
    n_events = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    items = np.empty(n_events, dtype=np.int64)
    intent_cdf = np.cumsum(model.weights, axis=1)
    global_cdf = np.cumsum(model.popularity)
    intent = np.minimum(np.searchsorted(np.cumsum(model.prior), rng.random(len(lengths)) * model.prior.sum(),
                                        side="right"), model.n_intents - 1)
    items[starts] = _draw_rows(intent_cdf, intent, rng.random(len(lengths)))
    by_length = np.argsort(-lengths, kind="stable")
    descending = lengths[by_length]
    thresholds = np.cumsum([P_SUCCESSOR, P_INTENT])
    rank_cdf = np.cumsum(SUCCESSOR_WEIGHTS)
    for step in range(1, int(lengths.max(initial=0))):
        active = by_length[: np.searchsorted(-descending, -step, side="left")]
        previous = items[starts[active] + step - 1]
        z = intent[active]
        following = previous.copy()
        pending = np.ones(len(active), dtype=bool)
        while pending.any():  # redraw the rows that repeated the current item: r(. | i, z) given j != i
            rows = np.flatnonzero(pending)
            kind = np.searchsorted(thresholds, rng.random(len(rows)), side="right")
            in_intent = model.weights[z[rows], previous[rows]] > 0
            kind = np.where((kind == 0) & ~in_intent, 1, kind)
            draw = np.empty(len(rows), dtype=np.int64)
            succ = kind == 0
            rank = np.minimum(np.searchsorted(rank_cdf, rng.random(int(succ.sum())) * rank_cdf[-1], side="right"),
                              len(rank_cdf) - 1)
            draw[succ] = model.successors[z[rows[succ]], previous[rows[succ]], rank]
            topic = kind == 1
            draw[topic] = _draw_rows(intent_cdf, z[rows[topic]], rng.random(int(topic.sum())))
            jump = kind == 2
            draw[jump] = np.minimum(np.searchsorted(global_cdf, rng.random(int(jump.sum())) * global_cdf[-1],
                                                    side="right"), model.n_items - 1)
            following[rows] = draw
            pending[rows] = draw == previous[rows]
        items[starts[active] + step] = following
    return items, intent


def _top_k_expectations(truth: np.ndarray, ranking: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Expected Recall@k and MRR@k per row when the target follows ``truth`` (E, N) and items are ranked by
    ``ranking`` (E, N) in strict descending order (equal values in any order)."""
    k = min(k, truth.shape[1])
    top = np.argpartition(-ranking, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(ranking, top, axis=1), axis=1, kind="stable")
    mass = np.take_along_axis(truth, np.take_along_axis(top, order, axis=1), axis=1)
    return mass.sum(axis=1), (mass / np.arange(1, k + 1)).sum(axis=1)


def _last_item_intents(model: IntentModel, mean_length: float, max_length: int) -> np.ndarray:
    """P(z | the current item is i, and a next item follows): (N, Z) rows summing to 1.

    Sums, over every position t a session can have a next item at, P(z) P(x_t = i | z) P(length > t),
    with the geometric session lengths (capped at ``max_length``) that jobs/generate.py draws.
    """
    stop = 1.0 / mean_length
    alpha = model.weights.copy()  # (Z, N): P(x_t = i | z), starting at t = 1
    joint = np.zeros_like(alpha)
    items = np.arange(model.n_items)
    stay = model._stay_complement(items).T  # (Z, N)
    intent_mass, member = model.raw_next(items)  # (N, Z)
    weights = np.asarray(SUCCESSOR_WEIGHTS)
    targets = (model.successors + (np.arange(model.n_intents) * model.n_items)[:, None, None]).ravel()
    for t in range(1, max_length):
        joint += (1.0 - stop) ** t * alpha
        u = alpha / stay  # mass leaving each item, before the no-repeat renormalisation
        following = (u * intent_mass.T).sum(axis=1, keepdims=True) * model.weights \
            + u.sum(axis=1, keepdims=True) * P_GLOBAL * model.popularity
        following += np.bincount(targets, (P_SUCCESSOR * (u * member.T)[:, :, None] * weights).ravel(),
                                 minlength=following.size).reshape(following.shape)
        # Remove the repeat mass r(i | i, z) u_i that the renormalisation excluded.
        following -= u * (intent_mass.T * model.weights + P_GLOBAL * model.popularity)
        alpha = following
    joint *= model.prior[:, None]
    total = joint.sum(axis=0)
    return (joint / np.where(total > 0, total, 1.0)).T


@dataclass(frozen=True)
class Ceiling:
    """Expected and realised accuracy of the Bayes-optimal ranking and of the last-item oracle."""

    k: int
    n_events: int
    bayes_recall: float    # expected, per event, under the true predictive distribution
    bayes_mrr: float
    oracle_recall: float   # the last-item oracle's expectation under the same distribution
    oracle_mrr: float
    realised_recall: float  # the Bayes ranking's hits on the targets that actually followed
    realised_mrr: float

    def to_dict(self) -> dict[str, float | int]:
        return {"k": self.k, "n_events": self.n_events,
                f"bayes_recall@{self.k}": self.bayes_recall, f"bayes_mrr@{self.k}": self.bayes_mrr,
                f"last_item_oracle_recall@{self.k}": self.oracle_recall,
                f"last_item_oracle_mrr@{self.k}": self.oracle_mrr,
                f"bayes_realised_recall@{self.k}": self.realised_recall,
                f"bayes_realised_mrr@{self.k}": self.realised_mrr}


def ceiling(model: IntentModel, items: np.ndarray, offsets: np.ndarray, k: int = 20,
            mean_length: float | None = None, max_length: int | None = None,
            known: np.ndarray | None = None) -> Ceiling:
    """The ceiling over every next-item event of the sessions ``items[offsets[s]:offsets[s + 1]]``.

    ``known`` (a boolean mask over items) restricts the catalogue to the items a model can rank, as a
    training set's vocabulary does: its test split keeps only targets in the vocabulary, so the predictive
    distribution is conditioned on the next item being known (restricted and renormalised).

    Realised ranks count ties against the ranking, as training/evaluate.py does. ``mean_length`` and
    ``max_length`` (of the session length distribution the last-item oracle averages over) default to
    jobs/generate.py's.
    """
    items, offsets = np.asarray(items, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
    if known is not None and (known.shape != (model.n_items,) or not known.any()):
        raise ValueError(f"known must be a boolean mask over the {model.n_items} items with at least one set")
    if len(items) and (items.min() < 0 or items.max() >= model.n_items):
        raise ValueError(f"item indexes must lie in 0..{model.n_items - 1}; got {items.min()}..{items.max()}")
    lengths = np.diff(offsets)
    sessions = np.flatnonzero(lengths >= 2)
    if not len(sessions):
        raise ValueError("no session has two or more events: nothing to rank")
    last_item_intents = _last_item_intents(model, mean_length or MEAN_SESSION_LENGTH,
                                           max_length or MAX_SESSION_LENGTH)
    log_post = model.start_log_posterior(items[offsets[sessions]])
    sums = np.zeros(6)
    n_events = 0
    for t in range(int(lengths.max())):
        alive = lengths[sessions] > t + 1
        sessions, log_post = sessions[alive], log_post[alive]
        if not len(sessions):
            break
        current, target = items[offsets[sessions] + t], items[offsets[sessions] + t + 1]
        for chunk in range(0, len(sessions), EVENT_CHUNK):
            part = slice(chunk, chunk + EVENT_CHUNK)
            posterior = np.exp(log_post[part] - log_post[part].max(axis=1, keepdims=True))
            truth = model.predictive(posterior / posterior.sum(axis=1, keepdims=True), current[part])
            oracle = model.predictive(last_item_intents[current[part]], current[part])
            if known is not None:
                truth[:, ~known] = 0.0
                truth /= np.maximum(truth.sum(axis=1, keepdims=True), np.finfo(float).tiny)
                oracle[:, ~known] = -1.0  # never ranked
            bayes = _top_k_expectations(truth, truth, k)
            by_oracle = _top_k_expectations(truth, oracle, k)
            rank = (truth >= truth[np.arange(len(truth)), target[part]][:, None]).sum(axis=1)
            hit = rank <= k
            sums += [bayes[0].sum(), bayes[1].sum(), by_oracle[0].sum(), by_oracle[1].sum(), hit.sum(),
                     (hit / rank).sum()]
        n_events += len(sessions)
        # A pair no intent can produce (an event between them dropped by the pipeline, say) leaves the
        # posterior as it was instead of zeroing it.
        likelihood = model.transition(current, target)
        likelihood[likelihood.sum(axis=1) == 0] = 1.0
        with np.errstate(divide="ignore"):
            log_post = log_post + np.log(likelihood)
    means = sums / n_events
    return Ceiling(k, n_events, *(float(v) for v in means))


def read_split_sessions(training_dir: Path | str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """A training set split's sessions as generator item indexes (from ``item_id``) and offsets."""
    path = Path(training_dir) / split
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: split folder not found (is {training_dir} a training set?)")
    table = ds.dataset(path, format="parquet").to_table(columns=["session_id", "item_id", "event_time"])
    table = table.sort_by([("session_id", "ascending"), ("event_time", "ascending")])
    try:
        items = pc.cast(table.column("item_id"), "int64").to_numpy() - ITEM_ID_OFFSET
    except Exception as exc:  # pyarrow raises ArrowInvalid for non-numeric ids
        raise ValueError(f"{path}: column item_id holds ids jobs.generate did not write: {exc}") from exc
    sessions = table.column("session_id").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, sessions[1:] != sessions[:-1]])
    return items, np.r_[starts, len(items)].astype(np.int64)


def read_known_items(training_dir: Path | str, n_items: int) -> np.ndarray:
    """The training set's vocabulary (``items.parquet``) as a boolean mask over generator item indexes."""
    path = Path(training_dir) / "items.parquet"
    ids = pc.cast(ds.dataset(path, format="parquet").to_table(columns=["item_id"]).column("item_id"), "int64")
    indexes = ids.to_numpy() - ITEM_ID_OFFSET
    if len(indexes) and (indexes.min() < 0 or indexes.max() >= n_items):
        raise ValueError(f"{path}: item ids outside the {n_items} generated items; wrong --items?")
    known = np.zeros(n_items, dtype=bool)
    known[indexes] = True
    return known


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bayes-optimal and last-item-oracle accuracy of the "
                                                 "intent-generated data's test split")
    parser.add_argument("--training-dir", type=Path, required=True, help="training set folder (training/ds=D)")
    parser.add_argument("--items", type=int, required=True, help="--items given to jobs.generate")
    parser.add_argument("--seed", type=int, required=True, help="--seed given to jobs.generate")
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = build_intent_model(np.random.default_rng(args.seed), args.items)
    items, offsets = read_split_sessions(args.training_dir, args.split)
    known = read_known_items(args.training_dir, args.items)
    print(json.dumps(ceiling(model, items, offsets, args.k, known=known).to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
