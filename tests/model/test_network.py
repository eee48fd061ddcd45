"""The GRU4Rec network (model/network.py): configuration, initialisation, the GRU step, scoring, the scorer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from model.data import SessionDataset
from model.network import GRU4Rec, GRU4RecConfig, GRU4RecScorer
from training.evaluate import evaluate


def network(seed: int = 0, **config: object) -> GRU4Rec:
    torch.manual_seed(seed)
    return GRU4Rec(GRU4RecConfig(**{"n_items": 20, "layers": (8,), **config})).double()


def test_config_round_trips_through_json() -> None:
    config = GRU4RecConfig(n_items=10, layers=(16, 8), embedding=4, constrained_embedding=False,
                           dropout_embed=0.1, dropout_hidden=0.2)
    assert GRU4RecConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(("values", "message"), [
    ({"n_items": 0}, "n_items"),
    ({"n_items": 5, "layers": ()}, "layers"),
    ({"n_items": 5, "layers": (8, 0)}, "layers"),
    ({"n_items": 5, "embedding": -1, "constrained_embedding": False}, "embedding"),
    ({"n_items": 5, "embedding": 16}, "embedding must be 0 with a constrained embedding"),
    ({"n_items": 5, "dropout_hidden": 1.0}, "dropout_hidden"),
    ({"n_items": 5, "dropout_embed": -0.1}, "dropout_embed"),
])
def test_config_rejects_bad_values(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GRU4RecConfig(**values)


def test_from_dict_rejects_unknown_or_missing_keys() -> None:
    with pytest.raises(ValueError, match="unknown key"):
        GRU4RecConfig.from_dict({"n_items": 5, "hidden": 3})
    with pytest.raises(ValueError, match="lacks n_items"):
        GRU4RecConfig.from_dict({"layers": [3]})


@pytest.mark.parametrize(("config", "input_table", "sparse"), [
    ({}, "item_embedding", {"item_embedding", "item_bias"}),
    ({"constrained_embedding": False, "embedding": 6}, "input_embedding",
     {"item_embedding", "item_bias", "input_embedding"}),
    ({"constrained_embedding": False}, "layers.0.weight_input",
     {"item_embedding", "item_bias", "layers.0.weight_input"}),
])
def test_input_modes(config: dict, input_table: str, sparse: set[str]) -> None:
    model = network(**config)
    assert model.input_table is dict(model.named_parameters())[input_table]
    assert model.item_parameter_names() == sparse
    output, hidden = model(torch.tensor([1, 5, 19]), model.init_hidden(3))
    assert output.shape == (3, 8) and [h.shape for h in hidden] == [(3, 8)]


def test_initialisation_bounds() -> None:
    model = network(n_items=500, layers=(40, 30))
    for name, param in model.named_parameters():
        if "bias" in name:
            assert torch.all(param == 0), name
    bound = math.sqrt(6 / (500 + 30))
    assert model.item_embedding.abs().max() <= bound and model.item_embedding.abs().max() > 0.9 * bound
    first, second = model.layers
    assert first.weight_input.abs().max() <= math.sqrt(6 / (30 + 40))  # tied: input size = last layer
    assert second.weight_input.abs().max() <= math.sqrt(6 / (40 + 30))
    assert second.weight_hidden_candidate.abs().max() <= math.sqrt(6 / 60)


def naive_gru_step(layer: torch.nn.Module, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The paper's equations, gate by gate."""
    hidden = layer.hidden_size
    w_r, w_z, w_c = layer.weight_input.split(hidden, dim=1)
    u_r, u_z = layer.weight_hidden_gates.split(hidden, dim=1)
    b_r, b_z, b_c = layer.bias.split(hidden)
    r = torch.sigmoid(x @ w_r + h @ u_r + b_r)
    z = torch.sigmoid(x @ w_z + h @ u_z + b_z)
    candidate = torch.tanh(x @ w_c + (r * h) @ layer.weight_hidden_candidate + b_c)
    return (1 - z) * h + z * candidate


def test_forward_is_the_papers_gru_over_the_tied_embedding() -> None:
    model = network(layers=(8, 6)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)  # non-zero biases too
        items = torch.tensor([3, 0, 7])
        hidden = [torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)]
        output, new_hidden = model(items, hidden)
        h1 = naive_gru_step(model.layers[0], model.item_embedding[items], hidden[0])
        h2 = naive_gru_step(model.layers[1], h1, hidden[1])
    assert torch.allclose(new_hidden[0], h1) and torch.allclose(new_hidden[1], h2)
    assert torch.allclose(output, h2)


def test_one_hot_input_indexes_the_input_weights() -> None:
    model = network(constrained_embedding=False).eval()
    items = torch.tensor([2, 2, 11])
    one_hot = torch.nn.functional.one_hot(items, 20).double()
    with torch.no_grad():
        _, (h,) = model(items, model.init_hidden(3))
        expected = naive_gru_step(model.layers[0], one_hot, torch.zeros(3, 8, dtype=torch.float64))
    assert torch.allclose(h, expected)


