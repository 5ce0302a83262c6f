"""The paged KV cache tensors and attention over them for one engine step.

Storage: per layer, one keys and one values tensor `[num_blocks * block_size, n_kv_heads, head_dim]`
in the model's dtype and device ("slots": block b's token t lives at slot b * block_size + t), so
writing is one `index_copy_` and gathering one `index_select` per layer. Each is its own allocation,
not a view of a shared one: a compiled decode step (herd.infer.compiled_decode) can then update it
in place, where a write through a view makes torch.compile copy the whole base tensor every step.

A step's tokens come flattened: first the single-token chunks (decodes), then the multi-token
chunks (prefill, possibly a chunk of a longer prompt). `StepMetadata` is built once per step (slot
mapping, key slots and masks); `PagedAttentionState.attend` then writes each layer's new k/v and
calls `paged_attention`, the one function a CUDA kernel (FlexAttention / a paged decode kernel)
would replace. Its portable implementation:
- decodes: gather each sequence's cached keys into a padded [B, Hkv, L, hd] with a length mask,
  one SDPA call for the whole batch;
- prefill chunks: one SDPA per chunk; a chunk with no cached prefix attends to its own new k/v
  causally, a later chunk gathers its prefix and uses an offset causal mask.
Every op used is available on CUDA too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from herd.infer import cpu_kernels
from herd.model.config import ModelConfig


class PagedKVCache:
    def __init__(
        self, config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype, device: torch.device | str
    ) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        slots = num_blocks * block_size
        shape = (slots, config.n_kv_heads, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layers)]

    @staticmethod
    def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        itemsize = torch.empty((), dtype=dtype).element_size()
        return config.n_layers * 2 * block_size * config.n_kv_heads * config.head_dim * itemsize

    def copy_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Copy whole blocks (every layer, keys and values): copy-on-write of shared partial blocks."""
        if not copies:
            return
        device = self.keys[0].device
        src = torch.tensor([s for s, _ in copies], device=device)
        dst = torch.tensor([d for _, d in copies], device=device)
        slots = torch.arange(self.block_size, device=device)
        src_slots = (src[:, None] * self.block_size + slots).view(-1)
        dst_slots = (dst[:, None] * self.block_size + slots).view(-1)
        for tensor in (*self.keys, *self.values):
            tensor.index_copy_(0, dst_slots, tensor.index_select(0, src_slots))


@dataclass
class PrefillChunk:
    start: int                        # offset of the chunk's first token in the step's flat batch
    length: int                       # tokens in the chunk
    key_slots: torch.Tensor | None    # [context] cache slots of the whole context (None: no cached prefix)
    mask: torch.Tensor | None         # [length, context] bool, True = attend


@dataclass
class StepMetadata:
    slot_mapping: torch.Tensor           # [N] cache slot of every new token
    num_decodes: int                     # the first num_decodes tokens are single-token chunks
    decode_slots: torch.Tensor | None    # [B, L] cache slots of each decode's context after the shared prefix (padded)
    decode_mask: torch.Tensor | None     # [B, 1, 1, L] bool (None when every context has length L)
    prefills: list[PrefillChunk]
    shared_slots: torch.Tensor | None = None  # [P] slots of a prefix every decode shares (cascade attention)


# Below this many shared tokens the two-part (cascade) decode attention is not worth its extra ops.
MIN_SHARED_PREFIX = 64


