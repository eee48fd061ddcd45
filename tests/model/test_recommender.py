"""Batched recommendations: against a naive one-session-at-a-time computation, chunk independence, the
unknown-item and fallback rules, and refusal of tampered model folders."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from model.data import Vocabulary
from model.network import GRU4Rec, GRU4RecConfig
from model.recommender import Recommendations, Recommender, encode_sessions


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    rng = np.random.default_rng(5)
    return Vocabulary(np.array([f"v{i:02d}" for i in range(40)], dtype=object), rng.integers(1, 500, 40))


@pytest.fixture(scope="module")
def network(vocabulary: Vocabulary) -> GRU4Rec:
    torch.manual_seed(7)
    return GRU4Rec(GRU4RecConfig(n_items=len(vocabulary), layers=(24, 16))).eval()


@pytest.fixture(scope="module")
def sessions(vocabulary: Vocabulary) -> list[list[str]]:
    """Sessions of 1 to 12 items (some repeated), some with unknown ids, one empty, one all unknown."""
    rng = np.random.default_rng(9)
    ids = list(vocabulary.item_ids)
    out = [[ids[i] for i in rng.integers(0, len(ids), rng.integers(1, 13))] for _ in range(30)]
    out[3].insert(1, "unknown-a")
    out[8].append("unknown-b")
    out[12] = []
    out[20] = ["unknown-c", "unknown-d"]
    return out


def naive_scores(network: GRU4Rec, vocabulary: Vocabulary, session: list[str]) -> torch.Tensor | None:
    """All item scores after feeding the session's known items one at a time to a batch of one."""
    known = [i for i in vocabulary.lookup(session).tolist() if i >= 0] if session else []
    if not known:
        return None
    with torch.no_grad():
        hidden = network.init_hidden(1)
        for item in known:
            output, hidden = network(torch.tensor([item]), hidden)
        return network.score(output)[0]


def rows_of(result: Recommendations, session: int) -> slice:
    where = np.flatnonzero(result.session_index == session)
    return slice(where[0], where[-1] + 1)


def test_shape_ranks_and_dtypes(network: GRU4Rec, vocabulary: Vocabulary, sessions: list[list[str]]) -> None:
    result = Recommender(network, vocabulary).recommend(sessions, k=7)
    assert len(result) == 7 * len(sessions)
    assert result.session_index.dtype == np.int64 and result.rank.dtype == np.int32
    assert result.score.dtype == np.float32 and result.fallback.dtype == bool
    np.testing.assert_array_equal(result.session_index, np.repeat(np.arange(len(sessions)), 7))
    np.testing.assert_array_equal(result.rank, np.tile(np.arange(1, 8), len(sessions)))
    assert set(result.item_id) <= set(vocabulary.item_ids)
    for s in range(len(sessions)):
        rows = rows_of(result, s)
        assert np.all(np.diff(result.score[rows]) <= 0), f"session {s}: scores not descending"
        assert len(set(result.item_id[rows])) == 7, f"session {s}: repeated item"


def test_matches_naive_one_session_at_a_time(network: GRU4Rec, vocabulary: Vocabulary,
                                             sessions: list[list[str]]) -> None:
    k = 10
    result = Recommender(network, vocabulary, chunk_size=8).recommend(sessions, k=k)
    checked = 0
    for s, session in enumerate(sessions):
        scores = naive_scores(network, vocabulary, session)
        if scores is None:
            continue
        last = [i for i in vocabulary.lookup(session).tolist() if i >= 0][-1]
        scores[last] = float("-inf")
        rows = rows_of(result, s)
        chosen = vocabulary.lookup(list(result.item_id[rows]))
        np.testing.assert_allclose(result.score[rows], scores[chosen].numpy(), rtol=1e-5, atol=1e-5)
        expected = torch.topk(scores, k)
        assert list(chosen) == expected.indices.tolist(), f"session {s}: top-{k} differs from the naive one"
        checked += 1
    assert checked == len(sessions) - 2


def test_result_does_not_depend_on_the_other_sessions_of_a_chunk(network: GRU4Rec, vocabulary: Vocabulary,
                                                                  sessions: list[list[str]]) -> None:
    recommender = Recommender(network, vocabulary, chunk_size=4)
    target = sessions[5]
    ids = list(vocabulary.item_ids)
    long_companions = [ids[:25], ids[5:30], ids[::-1][:20]]
    short_companions = [[ids[1]], [ids[2]], [ids[3], ids[4]]]
    alone = recommender.recommend([target], k=12)
    for companions in (long_companions, short_companions, sessions[:5] + sessions[6:]):
        for position in (0, len(companions)):
            batch = companions[:position] + [target] + companions[position:]
            for chunk_size in (2, 4, 1000):
                together = Recommender(network, vocabulary, chunk_size=chunk_size).recommend(batch, k=12)
                rows = rows_of(together, position)
                np.testing.assert_array_equal(together.item_id[rows], alone.item_id)
                np.testing.assert_allclose(together.score[rows], alone.score, rtol=1e-5, atol=1e-6)


def test_exclude_last_removes_only_the_last_known_item(network: GRU4Rec, vocabulary: Vocabulary) -> None:
    ids = list(vocabulary.item_ids)
    session = [ids[4], ids[9], ids[2], "unknown-x"]
    recommender = Recommender(network, vocabulary)
    everything = recommender.recommend([session], k=len(ids), exclude_last=False)
    excluded = recommender.recommend([session], k=len(ids), exclude_last=True)
    assert sorted(everything.item_id) == sorted(ids)
    assert sorted(excluded.item_id) == sorted(set(ids) - {ids[2]})
    assert ids[4] in set(excluded.item_id) and ids[9] in set(excluded.item_id)


