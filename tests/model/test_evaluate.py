"""Full-ranking evaluation: hand-computed ranks and metrics, session-parallel bookkeeping, input checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from model.data import SessionDataset
from training.evaluate import (
    PREFIX_BUCKETS,
    SessionScorer,
    conservative_ranks,
    evaluate,
    list_metrics,
    metrics_from_ranks,
    popularity_percentiles,
    prefix_bucket_metrics,
    session_events,
    top_k_mask,
)


def make_dataset(sessions: list[list[int]], n_items: int) -> SessionDataset:
    lengths = [len(s) for s in sessions]
    items = np.array([i for s in sessions for i in s], dtype=np.int64)
    return SessionDataset(items, np.r_[0, np.cumsum(lengths)].astype(np.int64),
                          np.array([f"s{i}" for i in range(len(sessions))], dtype=object), n_items)


class PrefixTracker:
    """Test scorers' base: keeps every slot's session prefix, like a real stateful model would."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.prefixes: list[list[int]] = []
        self.resets: list[list[int]] = []
        self.seen: list[tuple[int, ...]] = []

    def begin(self, n_slots: int) -> None:
        self.prefixes = [[] for _ in range(n_slots)]

    def reset(self, slots: torch.Tensor) -> None:
        self.resets.append(slots.tolist())
        for slot in slots.tolist():
            self.prefixes[slot] = []

    def step(self, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        rows = []
        for slot, item in zip(slots.tolist(), items.tolist(), strict=True):
            self.prefixes[slot].append(item)
            self.seen.append(tuple(self.prefixes[slot]))
            rows.append(self.score(tuple(self.prefixes[slot])))
        return torch.stack(rows) if rows else torch.zeros(0, self.n_items)

    def score(self, prefix: tuple[int, ...]) -> torch.Tensor:
        raise NotImplementedError


class LastItemScorer(PrefixTracker):
    """Scores = a fixed row per last item: makes every rank computable by hand."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__(len(table[0]))
        self.table = torch.tensor(table)

    def score(self, prefix: tuple[int, ...]) -> torch.Tensor:
        return self.table[prefix[-1]]


class OracleScorer(PrefixTracker):
    """Knows each test prefix's next item; only right if every session starts from an empty prefix."""

    def __init__(self, data: SessionDataset) -> None:
        super().__init__(data.n_items)
        self.next_item = {tuple(data.session(s)[:t + 1].tolist()): int(data.session(s)[t + 1])
                          for s in range(data.n_sessions) for t in range(len(data.session(s)) - 1)}

    def score(self, prefix: tuple[int, ...]) -> torch.Tensor:
        scores = torch.zeros(self.n_items)
        if prefix in self.next_item:
            scores[self.next_item[prefix]] = 1.0
        return scores


class PrefixHashScorer(PrefixTracker):
    """Pseudo-random scores seeded by the whole prefix (with ties): any state mix-up changes the ranks."""

    def score(self, prefix: tuple[int, ...]) -> torch.Tensor:
        rng = np.random.default_rng([len(prefix), *prefix])
        return torch.from_numpy(rng.integers(0, 4, self.n_items).astype(np.float32))


class ConstantScorer(PrefixTracker):
    def score(self, prefix: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(self.n_items)


class RandomScorer(PrefixTracker):
    def __init__(self, n_items: int, seed: int) -> None:
        super().__init__(n_items)
        self.rng = np.random.default_rng(seed)

    def score(self, prefix: tuple[int, ...]) -> torch.Tensor:
        return torch.from_numpy(self.rng.random(self.n_items))


def reference_ranks(scorer: PrefixTracker, data: SessionDataset) -> np.ndarray:
    """Ranks computed one session at a time with plain Python, independently of evaluate()."""
    ranks = []
    for s in range(data.n_sessions):
        session = data.session(s).tolist()
        for t in range(len(session) - 1):
            scores = scorer.score(tuple(session[:t + 1])).tolist()
            ranks.append(sum(score >= scores[session[t + 1]] for score in scores))
    return np.array(ranks)


# Rows: scores given the last input item. Items 0..4.
TABLE = [
    [0.0, 3.0, 2.0, 1.0, 0.0],  # after 0: 1 is rank 1, 2 rank 2, 3 rank 3, 0 and 4 tie last: rank 5
    [1.0, 0.0, 1.0, 1.0, 1.0],  # after 1: 0, 2, 3, 4 all tie at the top: rank 4; 1 rank 5
    [0.0, 0.0, 0.0, 0.0, 5.0],  # after 2: 4 rank 1, everything else rank 5
    [0.5, 0.5, 2.0, 0.5, 1.0],  # after 3: 2 rank 1, 4 rank 2, 0, 1, 3 rank 5
    [4.0, 3.0, 2.0, 1.0, 0.0],  # after 4: item i has rank i + 1
]
# Targets and their ranks: session A 0->1 (1), 1->2 (4), 2->4 (1); B 3->4 (2); C 4->3 (4), 3->0 (5);
# D (one event) has no target; E 0->0 (5).
SESSIONS = [[0, 1, 2, 4], [3, 4], [4, 3, 0], [2], [0, 0]]
RANKS = [1, 4, 1, 2, 4, 5, 5]


def test_conservative_rank_counts_ties_against_the_target() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.2], [0.1, 0.5, 0.5, 0.2], [0.1, 0.5, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0]])
    assert conservative_ranks(scores, torch.tensor([1, 2, 0, 3])).tolist() == [2, 2, 4, 4]


