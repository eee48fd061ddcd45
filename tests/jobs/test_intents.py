"""Intent-driven sessions (jobs/intents.py, ``jobs.generate --mode intent``) and their exact ceiling."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.generate import ITEM_ID_OFFSET, generate_clickstream
from jobs.intents import (
    P_GLOBAL,
    P_INTENT,
    P_SUCCESSOR,
    IntentModel,
    build_intent_model,
    ceiling,
    main,
    read_split_sessions,
    sample_sessions,
)

END_DAY = dt.date(2026, 11, 21)
A, B, C = P_SUCCESSOR, P_INTENT, P_GLOBAL


def tiny_model() -> IntentModel:
    """Three items, two intents: intent 0 holds items 0 and 1 (0 <-> 1 successors), intent 1 items 1 and 2
    (1 <-> 2). Item 1 is shared, so after item 1 alone the intent is a coin toss."""
    weights = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    successors = np.zeros((2, 3, 4), dtype=np.int64)
    successors[0, 0], successors[0, 1] = 1, 0
    successors[1, 1], successors[1, 2] = 2, 1
    return IntentModel(np.array([0.5, 0.5]), weights, successors, np.full(3, 1 / 3))


def test_transitions_by_hand() -> None:
    model = tiny_model()
    # From item 0 under intent 0: r(1) = A + B/2 + C/3, r(0) = B/2 + C/3 (excluded), r(2) = C/3.
    stay = 1 - B / 2 - C / 3
    assert model.transition(np.array([0, 0]), np.array([1, 2]))[:, 0] == pytest.approx(
        [(A + B / 2 + C / 3) / stay, (C / 3) / stay])
    # Item 2 is not in intent 0: its successor mass goes to q_0, so 0 and 1 are equally likely.
    outside = 1 - C / 3
    assert model.transition(np.array([2, 2]), np.array([0, 1]))[:, 0] == pytest.approx(
        [((A + B) / 2 + C / 3) / outside] * 2)
    assert model.transition(np.array([1]), np.array([1])).tolist() == [[0.0, 0.0]]  # never a repeat
    for previous in range(3):
        for posterior in ([1.0, 0.0], [0.0, 1.0], [0.3, 0.7]):
            p = model.predictive(np.array([posterior]), np.array([previous]))[0]
            assert p.sum() == pytest.approx(1.0) and p[previous] == 0.0
            following = np.arange(3)
            expected = model.transition(np.full(3, previous), following) @ np.array(posterior)
            assert p == pytest.approx(expected)


def test_ceiling_by_hand_on_a_tiny_generator() -> None:
    model = tiny_model()
    stay = 1 - B / 2 - C / 3
    likely, unlikely = (A + B / 2 + C / 3) / stay, (C / 3) / stay
    # Session 1, 2, 1. After [1]: intents 50/50, so 0 and 2 tie at 1/2 each: the expected Recall@1 and
    # MRR@1 are 1/2, but a ranking that ties them ranks the target 2nd (ties count against it): 0.
    # After [1, 2]: P(z=1) = likely (the likelihood of 1 -> 2 is likely under z=1, unlikely under z=0).
    # Under z=1 the next is 1 with `likely`; under z=0 (2 is outside it) 0 or 1 with 1/2 each.
    p_one = likely * likely + unlikely * 0.5
    result = ceiling(model, np.array([1, 2, 1]), np.array([0, 3]), k=1, mean_length=3.0, max_length=6)
    assert result.n_events == 2
    assert result.bayes_recall == pytest.approx((0.5 + p_one) / 2)
    assert result.bayes_mrr == pytest.approx((0.5 + p_one) / 2)
    assert result.realised_recall == pytest.approx(0.5)  # the tie misses, the second event hits
    # With K = 2 the first event holds both candidates: expected recall 1, MRR 1/2 + 1/2 / 2.
    wider = ceiling(model, np.array([1, 2, 1]), np.array([0, 3]), k=2, mean_length=3.0, max_length=6)
    assert wider.bayes_recall == pytest.approx(1.0)  # only two items can follow either prefix
    assert wider.bayes_mrr == pytest.approx((0.75 + p_one + (1 - p_one) / 2) / 2)
    # Session 0, 1: the first item says intent 0 for sure; next is 1 with `likely`.
    sure = ceiling(model, np.array([0, 1]), np.array([0, 2]), k=1, mean_length=3.0, max_length=6)
    assert sure.bayes_recall == pytest.approx(likely) and sure.realised_recall == 1.0
    # Sessions of one event have no target and are skipped; none with a target is an error.
    assert ceiling(model, np.array([2, 0, 1]), np.array([0, 1, 3]), k=1).n_events == 1
    with pytest.raises(ValueError, match="no session has two or more events"):
        ceiling(model, np.array([2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="item indexes must lie in 0..2"):
        ceiling(model, np.array([0, 3]), np.array([0, 2]))


def test_ceiling_restricted_to_the_known_items() -> None:
    # After [1] the next is 0 or 2 with 1/2 each; with item 2 unknown (not in the vocabulary, so never a
    # target of the split) it is 0 for sure, for the Bayes ranking and the oracle alike.
    model = tiny_model()
    known = np.array([True, True, False])
    result = ceiling(model, np.array([1, 0]), np.array([0, 2]), k=1, mean_length=3.0, max_length=6, known=known)
    assert result.bayes_recall == pytest.approx(1.0) and result.realised_recall == 1.0
    assert result.oracle_recall == pytest.approx(1.0)
    with pytest.raises(ValueError, match="boolean mask over the 3 items"):
        ceiling(model, np.array([1, 0]), np.array([0, 2]), known=np.zeros(3, dtype=bool))


def _empirical_next(items: np.ndarray, offsets: np.ndarray, n_items: int) -> np.ndarray:
    """Counts of (current, next) pairs within sessions."""
    starts = np.zeros(len(items), dtype=bool)
    starts[offsets[:-1]] = True
    follows = ~starts[1:]
    pairs = np.zeros((n_items, n_items))
    np.add.at(pairs, (items[:-1][follows], items[1:][follows]), 1)
    return pairs


def test_sampler_and_last_item_oracle_agree_with_simulation() -> None:
    # The oracle's P(next | current) comes from a forward recursion over positions; a large simulation of
    # the same process (geometric lengths, mean 3, capped at 6) must give the same conditional frequencies.
    model = tiny_model()
    rng = np.random.default_rng(5)
    lengths = np.minimum(rng.geometric(1 / 3.0, 60_000), 6)
    items, intents = sample_sessions(rng, model, lengths)
    offsets = np.r_[0, np.cumsum(lengths)]
    pairs = _empirical_next(items, offsets, 3)
    empirical = pairs / pairs.sum(axis=1, keepdims=True)
    from jobs.intents import _last_item_intents

    oracle_intents = _last_item_intents(model, 3.0, 6)
    exact = model.predictive(oracle_intents, np.arange(3))
    assert np.abs(empirical - exact).max() < 0.01
    # First items follow q_z of the session's intent: item 0 only starts intent-0 sessions.
    assert set(intents[items[offsets[:-1]] == 0].tolist()) == {0}
    # Ties (0 and 2 after a first item 1) cost the realised ranks but not the expectation.
    result = ceiling(model, items[: offsets[3001]], offsets[:3002], k=1, mean_length=3.0, max_length=6)
    assert result.realised_recall < result.bayes_recall
    assert result.bayes_recall > result.oracle_recall


def test_generated_model_has_shared_items_and_history_beats_the_last_item() -> None:
    model = build_intent_model(np.random.default_rng(3), 300)
    assert model.weights.sum(axis=1) == pytest.approx(np.ones(model.n_intents))
    membership = (model.weights > 0).sum(axis=0)
    assert membership.min() >= 1 and membership.max() > 2  # every item in an intent, popular ones in many
    rng = np.random.default_rng(4)
    lengths = np.minimum(rng.geometric(1 / 4.5, 1500), 60)
    items, _ = sample_sessions(rng, model, lengths)
    offsets = np.r_[0, np.cumsum(lengths)]
    result = ceiling(model, items, offsets)
    assert 0 < result.oracle_recall < result.bayes_recall < 1
    assert 0 < result.oracle_mrr < result.bayes_mrr < result.bayes_recall
    assert abs(result.realised_recall - result.bayes_recall) < 0.05


def test_intent_mode_is_deterministic_with_a_seed_and_never_repeats() -> None:
    first = generate_clickstream(END_DAY, 2, 5000, n_items=300, seed=11, dirty_share=0.0, mode="intent")
    assert first.equals(generate_clickstream(END_DAY, 2, 5000, n_items=300, seed=11, dirty_share=0.0,
                                             mode="intent"))
    other = generate_clickstream(END_DAY, 2, 5000, n_items=300, seed=12, dirty_share=0.0, mode="intent")
    assert not first.column("item_id").equals(other.column("item_id"))
    assert not first.column("item_id").equals(
        generate_clickstream(END_DAY, 2, 5000, n_items=300, seed=11, dirty_share=0.0).column("item_id"))
    frame = first.to_pandas().sort_values(["visitor_id", "event_time"], kind="stable")
    same_visitor = frame["visitor_id"].to_numpy()[1:] == frame["visitor_id"].to_numpy()[:-1]
    millis = frame["event_time"].dt.tz_convert(None).to_numpy().astype("datetime64[ms]").astype(np.int64)
    close = np.diff(millis) < 30 * 60 * 1000
    repeated = frame["item_id"].to_numpy()[1:] == frame["item_id"].to_numpy()[:-1]
    assert not (same_visitor & close & repeated).any()
    with pytest.raises(ValueError, match="mode 'hmm'"):
        generate_clickstream(END_DAY, 2, 100, mode="hmm")


def test_ceiling_cli_reads_a_training_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_intent_model(np.random.default_rng(2), 200)
    rng = np.random.default_rng(9)
    lengths = np.minimum(rng.geometric(1 / 4.5, 200), 60)
    items, _ = sample_sessions(rng, model, lengths)
    sessions = np.repeat([f"s{i:04d}" for i in range(len(lengths))], lengths)
    times = pa.array(np.arange(len(items)) * 1000, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    (tmp_path / "test").mkdir()
    shuffled = rng.permutation(len(items))  # the reader must restore the order itself
    table = pa.table({"session_id": sessions, "item_id": (items + ITEM_ID_OFFSET).astype(str),
                      "item_idx": pa.array(items, pa.int32()), "event_time": times}).take(shuffled)
    pq.write_table(table, tmp_path / "test" / "part-0.parquet")
    vocabulary = np.unique(items)
    pq.write_table(pa.table({"item_id": (vocabulary + ITEM_ID_OFFSET).astype(str)}), tmp_path / "items.parquet")
    read_items, read_offsets = read_split_sessions(tmp_path)
    assert read_items.tolist() == items.tolist()
    assert np.diff(read_offsets).tolist() == lengths.tolist()
    assert main(["--training-dir", str(tmp_path), "--items", "200", "--seed", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    known = np.zeros(200, dtype=bool)
    known[vocabulary] = True
    expected = ceiling(build_intent_model(np.random.default_rng(2), 200), items, np.r_[0, np.cumsum(lengths)],
                       known=known)
    assert printed == pytest.approx(expected.to_dict())
    bad = table.set_column(1, "item_id", pa.array(["x"] * len(items)))
    pq.write_table(bad, tmp_path / "test" / "part-0.parquet")
    with pytest.raises(ValueError, match="item_id holds ids jobs.generate did not write"):
        read_split_sessions(tmp_path)
