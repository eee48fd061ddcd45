"""Baselines: hand-checked scores on tiny data, the SessionScorer contract, and sane numbers on real data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv
import pytest
import torch

from model.data import SessionDataset, Vocabulary, dataset_from_table
from training.baselines import (
    BASELINES,
    BPRMF,
    VSKNN,
    ItemKNN,
    Pop,
    PrefixScorer,
    SequentialRules,
    SPop,
    fit_baselines,
)
from training.evaluate import SessionScorer, evaluate


def make_dataset(sessions: list[list[int]], n_items: int) -> SessionDataset:
    lengths = [len(s) for s in sessions]
    items = np.array([i for s in sessions for i in s], dtype=np.int64)
    return SessionDataset(items, np.r_[0, np.cumsum(lengths)].astype(np.int64),
                          np.array([f"s{i}" for i in range(len(sessions))], dtype=object), n_items)


# Sessions in time order. Item counts: 0: 5, 1: 4, 2: 3, 3: 1, 4: 1, 5: 0.
# As sets: s0 {0,1,2}, s1 {0,1}, s2 {1,2,3}, s3 {0,4}, s4 {1,2}; items are in 3, 4, 3, 1, 1, 0 sessions.
TRAIN = make_dataset([[0, 1, 2], [0, 1, 0], [1, 2, 3], [0, 4, 0], [2, 1]], n_items=6)


def scores_after(scorer: PrefixScorer, session: list[int]) -> list[float]:
    """Scores a fitted scorer gives after feeding ``session`` to slot 0."""
    scorer.begin(1)
    for item in session:
        scores = scorer.step(torch.tensor([0]), torch.tensor([item]))
    return scores[0].tolist()


def test_pop_scores_train_counts_for_every_session() -> None:
    pop = Pop().fit(TRAIN)
    assert scores_after(pop, [3]) == [5, 4, 3, 1, 1, 0]
    assert scores_after(pop, [5, 4, 3]) == [5, 4, 3, 1, 1, 0]


def test_spop_prefers_items_of_the_session_then_popular_ones() -> None:
    scores = scores_after(SPop().fit(TRAIN), [3, 4, 3])
    assert scores == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 + 1 / 6, 1 + 1 / 6, 0])
    assert np.argsort(scores)[::-1].tolist() == [3, 4, 0, 1, 2, 5]


def test_iknn_cosine_without_regularisation() -> None:
    # After 0: c01 = 2, c02 = 1, c04 = 1; sessions holding 0, 1, 2, 4: 3, 4, 3, 1. Never the item itself.
    scores = scores_after(ItemKNN(lam=0.0).fit(TRAIN), [3, 0])
    assert scores == pytest.approx([0, 2 / np.sqrt(3 * 4), 1 / np.sqrt(3 * 3), 0, 1 / np.sqrt(3 * 1), 0])


def test_iknn_regularisation_damps_rare_items() -> None:
    scores = scores_after(ItemKNN(lam=20.0).fit(TRAIN), [0])
    assert scores == pytest.approx([0, 2 / np.sqrt(23 * 24), 1 / np.sqrt(23 * 23), 0, 1 / np.sqrt(23 * 21), 0])
    assert scores[4] < scores[1]  # without lam, 0 -> 4 (one session) ties 0 -> 1 (two)


def test_iknn_keeps_the_top_neighbours_and_scores_the_last_item() -> None:
    # After 1: sim(1, 2) = 3 / sqrt(12), sim(1, 0) = 2 / sqrt(12), sim(1, 3) = 1 / 2: 3 is dropped.
    scores = scores_after(ItemKNN(lam=0.0, n_neighbours=2).fit(TRAIN), [4, 1])
    assert scores == pytest.approx([2 / np.sqrt(12), 0, 3 / np.sqrt(12), 0, 0, 0])


def test_sr_weights_rules_by_inverse_distance_and_normalises() -> None:
    # From 0 within 2 steps: 0->1 (d1 in s0, s1), 0->2 (d2 in s0), 0->0 (d2 in s1, s3), 0->4 (d1 in s3).
    scores = scores_after(SequentialRules(max_distance=2).fit(TRAIN), [5, 0])
    assert scores == pytest.approx([1 / 4.5, 2 / 4.5, 0.5 / 4.5, 0, 1 / 4.5, 0])
    assert sum(scores) == pytest.approx(1.0)


def test_sr_max_distance_and_pruning() -> None:
    assert scores_after(SequentialRules(max_distance=1).fit(TRAIN), [0]) == pytest.approx([0, 2 / 3, 0, 0, 1 / 3, 0])
    # From 1 within 2 steps: 1->2 (d1 in s0, s2), 1->0 (d1 in s1), 1->3 (d2 in s2); keep the two strongest.
    scores = scores_after(SequentialRules(max_distance=2, n_rules=2).fit(TRAIN), [1])
    assert scores == pytest.approx([1 / 3.5, 0, 2 / 3.5, 0, 0, 0])


def test_sr_item_without_rules_scores_zero() -> None:
    assert scores_after(SequentialRules().fit(TRAIN), [3]) == [0.0] * 6


def test_vsknn_sums_position_weighted_similarities() -> None:
    # Session [0, 2]: weights 0 -> 1/2, 2 -> 1. Similarities s0 1.5, s1 .5, s2 1, s3 .5, s4 1.
    scores = scores_after(VSKNN().fit(TRAIN), [0, 2])
    assert scores == pytest.approx([1.5 + 0.5 + 0.5, 1.5 + 0.5 + 1 + 1, 1.5 + 1 + 1, 1, 0.5, 0])


def test_vsknn_keeps_the_k_most_similar_ties_to_the_more_recent() -> None:
    # k = 2: s0 (1.5), then s4 over s2 (both 1, s4 is more recent).
    scores = scores_after(VSKNN(k=2).fit(TRAIN), [0, 2])
    assert scores == pytest.approx([1.5, 1.5 + 1, 1.5 + 1, 0, 0, 0])


def test_vsknn_samples_the_most_recent_sessions_sharing_items() -> None:
    # sample_size = 2: s4 (1) and s3 (.5) only.
    scores = scores_after(VSKNN(sample_size=2).fit(TRAIN), [0, 2])
    assert scores == pytest.approx([0.5, 1, 1, 0, 0.5, 0])


def test_vsknn_repeated_item_keeps_its_latest_weight() -> None:
    # Session [2, 0, 2]: 2 -> 3/3, 0 -> 2/3 (not 1/3 + 3/3 for 2). s2 holds 2 only, s3 holds 0 only.
    scores = scores_after(VSKNN().fit(TRAIN), [2, 0, 2])
    assert scores[3] == pytest.approx(1.0) and scores[4] == pytest.approx(2 / 3)


def test_vsknn_idf_weighting() -> None:
    # Items 0 and 2 are each in 3 of 5 sessions: idf log(5 / 3).
    scores = scores_after(VSKNN(idf=True).fit(TRAIN), [0, 2])
    assert scores[3] == pytest.approx(np.log(5 / 3)) and scores[4] == pytest.approx(0.5 * np.log(5 / 3))


def clustered_sessions(n_sessions: int, seed: int) -> SessionDataset:
    """Four clusters of ten items; every session stays inside one cluster."""
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, 4, n_sessions)
    return make_dataset([(10 * c + rng.integers(0, 10, rng.integers(2, 6))).tolist() for c in clusters], 40)


def test_bprmf_learns_the_cluster_structure() -> None:
    train, test = clustered_sessions(600, seed=1), clustered_sessions(150, seed=2)
    metrics = evaluate(BPRMF(n_factors=8, epochs=20, batch_size=256).fit(train), test, ks=(10,))
    assert metrics["recall@10"] > 0.9  # uniform random scores would get about 10 / 40


def test_bprmf_is_deterministic_given_the_seed() -> None:
    first = scores_after(BPRMF(epochs=2, seed=7).fit(TRAIN), [0, 2])
    assert scores_after(BPRMF(epochs=2, seed=7).fit(TRAIN), [0, 2]) == first
    assert scores_after(BPRMF(epochs=2, seed=8).fit(TRAIN), [0, 2]) != first


def test_bprmf_scores_with_the_mean_item_vector_plus_bias() -> None:
    bprmf = BPRMF(epochs=2).fit(TRAIN)
    factors, bias = bprmf.item_factors, bprmf.item_bias
    expected = (factors[[0, 2, 2]].mean(0) @ factors.T + bias).tolist()
    assert scores_after(bprmf, [0, 2, 2]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_follow_the_scorer_contract(name: str) -> None:
    scorer = fit_baselines(TRAIN, [name])[name]
    assert isinstance(scorer, SessionScorer) and scorer.n_items == 6
    test = make_dataset([[0, 1, 2, 1], [2, 1], [4, 0, 0], [1, 3, 2, 0, 1]], n_items=6)
    assert evaluate(scorer, test, batch_size=1) == evaluate(scorer, test, batch_size=3)
    scorer.begin(3)
    scores = scorer.step(torch.tensor([2, 0]), torch.tensor([1, 4]))
    assert scores.shape == (2, 6) and scores.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_reset_clears_a_slot(name: str) -> None:
    scorer = fit_baselines(TRAIN, [name])[name]
    fresh = scores_after(scorer, [2])
    scorer.begin(2)
    scorer.step(torch.tensor([0, 1]), torch.tensor([0, 4]))
    scorer.step(torch.tensor([0, 1]), torch.tensor([1, 1]))
    scorer.reset(torch.tensor([0]))
    scores = scorer.step(torch.tensor([1, 0]), torch.tensor([3, 2]))
    assert scores[1].tolist() == pytest.approx(fresh)


def test_long_sessions_grow_the_prefix_buffer() -> None:
    spop = SPop().fit(TRAIN)
    scores = scores_after(spop, [3] * 11 + [4] * 9)
    assert scores[3] == pytest.approx(11 + 1 / 6) and scores[4] == pytest.approx(9 + 1 / 6)


def test_scorer_input_validation() -> None:
    with pytest.raises(RuntimeError, match="SPop is not fitted"):
        SPop().begin(2)
    with pytest.raises(TypeError, match="SessionDataset"):
        SPop().fit([[0, 1]])
    with pytest.raises(ValueError, match="no events"):
        SPop().fit(make_dataset([], n_items=3))
    spop = SPop().fit(TRAIN)
    with pytest.raises(ValueError, match="n_slots"):
        spop.begin(0)
    spop.begin(2)
    with pytest.raises(ValueError, match=r"slot indexes must lie in \[0, 2\)"):
        spop.step(torch.tensor([2]), torch.tensor([0]))
    with pytest.raises(ValueError, match="distinct"):
        spop.step(torch.tensor([1, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="1-D LongTensor"):
        spop.reset(torch.tensor([0.0]))
    with pytest.raises(ValueError, match=r"item indexes must lie in \[0, 6\)"):
        spop.step(torch.tensor([0]), torch.tensor([6]))
    with pytest.raises(ValueError, match="one item per slot"):
        spop.step(torch.tensor([0, 1]), torch.tensor([1]))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: ItemKNN(lam=-1.0), "ItemKNN: lam must be a number >= 0"),
    (lambda: ItemKNN(n_neighbours=0), "ItemKNN: n_neighbours must be a positive integer"),
    (lambda: SequentialRules(max_distance=2.5), "SequentialRules: max_distance must be a positive integer"),
    (lambda: SequentialRules(n_rules=True), "SequentialRules: n_rules must be a positive integer"),
    (lambda: BPRMF(epochs=0), "BPRMF: epochs must be a positive integer"),
    (lambda: BPRMF(reg=float("nan")), "BPRMF: reg must be a number >= 0"),
    (lambda: BPRMF(lr=0.0), "BPRMF: lr must be > 0"),
    (lambda: BPRMF(seed="1"), "seed an integer"),
    (lambda: VSKNN(k=-5), "VSKNN: k must be a positive integer"),
    (lambda: VSKNN(sample_size=None), "VSKNN: sample_size must be a positive integer"),
])
def test_parameters_are_checked(make: Callable[[], PrefixScorer], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_fit_baselines_names() -> None:
    assert set(fit_baselines(TRAIN)) == set(BASELINES) == {"pop", "spop", "iknn", "bprmf", "sr", "vsknn"}
    assert list(fit_baselines(TRAIN, ["sr", "pop"])) == ["sr", "pop"]
    with pytest.raises(ValueError, match=r"unknown baseline\(s\) \['gru'\]"):
        fit_baselines(TRAIN, ["pop", "gru"])
    with pytest.raises(TypeError, match="not the string 'pop'"):
        fit_baselines(TRAIN, "pop")


def test_fit_baselines_passes_the_seed_to_bprmf() -> None:
    assert fit_baselines(TRAIN, ["bprmf"], seed=5)["bprmf"].seed == 5


class Yoochoose(NamedTuple):
    train: SessionDataset
    test: SessionDataset
    train_table: pa.Table
    test_table: pa.Table


@pytest.fixture(scope="module")
def yoochoose(shared_data: Path) -> Yoochoose:
    folder = shared_data / "yoochoose-rsc15-100k"
    options = csv.ParseOptions(delimiter="\t")
    train_table = csv.read_csv(folder / "yoochoose-clicks-100k_train_full.txt", parse_options=options)
    test_table = csv.read_csv(folder / "yoochoose-clicks-100k_test.txt", parse_options=options)
    counts = pc.value_counts(pc.cast(train_table.column("ItemId"), pa.string()))
    vocabulary = Vocabulary.from_counts(np.asarray(counts.field("values").to_pylist()),
                                        counts.field("counts").to_numpy())
    columns = {"session_col": "SessionId", "item_col": "ItemId", "time_col": "Time"}
    train, _ = dataset_from_table(train_table, vocabulary, **columns)
    test, dropped = dataset_from_table(test_table, vocabulary, **columns)
    assert dropped == 0 and (train.n_items, test.n_events, test.n_sessions) == (2933, 13568, 3416)
    return Yoochoose(train, test, train_table, test_table)


def pop_recall_at_20(train_table: pa.Table, test_table: pa.Table) -> float:
    """Pop's conservative Recall@20 straight from the raw files with pandas, independently of model/."""
    counts = train_table.to_pandas().ItemId.value_counts()
    test = test_table.to_pandas().sort_values(["SessionId", "Time"], kind="stable")
    targets = test.ItemId[test.SessionId.duplicated(keep="first")]
    ranks = np.searchsorted(-counts.to_numpy(), -counts[targets].to_numpy(), side="right")
    return float((ranks <= 20).mean())


def test_baselines_on_the_yoochoose_sample(yoochoose: Yoochoose) -> None:
    results = {name: evaluate(scorer, yoochoose.test) for name, scorer in fit_baselines(yoochoose.train).items()}
    recall = {name: m["recall@20"] for name, m in results.items()}
    assert all(m["n_events"] == 13568 - 3416 and m["n_sessions"] == 3416 for m in results.values())
    assert recall["pop"] == pytest.approx(pop_recall_at_20(yoochoose.train_table, yoochoose.test_table))
    assert 0.06 < recall["pop"] < 0.12
    assert recall["spop"] > 3 * recall["pop"]
    assert min(recall["iknn"], recall["bprmf"], recall["sr"], recall["vsknn"]) > 0.35
    assert min(recall["sr"], recall["vsknn"]) > 0.55 and recall["sr"] > recall["iknn"]
    assert all(results[name]["mrr@20"] < recall[name] for name in BASELINES)
