"""Training (training/trainer.py): learning, determinism, checkpoint resume, parameters, presets, devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.data import SessionDataset
from model.device import resolve_device
from model.network import GRU4Rec, GRU4RecScorer
from training.batcher import Batch
from training.evaluate import evaluate
from training.presets import PRESETS
from training.trainer import CHECKPOINT_FILE, EpochStats, TrainParams, _Run, train

N_ITEMS = 40
SMALL = {"layers": (24,), "batch_size": 16, "epochs": 2, "n_sample": 16, "learning_rate": 0.1,
         "momentum": 0.1, "dropout_hidden": 0.2, "seed": 7}


def chains(n_sessions: int, seed: int) -> SessionDataset:
    """Sessions walking items j, j+1, j+2, ... (mod N_ITEMS): the next item is fully determined."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 7, n_sessions)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = (np.repeat(rng.integers(0, N_ITEMS, n_sessions), lengths) + position) % N_ITEMS
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return SessionDataset(items.astype(np.int64), offsets, np.arange(n_sessions).astype(str).astype(object), N_ITEMS)


@pytest.fixture(scope="module")
def data() -> SessionDataset:
    return chains(200, seed=1)


def weights(model: GRU4Rec) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_learns_a_deterministic_sequence() -> None:
    params = TrainParams(layers=(32,), batch_size=32, epochs=3, n_sample=32, learning_rate=0.1, momentum=0.0,
                         dropout_hidden=0.0, seed=3)
    model, stats = train(chains(400, seed=2), params)
    metrics = evaluate(GRU4RecScorer(model, "cpu"), chains(100, seed=9), ks=(1, 5))
    assert metrics["recall@1"] > 0.95
    assert stats[-1].loss < stats[0].loss
    assert not model.training


@pytest.mark.parametrize(("loss", "extra"), [
    ("cross-entropy", {}), ("bpr-max", {}), ("top1-max", {}), ("bpr", {}), ("top1", {}),
    ("cross-entropy", {"constrained_embedding": False, "embedding": 8, "dropout_embed": 0.2}),
    ("bpr-max", {"constrained_embedding": False, "layers": (16, 12), "dropout_embed": 0.2}),
])
def test_every_loss_and_input_mode_trains(data: SessionDataset, loss: str, extra: dict) -> None:
    params = TrainParams(**{**SMALL, "loss": loss, "elu_param": 0.5, **extra})
    _, stats = train(data, params)
    assert len(stats) == 2 and all(np.isfinite(s.loss) for s in stats)
    assert stats[1].loss < stats[0].loss


def test_adam_and_no_extra_negatives(data: SessionDataset) -> None:
    _, stats = train(data, TrainParams(**{**SMALL, "optimizer": "adam", "learning_rate": 0.01, "n_sample": 0}))
    assert stats[1].loss < stats[0].loss


def test_same_seed_gives_identical_weights_and_other_seeds_do_not(data: SessionDataset) -> None:
    first, first_stats = train(data, TrainParams(**SMALL))
    second, second_stats = train(data, TrainParams(**SMALL))
    assert_same_weights(weights(first), weights(second))
    assert [s.loss for s in first_stats] == [s.loss for s in second_stats]
    other, _ = train(data, TrainParams(**{**SMALL, "seed": 8}))
    assert not torch.equal(other.item_embedding, first.item_embedding)


def test_accidental_hits_are_removed_by_default_and_can_be_kept(data: SessionDataset) -> None:
    """40 items, 16 targets and 16 samples a step: a row's target item often fills other columns too."""
    assert TrainParams().remove_accidental_hits
    removed, removed_stats = train(data, TrainParams(**SMALL))
    kept, kept_stats = train(data, TrainParams(**{**SMALL, "remove_accidental_hits": False}))
    assert not torch.equal(removed.item_embedding, kept.item_embedding)
    assert removed_stats[1].loss < removed_stats[0].loss and kept_stats[1].loss < kept_stats[0].loss
    assert removed_stats[0].loss < kept_stats[0].loss, "copies of the target no longer compete with it"


def dense_gradients_of_one_step(data: SessionDataset, batch_size: int, batch: Batch) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    params = TrainParams(**{**SMALL, "batch_size": batch_size, "n_sample": 0, "dropout_hidden": 0.0})
    run = _Run(data, params, torch.device("cpu"))
    captured: dict[str, torch.Tensor] = {}

    def capture(rows: object) -> None:
        captured.update({name: p.grad.clone() for name, p in run.model.named_parameters() if p.grad is not None})

    run.optimizer.step = capture
    run.step(batch, run.model.init_hidden(len(batch.inputs)))
    return captured


def test_every_pair_weighs_the_same_when_the_batch_shrinks(data: SessionDataset) -> None:
    """A step of 2 rows with 8 slots (the shrinking tail) counts 2/8 of a full step, not a whole one."""
    batch = Batch(inputs=torch.tensor([3, 9]), targets=torch.tensor([4, 10]), carry=torch.zeros(2, 1), keep=None)
    tail, full = dense_gradients_of_one_step(data, 8, batch), dense_gradients_of_one_step(data, 2, batch)
    assert tail.keys() == full.keys() and tail
    for name in full:
        assert torch.allclose(tail[name], full[name] * (2 / 8), rtol=1e-5, atol=1e-8), name


def test_training_leaves_the_global_rng_alone(data: SessionDataset) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train(data, TrainParams(**{**SMALL, "epochs": 1}))
    assert torch.equal(torch.get_rng_state(), before)


class Killed(Exception):
    pass


