"""The pretraining loader: mixture-sampled documents packed back to back into [B, T] rows.

The loader is a cursor over one infinite token stream: documents drawn by the MixtureSampler,
each `<|begin_of_text|> ... <|end_of_text|>`, concatenated. `next_batch(B, T)` takes the next B*T
tokens and cuts them into rows, so changing B or T between calls (batch-size ramp, long-context
stages) neither skips nor repeats a token. A document cut by a row boundary continues at the start
of the next row as a new segment (its positions restart there; it cannot see its earlier part).

Targets are the next token of the same document; -100 where the next token starts another
document. At the end of a row whose document continues in the next row, the target is that next
token (it is still the same document), so no token of the stream goes untrained. A source with a
loss mask (herd.data.shards) also gets -100 wherever the next token's mask is 0: the model reads
those tokens but is not trained to predict them (answer-only loss on synthetic documents). A masked
document cut by a row boundary is not trained in its continuation: the row cannot see the part before
the cut, where a retrieval document's facts are, so its answers there would be guesses.

`doc_ids` number the segments of each row 0, 1, 2, ...; `herd.model.DocumentMask(doc_ids)`
turns them into block-causal attention with per-document positions.

State (`state_dict`) is JSON: the sampler's counters plus the partly consumed document, so
`load_state_dict` continues with exactly the tokens the saved loader would have produced next.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from herd.data.errors import DataError
from herd.data.mixture import MixtureSampler, resolve_weights
from herd.data.shards import SPLITS, TokenShards

IGNORE_INDEX = -100
STATE_VERSION = 1


class Batch(NamedTuple):
    inputs: torch.Tensor  # int64 [B, T] token ids
    targets: torch.Tensor  # int64 [B, T]; next token of the same document, else -100
    doc_ids: torch.Tensor  # int64 [B, T]; segment number within the row


class TrainLoader(Protocol):
    def next_batch(self, batch_size: int, seq_len: int) -> Batch: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class PackedLoader:
    """TrainLoader over token shard directories (see `build_loader`)."""

    def __init__(
        self, shards: Mapping[str, TokenShards], weights: Mapping[str, float], *, seed: int = 0, split: str = "train"
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.split = split
        self.seed = int(seed)
        self.shards = {name: shards[name] for name in weights}
        self.documents: dict[str, np.ndarray] = {}
        mean_length: dict[str, float] = {}
        for name, shard in self.shards.items():
            docs = shard.split_documents(split)
            if len(docs) == 0:
                raise DataError(f"source {name!r} ({shard.directory}) has no {split} documents"
                                + (" (tokenize with --validation-fraction > 0)" if split == "validation" else ""))
            self.documents[name] = docs
            mean_length[name] = float(shard.document_lengths()[docs].mean())
        self.sampler = MixtureSampler(weights, {n: len(d) for n, d in self.documents.items()}, mean_length,
                                      seed=self.seed)
        self._current: tuple[str, int] | None = None  # (source, global document index)
        self._offset = 0  # tokens of the current document already emitted
        self.tokens_emitted = 0

    # -- the token stream ---------------------------------------------------------------------
    def _document(self, name: str, index: int) -> np.ndarray:
        return self.shards[name].document(index)

    def _take(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next `count` stream tokens, their targets, and a stream-global segment number each."""
        pieces: list[np.ndarray] = []
        targets: list[np.ndarray] = []
        segments: list[np.ndarray] = []
        need = count
        segment = 0
        while need > 0:
            if self._current is None:
                name, position = self.sampler.next()
                self._current = (name, int(self.documents[name][position]))
                self._offset = 0
            doc = self._document(*self._current)
            take = min(need, len(doc) - self._offset)
            piece = np.asarray(doc[self._offset : self._offset + take], dtype=np.int64)
            self._offset += take
            need -= take
            target = np.empty(take, dtype=np.int64)
            target[:-1] = piece[1:]
            # The last token's target: the document's next token if it continues, else a boundary.
            target[-1] = int(doc[self._offset]) if self._offset < len(doc) else IGNORE_INDEX
            mask = self.shards[self._current[0]].document_mask(self._current[1])
            start = self._offset - take
            if mask is not None and start > 0:
                target[:] = IGNORE_INDEX      # the continuation of a cut masked document (see above)
            elif mask is not None:
                # the target of token i is token i + 1: trained only where that token's mask is 1
                following = np.asarray(mask[start + 1 : start + take + 1]) != 0
                trained = np.zeros(take, dtype=bool)
                trained[: len(following)] = following
                target[~trained] = IGNORE_INDEX
            if self._offset == len(doc):
                self._current = None
            pieces.append(piece)
            targets.append(target)
            segments.append(np.full(take, segment, dtype=np.int64))
            segment += 1
        self.tokens_emitted += count
        return np.concatenate(pieces), np.concatenate(targets), np.concatenate(segments)

    def next_batch(self, batch_size: int, seq_len: int) -> Batch:
        if batch_size <= 0 or seq_len <= 0:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
        # row by row, so that a piece of a document never spans two rows (a continuation starts a row)
        rows = [self._take(seq_len) for _ in range(batch_size)]
        tokens, targets = np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
        segments = np.stack([r[2] for r in rows])
        # Renumber per row: a new segment wherever the stream segment changes, starting at 0 each row.
        changes = np.zeros_like(segments)
        changes[:, 1:] = segments[:, 1:] != segments[:, :-1]
        doc_ids = np.cumsum(changes, axis=1)
        return Batch(
            torch.from_numpy(tokens.reshape(batch_size, seq_len)),
            torch.from_numpy(targets.reshape(batch_size, seq_len)),
            torch.from_numpy(doc_ids),
        )

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "split": self.split,
            "seed": self.seed,
            "sources": {name: str(shard.directory) for name, shard in self.shards.items()},
            "sampler": self.sampler.state_dict(),
            "current": None if self._current is None else {
                "source": self._current[0], "document": self._current[1], "offset": self._offset},
            "tokens_emitted": self.tokens_emitted,
        }

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise DataError(f"not a herd.data loader state (version {STATE_VERSION}): {str(state)[:200]}")
        if state["split"] != self.split:
            raise DataError(f"loader state is for split {state['split']!r}, this loader reads {self.split!r}")
        if set(state["sources"]) != set(self.shards):
            raise DataError(f"loader state has sources {sorted(state['sources'])}, this loader {sorted(self.shards)}")
        self.sampler.load_state_dict(state["sampler"])
        current = state["current"]
        if current is None:
            self._current, self._offset = None, 0
        else:
            name, index, offset = current["source"], int(current["document"]), int(current["offset"])
            if name not in self.shards or not 0 <= index < self.shards[name].num_documents:
                raise DataError(f"loader state points at document {index} of {name!r}, which does not exist")
            if not 0 < offset < self.shards[name].document_length(index):
                raise DataError(f"loader state offset {offset} is outside document {index} of {name!r}")
            self._current, self._offset = (name, index), offset
        self.tokens_emitted = int(state["tokens_emitted"])


