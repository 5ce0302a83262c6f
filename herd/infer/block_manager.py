"""Paged KV-cache bookkeeping: fixed-size blocks, reference counts, a free list, prefix caching.

A sequence's keys/values live in blocks of `block_size` token slots; its *block table* lists them
in order, so token position p sits in slot `table[p // block_size] * block_size + p % block_size`.

Sharing:
- fork: the n samples of one request share the prompt's blocks (reference counts); the first
  sample to write into a shared, partially filled last block gets its own copy (copy-on-write).
- prefix caching: every full block is named by a hash of its tokens and of the blocks before it;
  a new sequence whose prompt starts with the same tokens reuses those blocks instead of
  recomputing them. A cached block whose reference count drops to zero stays findable (in LRU
  order) until the allocator needs its memory.

Only bookkeeping here; the tensors are in `paged_attention.PagedKVCache`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Protocol


class BlockOwner(Protocol):
    """What the manager needs of a sequence."""

    token_ids: list[int]
    num_computed: int
    block_table: list[int]
    block_hashes: list[int]
    num_registered: int   # leading blocks of the table already offered to the prefix cache


def hash_block(parent: int | None, tokens: Sequence[int]) -> int:
    """Name of a full block: its tokens and (through `parent`) every token before it."""
    return hash((parent, tuple(tokens)))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need at least one block of at least one slot, got {num_blocks} x {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        # Cached blocks nobody references, oldest first: reusable by a prefix hit, or evicted on demand.
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._cached: dict[int, int] = {}            # block hash -> block id
        self._block_hash: list[int | None] = [None] * num_blocks
        self.num_used = 0                            # blocks with a reference count > 0
        self.prefix_hit_tokens = 0                   # tokens not recomputed thanks to the prefix cache
        self.copies_total = 0                        # copy-on-write block copies

    # ----- block level

    @property
    def num_free(self) -> int:
        """Blocks an allocation can get now (free or evictable cached)."""
        return len(self._free) + len(self._evictable)

    def _take(self) -> int:
        if self._free:
            block = self._free.popleft()
        elif self._evictable:
            block, _ = self._evictable.popitem(last=False)
            del self._cached[self._block_hash[block]]  # type: ignore[index]
            self._block_hash[block] = None
        else:
            raise RuntimeError("out of KV cache blocks (the scheduler should have preempted)")
        self.ref_counts[block] = 1
        self.num_used += 1
        return block

    def _incref(self, block: int) -> None:
        if self.ref_counts[block] == 0:
            del self._evictable[block]
            self.num_used += 1
        self.ref_counts[block] += 1

    def _decref(self, block: int) -> None:
        count = self.ref_counts[block] - 1
        if count < 0:
            raise RuntimeError(f"block {block} freed twice")
        self.ref_counts[block] = count
        if count == 0:
            self.num_used -= 1
            if self._block_hash[block] is not None:
                self._evictable[block] = None
            else:
                self._free.append(block)

    # ----- sequence level

    def blocks_needed(self, seq: BlockOwner, num_new: int) -> int:
        """New blocks `seq` needs to store `num_new` more tokens (copy-on-write included)."""
        start = seq.num_computed
        total = -(-(start + num_new) // self.block_size)
        needed = max(0, total - len(seq.block_table))
        if start % self.block_size and self.ref_counts[seq.block_table[start // self.block_size]] > 1:
            needed += 1
        return needed

    def can_append(self, seq: BlockOwner, num_new: int) -> bool:
        return self.blocks_needed(seq, num_new) <= self.num_free

    def append_slots(self, seq: BlockOwner, num_new: int) -> list[tuple[int, int]]:
        """Give `seq` room for `num_new` more tokens; returns the (src, dst) block copies to run first."""
        copies: list[tuple[int, int]] = []
        start = seq.num_computed
        if start % self.block_size:
            index = start // self.block_size
            old = seq.block_table[index]
            if self.ref_counts[old] > 1:
                new = self._take()
                copies.append((old, new))
                self._decref(old)
                seq.block_table[index] = new
                self.copies_total += 1
        total = -(-(start + num_new) // self.block_size)
        while len(seq.block_table) < total:
            seq.block_table.append(self._take())
        return copies

    def fork(self, parent: BlockOwner, child: BlockOwner) -> None:
        """`child` shares all of `parent`'s blocks."""
        child.block_table = list(parent.block_table)
        child.num_registered = parent.num_registered
        for block in child.block_table:
            self._incref(block)

    def free(self, seq: BlockOwner) -> None:
        # Tail first: the end of a sequence is the least likely part to be shared by a later prompt,
        # so its cached blocks should be evicted before the head's.
        for block in reversed(seq.block_table):
            self._decref(block)
        seq.block_table = []
        seq.num_registered = 0

    # ----- prefix cache

    def _full_block_hashes(self, seq: BlockOwner, num_blocks: int) -> list[int]:
        hashes = seq.block_hashes
        bs = self.block_size
        while len(hashes) < num_blocks:
            i = len(hashes)
            hashes.append(hash_block(hashes[-1] if hashes else None, seq.token_ids[i * bs:(i + 1) * bs]))
        return hashes[:num_blocks]

    def match_prefix(self, seq: BlockOwner, compute_from: int | None = None) -> list[int]:
        """Cached blocks holding a prefix of `seq`'s tokens (never all of them: the last token is
        always computed so the step has logits to sample from; nor any block at or after
        `compute_from`, a position whose logits the request needs, as prompt logprobs do)."""
        if not self.enable_prefix_caching:
            return []
        limit = (len(seq.token_ids) - 1) // self.block_size
        if compute_from is not None:
            limit = min(limit, max(compute_from, 0) // self.block_size)
        hits: list[int] = []
        for h in self._full_block_hashes(seq, limit):
            block = self._cached.get(h)
            if block is None:
                break
            hits.append(block)
        return hits

    def evictable_among(self, blocks: Sequence[int]) -> int:
        return sum(1 for b in blocks if self.ref_counts[b] == 0)

    def acquire_prefix(self, seq: BlockOwner, hits: Sequence[int]) -> None:
        """Take the prefix-cache hits as the start of a fresh sequence's table."""
        for block in hits:
            self._incref(block)
        seq.block_table = list(hits)
        seq.num_registered = len(hits)
        seq.num_computed = len(hits) * self.block_size
        self.prefix_hit_tokens += seq.num_computed

    def register_full_blocks(self, seq: BlockOwner) -> None:
        """Name the blocks `seq` has filled (computed) so later prompts can reuse them."""
        if not self.enable_prefix_caching:
            return
        full = min(seq.num_computed // self.block_size, len(seq.block_table))
        if full <= seq.num_registered:
            return
        hashes = self._full_block_hashes(seq, full)
        for i in range(seq.num_registered, full):
            block = seq.block_table[i]
            if self._block_hash[block] is None and hashes[i] not in self._cached:
                self._cached[hashes[i]] = block
                self._block_hash[block] = hashes[i]
        seq.num_registered = full
