"""Paged attention without copying the cache: FlexAttention over the whole cache with a block-sparse mask.

The portable path (herd.infer.paged_attention) gathers each sequence's blocks into a padded tensor
every step. Here the step's queries attend directly to the cache tensor of a layer, viewed as one
long "sequence" of slots [1, Hkv, slots, hd], and a `BlockMask` built once per step (for all
layers) lets a query see exactly the slots of its own sequence's blocks at logical positions up to
its own. The mask is evaluated per (query, slot) as

    member[seq(q), block(kv)] and logical_block[block(kv)] * block_size + kv % block_size <= pos(q)

which also holds for prefix-shared blocks: a shared block sits at the same logical index in every
table that holds it (prefixes are shared from the start), and `member` is a set, not an owner.
FlexAttention skips 128-slot tiles the mask leaves empty, so it reads only the blocks in use.

Status: numerics are tested on CPU against the portable path (eager FlexAttention); on CUDA it is
compiled (`torch.compile(flex_attention, dynamic=True)`). Not yet measured on a GPU, so the engine
uses it only when asked (`EngineConfig(attention="flex")`).
"""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention


def build_block_mask(
    block_tables: list[list[int]], starts: list[int], lengths: list[int], block_size: int, num_blocks: int,
    device: torch.device,
) -> BlockMask:
    """The step's mask: chunk i's tokens (positions starts[i] ..) see their own table's slots causally."""
    member = torch.zeros(len(block_tables), num_blocks, dtype=torch.bool)
    logical = torch.zeros(num_blocks, dtype=torch.long)
    for i, table in enumerate(block_tables):
        ids = torch.tensor(table, dtype=torch.long)
        member[i, ids] = True
        logical[ids] = torch.arange(len(table))
    len_t = torch.tensor(lengths, dtype=torch.long)
    q_seq = torch.repeat_interleave(torch.arange(len(lengths)), len_t)
    offsets = torch.cumsum(len_t, 0) - len_t
    q_pos = torch.arange(int(len_t.sum())) - offsets[q_seq] + torch.tensor(starts)[q_seq]
    member, logical, q_seq, q_pos = (t.to(device) for t in (member, logical, q_seq, q_pos))

    def mask_mod(b, h, q, kv):  # type: ignore[no-untyped-def]
        blk = kv // block_size
        return member[q_seq[q], blk] & (logical[blk] * block_size + kv % block_size <= q_pos[q])

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=int(len_t.sum()), KV_LEN=num_blocks * block_size,
                             device=device)


_compiled = None


def flex_paged_attention(
    q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, block_mask: BlockMask, gqa: bool,
) -> torch.Tensor:
    """q [1, H, N, hd]; key/value cache [slots, Hkv, hd] (new tokens already written). -> [1, H, N, hd]."""
    global _compiled
    keys = key_cache.permute(1, 0, 2).unsqueeze(0)      # a view: [1, Hkv, slots, hd]
    values = value_cache.permute(1, 0, 2).unsqueeze(0)
    if q.device.type == "cuda":
        if _compiled is None:
            _compiled = torch.compile(flex_attention, dynamic=True)
        return _compiled(q, keys, values, block_mask=block_mask, enable_gqa=gqa)
    import warnings

    with warnings.catch_warnings():  # CPU: the unfused reference implementation, used for testing
        warnings.simplefilter("ignore")
        return flex_attention(q, keys, values, block_mask=block_mask, enable_gqa=gqa)
