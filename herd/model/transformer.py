"""The Llama 3 dense Transformer: RMSNorm, RoPE, grouped-query attention, SwiGLU.

Parameter names follow Meta's reference (`tok_embeddings`, `layers.N.attention.wq`, ...), and q/k
use Meta's interleaved RoPE layout, so a Meta checkpoint loads without any permutation.

This file is the network and nothing else. What each query sees is an `AttentionState`
(herd.model.attention): causal by default, a document mask for packed pretraining, the serving
engine's paged cache, context parallelism's gathered keys. Inference rewrites (fused projections,
quantization) are herd.infer.prepare_for_inference's; parallelism is applied by herd.train.parallel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from herd.model.attention import AttentionState, Causal
from herd.model.config import ModelConfig
from herd.model.rope import apply_rope, rope_cos_sin, rope_inv_freq

CAUSAL = Causal()


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
    """Grouped-query attention: projections and RoPE here, the attention itself by the state."""

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.head_dim = config.head_dim
        self.wq = nn.Linear(config.dim, config.n_heads * config.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * config.head_dim, config.dim, bias=False)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three input projections (herd.infer.fusion overrides this with one fused matmul)."""
        return self.wq(x), self.wk(x), self.wv(x)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention: AttentionState) -> torch.Tensor:
        batch, seqlen, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds n_heads / tp of them
        q, k, v = (t.view(batch, seqlen, -1, self.head_dim) for t in self.qkv(x))
        q = apply_rope(q, cos, sin).transpose(1, 2)
        k = apply_rope(k, cos, sin).transpose(1, 2)
        out = attention.attend(self.layer_id, q, k, v.transpose(1, 2))
        return self.wo(out.transpose(1, 2).reshape(batch, seqlen, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.attention = Attention(config, layer_id)
        self.feed_forward = FeedForward(config.dim, config.ffn_dim)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attention: AttentionState) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, attention)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """Decoder-only Llama 3 Transformer: `forward` = `head(run_layers(embed(tokens), ...))`.

    The three parts are separate calls so that callers compose them: a pipeline stage is this module
    with other stages' parts set to None and `layers` a ModuleDict keyed by the original index
    (herd.train.parallel.pipeline), and layers added between blocks (cross-attention, stitching)
    run `run_layers` over ranges with their own modules in between.
    """

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

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # `.to(bfloat16)` / `to_empty` would cast or wipe the RoPE table; rebuild it in float32 instead.
        # `to_empty` (meta -> real device) gives each module its own new tensor: tie the head again.
        super()._apply(fn, recurse)
        self.init_rope_buffer()
        if self.config.tie_embeddings and getattr(self, "output", None) is not None \
                and getattr(self, "tok_embeddings", None) is not None:
            self.output.weight = self.tok_embeddings.weight
        return self

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> hidden states [B, T, dim]."""
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}")
        return self.tok_embeddings(tokens)

    def blocks(self) -> list[TransformerBlock]:
        """The blocks this module holds, in order (a pipeline stage holds some of them)."""
        return list(self.layers.values() if isinstance(self.layers, nn.ModuleDict) else self.layers)

    def run_layers(
        self, h: torch.Tensor, positions: torch.Tensor, attention: AttentionState | None = None,
        start: int = 0, end: int | None = None,
    ) -> torch.Tensor:
        """Hidden states through `blocks()[start:end]`.

        `positions` ([T] or [B, T]) are the RoPE positions of the whole sequence: under sequence
        parallelism a block receives a slice of `h` but attends over all of it. `attention` defaults
        to causal over this call's tokens.
        """
        cos, sin = rope_cos_sin(positions, self.inv_freq)
        state = CAUSAL if attention is None else attention
        for block in self.blocks()[start:end]:
            h = block(h, cos, sin, state)
        return h

    def head(self, h: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        """Final norm and output projection: logits [B, T, vocab], or [B, K, vocab] at `select` [K].

        `select` saves the costliest matmul where only some positions need logits (the last token
        of each sequence in the engine's flattened batch).
        """
        if select is not None:
            h = h[:, select]
        return self.output(self.norm(h))

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
        attention: AttentionState | None = None, *, select: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits for `tokens` [B, T] at `positions` (default 0..T-1) under `attention`.

        With a `DocumentMask`, pass its `positions`; with the engine's paged state, the tokens of
        many sequences are flattened into [1, N] with their own positions.
        """
        if positions is None:
            positions = torch.arange(tokens.shape[-1], device=tokens.device)
        return self.head(self.run_layers(self.embed(tokens), positions, attention), select)


def init_plan(config: ModelConfig, std: float = 0.02) -> list[tuple[str, Callable[..., None]]]:
    """(parameter name, in-place initializer(tensor, generator)) in the order random numbers are drawn.

    Embeddings N(0, 1) (tied to the head: the head's init); input projections (wq, wk, wv, w1)
    truncated-normal with `std`; the projections that write into the residual stream (wo, w2, w3) use a depth-scaled
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

    # a tied matrix is also the output head: N(0, 1) rows would start every logit at ~dim (loss ~25
    # nats instead of ~ln(vocab)), so it takes the head's init
    embedding_init = trunc(config.dim**-0.5, 3) if config.tie_embeddings else normal
    plan: list[tuple[str, Callable[..., None]]] = [("tok_embeddings.weight", embedding_init)]
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