def test_conservative_rank_handles_infinite_scores() -> None:
    scores = torch.tensor([[-torch.inf, 0.0, torch.inf], [-torch.inf, 0.0, torch.inf]])
    assert conservative_ranks(scores, torch.tensor([2, 0])).tolist() == [1, 3]


def test_conservative_rank_rejects_nan_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="NaN"):
        conservative_ranks(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="2-D floating"):
        conservative_ranks(torch.tensor([[1, 2]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="expected 1 targets"):
        conservative_ranks(torch.zeros(1, 3), torch.tensor([0, 1]))


def test_metrics_from_ranks_by_hand() -> None:
    metrics = metrics_from_ranks(np.array([1, 2, 5, 21]), ks=(1, 2, 5, 20))
    assert metrics == pytest.approx({
        "recall@1": 1 / 4, "mrr@1": 1 / 4, "ndcg@1": 1 / 4,
        "recall@2": 2 / 4, "mrr@2": (1 + 1 / 2) / 4, "ndcg@2": (1 + 1 / np.log2(3)) / 4,
        "recall@5": 3 / 4, "mrr@5": (1 + 1 / 2 + 1 / 5) / 4, "ndcg@5": (1 + 1 / np.log2(3) + 1 / np.log2(6)) / 4,
        "recall@20": 3 / 4, "mrr@20": (1 + 1 / 2 + 1 / 5) / 4,
        "ndcg@20": (1 + 1 / np.log2(3) + 1 / np.log2(6)) / 4,
    })


def test_ndcg_of_one_relevant_item_lies_between_mrr_and_recall() -> None:
    ranks = np.arange(1, 31)
    metrics = metrics_from_ranks(ranks, ks=(1, 10, 20))
    assert metrics["ndcg@1"] == metrics["recall@1"] == metrics["mrr@1"]
    for k in (10, 20):
        assert metrics[f"mrr@{k}"] < metrics[f"ndcg@{k}"] < metrics[f"recall@{k}"]


def test_metrics_from_ranks_rejects_empty_or_zero_ranks() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        metrics_from_ranks(np.array([], dtype=np.int64), ks=(1,))
    with pytest.raises(ValueError, match=">= 1"):
        metrics_from_ranks(np.array([0, 1]), ks=(1,))


def test_evaluate_hand_computed_sessions_of_different_lengths() -> None:
    data = make_dataset(SESSIONS, n_items=5)
    metrics = evaluate(LastItemScorer(TABLE), data, ks=(1, 2, 4, 5))
    n = len(RANKS)
    gain = {r: 1 / np.log2(r + 1) for r in (1, 2, 4, 5)}
    assert metrics == pytest.approx({
        "recall@1": 2 / n, "mrr@1": 2 / n, "ndcg@1": 2 / n,
        "recall@2": 3 / n, "mrr@2": (1 + 1 + 1 / 2) / n, "ndcg@2": (2 + gain[2]) / n,
        "recall@4": 5 / n, "mrr@4": (1 + 1 + 1 / 2 + 1 / 4 + 1 / 4) / n, "ndcg@4": (2 + gain[2] + 2 * gain[4]) / n,
        "recall@5": 1.0, "mrr@5": (1 + 1 + 1 / 2 + 1 / 4 + 1 / 4 + 1 / 5 + 1 / 5) / n,
        "ndcg@5": (2 + gain[2] + 2 * gain[4] + 2 * gain[5]) / n,
        # Every target is within 5: each prefix bucket present has recall 1.
        "recall@5_prefix_1": 1.0, "recall@5_prefix_2": 1.0, "recall@5_prefix_3-4": 1.0,
        # Top-5 of 5 items: every item is recommended.
        "coverage@5": 1.0,
        "n_events": 7, "n_sessions": 4,
    })


# Prefix lengths of the targets of SESSIONS: A 1, 2, 3; B 1; C 1, 2; E 1. Their ranks: RANKS.
# Top-2 lists by last item (ties at the 2nd score to the lowest index): 0 -> {1, 2}; 1 -> {0, 2} (0, 2,
# 3, 4 tie); 2 -> {4, 0} (0..3 tie); 3 -> {2, 4}; 4 -> {0, 1}. Inputs: 0, 1, 2, 3, 4, 3, 0, so the lists
# hold item 0 three times, 1 three times, 2 five times, 3 never, 4 three times (14 places).
TOP2_COUNTS = [3, 3, 5, 0, 3]
# Training counts [10, 5, 5, 1, 0]: percentiles (mean rank / 5) 1.0, 0.7, 0.7, 0.4, 0.2.
POPULARITY = np.array([10, 5, 5, 1, 0])


def test_evaluate_beyond_accuracy_by_hand() -> None:
    data = make_dataset(SESSIONS, n_items=5)
    metrics = evaluate(LastItemScorer(TABLE), data, ks=(1, 2), popularity=POPULARITY)
    assert metrics["recall@2_prefix_1"] == pytest.approx(2 / 4)   # ranks 1, 2, 4, 5
    assert metrics["recall@2_prefix_2"] == 0.0                    # ranks 4, 5
    assert metrics["recall@2_prefix_3-4"] == 1.0                  # rank 1
    assert not any(key.endswith(("prefix_5-9", "prefix_10plus")) for key in metrics)
    assert metrics["coverage@2"] == pytest.approx(4 / 5)
    assert metrics["popularity@2"] == pytest.approx((3 * 1.0 + 3 * 0.7 + 5 * 0.7 + 3 * 0.2) / 14)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 512])
