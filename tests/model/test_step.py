"""The hand-written training step (training/step.py) against the autograd step, fixed shapes, and CUDA."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from model.data import SessionDataset
from tests.model.test_trainer import chains
from training.step import FastStep
from training.trainer import TrainParams, _Run, torch_threads, train

# 40 sessions in 8 slots: 17 steps, the last ones with a shrinking batch. Learning rate 0.2 as in the
# presets: rounding differences grow quickly with it, so the comparison covers one such short epoch.
BASE = {"layers": (24,), "batch_size": 8, "epochs": 1, "n_sample": 16, "learning_rate": 0.2, "momentum": 0.3,
        "dropout_hidden": 0.0, "seed": 7}
CONFIGURATIONS = {
    "cross-entropy, logQ": {},
    "cross-entropy, no logQ": {"logq": 0.0},
    "cross-entropy, accidental hits kept": {"remove_accidental_hits": False},
    "cross-entropy, no momentum": {"momentum": 0.0},
    "cross-entropy, no extra negatives": {"n_sample": 0},
    "cross-entropy, embedding, two layers": {"constrained_embedding": False, "embedding": 8, "layers": (16, 12)},
    "bpr-max, elu": {"loss": "bpr-max", "elu_param": 0.5, "bpreg": 1.0, "learning_rate": 0.05},
    "bpr-max, hits kept, no momentum": {"loss": "bpr-max", "remove_accidental_hits": False, "momentum": 0.0,
                                        "learning_rate": 0.05},
}


@pytest.fixture(scope="module")
def data() -> SessionDataset:
    return chains(40, seed=3)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """As train() runs (tiny ops on several threads of a busy machine wait for each other)."""
    with torch_threads(1):
        yield


@pytest.fixture
def float64() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def one_epoch(data: SessionDataset, params: TrainParams, step: str, fixed_items: bool | None = None,
              device: str = "cpu") -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(params.seed)
    run = _Run(data, params, torch.device(device), step, fixed_items=fixed_items)
    assert (run.fast is not None) == (step == "auto")
    loss = run.epoch(None)
    return loss, {name: value.detach().cpu().clone() for name, value in run.model.state_dict().items()}


def assert_close(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor], atol: float = 1e-10) -> None:
    assert expected.keys() == actual.keys()
    for name in expected:
        assert expected[name].dtype == torch.float64
        assert torch.allclose(expected[name], actual[name], rtol=0, atol=atol), \
            f"{name}: max difference {(expected[name] - actual[name]).abs().max().item():.3g}"


@pytest.mark.parametrize("extra", CONFIGURATIONS.values(), ids=CONFIGURATIONS.keys())
def test_the_hand_written_step_equals_the_autograd_step(data: SessionDataset, float64: None, extra: dict) -> None:
    """Float64, dropout off: the same weights after every step of an epoch (shrinking tail included),
    with each step's distinct items trimmed (CPU) and padded to a fixed count (GPU shapes)."""
    params = TrainParams(**{**BASE, **extra})
    expected_loss, expected = one_epoch(data, params, "autograd")
    for fixed_items in (False, True):
        loss, weights = one_epoch(data, params, "auto", fixed_items=fixed_items)
        assert loss == pytest.approx(expected_loss, rel=1e-12)
        assert_close(expected, weights)


@pytest.mark.parametrize(("extra", "reason"), [
    ({"loss": "top1-max"}, "loss 'top1-max'"), ({"optimizer": "adam", "learning_rate": 0.01}, "optimizer 'adam'"),
    ({"constrained_embedding": False}, "one-hot input"),
])
def test_other_configurations_train_with_the_autograd_step(data: SessionDataset, extra: dict, reason: str) -> None:
    params = TrainParams(**{**BASE, **extra})
    run = _Run(data, params, torch.device("cpu"))
    assert run.fast is None
    with pytest.raises(ValueError, match=reason):
        FastStep(run.model, run.optimizer, run.sampler, run.batches.plan, data.lengths(), params.loss, 8, 1.0, 0.5,
                 1.0, 0.0, True, torch.device("cpu"))
    assert torch.isfinite(torch.tensor(run.epoch(None)))