def test_resuming_from_a_checkpoint_gives_identical_results(data: SessionDataset, tmp_path: Path) -> None:
    params = TrainParams(**{**SMALL, "epochs": 3})
    uninterrupted, expected_stats = train(data, params)

    def kill_after_second_epoch(stats: EpochStats) -> None:
        if stats.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train(data, params, checkpoint_dir=tmp_path, on_epoch_end=kill_after_second_epoch)
    checkpoint = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert checkpoint["epoch"] == 2
    seen: list[int] = []
    resumed, stats = train(data, params, checkpoint_dir=tmp_path, on_epoch_end=lambda s: seen.append(s.epoch))
    assert seen == [3]
    assert_same_weights(weights(uninterrupted), weights(resumed))
    assert [s.loss for s in stats] == [s.loss for s in expected_stats]

    # A finished run only reloads.
    again, again_stats = train(data, params, checkpoint_dir=tmp_path)
    assert_same_weights(weights(again), weights(resumed))
    assert len(again_stats) == 3


def test_a_checkpoint_of_another_run_is_refused(data: SessionDataset, tmp_path: Path) -> None:
    params = TrainParams(**{**SMALL, "epochs": 1})
    train(data, params, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"other parameters \(differs in \['learning_rate'\]\)"):
        train(data, params.replace(learning_rate=0.05), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other data"):
        train(chains(200, seed=5), params, checkpoint_dir=tmp_path)


def test_callbacks(data: SessionDataset) -> None:
    ended: list[EpochStats] = []
    progress: list[tuple[int, int, int]] = []
    evaluated: list[bool] = []

    def evaluate_fn(model: GRU4Rec) -> dict[str, float]:
        evaluated.append(model.training)
        return evaluate(GRU4RecScorer(model, "cpu"), data, ks=(20,))

    _, stats = train(data, TrainParams(**SMALL), on_epoch_end=ended.append, evaluate_fn=evaluate_fn,
                     on_progress=lambda *args: progress.append(args))
    assert ended == stats and [s.epoch for s in stats] == [1, 2]
    assert evaluated == [False, False]
    assert all(s.eval_metrics is not None and "recall@20" in s.eval_metrics for s in stats)
    assert stats[0].pairs == data.n_pairs and stats[0].pairs_per_s > 0
    assert progress[-1] == (2, data.n_pairs, data.n_pairs)
    assert all(done <= total for _, done, total in progress)


def test_params_round_trip_and_validation() -> None:
    params = TrainParams(layers=(64, 32), loss="bpr-max", elu_param=0.5)
    assert TrainParams.from_dict(params.to_dict()) == params
    assert params.to_dict()["layers"] == [64, 32]
    for values, message in [({"loss": "hinge"}, "loss must be one of"), ({"batch_size": 0}, "batch_size"),
                            ({"learning_rate": 0.0}, "learning_rate"), ({"momentum": 1.0}, "momentum"),
                            ({"sample_alpha": 2.0}, "sample_alpha"), ({"n_sample": -1}, "n_sample"),
                            ({"optimizer": "sgd"}, "optimizer"), ({"layers": ()}, "layers"),
                            ({"dropout_hidden": 1.0}, "dropout_hidden"), ({"epochs": 2.5}, "epochs"),
                            ({"embedding": 32}, "constrained embedding"),
                            ({"remove_accidental_hits": 1}, "remove_accidental_hits must be true or false")]:
        with pytest.raises(ValueError, match=message):
            TrainParams(**values)
    with pytest.raises(ValueError, match="unknown training parameter"):
        TrainParams.from_dict({"hidden": 100})


def test_presets_are_valid_and_default_matches_the_defaults() -> None:
    assert {"default", "rsc15", "yoochoose", "rees46", "coveo", "retailrocket", "diginetica"} <= set(PRESETS)
    for values in PRESETS.values():
        TrainParams.from_dict(values)
    assert TrainParams.from_dict(PRESETS["default"]) == TrainParams()
    rsc15 = TrainParams.from_dict(PRESETS["rsc15"])
    assert (rsc15.loss, rsc15.layers, rsc15.batch_size, rsc15.n_sample, rsc15.sample_alpha, rsc15.logq) == \
        ("cross-entropy", (100,), 32, 2048, 0.5, 1.0)


def test_resolve_device() -> None:
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="unsupported device"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_cuda(data: SessionDataset) -> None:
    model, stats = train(data, TrainParams(**SMALL), device="cuda")
    assert model.item_embedding.is_cuda and stats[1].loss < stats[0].loss


def test_an_item_only_input_in_a_step_keeps_its_bias_and_momentum(data: SessionDataset) -> None:
    """Item 5 is a target in step 1 (its bias gets a gradient and a momentum) and only an input in step 2:
    with momentum its bias must not move in step 2 (the paper's sparse update moves rows with a gradient)."""
    torch.manual_seed(0)
    run = _Run(data, TrainParams(**{**SMALL, "n_sample": 0, "dropout_hidden": 0.0}), torch.device("cpu"))
    hidden = run.model.init_hidden(2)
    first = Batch(inputs=torch.tensor([4, 7]), targets=torch.tensor([5, 8]), carry=torch.zeros(2, 1), keep=None)
    second = Batch(inputs=torch.tensor([5, 9]), targets=torch.tensor([6, 10]), carry=torch.ones(2, 1), keep=None)
    _, hidden = run.step(first, hidden)
    bias, embedding = run.model.item_bias.detach().clone(), run.model.item_embedding.detach().clone()
    run.step(second, hidden)
    assert bias[5] != 0
    assert run.model.item_bias[5] == bias[5], "an input-only item's bias row stays put"
    assert not torch.equal(run.model.item_embedding[5], embedding[5]), "its tied embedding row, the input, moves"