def test_session_events_records_prefix_lengths_and_list_counts(batch_size: int) -> None:
    data = make_dataset(SESSIONS, n_items=5)
    results = session_events(LastItemScorer(TABLE), data, batch_size=batch_size, list_length=2)
    assert sorted(zip(results.prefix_lengths.tolist(), results.ranks.tolist(), strict=True)) == sorted(
        [(1, 1), (2, 4), (3, 1), (1, 2), (1, 4), (2, 5), (1, 5)])
    assert results.recommended.tolist() == TOP2_COUNTS


def test_top_k_mask_breaks_ties_by_item_index() -> None:
    scores = torch.tensor([[0.0, 3.0, 2.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 5.0],
                           [-np.inf, 1.0, -np.inf, -np.inf, -np.inf]])
    assert top_k_mask(scores, 2).tolist() == [
        [False, True, True, False, False], [True, False, True, False, False],
        [True, False, False, False, True], [True, True, False, False, False]]
    assert top_k_mask(scores, 9).all()  # longer than the catalogue: every item
    assert (top_k_mask(scores, 3).sum(dim=1) == 3).all()


def test_popularity_percentiles_by_hand() -> None:
    assert popularity_percentiles(POPULARITY) == pytest.approx([1.0, 0.7, 0.7, 0.4, 0.2])
    assert popularity_percentiles(np.array([7, 7, 7, 7])) == pytest.approx([0.625] * 4)
    assert popularity_percentiles(np.array([3])) == pytest.approx([1.0])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        popularity_percentiles(np.array([], dtype=np.int64))


def test_list_metrics_by_hand_and_checks_the_catalogue_size() -> None:
    recommended = np.array(TOP2_COUNTS)
    assert list_metrics(recommended, 2, None) == {"coverage@2": pytest.approx(0.8)}
    # Recommending only the least popular item gives its percentile; only the most popular, 1.
    assert list_metrics(np.array([0, 0, 0, 0, 6]), 2, POPULARITY)["popularity@2"] == pytest.approx(0.2)
    assert list_metrics(np.array([9, 0, 0, 0, 0]), 2, POPULARITY)["popularity@2"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="popularity has 4 items but the scorer ranks 5"):
        list_metrics(recommended, 2, POPULARITY[:4])