def open_sources(sources: Mapping[str, str | Path], *, verify: bool = False) -> dict[str, TokenShards]:
    """Open and validate every source directory; all must share one tokenizer vocabulary."""
    opened = {name: TokenShards(path, verify=verify) for name, path in sources.items()}
    vocab = {name: (s.manifest["tokenizer"].get("name"), s.vocab_size) for name, s in opened.items()}
    if len(set(vocab.values())) > 1:
        raise DataError(f"sources were tokenized with different tokenizers: {vocab}")
    return opened


def build_loader(
    sources: Mapping[str, str | Path],
    weights: Mapping[str, float] | str,
    *,
    seed: int = 0,
    split: str = "train",
    missing: str = "error",
    verify: bool = False,
) -> PackedLoader:
    """A packed, mixture-sampled, resumable loader over token shard directories.

    `sources` maps a name to a directory written by `herd tokenize`; `weights` are token shares per
    source or a mix name from NAMED_MIXES. Every problem (unknown source in the weights, missing
    directory, truncated shard, split without documents) is a DataError raised here, before any
    batch. `verify=True` also checks the sha256 of every shard file.
    """
    if not isinstance(sources, Mapping) or not sources:
        raise DataError(f"sources must be a non-empty mapping of name -> shard directory, got {sources!r}")
    resolved = resolve_weights(weights, list(sources), missing=missing)
    shards = open_sources({name: sources[name] for name in resolved}, verify=verify)
    return PackedLoader(shards, resolved, seed=seed, split=split)
