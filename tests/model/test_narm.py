"""NARM's network (model/narm.py) and trainer (training/narm_trainer.py) on tiny data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.data import SessionDataset
from model.narm import NARM, NARMConfig, NARMScorer, recent_window
from training.evaluate import evaluate
from training.narm_trainer import (
    CHECKPOINT_FILE,
    EARLY_STOPPING_KEY,
    NARMParams,
    PrefixBatches,
    sampled_softmax_losses,
    train,
)

N_ITEMS = 24
TINY = {"embedding": 16, "hidden": 24, "batch_size": 32, "epochs": 2, "learning_rate": 0.01, "seed": 5}


def chain_sessions(n_sessions: int, seed: int, n_items: int = N_ITEMS, max_length: int = 8) -> SessionDataset:
    """Sessions walking j, j+1, j+2, ... (mod n_items) from a random start: the next item is determined."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_length + 1, n_sessions)
    starts = rng.integers(0, n_items, n_sessions)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = (np.repeat(starts, lengths) + position) % n_items
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return SessionDataset(items.astype(np.int64), offsets, np.arange(n_sessions).astype(str), n_items)


def network(seed: int = 0, **changes: object) -> NARM:
    torch.manual_seed(seed)
    return NARM(NARMConfig(n_items=N_ITEMS, embedding=8, hidden=12, **changes)).eval()


def states_of(model: NARM, items: torch.Tensor) -> torch.Tensor:
    return model.encode(model.item_embedding[items])


# --- the network ---

def test_attention_sums_to_one_over_the_positions_seen_and_is_zero_after() -> None:
    model = network()
    with torch.no_grad():
        weights = model.prefix_attention(states_of(model, torch.randint(0, N_ITEMS, (3, 7))))
    assert weights.shape == (3, 7, 7)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(3, 7))
    later = torch.ones(7, 7, dtype=torch.bool).triu(1)
    assert (weights[:, later] == 0).all()
    assert (weights[:, ~later] > 0).all()


def test_last_position_attention_ignores_padding() -> None:
    model = network()
    items = torch.randint(0, N_ITEMS, (2, 6))
    lengths = torch.tensor([6, 3])
    with torch.no_grad():
        weights = model.attention_weights(states_of(model, items), lengths)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert (weights[1, 3:] == 0).all() and (weights[1, :3] > 0).all()


def test_a_later_item_never_changes_earlier_outputs() -> None:
    model = network()
    items = torch.randint(0, N_ITEMS, (1, 8))
    changed = items.clone()
    changed[0, 5] = (items[0, 5] + 1) % N_ITEMS
    with torch.no_grad():
        before = model.prefix_representations(states_of(model, items))
        after = model.prefix_representations(states_of(model, changed))
    torch.testing.assert_close(before[:, :5], after[:, :5], rtol=0, atol=0)
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_prefix_representations_match_scoring_each_prefix_alone() -> None:
    model = network()
    items = torch.randint(0, N_ITEMS, (1, 6))
    with torch.no_grad():
        every = model.score(model.project(model.prefix_representations(states_of(model, items))))[0]
        for t in range(6):
            alone = model.score_sessions(items[:, :t + 1], torch.tensor([t + 1]))[0]
            torch.testing.assert_close(every[t], alone, rtol=1e-5, atol=1e-5)


def test_padding_and_other_rows_do_not_change_a_session_s_scores() -> None:
    model = network()
    session = torch.randint(0, N_ITEMS, (4,))
    padded = torch.randint(0, N_ITEMS, (3, 9))
    padded[1, :4] = session
    alone = model.score_sessions(session.unsqueeze(0), torch.tensor([4]))
    batch = model.score_sessions(padded, torch.tensor([9, 4, 2]))
    torch.testing.assert_close(batch[1], alone[0], rtol=1e-5, atol=1e-5)


def test_scoring_reads_only_the_most_recent_events() -> None:
    model = network(max_session_events=3)
    items = torch.randint(0, N_ITEMS, (1, 7))
    other_start = items.clone()
    other_start[0, :4] = (items[0, :4] + 5) % N_ITEMS
    torch.testing.assert_close(model.score_sessions(items, torch.tensor([7])),
                               model.score_sessions(other_start, torch.tensor([7])), rtol=0, atol=0)
    torch.testing.assert_close(model.score_sessions(items, torch.tensor([7])),
                               model.score_sessions(items[:, 4:], torch.tensor([3])), rtol=0, atol=0)