def test_prefix_buckets_cover_every_length_once() -> None:
    lengths = np.array([1, 2, 3, 4, 5, 9, 10, 25])
    ranks = np.array([1, 30, 1, 30, 30, 1, 1, 30])
    assert prefix_bucket_metrics(ranks, lengths, 20) == {
        "recall@20_prefix_1": 1.0, "recall@20_prefix_2": 0.0, "recall@20_prefix_3-4": 0.5,
        "recall@20_prefix_5-9": 0.5, "recall@20_prefix_10plus": 0.5}
    assert [label for label, _, _ in PREFIX_BUCKETS] == ["1", "2", "3-4", "5-9", "10plus"]
    with pytest.raises(ValueError, match="2 ranks but 3 prefix lengths"):
        prefix_bucket_metrics(np.array([1, 2]), np.array([1, 2, 3]), 20)


def test_evaluate_returns_the_documented_keys_in_order() -> None:
    metrics = evaluate(LastItemScorer(TABLE), make_dataset(SESSIONS, n_items=5), popularity=POPULARITY)
    assert list(metrics) == ["recall@1", "mrr@1", "ndcg@1", "recall@5", "mrr@5", "ndcg@5",
                             "recall@10", "mrr@10", "ndcg@10", "recall@20", "mrr@20", "ndcg@20",
                             "recall@20_prefix_1", "recall@20_prefix_2", "recall@20_prefix_3-4",
                             "coverage@20", "popularity@20", "n_events", "n_sessions"]
    assert isinstance(metrics["n_events"], int) and isinstance(metrics["n_sessions"], int)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 512])
def test_evaluate_feeds_each_session_from_an_empty_state(batch_size: int) -> None:
    data = make_dataset(SESSIONS, n_items=5)
    scorer = LastItemScorer(TABLE)
    evaluate(scorer, data, batch_size=batch_size)
    expected = [tuple(s[:t + 1]) for s in SESSIONS for t in range(len(s) - 1)]
    assert sorted(scorer.seen) == sorted(expected)
    n_slots = min(batch_size, 4)
    assert sum(len(r) for r in scorer.resets) == 4 - n_slots


def test_oracle_scores_perfectly_only_with_resets_at_session_boundaries() -> None:
    data = make_dataset([[0, 1, 2], [3, 4], [1, 0, 2, 3], [4, 3, 1]], n_items=5)
    metrics = evaluate(OracleScorer(data), data, batch_size=2)
    assert {k: v for k, v in metrics.items() if k.split("@")[0] in ("recall", "mrr", "ndcg", "n_events",
                                                                      "n_sessions")} == pytest.approx({
        **{f"{name}@{k}": 1.0 for k in (1, 5, 10, 20) for name in ("recall", "mrr", "ndcg")},
        "recall@20_prefix_1": 1.0, "recall@20_prefix_2": 1.0, "recall@20_prefix_3-4": 1.0,
        "n_events": 8, "n_sessions": 4,
    })


class ForgetfulOracle(OracleScorer):
    """Ignores resets: a slot's second session continues the first one's prefix."""

    def reset(self, slots: torch.Tensor) -> None:
        self.resets.append(slots.tolist())


def test_a_scorer_that_ignores_resets_is_caught() -> None:
    data = make_dataset([[0, 1, 2], [3, 4], [1, 0, 2, 3], [4, 3, 1]], n_items=5)
    metrics = evaluate(ForgetfulOracle(data), data, ks=(1,), batch_size=2)
    assert metrics["recall@1"] == pytest.approx(3 / 8)


def random_sessions(n_sessions: int, n_items: int, seed: int) -> SessionDataset:
    rng = np.random.default_rng(seed)
    return make_dataset([rng.integers(0, n_items, rng.integers(1, 9)).tolist() for _ in range(n_sessions)],
                        n_items)


def test_metrics_do_not_depend_on_batch_size_and_match_a_plain_loop() -> None:
    data = random_sessions(60, n_items=30, seed=3)
    expected = metrics_from_ranks(reference_ranks(PrefixHashScorer(30), data), (1, 5, 10, 20))
    first = evaluate(PrefixHashScorer(30), data, batch_size=1)
    assert {k: first[k] for k in expected} == expected
    assert first["n_events"] == data.n_pairs and first["n_sessions"] == int((data.lengths() >= 2).sum())
    for batch_size in (3, 7, 512):
        # Exactly equal: the metrics sum sorted ranks, whatever order the slots produced them in, and
        # ties in the top-K lists go to the lowest index, whatever the batch.
        assert evaluate(PrefixHashScorer(30), data, batch_size=batch_size) == first
    assert 0 < expected["recall@5"] < expected["recall@20"] < 1


