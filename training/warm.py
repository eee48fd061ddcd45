"""Warm start: a network for a new vocabulary that starts from a trained model's weights.

Nightly retraining can start from the champion instead of from random weights. The network must be of
the same family and architecture (layers, input mode, embedding size); the vocabulary may differ. Items
the champion knows keep their rows of every item table (output embedding, bias, input embedding); items
it does not know get fresh rows, initialised exactly as a new network's; items it knew that left the
vocabulary are dropped. The GRU weights are copied. The optimizer starts afresh (a model folder carries
no optimizer state). ``train(..., warm_start=WarmStart.from_model_dir(...))`` trains from it, usually for
fewer epochs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.artifacts import load_model
from model.data import Vocabulary
from model.network import GRU4Rec, GRU4RecConfig

logger = logging.getLogger(__name__)

_ARCHITECTURE = ("layers", "embedding", "constrained_embedding")


@dataclass(frozen=True)
class WarmStart:
    """A trained network and its vocabulary, to start training on data of ``vocabulary`` from."""

    champion: GRU4Rec
    champion_vocabulary: Vocabulary
    vocabulary: Vocabulary
    source: str = "the champion"

    @classmethod
    def from_model_dir(cls, model_dir: Path | str, vocabulary: Vocabulary) -> WarmStart:
        """The model saved in ``model_dir`` (``model.artifacts`` layout), for data of ``vocabulary``."""
        champion, champion_vocabulary, _ = load_model(Path(model_dir))
        return cls(champion, champion_vocabulary, vocabulary, source=str(model_dir))

    def apply(self, model: GRU4Rec) -> None:
        """Overwrite ``model``'s GRU weights and its known items' rows with the champion's, in place.

        ``model`` is a freshly initialised network over :attr:`vocabulary`; its other rows stay as they are.
        """
        config, old = model.config, self.champion.config
        if config.n_items != len(self.vocabulary):
            raise ValueError(f"the network has {config.n_items} items but the vocabulary {len(self.vocabulary)}")
        differs = [f"{name} {getattr(old, name)!r} vs {getattr(config, name)!r}" for name in _ARCHITECTURE
                   if getattr(old, name) != getattr(config, name)]
        if differs:
            raise ValueError(f"{self.source}: cannot warm-start from a network of another architecture "
                             f"({'; '.join(differs)})")
        old_index = self.champion_vocabulary.lookup(self.vocabulary.item_ids)
        known = np.flatnonzero(old_index >= 0)
        new_rows, old_rows = torch.from_numpy(known), torch.from_numpy(old_index[known])
        item_names = self.champion.item_parameter_names()
        old_state = self.champion.state_dict()
        with torch.no_grad():
            for name, p in model.named_parameters():
                value = old_state[name].to(p.device, p.dtype)
                if name in item_names:
                    p.index_copy_(0, new_rows.to(p.device), value.index_select(0, old_rows.to(p.device)))
                else:
                    p.copy_(value)
        logger.info("warm start from %s: %d of %d items known, %d new, %d dropped", self.source, len(known),
                    len(self.vocabulary), len(self.vocabulary) - len(known), len(self.champion_vocabulary) - len(known))


def warm_start(model_dir: Path | str, vocabulary: Vocabulary, config: GRU4RecConfig) -> GRU4Rec:
    """A new network of ``config`` over ``vocabulary`` (fresh rows from the global RNG) with the weights
    of the model in ``model_dir`` carried over (see :meth:`WarmStart.apply`)."""
    model = GRU4Rec(config)
    WarmStart.from_model_dir(model_dir, vocabulary).apply(model)
    return model
