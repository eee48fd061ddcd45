"""Top-k next-item recommendations for whole sessions, from a saved model folder (model/artifacts.py).

Works with a model of any family (a ``SessionModel``, model/families.py). Each session (item ids, oldest
first) is mapped through the model's vocabulary; unknown items are skipped and counted. Only the most
recent ``max_session_events`` known items of a session are scored, so one very long session (a crawler)
has a bounded cost. A session with no known item gets the most popular items instead (flagged
``fallback``).

Sessions are processed in chunks of sessions of similar length (sorted by length, longest first), so a
chunk's padded item matrix is hardly larger than its items; a row's result never depends on the other
rows of its chunk. Each chunk ends with one [chunk, n_items] score matrix and one ``topk``; on the CPU a
chunk holds fewer sessions when that matrix would outgrow :data:`CPU_SCORE_MATRIX_BYTES`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from model.artifacts import load_model
from model.data import Vocabulary
from model.device import resolve_device
from model.families import SessionModel

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 2048
DEFAULT_MAX_SESSION_EVENTS = 50
# glibc's malloc hands out smaller blocks again from memory it keeps, but maps every block above its
# largest mmap threshold (32 MiB) afresh, so the kernel zeroes new pages for each chunk's score matrix.
CPU_SCORE_MATRIX_BYTES = 16 << 20


@dataclass(frozen=True)
class Recommendations:
    """One row per recommendation, rows grouped by input session (input order) then rank.

    ``score`` is the network's score; for fallback rows it is the item's share of training events.
    Items are kept as vocabulary indexes (``item_index``) into ``vocabulary_ids``: turning millions of
    rows into strings is done by Arrow in :meth:`to_arrow`, not one Python object at a time.
    """

    session_index: np.ndarray
    rank: np.ndarray
    item_index: np.ndarray
    score: np.ndarray
    fallback: np.ndarray
    unknown_items: int
    fallback_sessions: int
    vocabulary_ids: pa.Array = field(repr=False)

    def __len__(self) -> int:
        return len(self.rank)

    @cached_property
    def item_id(self) -> np.ndarray:
        """The recommended item ids (object array of str)."""
        return np.asarray(self.vocabulary_ids.to_pylist(), dtype=object)[self.item_index]

    def to_arrow(self, session_ids: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray) -> pa.Table:
        """Columns session_id, rank, item_id, score, fallback; ``session_ids`` has one id per input session."""
        if isinstance(session_ids, pa.ChunkedArray):
            session_ids = session_ids.combine_chunks()
        ids = session_ids if isinstance(session_ids, pa.Array) else pa.array(session_ids, type=pa.string())
        if len(self.session_index) and int(self.session_index.max()) >= len(ids):
            raise ValueError(f"{len(ids)} session ids given for at least {int(self.session_index.max()) + 1} "
                             "input sessions; pass one id per session given to recommend()")
        return pa.table({
            "session_id": ids.take(pa.array(self.session_index)),
            "rank": pa.array(self.rank, type=pa.int32()),
            "item_id": self.vocabulary_ids.take(pa.array(self.item_index)),
            "score": pa.array(self.score, type=pa.float32()),
            "fallback": pa.array(self.fallback, type=pa.bool_()),
        })

    def to_pandas(self, session_ids: Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray) -> pd.DataFrame:
        return self.to_arrow(session_ids).to_pandas()


@dataclass(frozen=True)
class EncodedSessions:
    """Known item indexes of every session, flattened: session ``s`` is ``items[offsets[s]:offsets[s+1]]``."""

    items: np.ndarray
    offsets: np.ndarray
    unknown_items: int

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def encode_sessions(sessions: Sequence[Sequence[str]], vocabulary: Vocabulary) -> EncodedSessions:
    """Map item ids to indexes, dropping (and counting) ids the vocabulary does not hold.

    A session's ids may be any sequence (list, tuple, numpy array) of strings."""
    lengths = np.fromiter((len(s) for s in sessions), dtype=np.int64, count=len(sessions))
    flat = list(chain.from_iterable(sessions))
    try:
        idx = vocabulary.lookup(flat) if flat else np.zeros(0, dtype=np.int64)
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise TypeError(f"sessions must hold item ids as strings: {exc}") from exc
    known = idx >= 0
    session_of_event = np.repeat(np.arange(len(lengths)), lengths)
    known_lengths = np.bincount(session_of_event[known], minlength=len(lengths))
    offsets = np.concatenate([[0], np.cumsum(known_lengths)]).astype(np.int64)
    return EncodedSessions(idx[known], offsets, int((~known).sum()))