def test_unknown_items_are_skipped_and_counted(network: GRU4Rec, vocabulary: Vocabulary) -> None:
    ids = list(vocabulary.item_ids)
    recommender = Recommender(network, vocabulary)
    clean = recommender.recommend([[ids[1], ids[2]]], k=5)
    noisy = recommender.recommend([["x1", ids[1], "x2", ids[2], "x3"]], k=5)
    np.testing.assert_array_equal(noisy.item_id, clean.item_id)
    np.testing.assert_allclose(noisy.score, clean.score, rtol=1e-6)
    assert (noisy.unknown_items, clean.unknown_items) == (3, 0)
    assert noisy.fallback_sessions == 0 and not noisy.fallback.any()


def test_sessions_without_known_items_get_the_most_popular_items(network: GRU4Rec, vocabulary: Vocabulary,
                                                                 sessions: list[list[str]]) -> None:
    result = Recommender(network, vocabulary).recommend(sessions, k=5)
    assert result.fallback_sessions == 2
    assert result.unknown_items == 4
    by_count = vocabulary.item_ids[np.lexsort((np.arange(len(vocabulary)), -vocabulary.counts))][:5]
    for s in (12, 20):
        rows = rows_of(result, s)
        assert result.fallback[rows].all()
        np.testing.assert_array_equal(result.item_id[rows], by_count)
        assert np.all(np.diff(result.score[rows]) <= 0)
    others = np.isin(result.session_index, [12, 20], invert=True)
    assert not result.fallback[others].any()


def test_trained_model_recommends_the_next_item_of_a_chain(trained_model_dir: Path,
                                                          chain_items: list[str]) -> None:
    recommender = Recommender.from_directory(trained_model_dir, device="cpu")
    n = len(chain_items)
    starts = [0, 17, 33, n - 2]
    sessions = [[chain_items[s], chain_items[(s + 1) % n]] for s in starts]
    result = recommender.recommend(sessions, k=3)
    top = result.item_id[result.rank == 1]
    assert list(top) == [chain_items[(s + 2) % n] for s in starts]


def test_to_arrow_and_pandas_carry_the_session_ids(network: GRU4Rec, vocabulary: Vocabulary) -> None:
    ids = list(vocabulary.item_ids)
    result = Recommender(network, vocabulary).recommend([[ids[0]], ["nope"]], k=3)
    table = result.to_arrow(["a", "b"])
    assert table.column_names == ["session_id", "rank", "item_id", "score", "fallback"]
    assert table.column("session_id").to_pylist() == ["a"] * 3 + ["b"] * 3
    assert table.column("item_id").to_pylist() == list(result.item_id)
    assert table.column("score").to_pylist() == pytest.approx(result.score.tolist())
    for ids_in_arrow in (pa.array(["a", "b"]), pa.chunked_array([["a"], ["b"]])):
        assert result.to_arrow(ids_in_arrow).equals(table)
    frame = result.to_pandas(np.array(["a", "b"], dtype=object))
    assert frame["fallback"].tolist() == [False] * 3 + [True] * 3
    assert frame["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    with pytest.raises(ValueError, match="one id per session"):
        result.to_arrow(["a"])


def test_bad_arguments_are_refused(network: GRU4Rec, vocabulary: Vocabulary) -> None:
    recommender = Recommender(network, vocabulary)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            recommender.recommend([["v01"]], k=k)
    with pytest.raises(TypeError, match="item ids as strings"):
        recommender.recommend([["v01", 7]])
    with pytest.raises(ValueError, match="scores 12 items"):
        Recommender(GRU4Rec(GRU4RecConfig(n_items=12)), vocabulary)


def test_k_is_capped_by_the_vocabulary(network: GRU4Rec, vocabulary: Vocabulary) -> None:
    result = Recommender(network, vocabulary).recommend([["v01"], []], k=500)
    assert len(result) == 2 * (len(vocabulary) - 1)


def test_encode_sessions_keeps_the_order_of_known_items(vocabulary: Vocabulary) -> None:
    encoded = encode_sessions([["v03", "zz", "v01"], [], ["zz"], ["v02"]], vocabulary)
    np.testing.assert_array_equal(encoded.lengths, [2, 0, 0, 1])
    np.testing.assert_array_equal(encoded.items, vocabulary.lookup(["v03", "v01", "v02"]))
    assert encoded.unknown_items == 2


class _WritesMarker:
    """Unpickling this object would create a file: the proof that loading executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickled_object_in_model_pt_is_refused_without_running_it(trained_model_dir: Path,
                                                                     tmp_path: Path, writer: str) -> None:
    folder = tmp_path / "model"
    shutil.copytree(trained_model_dir, folder)
    marker = tmp_path / "code-ran"
    payload = {"item_embedding": _WritesMarker(marker)}
    with (folder / "model.pt").open("wb") as out:
        torch.save(payload, out) if writer == "torch.save" else pickle.dump(payload, out)
    with pytest.raises(ValueError, match="model.pt: not a plain state_dict of tensors; refusing to load objects"):
        Recommender.from_directory(folder, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("change", [
    {"network": {"unexpected": 1}},
    {"network": {"n_items": "60"}},
    {"network": {"layers": "32"}},
    {"format_version": 3},
    {"family": "unknown"},
])
def test_a_config_with_unexpected_keys_or_types_is_refused(trained_model_dir: Path, tmp_path: Path,
                                                           change: dict) -> None:
    folder = tmp_path / "model"
    shutil.copytree(trained_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json"):
        Recommender.from_directory(folder, device="cpu")