def test_fixed_shapes_are_the_same_every_step(data: SessionDataset) -> None:
    run = _Run(data, TrainParams(**{**BASE, "dropout_hidden": 0.3}), torch.device("cpu"), fixed_items=True)
    steps = run.fast._prepare(0, run.batches.plan.n_steps)
    shapes = {tuple(tuple(field.shape) if field is not None else None for field in step) for step in steps}
    assert len(shapes) == 1
    assert not steps[-1].live.all(), "the tail's empty slots are masked dummy rows"


def test_only_the_rows_a_table_uses_move(data: SessionDataset) -> None:
    """Momentum on: bias rows of items that are only inputs in a step keep their value and momentum."""
    torch.manual_seed(0)
    run = _Run(data, TrainParams(**BASE), torch.device("cpu"))
    fast, bias = run.fast, run.model.item_bias
    momentum = run.optimizer.state["item_bias"]["momentum"]
    checked = 0
    with torch.no_grad():
        for step in fast._prepare(0, run.batches.plan.n_steps):
            still = step.items[step.used_bias == 0]
            before, before_momentum = bias[still].clone(), momentum[still].clone()
            fast._step(step)
            assert torch.equal(bias[still], before) and torch.equal(momentum[still], before_momentum)
            checked += int((before_momentum != 0).sum())
    assert checked, "some input-only items had a momentum that would have moved them"


def test_dropout_masks_drop_their_share_and_keep_the_mean(data: SessionDataset) -> None:
    params = TrainParams(**{**BASE, "dropout_hidden": 0.4, "constrained_embedding": False, "embedding": 8,
                            "dropout_embed": 0.25})
    run = _Run(data, params, torch.device("cpu"))
    masks = run.fast._dropout_masks(2000)
    embed, hidden = masks[..., :8], masks[..., 8:]
    assert (embed == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert (hidden == 0).float().mean().item() == pytest.approx(0.4, abs=0.01)
    assert masks.mean().item() == pytest.approx(1.0, abs=0.01)


def test_trains_with_dropout_as_well_as_the_autograd_step() -> None:
    """Dropout on (other random draws than autograd's): the same sequence is learnt as well."""
    params = TrainParams(layers=(32,), batch_size=32, epochs=3, n_sample=32, learning_rate=0.1, momentum=0.1,
                         dropout_hidden=0.3, seed=3)
    losses = {step: [s.loss for s in train(chains(400, seed=2), params, step=step)[1]] for step in ("auto", "autograd")}
    assert losses["auto"][-1] < losses["auto"][0]
    assert losses["auto"][-1] == pytest.approx(losses["autograd"][-1], rel=0.1)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_graph_step_equals_the_cpu_step(data: SessionDataset, float64: None) -> None:
    """On CUDA the step runs with fixed shapes, eagerly for a few steps, then as a captured CUDA graph."""
    params = TrainParams(**BASE)
    _, expected = one_epoch(data, params, "auto", fixed_items=False)
    torch.manual_seed(params.seed)
    run = _Run(data, params, torch.device("cuda"))
    assert run.fast.fixed_items and run.fast.use_graph
    run.epoch(None)
    assert run.fast._graph is not None
    assert_close(expected, {k: v.detach().cpu() for k, v in run.model.state_dict().items()}, atol=1e-8)


@needs_cuda
def test_cuda_epoch_waits_for_the_host_only_at_its_end(data: SessionDataset) -> None:
    """No synchronising call (``.item()``, data-dependent sizes) between the first and the last step."""
    # Two epochs' extra negatives are drawn at once: no refill (a host-to-device copy) in the second.
    run = _Run(data, TrainParams(**{**BASE, "dropout_hidden": 0.2, "epochs": 2}), torch.device("cuda"))
    run.epoch(None)  # warm-up and capture
    fast = run.fast
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            for step in fast._prepare(0, run.batches.plan.n_steps):
                fast._run(step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(fast.total_loss)
