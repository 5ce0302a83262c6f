"""Loaders that feed post-training batches to the training loop, with exact resume.

`SFTLoader` packs whole dialogs into rows of `seq_len` with document ids (the same block-causal mask
and restarting positions as pretraining's packing, so a packed dialog is computed exactly as alone)
and targets set to -100 wherever the loss mask says the next token is not trained; `pack=False`
gives one dialog per row, padded, for comparison. `PreferenceLoader` hands out groups of encoded
preferences (a prompt and its ranked responses) with their index, which keys the reference
log-probs. Both walk a seeded permutation per epoch and carry (epoch, cursor) as their state, so a
resumed run sees exactly the batches the killed one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from herd.data.loader import Batch
from herd.post.encoding import EncodedPreference, EncodedSFT

IGNORE_INDEX = -100
STATE_VERSION = 1


class _EpochCursor:
    """A seeded permutation of `count` items per epoch and a position in it."""

    def __init__(self, count: int, seed: int, shuffle: bool = True) -> None:
        if count <= 0:
            raise ValueError("no training examples (every record was skipped or the files are empty)")
        self.count, self.seed, self.shuffle = count, int(seed), shuffle
        self.epoch = 0
        self.cursor = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.count)
        return np.random.default_rng([self.seed, epoch]).permutation(self.count)

    def peek(self) -> int:
        return int(self._order[self.cursor])

    def advance(self) -> None:
        self.cursor += 1
        if self.cursor == self.count:
            self.epoch += 1
            self.cursor = 0
            self._order = self._permutation(self.epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "epoch": self.epoch, "cursor": self.cursor, "count": self.count,
                "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("count") != self.count or state.get("seed") != self.seed:
            raise ValueError(f"loader state is for {state.get('count')} examples with seed {state.get('seed')}, "
                             f"this data has {self.count} with seed {self.seed}: the data or seed changed")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation(self.epoch)

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.cursor / self.count


class SFTLoader:
    """TrainLoader over encoded dialogs: rows of whole dialogs (truncated to `seq_len` when longer)."""

    def __init__(self, examples: Sequence[EncodedSFT], *, seed: int = 0, pack: bool = True,
                 shuffle: bool = True, pad_id: int = 0) -> None:
        self.examples = list(examples)
        self.pack = pack
        self.pad_id = pad_id
        self.order = _EpochCursor(len(self.examples), seed, shuffle)
        self.truncated = 0

    def _row(self, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tokens = np.full(seq_len, self.pad_id, dtype=np.int64)
        targets = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
        doc_ids = np.zeros(seq_len, dtype=np.int64)
        used = 0
        doc = 0
        while used < seq_len:
            example = self.examples[self.order.peek()]
            n = len(example.tokens)
            if used and (not self.pack or n > seq_len - used):
                break  # the next dialog starts a new row (dialogs are never split across rows)
            if n > seq_len:
                self.truncated += 1
                n = seq_len
            ids = np.asarray(example.tokens[:n], dtype=np.int64)
            trained = np.asarray(example.loss_mask[:n], dtype=bool)
            tokens[used:used + n] = ids
            # position i predicts token i + 1: trained when that token is
            row_targets = np.where(trained[1:], ids[1:], IGNORE_INDEX)
            targets[used:used + n - 1] = row_targets
            doc_ids[used:used + n] = doc
            used += n
            doc += 1
            self.order.advance()
            if not self.pack:
                break
        doc_ids[used:] = doc  # padding: a segment of its own, no targets
        return tokens, targets, doc_ids

    def next_batch(self, batch_size: int, seq_len: int) -> Batch:
        if batch_size <= 0 or seq_len <= 1:
            raise ValueError(f"batch_size must be positive and seq_len > 1, got {batch_size}, {seq_len}")
        rows = [self._row(seq_len) for _ in range(batch_size)]
        return Batch(*(torch.from_numpy(np.stack(part)) for part in zip(*rows)))

    def state_dict(self) -> dict[str, Any]:
        return {**self.order.state_dict(), "pack": self.pack}

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)

    @property
    def epochs_done(self) -> float:
        return self.order.epochs_done


class PreferenceLoader:
    """TrainLoader over encoded preferences: `next_batch(n, seq_len)` -> n (index, preference) pairs.

    `seq_len` is not used to cut anything: preferences longer than the recipe's sequence length are
    dropped when the data is encoded (and counted there).
    """

    def __init__(self, examples: Sequence[EncodedPreference], *, seed: int = 0, shuffle: bool = True) -> None:
        self.examples = list(examples)
        self.order = _EpochCursor(len(self.examples), seed, shuffle)

    def next_batch(self, batch_size: int, seq_len: int) -> list[tuple[int, EncodedPreference]]:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        out = []
        for _ in range(batch_size):
            index = self.order.peek()
            out.append((index, self.examples[index]))
            self.order.advance()
        return out

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)

    @property
    def epochs_done(self) -> float:
        return self.order.epochs_done
