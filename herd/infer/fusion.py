"""Fused input projections for inference: one matmul for wq/wk/wv and one for w1/w3.

At batch-1 decode the small k/v GEMVs cost a kernel launch (or a pass over the activations) each;
fused, a layer makes 4 instead of 7 matmuls. Training keeps the separate projections (the Meta
parameter names checkpoints use, and tensor parallelism splits them separately), so fusion is an
inference rewrite applied by `herd.infer.prepare_for_inference`, never to a model that is saved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from herd.model.transformer import Attention, FeedForward


def _linear_with_weight(weight: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    return linear


class FusedAttention(Attention):
    """`Attention` whose q/k/v come from one matmul (`wqkv`); the forward is the model's own."""

    def __init__(self, attention: Attention) -> None:
        nn.Module.__init__(self)
        self.layer_id, self.head_dim, self.wo = attention.layer_id, attention.head_dim, attention.wo
        self.q_dim, self.kv_dim = attention.wq.out_features, attention.wk.out_features
        with torch.no_grad():
            self.wqkv = _linear_with_weight(torch.cat([attention.wq.weight, attention.wk.weight, attention.wv.weight]))

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.wqkv(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        return q, k, v


class FusedFeedForward(FeedForward):
    """SwiGLU with the gate and up projections in one matmul (`w13`)."""

    def __init__(self, w13: nn.Module, w2: nn.Module) -> None:
        nn.Module.__init__(self)
        self.w13, self.w2 = w13, w2

    @classmethod
    def from_feed_forward(cls, ffn: FeedForward) -> FusedFeedForward:
        with torch.no_grad():
            return cls(_linear_with_weight(torch.cat([ffn.w1.weight, ffn.w3.weight])), ffn.w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


def fuse_projections(model: nn.Module) -> nn.Module:
    """Replace each block's attention and feed-forward by fused ones, in place (idempotent).

    Quantized feed-forwards (herd.infer.quant) fuse their own quantized weights: row-wise scales make
    quantize(cat(w1, w3)) == cat(quantize(w1), quantize(w3)), so the order of the two rewrites is free.
    """
    for block in model.layers:
        if type(block.attention) is Attention:
            block.attention = FusedAttention(block.attention)
        ffn = block.feed_forward
        if type(ffn) is FeedForward:
            block.feed_forward = FusedFeedForward.from_feed_forward(ffn)
        elif hasattr(ffn, "fused"):
            block.feed_forward = ffn.fused()
    return model