def test_scores_are_dot_products_plus_bias() -> None:
    model = network()
    with torch.no_grad():
        model.item_bias.copy_(torch.arange(20.0))
    output = torch.randn(4, 8, dtype=torch.float64)
    everything = model.score(output)
    assert everything.shape == (4, 20)
    assert torch.allclose(everything, output @ model.item_embedding.T + torch.arange(20.0))
    some = torch.tensor([5, 1, 5])
    assert torch.allclose(model.score(output, some), everything[:, some])


def test_score_sessions_keeps_the_input_order_of_sessions_of_any_length() -> None:
    model = network(layers=(8, 6)).eval()
    items = torch.tensor([[3, 0, 0, 0], [1, 2, 3, 4], [5, 6, 0, 0], [7, 8, 9, 0], [2, 0, 0, 0]])
    lengths = torch.tensor([1, 4, 2, 3, 1])
    together = model.score_sessions(items, lengths)
    assert together.shape == (5, 20)
    for row in range(5):
        alone = model.score_sessions(items[row:row + 1, :lengths[row]], lengths[row:row + 1])
        torch.testing.assert_close(together[row:row + 1], alone)


def test_dropout_acts_on_outputs_in_training_only() -> None:
    model = network(dropout_hidden=0.5)
    items, hidden = torch.arange(16) % 20, model.init_hidden(16)
    train_output, train_hidden = model.train()(items, hidden)
    eval_output, eval_hidden = model.eval()(items, hidden)
    assert train_hidden[0] is train_output, "the dropped-out output is the state carried to the next step"
    assert eval_hidden[0] is eval_output
    dropped = train_output == 0
    assert dropped.any() and not (eval_output == 0).any()
    assert torch.allclose(train_output[~dropped], 2 * eval_output[~dropped])


def test_one_hot_input_dropout_keeps_or_drops_whole_rows() -> None:
    model = network(constrained_embedding=False, dropout_embed=0.5).train()
    items = torch.full((64,), 3)
    with torch.no_grad():
        _, (h,) = model(items, model.init_hidden(64))
        zeros = torch.zeros(1, 8, dtype=torch.float64)
        one_hot = torch.nn.functional.one_hot(torch.tensor([3]), 20).double()
        kept = naive_gru_step(model.layers[0], 2 * one_hot, zeros)  # inverted dropout scales by 1 / (1 - p)
        dropped = naive_gru_step(model.layers[0], 0 * one_hot, zeros)
    rows_kept = torch.isclose(h, kept).all(dim=1)
    rows_dropped = torch.isclose(h, dropped).all(dim=1)
    assert (rows_kept | rows_dropped).all() and rows_kept.any() and rows_dropped.any()


def test_init_hidden_is_zero_per_layer() -> None:
    hidden = network(layers=(8, 4)).init_hidden(5)
    assert [tuple(h.shape) for h in hidden] == [(5, 8), (5, 4)]
    assert all(torch.all(h == 0) for h in hidden)
    with pytest.raises(ValueError, match="expected 2 hidden state tensors"):
        network(layers=(8, 4))(torch.tensor([1]), hidden[:1])


def test_scorer_keeps_one_state_per_slot_and_resets_it() -> None:
    model = network(layers=(8,)).float()
    session = torch.tensor([4, 9, 2])
    expected = []
    hidden = model.init_hidden(1)
    with torch.no_grad():
        for item in session:
            output, hidden = model.eval()(item.view(1), hidden)
            expected.append(model.score(output))
    scorer = GRU4RecScorer(model, "cpu")
    scorer.begin(3)
    assert not model.training
    # Slot 2 runs the session while slot 0 runs something else; then slot 2 restarts it after a reset.
    got = []
    for item in session:
        scores = scorer.step(torch.tensor([0, 2]), torch.tensor([7, int(item)]))
        assert scores.shape == (2, 20)
        got.append(scores[1:])
    scorer.reset(torch.tensor([2]))
    again = scorer.step(torch.tensor([2]), session[:1])
    for mine, reference in zip(got, expected, strict=True):
        assert torch.allclose(mine, reference, atol=1e-6)
    assert torch.allclose(again, expected[0], atol=1e-6)


def test_scorer_works_with_the_evaluator() -> None:
    model = network(layers=(8,)).float()
    offsets = np.array([0, 3, 5, 9])
    data = SessionDataset(np.array([1, 2, 3, 4, 5, 6, 7, 8, 9]), offsets, np.array(["a", "b", "c"], dtype=object), 20)
    one_slot = evaluate(GRU4RecScorer(model, "cpu"), data, ks=(5,), batch_size=1)
    many_slots = evaluate(GRU4RecScorer(model, "cpu"), data, ks=(5,), batch_size=3)
    assert one_slot == pytest.approx(many_slots)
    assert one_slot["n_events"] == 6


def test_step_before_begin_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="before begin"):
        GRU4RecScorer(network().float(), "cpu").step(torch.tensor([0]), torch.tensor([1]))