def shared_prefix_blocks(tables: list[list[int]], contexts: list[int], block_size: int) -> int:
    """Leading blocks that every table has in common and every context fully covers.

    The n samples of one prompt (rejection sampling) share their prompt's blocks copy-on-write, so
    their decode attention can read the prompt's keys once for all of them (cascade attention).
    """
    limit = min(min(contexts) // block_size, min(len(t) for t in tables))
    first = tables[0]
    count = 0
    while count < limit and all(t[count] == first[count] for t in tables):
        count += 1
    return count


def build_metadata(
    block_tables: list[list[int]],
    starts: list[int],
    lengths: list[int],
    block_size: int,
    device: torch.device,
) -> tuple[StepMetadata, torch.Tensor]:
    """Metadata and the RoPE positions [N] for chunks (decodes first, then prefills).

    Chunk i covers positions starts[i] .. starts[i] + lengths[i] - 1 of a sequence whose blocks are
    block_tables[i]. Built with a handful of tensor ops on the CPU, then moved to `device`.
    """
    num_chunks = len(starts)
    num_decodes = 0
    while num_decodes < num_chunks and lengths[num_decodes] == 1:
        num_decodes += 1
    width = max(len(t) for t in block_tables)
    table = torch.tensor([t + [0] * (width - len(t)) for t in block_tables], dtype=torch.long)
    start_t = torch.tensor(starts, dtype=torch.long)
    arange_bs = torch.arange(block_size)
    if num_decodes == num_chunks:  # pure decode: one token per chunk
        positions = start_t
        row = torch.arange(num_chunks)
    else:
        len_t = torch.tensor(lengths, dtype=torch.long)
        row = torch.repeat_interleave(torch.arange(num_chunks), len_t)
        offsets = torch.cumsum(len_t, 0) - len_t
        positions = torch.arange(int(len_t.sum())) - offsets[row] + start_t[row]
    slot_mapping = table[row, positions // block_size] * block_size + positions % block_size
    # Every slot of every table, in token order: [chunks, width * block_size]
    all_slots = (table[:, :, None] * block_size + arange_bs).view(num_chunks, width * block_size)

    decode_slots = decode_mask = shared_slots = None
    if num_decodes:
        ctx = start_t[:num_decodes] + 1
        longest = max(starts[:num_decodes]) + 1
        shared = 0
        if num_decodes > 1:
            contexts = [s + 1 for s in starts[:num_decodes]]
            shared = shared_prefix_blocks(block_tables[:num_decodes], contexts, block_size) * block_size
            if shared < MIN_SHARED_PREFIX:
                shared = 0
        if shared:
            shared_slots = all_slots[0, :shared].contiguous().to(device, non_blocking=True)
        decode_slots = all_slots[:num_decodes, shared:longest].contiguous().to(device, non_blocking=True)
        if min(starts[:num_decodes]) + 1 != longest:
            decode_mask = (torch.arange(shared, longest)[None, :] < ctx[:, None])[:, None, None, :]
            decode_mask = decode_mask.to(device, non_blocking=True)
    prefills = []
    offset = num_decodes
    for i in range(num_decodes, num_chunks):
        start, length = starts[i], lengths[i]
        if start == 0:
            prefills.append(PrefillChunk(offset, length, None, None))
        else:
            context = start + length
            key_pos = torch.arange(context)
            query_pos = torch.arange(start, context)
            mask = key_pos[None, :] <= query_pos[:, None]
            prefills.append(
                PrefillChunk(
                    offset, length, all_slots[i, :context].to(device, non_blocking=True),
                    mask.to(device, non_blocking=True),
                )
            )
        offset += length
    meta = StepMetadata(
        slot_mapping.to(device, non_blocking=True), num_decodes, decode_slots, decode_mask, prefills, shared_slots
    )
    return meta, positions.to(device, non_blocking=True)


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    meta: StepMetadata,
    gqa: bool,
) -> torch.Tensor:
    """Attention of the step's new tokens. q [1, H, N, hd]; k/v [1, Hkv, N, hd] (already written
    to the cache); key_cache/value_cache [slots, Hkv, hd]. Returns [1, H, N, hd].

    This is the kernel boundary: a fused paged-attention kernel takes exactly these inputs.
    """
    pieces: list[torch.Tensor] = []
    b = meta.num_decodes
    if b:
        slots = meta.decode_slots
        assert slots is not None
        qd = q[0, :, :b].transpose(0, 1).unsqueeze(2)                     # [B, H, 1, hd]
        if b > 1 and torch.compiler.is_compiling():
            # Inductor's own code for batched gather + masked attention ran 2x slower than these eager
            # kernels at 16 x 540 tokens (herd.infer.compiled_decode); keep it one opaque op.
            out = torch.ops.herd.paged_decode_attention(
                qd, key_cache, value_cache, slots, meta.decode_mask, meta.shared_slots, gqa
            )
        else:
            out = decode_attention(qd, key_cache, value_cache, slots, meta.decode_mask, meta.shared_slots, gqa)
        if not meta.prefills:
            return out.squeeze(2).transpose(0, 1).unsqueeze(0)
        pieces.append(out.squeeze(2).transpose(0, 1))                      # [H, B, hd]
    for chunk in meta.prefills:
        end = chunk.start + chunk.length
        qp = q[:, :, chunk.start:end]
        if chunk.key_slots is None:
            out = F.scaled_dot_product_attention(
                qp, k[:, :, chunk.start:end], v[:, :, chunk.start:end], is_causal=chunk.length > 1, enable_gqa=gqa
            )
        else:
            keys = key_cache.index_select(0, chunk.key_slots).transpose(0, 1).unsqueeze(0)
            values = value_cache.index_select(0, chunk.key_slots).transpose(0, 1).unsqueeze(0)
            out = F.scaled_dot_product_attention(qp, keys, values, attn_mask=chunk.mask, enable_gqa=gqa)
        pieces.append(out[0])
    if len(pieces) == 1:
        return pieces[0].unsqueeze(0)
    return torch.cat(pieces, dim=1).unsqueeze(0)


def decode_attention(
    qd: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, slots: torch.Tensor,
    mask: torch.Tensor | None, shared_slots: torch.Tensor | None, gqa: bool,
) -> torch.Tensor:
    """One query per sequence: qd [B, H, 1, hd] over the cached keys at `slots` [B, L] -> [B, H, 1, hd].

    On CPU, without a shared prefix and once the engine has loaded herd's C++ kernels, the cache is
    read in place (`cpu_kernels.paged_decode_attention`); elsewhere keys and values are gathered for SDPA.
    """
    if shared_slots is None and qd.device.type == "cpu" and cpu_kernels.loaded:
        return cpu_kernels.paged_decode_attention(qd.squeeze(2), key_cache, value_cache, slots, mask).unsqueeze(2)
    b, length = slots.shape
    n_kv, head_dim = key_cache.shape[1], key_cache.shape[2]
    keys = key_cache.index_select(0, slots.reshape(-1)).view(b, length, n_kv, head_dim).transpose(1, 2)
    values = value_cache.index_select(0, slots.reshape(-1)).view(b, length, n_kv, head_dim).transpose(1, 2)
    if shared_slots is not None:
        return cascade_decode_attention(qd, key_cache, value_cache, shared_slots, keys, values, mask)
    return F.scaled_dot_product_attention(qd, keys, values, attn_mask=mask, enable_gqa=gqa)


@torch.library.custom_op("herd::paged_decode_attention", mutates_args=())
def _paged_decode_attention_op(
    qd: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, slots: torch.Tensor,
    mask: torch.Tensor | None, shared_slots: torch.Tensor | None, gqa: bool,
) -> torch.Tensor:
    return decode_attention(qd, key_cache, value_cache, slots, mask, shared_slots, gqa).contiguous()


@_paged_decode_attention_op.register_fake
def _(qd, key_cache, value_cache, slots, mask, shared_slots, gqa):  # type: ignore[no-untyped-def]
    return torch.empty_like(qd, memory_format=torch.contiguous_format)


def _partial_attention(scores: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax-weighted values over one part of the keys and that part's log-sum-exp (float32)."""
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    return torch.matmul(torch.exp(scores - lse).to(values.dtype), values).float(), lse


def cascade_decode_attention(
    q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, shared_slots: torch.Tensor,
    keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
) -> torch.Tensor:
    """Decode attention for B sequences that share a prefix: the prefix part is one matmul for all.

    q [B, H, 1, hd]; the shared prefix's keys/values are read once from the cache ([P, Hkv, hd]); each
    sequence's own suffix is `keys`/`values` [B, Hkv, S, hd] with `mask` [B, 1, 1, S]. The two
    partial softmaxes are merged exactly through their log-sum-exps (as FlashAttention merges
    blocks), so the result equals attention over the concatenated keys.
    """
    b, n_heads, _, head_dim = q.shape
    n_kv = key_cache.shape[1]
    group = n_heads // n_kv
    scale = head_dim**-0.5
    # queries grouped by KV head: [Hkv, B * group, hd] (head h uses KV head h // group)
    qg = q.reshape(b, n_kv, group, head_dim).permute(1, 0, 2, 3).reshape(n_kv, b * group, head_dim)
    prefix_k = key_cache.index_select(0, shared_slots).permute(1, 2, 0)      # [Hkv, hd, P]
    prefix_v = value_cache.index_select(0, shared_slots).transpose(0, 1)     # [Hkv, P, hd]
    out1, lse1 = _partial_attention(torch.matmul(qg, prefix_k).float() * scale, prefix_v)
    out1 = out1.view(n_kv, b, group, head_dim).permute(1, 0, 2, 3)          # [B, Hkv, group, hd]
    lse1 = lse1.view(n_kv, b, group, 1).permute(1, 0, 2, 3)
    q_own = q.reshape(b, n_kv, group, head_dim)
    scores = torch.matmul(q_own, keys.transpose(-1, -2)).float() * scale    # [B, Hkv, group, S]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out2, lse2 = _partial_attention(scores, values)
    lse = torch.logaddexp(lse1, lse2)
    out = out1 * torch.exp(lse1 - lse) + out2 * torch.exp(lse2 - lse)
    return out.to(q.dtype).reshape(b, n_heads, 1, head_dim)


class PagedAttentionState:
    """The model's `AttentionState` (herd.model.attention) for one engine step.

    `block_mask` selects the FlexAttention path.
    """

    def __init__(self, cache: PagedKVCache, meta: StepMetadata, gqa: bool, block_mask: object | None = None) -> None:
        self.cache = cache
        self.meta = meta
        self.gqa = gqa
        self.block_mask = block_mask

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        key_cache, value_cache = self.cache.keys[layer_id], self.cache.values[layer_id]
        slots = self.meta.slot_mapping
        key_cache.index_copy_(0, slots, k[0].transpose(0, 1))
        value_cache.index_copy_(0, slots, v[0].transpose(0, 1))
        if self.block_mask is not None:
            from herd.infer.flex_paged import flex_paged_attention

            return flex_paged_attention(q, key_cache, value_cache, self.block_mask, self.gqa)  # type: ignore[arg-type]
        return paged_attention(q, k, v, key_cache, value_cache, self.meta, self.gqa)