def test_recent_window_moves_each_row_s_last_events_to_the_front() -> None:
    items = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 0, 0, 0]])
    window = recent_window(items, torch.tensor([5, 2]), cap=3)
    assert window.tolist() == [[3, 4, 5], [6, 7, 0]]


def test_stepwise_scorer_matches_whole_session_scoring_past_the_cap() -> None:
    model = network(max_session_events=4)
    items = torch.randint(0, N_ITEMS, (3, 9))
    lengths = torch.tensor([9, 4, 1])
    expected = model.score_sessions(items, lengths)
    scorer = NARMScorer(model, "cpu")
    scorer.begin(3)
    for t in range(9):
        active = torch.nonzero(lengths > t).flatten()
        scores = scorer.step(active, items[active, t])
        for row, slot in enumerate(active.tolist()):
            if t == lengths[slot] - 1:
                torch.testing.assert_close(scores[row], expected[slot], rtol=1e-5, atol=1e-5)


def test_config_round_trips_and_refuses_unknown_or_bad_values() -> None:
    config = NARMConfig(n_items=10, embedding=4, hidden=6, dropout_embed=0.1)
    assert NARMConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown key"):
        NARMConfig.from_dict({**config.to_dict(), "layers": [3]})
    with pytest.raises(ValueError, match="dropout_context"):
        NARMConfig(n_items=10, dropout_context=1.0)
    with pytest.raises(ValueError, match="hidden"):
        NARMConfig(n_items=10, hidden=0)


def test_initialisation_follows_the_authors() -> None:
    model = NARM(NARMConfig(n_items=5, embedding=4, hidden=6))
    for block in model.gru.weight_hh_l0.detach().split(6, dim=0):
        torch.testing.assert_close(block @ block.t(), torch.eye(6), rtol=1e-5, atol=1e-5)
    assert (model.gru.bias_ih_l0 == 0).all() and (model.gru.bias_hh_l0 == 0).all()


# --- training ---

def test_prefix_batches_hold_every_pair_once_and_stay_near_the_batch_size() -> None:
    data = chain_sessions(200, seed=1, max_length=12)
    batches = PrefixBatches(data, cap=10, batch_pairs=16)
    epoch = batches.epoch(np.random.default_rng(0))
    positions = np.concatenate(epoch)
    assert sorted(positions.tolist()) == list(range(len(batches.sessions)))
    pairs = [int((batches.lengths[b] - 1).sum()) for b in epoch]
    assert sum(pairs) == batches.n_pairs == int((np.minimum(data.lengths(), 10) - 1).sum())
    assert max(pairs) <= 16 + 10
    inputs, targets, has_target = batches.tensors(epoch[0], torch.device("cpu"))
    assert len(targets) == int(has_target.sum()) == pairs[0]
    first = batches.sessions[epoch[0][0]]
    recent = data.session(first)[-batches.lengths[epoch[0][0]]:]
    assert inputs[0, :len(recent) - 1].tolist() == recent[:-1].tolist()


def test_sampled_softmax_equals_full_softmax_when_every_item_is_a_negative() -> None:
    torch.manual_seed(0)
    table = torch.randn(N_ITEMS, 8, requires_grad=True)
    projected = torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, N_ITEMS, (10,))
    full = F.cross_entropy(projected @ table.t(), targets, reduction="none")
    full_grads = torch.autograd.grad(full.sum(), (projected, table))
    everything = torch.arange(N_ITEMS)
    sampled = sampled_softmax_losses(projected, table[targets], table[everything], targets, everything, None)
    sampled_grads = torch.autograd.grad(sampled.sum(), (projected, table))
    torch.testing.assert_close(sampled, full)
    for mine, reference in zip(sampled_grads, full_grads, strict=True):
        torch.testing.assert_close(mine, reference)