def rows_per_chunk(chunk_size: int, n_items: int, device: torch.device) -> int:
    """``chunk_size``, or on the CPU fewer, so that a chunk's float32 score matrix stays within
    :data:`CPU_SCORE_MATRIX_BYTES`."""
    if device.type != "cpu":
        return chunk_size
    return max(1, min(chunk_size, CPU_SCORE_MATRIX_BYTES // max(4 * n_items, 1)))


class Recommender:
    """A trained session model and its vocabulary, ready to recommend; inference only, on one device."""

    def __init__(self, model: SessionModel, vocabulary: Vocabulary, device: torch.device | str = "cpu",
                 chunk_size: int = DEFAULT_CHUNK_SIZE,
                 max_session_events: int = DEFAULT_MAX_SESSION_EVENTS) -> None:
        for name, value in (("chunk_size", chunk_size), ("max_session_events", max_session_events)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(model, SessionModel):
            raise TypeError(f"model must implement SessionModel (family, n_items, device, score_sessions), "
                            f"got {type(model).__name__}")
        self.model = model.to(torch.device(device)).eval()
        self.device = self.model.device  # a CPU-only family stays on the CPU
        self.vocabulary = vocabulary
        self._chunk_rows = rows_per_chunk(chunk_size, model.n_items, self.device)
        self.max_session_events = max_session_events
        if model.n_items != len(vocabulary):
            raise ValueError(f"the network scores {model.n_items} items but the vocabulary holds "
                             f"{len(vocabulary)}")
        self._item_ids = pa.array(vocabulary.item_ids, type=pa.string())
        counts = np.asarray(vocabulary.counts, dtype=np.float64)
        self._popular = np.lexsort((np.arange(len(counts)), -counts))
        self._popularity = (counts / max(counts.sum(), 1.0)).astype(np.float32)

    @classmethod
    def from_directory(cls, directory: Path | str, device: str = "auto", chunk_size: int = DEFAULT_CHUNK_SIZE,
                       max_session_events: int = DEFAULT_MAX_SESSION_EVENTS) -> Recommender:
        """Load a model folder of any family onto ``device`` (auto, cpu, cuda)."""
        resolved = resolve_device(device)
        model, vocabulary, _ = load_model(Path(directory), device=resolved)
        logger.info("loaded %s model %s: %d items, on %s", model.family, directory, len(vocabulary), resolved)
        return cls(model, vocabulary, resolved, chunk_size, max_session_events)

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def n_items(self) -> int:
        return len(self.vocabulary)

    def recommend(self, sessions: Sequence[Sequence[str]], k: int = 20,
                  exclude_last: bool = True) -> Recommendations:
        """Top-``k`` items for each session (item ids oldest first), best first.

        ``exclude_last`` removes each session's last known item from its own recommendations. Every
        session gets the same number of rows: ``k``, or fewer when the vocabulary is smaller.
        """
        return self.recommend_encoded(encode_sessions(sessions, self.vocabulary), k, exclude_last)

    def recommend_encoded(self, encoded: EncodedSessions, k: int = 20, exclude_last: bool = True) -> Recommendations:
        """:meth:`recommend` for sessions already mapped to vocabulary indexes (:func:`encode_sessions`, or a
        caller that looked the items up in bulk): one session per ``encoded.offsets`` interval."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        start = time.perf_counter()
        k = int(min(k, self.n_items - int(exclude_last)))
        if k < 1:
            raise ValueError(f"cannot recommend from a vocabulary of {self.n_items} item(s) "
                             f"with exclude_last={exclude_last}")
        n = len(encoded.lengths)
        item_idx = np.empty((n, k), dtype=np.int64)
        scores = np.empty((n, k), dtype=np.float32)
        fallback = encoded.lengths == 0
        item_idx[fallback] = self._popular[:k]
        scores[fallback] = self._popularity[self._popular[:k]]
        self._score_known(encoded, k, exclude_last, item_idx, scores)
        result = Recommendations(
            session_index=np.repeat(np.arange(n, dtype=np.int64), k),
            rank=np.tile(np.arange(1, k + 1, dtype=np.int32), n),
            item_index=item_idx.ravel(),
            score=scores.ravel(),
            fallback=np.repeat(fallback, k),
            unknown_items=encoded.unknown_items,
            fallback_sessions=int(fallback.sum()),
            vocabulary_ids=self._item_ids,
        )
        logger.info("recommended %d items to each of %d sessions in %.2f s (%d fallback sessions, "
                    "%d unknown items skipped)", k, n, time.perf_counter() - start, result.fallback_sessions,
                    result.unknown_items)
        return result

    def _score_known(self, encoded: EncodedSessions, k: int, exclude_last: bool, item_idx: np.ndarray,
                     scores: np.ndarray) -> None:
        """Fill the rows of sessions with at least one known item, chunk by chunk, longest sessions first."""
        lengths = np.minimum(encoded.lengths, self.max_session_events)
        order = np.argsort(-lengths, kind="stable")
        order = order[lengths[order] > 0]
        with torch.inference_mode():
            for begin in range(0, len(order), self._chunk_rows):
                rows = order[begin:begin + self._chunk_rows]
                top_scores, top_items = self._top_k(encoded, rows, lengths[rows], k, exclude_last)
                item_idx[rows] = top_items
                scores[rows] = top_scores

    def _top_k(self, encoded: EncodedSessions, rows: np.ndarray, lengths: np.ndarray, k: int,
               exclude_last: bool) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, item indexes) for sessions ``rows`` over their last ``lengths`` known items."""
        ends = encoded.offsets[rows + 1]
        position = np.arange(int(lengths.max()))
        valid = position[None, :] < lengths[:, None]
        padded = np.zeros((len(rows), len(position)), dtype=np.int64)
        padded[valid] = encoded.items[((ends - lengths)[:, None] + position[None, :])[valid]]
        item_scores = self.model.score_sessions(torch.from_numpy(padded).to(self.device),
                                                torch.from_numpy(lengths).to(self.device))
        if exclude_last:
            last = torch.from_numpy(encoded.items[ends - 1]).to(item_scores.device)
            item_scores.scatter_(1, last.unsqueeze(1), float("-inf"))
        top = torch.topk(item_scores, k, dim=1, sorted=True)
        return top.values.float().cpu().numpy(), top.indices.cpu().numpy()
