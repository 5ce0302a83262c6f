"""The Llama 3 dense Transformer: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Parameter names follow Meta's reference (`tok_embeddings`, `layers.N.attention.wq`, ...), and q/k
use Meta's interleaved RoPE layout, so a Meta checkpoint loads without any permutation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from herd.model.config import ModelConfig
from herd.model.kv_cache import AttentionState, KVCache
from herd.model.rope import apply_rope, rope_cos_sin, rope_inv_freq


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, then cast back (as the reference does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.wq = nn.Linear(config.dim, config.n_heads * config.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * config.head_dim, config.dim, bias=False)
        self.wqkv: nn.Linear | None = None  # set by `fuse_projections` (inference only)
        # Context parallelism (training): gathers this rank's keys/values [B, H, T_local, Dh] from every
        # rank of its context-parallel group along the sequence; set by herd.train.parallel.
        self.kv_gather: Callable[[torch.Tensor], torch.Tensor] | None = None

    def fuse_projections(self) -> None:
        """Replace wq/wk/wv by one matmul: at batch-1 decode the small k/v GEMVs cost a kernel each."""
        weight = torch.cat([self.wq.weight, self.wk.weight, self.wv.weight])
        self.wqkv = _linear_with_weight(weight)
        del self.wq, self.wk, self.wv

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        cache: KVCache | AttentionState | None,
        start_pos: int,
    ) -> torch.Tensor:
        batch, seqlen, _ = x.shape
        if self.wqkv is not None:
            kv_dim = self.n_kv_heads * self.head_dim
            q, k, v = self.wqkv(x).split([self.n_heads * self.head_dim, kv_dim, kv_dim], dim=-1)
        else:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        # -1 heads: under tensor parallelism each rank holds n_heads / tp of them
        q = q.view(batch, seqlen, -1, self.head_dim)
        k = k.view(batch, seqlen, -1, self.head_dim)
        v = v.view(batch, seqlen, -1, self.head_dim)
        q = apply_rope(q, cos, sin).transpose(1, 2)
        k = apply_rope(k, cos, sin).transpose(1, 2)
        v = v.transpose(1, 2)
        if cache is not None and not isinstance(cache, KVCache):
            out = cache.attend(self.layer_id, q, k, v)
            return self.wo(out.transpose(1, 2).reshape(batch, seqlen, -1))
        if cache is not None:
            k, v = cache.update(self.layer_id, start_pos, k, v)
        if self.kv_gather is not None:
            k, v = self.kv_gather(k), self.kv_gather(v)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=q.shape[1] != k.shape[1]
        )
        return self.wo(out.transpose(1, 2).reshape(batch, seqlen, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.w13: nn.Linear | None = None  # set by `fuse_projections` (inference only)

    def fuse_projections(self) -> None:
        """One matmul for the gate and up projections (w1, w3)."""
        self.w13 = _linear_with_weight(torch.cat([self.w1.weight, self.w3.weight]))
        del self.w1, self.w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.w13 is not None:
            gate, up = self.w13(x).chunk(2, dim=-1)
            return self.w2(F.silu(gate) * up)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _linear_with_weight(weight: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    return linear


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.attention = Attention(config, layer_id)
        self.feed_forward = FeedForward(config.dim, config.ffn_dim)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x, cos, sin, mask, is_causal, cache, start_pos):  # type: ignore[no-untyped-def]
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, is_causal, cache, start_pos)
        return h + self.feed_forward(self.ffn_norm(h))


def document_positions(doc_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment index and in-document position for each token of packed sequences [B, T].

    A new segment starts wherever the document id changes, so the same id appearing twice
    non-contiguously still counts as two documents (they never see each other).
    """
    is_start = torch.ones_like(doc_ids, dtype=torch.bool)
    is_start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    index = torch.arange(doc_ids.shape[1], device=doc_ids.device).expand_as(doc_ids)
    starts = torch.where(is_start, index, torch.zeros_like(index)).cummax(dim=1).values
    return is_start.long().cumsum(dim=1), index - starts


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, T, T] mask: causal and within the same segment (document)."""
    seqlen = segments.shape[1]
    causal = torch.ones(seqlen, seqlen, dtype=torch.bool, device=segments.device).tril()
    same_doc = segments[:, :, None] == segments[:, None, :]
    return (same_doc & causal)[:, None]


class Transformer(nn.Module):
    """Decoder-only Llama 3 Transformer returning next-token logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer("inv_freq", torch.empty(config.head_dim // 2), persistent=False)
        self.init_rope_buffer()

    def init_rope_buffer(self) -> None:
        """(Re)compute the RoPE frequencies in float32 on the buffer's current device."""
        cfg = self.config
        freqs = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        self.inv_freq = freqs.to(self.inv_freq.device)

    def fuse_projections(self) -> "Transformer":
        """Inference-only: fuse wq/wk/wv and w1/w3 into single matmuls (fewer, larger kernels).

        The fused model's state_dict no longer has the Meta names, so fuse after loading and never
        save a fused model as a checkpoint. Quantize (herd.infer.quant) before fusing, or not at all.
        """
        for layer in self.layers:
            layer.attention.fuse_projections()
            layer.feed_forward.fuse_projections()
        return self

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # `.to(bfloat16)` / `to_empty` would cast or wipe the RoPE table; rebuild it in float32 instead.
        super()._apply(fn, recurse)
        self.init_rope_buffer()
        return self

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        start_pos: int = 0,
        doc_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | AttentionState | None = None,
        last_only: bool = False,
        select: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, T, vocab] (or [B, 1, vocab] with `last_only`, [B, K, vocab] with `select`).

        - `positions` ([T] or [B, T]) overrides RoPE positions; by default they are
          `start_pos + arange(T)`, or restart at 0 for each document when `doc_ids` is given.
        - `doc_ids` ([B, T]) makes attention block-causal: a token sees only earlier tokens of its
          own document (packed pretraining sequences).
        - `attention_mask` (boolean [B, 1, T, T_keys], with `positions`) replaces the mask derived
          from `doc_ids`: context parallelism attends local queries to the gathered keys of all ranks.
        - `cache` holds keys/values of positions < `start_pos` for incremental decoding; an
          `AttentionState` (the paged engine) instead runs attention itself over flattened
          sequences, with `positions` given.
        - `select` ([K] indices along T) computes logits only where they are needed (the last
          token of each sequence in a flattened batch); the output head is the costliest matmul.

        A pipeline stage is this module with some parts removed (herd.train.parallel.pipeline):
        without `tok_embeddings` it takes hidden states [B, T, dim] instead of token ids, without
        `output` it returns hidden states, and `layers` may be a ModuleDict keyed by the original
        layer index (so parameter names stay those of the full model).
        """
        if self.tok_embeddings is not None and tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
        mask, is_causal, positions = self._attention_layout(tokens, positions, start_pos, doc_ids, attention_mask, cache)
        cos, sin = rope_cos_sin(positions, self.inv_freq)

        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        layers = self.layers.values() if isinstance(self.layers, nn.ModuleDict) else self.layers
        for layer in layers:
            h = layer(h, cos, sin, mask, is_causal, cache, start_pos)
        if self.output is None:
            return h
        if last_only:
            h = h[:, -1:]
        elif select is not None:
            h = h[:, select]
        return self.output(self.norm(h))

    def _attention_layout(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None,
        start_pos: int,
        doc_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        cache: KVCache | AttentionState | None,
    ) -> tuple[torch.Tensor | None, bool, torch.Tensor]:
        """(mask, is_causal, RoPE positions) for this call's mode: packed, paged, cached or plain.

        The sequence length is that of `doc_ids` or `positions` when given: a later pipeline stage under
        sequence parallelism receives only a slice of the hidden states but attends over all of them.
        """
        batch, seqlen = tokens.shape[:2]
        if self.tok_embeddings is None:
            if doc_ids is not None:
                seqlen = doc_ids.shape[1]
            elif positions is not None:
                seqlen = positions.shape[-1]
        mask: torch.Tensor | None = None
        is_causal = False
        if attention_mask is not None:
            if positions is None or cache is not None:
                raise ValueError("attention_mask needs explicit positions and no KV cache")
            mask = attention_mask
        elif doc_ids is not None:
            if cache is not None:
                raise ValueError("doc_ids (packed documents) cannot be combined with a KV cache")
            if tuple(doc_ids.shape) != (batch, seqlen):
                raise ValueError(f"doc_ids shape {tuple(doc_ids.shape)} != tokens shape {(batch, seqlen)}")
            segments, doc_positions = document_positions(doc_ids)
            mask = block_causal_mask(segments)
            if positions is None:
                positions = doc_positions
        elif isinstance(cache, AttentionState) and not isinstance(cache, KVCache):
            if positions is None:
                raise ValueError("a paged attention state needs explicit positions")
        elif cache is None or start_pos == 0:
            is_causal = seqlen > 1
        elif seqlen > 1:
            # Chunk of new tokens after a cached prefix: token i sees cache and new tokens <= i.
            key_pos = torch.arange(start_pos + seqlen, device=tokens.device)
            query_pos = torch.arange(start_pos, start_pos + seqlen, device=tokens.device)
            mask = key_pos[None, :] <= query_pos[:, None]
        if positions is None:
            positions = torch.arange(start_pos, start_pos + seqlen, device=tokens.device)
        return mask, is_causal, positions


def init_plan(config: ModelConfig, std: float = 0.02) -> list[tuple[str, Callable[..., None]]]:
    """(parameter name, in-place initializer(tensor, generator)) in the order random numbers are drawn.

    Embeddings N(0, 1); input projections (wq, wk, wv, w1) truncated-normal with `std`; the
    projections that write into the residual stream (wo, w2, w3) use a depth-scaled
    std / sqrt(2 * (layer + 1)) so deeper layers start closer to identity; the output head uses
    dim**-0.5 truncated at 3 sigma; norms start at 1 (the torchtitan Llama 3 recipe).

    One list drives both the single-process init and the sharded one (herd.train.parallel), which
    generates each full parameter in this order and keeps only its own shard, so every layout starts
    from the same weights while holding at most one full parameter at a time.
    """

    def normal(t: torch.Tensor, g: torch.Generator | None) -> None:
        nn.init.normal_(t, generator=g)

    def trunc(sigma: float, cut: float) -> Callable[..., None]:
        def init(t: torch.Tensor, g: torch.Generator | None) -> None:
            nn.init.trunc_normal_(t, std=sigma, a=-cut * sigma, b=cut * sigma, generator=g)
        return init

    def ones(t: torch.Tensor, g: torch.Generator | None) -> None:
        t.fill_(1.0)

    plan: list[tuple[str, Callable[..., None]]] = [("tok_embeddings.weight", normal)]
    for layer_id in range(config.n_layers):
        depth_std = std / math.sqrt(2 * (layer_id + 1))
        prefix = f"layers.{layer_id}."
        plan += [(f"{prefix}attention.{n}.weight", trunc(std, 2)) for n in ("wq", "wk", "wv")]
        plan.append((f"{prefix}feed_forward.w1.weight", trunc(std, 2)))
        plan.append((f"{prefix}attention.wo.weight", trunc(depth_std, 2)))
        plan += [(f"{prefix}feed_forward.{n}.weight", trunc(depth_std, 2)) for n in ("w2", "w3")]
        plan += [(f"{prefix}attention_norm.weight", ones), (f"{prefix}ffn_norm.weight", ones)]
    plan.append(("norm.weight", ones))
    if not config.tie_embeddings:
        plan.append(("output.weight", trunc(config.dim**-0.5, 3)))
    return plan


def init_weights(model: Transformer, std: float = 0.02, generator: torch.Generator | None = None) -> None:
    """Pretraining initialization of a full model in place (see `init_plan`)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, init in init_plan(model.config, std):
            init(params[name], generator)