def test_constant_scores_rank_every_target_last() -> None:
    # Conservative ranks: all items tie with the target, so its rank is n_items and Recall@K is 0 for
    # K < n_items (never the optimistic 1), and 1 once K reaches n_items.
    data = random_sessions(40, n_items=50, seed=1)
    metrics = evaluate(ConstantScorer(50), data, ks=(1, 20, 49, 50))
    assert metrics["recall@20"] == 0.0 and metrics["recall@49"] == 0.0
    assert metrics["recall@50"] == 1.0 and metrics["mrr@50"] == pytest.approx(1 / 50)


def test_random_scores_give_recall_of_k_over_n_items() -> None:
    data = random_sessions(800, n_items=100, seed=2)
    metrics = evaluate(RandomScorer(100, seed=5), data, ks=(1, 20))
    n = metrics["n_events"]
    assert n > 2000
    for k in (1, 20):
        p = k / 100
        assert abs(metrics[f"recall@{k}"] - p) < 4 * np.sqrt(p * (1 - p) / n)


class NoHostCopy(torch.Tensor):
    """A score tensor that fails if anything copies it (2-D) to host memory."""

    @classmethod
    def __torch_function__(cls, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        copies = {torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.tolist, torch.Tensor.to}
        if func in copies and isinstance(args[0], torch.Tensor) and args[0].ndim == 2:
            raise AssertionError(f"score matrix copied with {func.__name__}")
        return super().__torch_function__(func, types, args, kwargs or {})


class GuardedScorer(LastItemScorer):
    def step(self, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return super().step(slots, items).as_subclass(NoHostCopy)


def test_ranks_are_computed_without_copying_the_score_matrix() -> None:
    data = make_dataset(SESSIONS, n_items=5)
    assert evaluate(GuardedScorer(TABLE), data, ks=(1,))["recall@1"] == pytest.approx(2 / 7)


class DeviceScorer(LastItemScorer):
    def step(self, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return super().step(slots, items).cuda()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_on_an_accelerator_give_the_same_metrics() -> None:
    data = make_dataset(SESSIONS, n_items=5)
    assert evaluate(DeviceScorer(TABLE), data) == evaluate(LastItemScorer(TABLE), data)


def test_test_scorers_implement_the_protocol() -> None:
    assert isinstance(LastItemScorer(TABLE), SessionScorer)
    assert not isinstance(object(), SessionScorer)


@pytest.mark.parametrize(("ks", "message"), [
    ((), "non-empty"), ((0, 5), "positive"), ((-1,), "positive"), ((1.5,), "positive"),
    ((True,), "positive"), ("20", "positive"), ((5, 5), "distinct"),
])
def test_evaluate_rejects_bad_ks(ks: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(LastItemScorer(TABLE), make_dataset(SESSIONS, n_items=5), ks=ks)


@pytest.mark.parametrize("batch_size", [0, -3, 2.0, True])
def test_evaluate_rejects_bad_batch_size(batch_size: object) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(LastItemScorer(TABLE), make_dataset(SESSIONS, n_items=5), batch_size=batch_size)


def test_evaluate_rejects_mismatched_vocabularies() -> None:
    with pytest.raises(ValueError, match="scorer ranks 5 items but the data has 6"):
        evaluate(LastItemScorer(TABLE), make_dataset(SESSIONS, n_items=6))


def test_evaluate_rejects_wrong_argument_types() -> None:
    with pytest.raises(TypeError, match="SessionScorer"):
        evaluate(object(), make_dataset(SESSIONS, n_items=5))
    with pytest.raises(TypeError, match="SessionDataset"):
        evaluate(LastItemScorer(TABLE), SESSIONS)


def test_evaluate_rejects_data_without_targets() -> None:
    with pytest.raises(ValueError, match="none of the 2 sessions"):
        evaluate(LastItemScorer(TABLE), make_dataset([[1], [2]], n_items=5))


class NaNScorer(LastItemScorer):
    def score(self, prefix: tuple[int, ...]) -> torch.Tensor:
        return torch.full((self.n_items,), float("nan")) if len(prefix) == 2 else super().score(prefix)


class WrongShapeScorer(LastItemScorer):
    def step(self, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return super().step(slots, items)[:, :-1]


class NumpyScorer(LastItemScorer):
    def step(self, slots: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return super().step(slots, items).numpy()


def test_evaluate_rejects_bad_scores() -> None:
    data = make_dataset(SESSIONS, n_items=5)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(NaNScorer(TABLE), data)
    with pytest.raises(ValueError, match=r"WrongShapeScorer.step returned \(4, 4\); expected .*\(4, 5\)"):
        evaluate(WrongShapeScorer(TABLE), data)
    with pytest.raises(ValueError, match="NumpyScorer.step returned ndarray"):
        evaluate(NumpyScorer(TABLE), data)
