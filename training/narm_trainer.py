"""Training NARM (model/narm.py): every prefix of every session, Adam, epoch checkpoints, early stopping.

A session of n events gives n - 1 training pairs (each prefix predicts the item after it), as the
authors train. The prefixes are never materialised: one GRU pass per session and one causally masked
attention give every prefix's representation at once. Each epoch, sessions (their most recent
``max_session_events`` events) are sorted by length, ties in a random order, cut into mini-batches of
about ``batch_size`` pairs, so a mini-batch pads little, and the mini-batches are shuffled.

The loss is the cross-entropy of the next item: over every item (full softmax) while the vocabulary is
small enough, otherwise over the target and ``n_sample`` negatives shared by the mini-batch, drawn in
proportion to support ** ``sample_alpha`` (training/sampler.py) with the logQ correction
(training/losses.py) and the target's own item removed from its negatives (sampled softmax).

Checkpoints follow training/trainer.py: a plain dict of state_dicts and tensors per finished epoch,
read back with ``weights_only=True``; a rerun resumes after the last saved epoch with results identical
to an uninterrupted run. Random numbers come from the seed inside a forked RNG; the batch order of an
epoch from (seed, epoch) alone.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from model.artifacts import save_model
from model.data import SessionDataset, Vocabulary
from model.device import resolve_device
from model.narm import NARM, NARMConfig, NARMScorer
from training.checkpoint import derived_seed, resume, save_checkpoint
from training.evaluate import evaluate
from training.losses import logq_tables
from training.optim import Adam, ItemRows
from training.sampler import NegativeSampler
from training.trainer import (
    CPU_THREADS,
    SAMPLE_BUFFER_IDS,
    EpochStats,
    data_fingerprint,
    torch_threads,
)

if TYPE_CHECKING:
    from training.families import FitResult, OnEpoch

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "narm-checkpoint.pt"
SOFTMAX_MODES = ("auto", "full", "sampled")
# "auto" uses the full softmax up to this many items, the sampled one above.
FULL_SOFTMAX_MAX_ITEMS = 10_000
# The validation Recall@20 early stopping watches, as it appears in an epoch's metrics.
EARLY_STOPPING_KEY = "early_stopping_recall@20"
PROGRESS_UPDATES_PER_EPOCH = 100


@dataclass(frozen=True)
class NARMParams:
    """NARM's training settings; the defaults are the paper's (D 50, H 100, dropout 0.25 / 0.5, Adam 0.001,
    512 pairs per mini-batch, up to 30 epochs, early stopping on Recall@20).

    ``patience``: stop after this many epochs without a better validation Recall@20 and keep the best
    epoch's weights (0: train every epoch). :class:`NARMTrainer` validates on the latest
    ``validation_share`` of the training sessions, held out of training, never on the evaluation data.
    ``softmax``: ``full``, ``sampled`` or ``auto`` (full up to FULL_SOFTMAX_MAX_ITEMS items); ``n_sample``,
    ``sample_alpha`` and ``logq`` apply to the sampled softmax only.
    """

    embedding: int = 50
    hidden: int = 100
    dropout_embed: float = 0.25
    dropout_context: float = 0.5
    learning_rate: float = 0.001
    batch_size: int = 512
    epochs: int = 30
    patience: int = 3
    validation_share: float = 0.1
    max_session_events: int = 50
    softmax: str = "auto"
    n_sample: int = 2048
    sample_alpha: float = 0.5
    logq: float = 1.0
    seed: int = 1

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("epochs", 1), ("patience", 0), ("n_sample", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.softmax not in SOFTMAX_MODES:
            raise ValueError(f"softmax must be one of {SOFTMAX_MODES}, got {self.softmax!r}")
        for name, valid, expected in (("learning_rate", lambda v: v > 0, "> 0"),
                                      ("sample_alpha", lambda v: 0 <= v <= 1, "in [0, 1]"),
                                      ("validation_share", lambda v: 0 < v < 1, "in (0, 1)"),
                                      ("logq", lambda v: 0 <= v <= 1, "in [0, 1]")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                    or not valid(value):
                raise ValueError(f"{name} must be a number {expected}, got {value!r}")
        self.network_config(1)  # validates the network's settings

    def network_config(self, n_items: int) -> NARMConfig:
        return NARMConfig(n_items=n_items, embedding=self.embedding, hidden=self.hidden,
                          dropout_embed=self.dropout_embed, dropout_context=self.dropout_context,
                          max_session_events=self.max_session_events)

    def uses_full_softmax(self, n_items: int) -> bool:
        return self.softmax == "full" or (self.softmax == "auto" and n_items <= FULL_SOFTMAX_MAX_ITEMS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NARMParams:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown NARM parameter(s) {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: object) -> NARMParams:
        return replace(self, **changes)


@dataclass(frozen=True)
class NARMTraining:
    """A finished run: the network (eval mode; the best epoch's weights under early stopping), every
    epoch's statistics and the epoch whose weights it holds."""

    model: NARM
    epochs: list[EpochStats]
    best_epoch: int


# --- mini-batches ---

class PrefixBatches:
    """Sessions (their recent ``cap`` events, two or more) as padded mini-batches of about ``batch_pairs``."""

    def __init__(self, data: SessionDataset, cap: int, batch_pairs: int) -> None:
        lengths = np.minimum(data.lengths(), cap)
        self.sessions = np.flatnonzero(lengths >= 2)
        self.lengths = lengths[self.sessions]
        self.starts = data.offsets[self.sessions + 1] - self.lengths
        self.items = data.item_idx
        self.batch_pairs = batch_pairs
        self.n_pairs = int((self.lengths - 1).sum())

    def epoch(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Positions (into :attr:`sessions`) of each mini-batch, in this epoch's order.

        Sorted by length, ties shuffled, and cut where the running pair count crosses a multiple of
        ``batch_pairs``: a mini-batch holds sessions of (nearly) one length and at most ``batch_pairs``
        plus ``cap`` pairs.
        """
        order = rng.permutation(len(self.lengths))
        order = order[np.argsort(self.lengths[order], kind="stable")]
        batch_of = (np.cumsum(self.lengths[order] - 1) - 1) // self.batch_pairs
        cuts = np.flatnonzero(np.diff(batch_of)) + 1
        batches = np.split(order, cuts)
        return [batches[i] for i in rng.permutation(len(batches))]

    def tensors(self, batch: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs [B, L-1], targets [P], mask [B, L-1] of the positions that have a target)."""
        lengths = self.lengths[batch]
        width = int(lengths.max())
        position = np.arange(width)
        valid = position[None, :] < lengths[:, None]
        padded = np.zeros((len(batch), width), dtype=np.int64)
        padded[valid] = self.items[(self.starts[batch][:, None] + position[None, :])[valid]]
        has_target = valid[:, 1:]
        padded = torch.from_numpy(padded)
        return (padded[:, :-1].to(device), padded[:, 1:][torch.from_numpy(has_target)].to(device),
                torch.from_numpy(has_target).to(device))


# --- losses ---

def sampled_softmax_losses(projected: torch.Tensor, target_rows: torch.Tensor, negative_rows: torch.Tensor,
                           targets: torch.Tensor, negatives: torch.Tensor,
                           log_q: torch.Tensor | None) -> torch.Tensor:
    """Per-row cross-entropy of the target against shared negatives: [P].

    ``projected`` [P, D]; ``target_rows`` [P, D] and ``negative_rows`` [K, D] the item embeddings of the
    targets and of the negatives (item indexes ``targets`` [P], ``negatives`` [K]). A negative that is the
    row's own target item takes no part. ``log_q`` [n_items] (or None): subtracted from every scored item
    (target and negatives), the logQ correction for negatives drawn with probability Q.
    """
    positive = (projected * target_rows).sum(dim=1, keepdim=True)
    negative = projected @ negative_rows.t()
    if log_q is not None:
        positive = positive - log_q.index_select(0, targets).unsqueeze(1)
        negative = negative - log_q.index_select(0, negatives).unsqueeze(0)
    negative = negative.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    return -torch.log_softmax(torch.cat((positive, negative), dim=1), dim=1)[:, 0]


# --- the run ---

class _Run:
    """One training run's state on one device: network, optimizer, sampler, batches, early stopping."""

    def __init__(self, data: SessionDataset, params: NARMParams, device: torch.device) -> None:
        self.params, self.device = params, device
        self.batches = PrefixBatches(data, params.max_session_events, params.batch_size)
        if not self.batches.n_pairs:
            raise ValueError(f"nothing to train on: none of the {data.n_sessions} sessions has two or more events")
        self.model = NARM(params.network_config(data.n_items)).to(device)
        self.optimizer = Adam(self.model.named_parameters(), self.model.item_parameter_names(),
                              params.learning_rate)
        self.full = params.uses_full_softmax(data.n_items)
        self.all_items = torch.arange(data.n_items, device=device)
        self.sampler, self.log_q = None, None
        if not self.full:
            support = np.bincount(data.item_idx, minlength=data.n_items)
            n_batches = math.ceil(self.batches.n_pairs / params.batch_size) + 1
            buffer_batches = max(1, min(SAMPLE_BUFFER_IDS // params.n_sample, n_batches * params.epochs))
            self.sampler = NegativeSampler(support, params.sample_alpha, params.n_sample, buffer_batches,
                                           seed=derived_seed(params.seed, "sampler"), device=device)
            if params.logq > 0:
                self.log_q = logq_tables(support, params.logq, params.sample_alpha, device)[1]
        self.best_epoch, self.best_metric, self.best_state = 0, -math.inf, None
        self.stopped = False

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, has_target: torch.Tensor) -> torch.Tensor:
        """One mini-batch; returns its summed loss (detached). Every pair weighs 1 / batch_size."""
        model = self.model
        negatives = self.all_items if self.full else self.sampler.next()
        rows = ItemRows(negatives) if self.full else ItemRows(torch.cat((inputs.flatten(), targets, negatives)))
        table = rows.gather(model.item_embedding)
        embedded = (table.index_select(0, inputs.flatten()) if self.full
                    else table.index_select(0, rows.inverse[:inputs.numel()])).view(*inputs.shape, -1)
        states = model.encode(embedded)
        projected = model.project(model.prefix_representations(states)[has_target])
        if self.full:
            losses = F.cross_entropy(projected @ table.t(), targets, reduction="none")
        else:
            columns = rows.inverse[inputs.numel():]
            losses = sampled_softmax_losses(projected, table.index_select(0, columns[:len(targets)]),
                                            table.index_select(0, columns[len(targets):]), targets, negatives,
                                            self.log_q)
        loss = losses.sum()
        (loss / self.params.batch_size).backward()
        self.optimizer.step(rows)
        self.optimizer.zero_grad()
        return loss.detach()

    def epoch(self, number: int, on_progress: Callable[[int, int], None] | None) -> float:
        """One pass over the data; returns the mean loss per training pair."""
        self.model.train()
        rng = np.random.default_rng([self.params.seed, number])
        batches = self.batches.epoch(rng)
        every = max(1, len(batches) // PROGRESS_UPDATES_PER_EPOCH)
        total, done = torch.zeros((), device=self.device), 0
        for index, batch in enumerate(batches):
            inputs, targets, has_target = self.batches.tensors(batch, self.device)
            total += self.step(inputs, targets, has_target)
            done += len(targets)
            if on_progress is not None and ((index + 1) % every == 0 or index + 1 == len(batches)):
                on_progress(done, self.batches.n_pairs)
        return total.item() / self.batches.n_pairs

    def observe(self, epoch: int, metric: float) -> None:
        """Early stopping: remember the best epoch's weights; stop after ``patience`` epochs without gain."""
        if metric > self.best_metric:
            self.best_epoch, self.best_metric = epoch, metric
            self.best_state = copy.deepcopy(self.model.state_dict())
        self.stopped = epoch - self.best_epoch >= self.params.patience

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.state_dict() if self.sampler is not None else {},
                "early_stopping": {"best_epoch": self.best_epoch, "best_metric": self.best_metric,
                                   "stopped": self.stopped, "best_model": self.best_state or {}}}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        early = state["early_stopping"]
        self.best_epoch, self.best_metric = int(early["best_epoch"]), float(early["best_metric"])
        self.stopped, self.best_state = bool(early["stopped"]), early["best_model"] or None






def train(data: SessionDataset, params: NARMParams, device: torch.device | str = "cpu",
          checkpoint_dir: Path | None = None, on_epoch_end: Callable[[EpochStats], None] | None = None,
          evaluate_fn: Callable[[NARM], dict[str, float]] | None = None,
          validate_fn: Callable[[NARM], float] | None = None,
          on_progress: Callable[[int, int, int], None] | None = None,
          cpu_threads: int | None = CPU_THREADS) -> NARMTraining:
    """Train NARM on ``data``.

    ``evaluate_fn`` runs after every epoch on the network in eval mode; its metrics go into the epoch's
    stats, which ``on_epoch_end`` receives (a tuning search prunes there by raising). ``validate_fn``
    returns the validation Recall@20 after every epoch: with ``params.patience`` > 0 training stops after
    ``patience`` epochs without a better one and returns the best epoch's weights (it is stored in the
    stats as ``EARLY_STOPPING_KEY``). ``on_progress(epoch, pairs_done, pairs_total)`` is called about 100
    times per epoch.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    stopping = validate_fn is not None and params.patience > 0
    fingerprint = data_fingerprint(data)
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    cuda_devices = [device] if device.type == "cuda" else []
    with torch_threads(cpu_threads), torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
        torch.manual_seed(params.seed)
        run = _Run(data, params, device)
        stats: list[EpochStats] = []
        if checkpoint is not None and checkpoint.exists():
            stats = [EpochStats(**s) for s in resume(checkpoint, run, params, fingerprint)]
            logger.info("resuming from %s after epoch %d of %d", checkpoint, len(stats), params.epochs)
        logger.info("training NARM on %s: %d pairs, %d sessions, %d items, %s softmax", device,
                    run.batches.n_pairs, len(run.batches.sessions), data.n_items,
                    "full" if run.full else f"sampled ({params.n_sample} negatives)")
        for epoch in range(len(stats) + 1, params.epochs + 1):
            if run.stopped:
                break
            stats.append(_train_epoch(run, epoch, evaluate_fn, validate_fn if stopping else None, on_progress))
            if checkpoint is not None:
                save_checkpoint(checkpoint, run, params, fingerprint, stats)
            if on_epoch_end is not None:
                on_epoch_end(stats[-1])
        best_epoch = len(stats)
        if stopping and run.best_state is not None:
            run.model.load_state_dict(run.best_state)
            best_epoch = run.best_epoch
            logger.info("early stopping: keeping epoch %d (validation recall@20 %.4f)", best_epoch,
                        run.best_metric)
    return NARMTraining(run.model.eval(), stats, best_epoch)


def _train_epoch(run: _Run, epoch: int, evaluate_fn: Callable[[NARM], dict[str, float]] | None,
                 validate_fn: Callable[[NARM], float] | None,
                 on_progress: Callable[[int, int, int], None] | None = None) -> EpochStats:
    start = time.perf_counter()
    progress = (lambda done, total: on_progress(epoch, done, total)) if on_progress is not None else None
    loss = run.epoch(epoch, progress)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    seconds = time.perf_counter() - start
    if not math.isfinite(loss):
        raise FloatingPointError(f"epoch {epoch}: the training loss is {loss}; try a lower learning_rate")
    pairs = run.batches.n_pairs
    metrics = None
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else [], device_type="cuda"):
        if evaluate_fn is not None:
            metrics = dict(evaluate_fn(run.model.eval()))
        if validate_fn is not None:
            validation = float(validate_fn(run.model.eval()))
            run.observe(epoch, validation)
            metrics = {**(metrics or {}), EARLY_STOPPING_KEY: validation}
    stats = EpochStats(epoch=epoch, loss=loss, pairs=pairs, seconds=seconds, pairs_per_s=pairs / seconds,
                       eval_metrics=metrics)
    logger.info("epoch %d/%d: loss %.4f, %d pairs in %.1f s (%.0f pairs/s)%s", epoch, run.params.epochs, loss,
                pairs, seconds, stats.pairs_per_s, f", {metrics}" if metrics else "")
    return stats


def holdout_split(data: SessionDataset, share: float) -> tuple[SessionDataset, SessionDataset]:
    """(earlier sessions, the latest ``share`` of sessions): sessions are ordered by their first event."""
    n_valid = max(1, round(data.n_sessions * share))
    if n_valid >= data.n_sessions:
        raise ValueError(f"cannot hold out {share:.0%} of {data.n_sessions} sessions for early stopping and "
                         "train on the rest; set patience 0")
    cut = data.n_sessions - n_valid
    offsets = data.offsets
    earlier = SessionDataset(data.item_idx[:offsets[cut]], offsets[:cut + 1], data.session_ids[:cut], data.n_items)
    latest = SessionDataset(data.item_idx[offsets[cut]:], offsets[cut:] - offsets[cut], data.session_ids[cut:],
                            data.n_items)
    return earlier, latest


class NARMTrainer:
    """NARM for training/families.py: parameters are :class:`NARMParams` fields, defaults the paper's.

    With ``patience`` > 0 the latest ``validation_share`` of the training sessions is held out and early
    stopping watches its Recall@20; ``eval_data`` (the split's evaluation part, possibly the test set)
    is only reported, never used to choose the epoch.
    """

    name = "narm"

    def default_params(self) -> dict[str, Any]:
        return NARMParams().to_dict()

    def params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return NARMParams.from_dict({**self.default_params(), **(overrides or {})}).to_dict()

    def warm_start(self, model_dir: Path, vocabulary: Vocabulary) -> Any:
        raise ValueError(f"narm has no warm start yet; train it from scratch (refusing {model_dir})")

    def fit(self, train_data: SessionDataset, params: Mapping[str, Any], device: torch.device, *,
            eval_data: SessionDataset | None = None, on_epoch: OnEpoch | None = None,
            checkpoint_dir: Path | None = None, on_progress: Callable[[int, int, int], None] | None = None,
            cpu_threads: int | None = CPU_THREADS) -> FitResult:
        # Imported here: training.families imports this module to register NARMTrainer.
        from training.families import EVALUATION_SLOTS, FitResult, epoch_metrics, evaluate_model

        settings = NARMParams.from_dict(dict(params))
        validate_fn = None
        if settings.patience > 0:
            train_data, holdout = holdout_split(train_data, settings.validation_share)

            def validate_fn(network: NARM) -> float:
                return evaluate(self.scorer(network), holdout, ks=(20,), batch_size=EVALUATION_SLOTS)["recall@20"]
        evaluate_fn = None
        if eval_data is not None:
            def evaluate_fn(network: NARM) -> dict[str, float]:
                return evaluate_model(self, network, eval_data)
        on_epoch_end = (lambda stats: on_epoch(stats.epoch, epoch_metrics(stats))) if on_epoch else None
        result = train(train_data, settings, device=device, checkpoint_dir=checkpoint_dir, on_epoch_end=on_epoch_end,
                       evaluate_fn=evaluate_fn, validate_fn=validate_fn, on_progress=on_progress,
                       cpu_threads=cpu_threads)
        return FitResult(result.model, result.epochs, seconds=sum(s.seconds for s in result.epochs),
                         pairs=sum(s.pairs for s in result.epochs))

    def save(self, result: FitResult, directory: Path, vocabulary: Vocabulary, params: Mapping[str, Any]) -> None:
        save_model(directory, result.model, vocabulary, dict(params))

    def scorer(self, model: NARM) -> NARMScorer:
        return NARMScorer(model, model.device)

    def search_space(self, trial: Any, n_items: int) -> dict[str, Any]:
        """NARM's settings around the paper's; the epoch count is searched (pruned on validation) instead
        of early stopping inside a trial."""
        return {
            "embedding": trial.suggest_int("embedding", 32, 128, log=True),
            "hidden": trial.suggest_int("hidden", 50, 200, log=True),
            "dropout_embed": trial.suggest_float("dropout_embed", 0.0, 0.5),
            "dropout_context": trial.suggest_float("dropout_context", 0.0, 0.7),
            "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
            "batch_size": trial.suggest_int("batch_size", 64, 512, log=True),
            "epochs": trial.suggest_int("epochs", 3, 30),
            "patience": 0,
        }