def test_sampled_softmax_logq_correction_shifts_each_item_s_score() -> None:
    torch.manual_seed(1)
    projected, table = torch.randn(4, 8), torch.randn(N_ITEMS, 8)
    targets, negatives = torch.tensor([0, 3, 5, 3]), torch.tensor([3, 7, 9])
    log_q = torch.rand(N_ITEMS)
    scores = projected @ table.t() - log_q
    expected = []
    for row, target in enumerate(targets.tolist()):
        columns = [target] + [n for n in negatives.tolist() if n != target]
        expected.append(-torch.log_softmax(scores[row, columns], dim=0)[0])
    got = sampled_softmax_losses(projected, table[targets], table[negatives], targets, negatives, log_q)
    torch.testing.assert_close(got, torch.stack(expected))


def test_the_model_overfits_tiny_data() -> None:
    data = chain_sessions(300, seed=2)
    result = train(data, NARMParams(**{**TINY, "epochs": 15, "dropout_embed": 0.0, "dropout_context": 0.0}))
    metrics = evaluate(NARMScorer(result.model, "cpu"), data, ks=(1, 20))
    assert result.epochs[-1].loss < 0.2 * result.epochs[0].loss
    assert metrics["recall@1"] > 0.95


@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_training_is_deterministic_on_cpu(softmax: str) -> None:
    data = chain_sessions(80, seed=3)
    params = NARMParams(**{**TINY, "softmax": softmax, "n_sample": 8})
    first, second = train(data, params), train(data, params)
    other = train(data, params.replace(seed=6))
    for name, tensor in first.model.state_dict().items():
        torch.testing.assert_close(tensor, second.model.state_dict()[name], rtol=0, atol=0)
    assert [s.loss for s in first.epochs] == [s.loss for s in second.epochs]
    assert not torch.equal(first.model.item_embedding, other.model.item_embedding)


@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_checkpoint_resume_is_exact(tmp_path: Path, softmax: str) -> None:
    data = chain_sessions(80, seed=4)
    valid = chain_sessions(20, seed=5)
    params = NARMParams(**{**TINY, "epochs": 3, "patience": 5, "softmax": softmax, "n_sample": 8})

    def validate_fn(model: NARM) -> float:
        return evaluate(NARMScorer(model, "cpu"), valid, ks=(20,))["recall@20"]

    whole = train(data, params, validate_fn=validate_fn)
    train(data, params.replace(epochs=1), checkpoint_dir=tmp_path)  # other params: refused below
    with pytest.raises(ValueError, match="other parameters"):
        train(data, params, checkpoint_dir=tmp_path)
    (tmp_path / CHECKPOINT_FILE).unlink()

    def stop_after_first(stats: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, params, checkpoint_dir=tmp_path, validate_fn=validate_fn, on_epoch_end=stop_after_first)
    resumed = train(data, params, checkpoint_dir=tmp_path, validate_fn=validate_fn)
    assert [s.loss for s in resumed.epochs] == [s.loss for s in whole.epochs]
    assert resumed.best_epoch == whole.best_epoch
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)
    with pytest.raises(ValueError, match="other data"):
        train(chain_sessions(80, seed=9), params, checkpoint_dir=tmp_path)


def test_checkpoint_is_a_plain_dict_loadable_with_weights_only(tmp_path: Path) -> None:
    train(chain_sessions(40, seed=6), NARMParams(**{**TINY, "epochs": 1}), checkpoint_dir=tmp_path)
    checkpoint = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["epoch"] == 1 and set(checkpoint["model"]) == set(NARM(NARMConfig(
        n_items=N_ITEMS, embedding=16, hidden=24)).state_dict())


def test_early_stopping_keeps_the_best_epoch() -> None:
    data = chain_sessions(60, seed=7)
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])
    seen: list[dict[str, torch.Tensor]] = []

    def validate_fn(model: NARM) -> float:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    result = train(data, NARMParams(**{**TINY, "epochs": 5, "patience": 2}), validate_fn=validate_fn)
    assert len(result.epochs) == 4 and result.best_epoch == 2
    assert [s.eval_metrics[EARLY_STOPPING_KEY] for s in result.epochs] == [0.5, 0.7, 0.6, 0.65]
    for name, tensor in seen[1].items():
        torch.testing.assert_close(result.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_params_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="softmax"):
        NARMParams(softmax="hierarchical")
    with pytest.raises(ValueError, match="unknown NARM parameter"):
        NARMParams.from_dict({"layers": [100]})
    with pytest.raises(ValueError, match="dropout_embed"):
        NARMParams(dropout_embed=1.5)
    assert NARMParams.from_dict(NARMParams().to_dict()) == NARMParams()
