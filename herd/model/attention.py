"""What each query may see: the one protocol between the Transformer and whoever decides it.

Every attention layer computes its queries, keys and values (RoPE applied) and hands them to an
`AttentionState`, which returns the attention output. The model does not know whether the keys live
in the call (training, a plain forward), in a paged cache (the serving engine, herd.infer.
paged_attention) or on other ranks too (context parallelism, herd.train.parallel.context): each is
one implementation of `attend`, so the forward has a single path.

The two states every user of the bare model needs live here: `Causal` (the default) and
`DocumentMask` (packed pretraining sequences, block-causal).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F


@runtime_checkable
class AttentionState(Protocol):
    """Runs attention for one layer; may store k/v (a cache) or fetch more of them (other ranks)."""

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, H, T, hd], k/v [B, H_kv, T, hd] (RoPE applied) -> output [B, H, T, hd]."""
        ...


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
         is_causal: bool = False) -> torch.Tensor:
    """PyTorch's fused attention with grouped-query heads when k/v have fewer heads than q."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                          enable_gqa=q.shape[1] != k.shape[1])


class Causal:
    """Each token sees itself and the tokens before it in the same call (SDPA's causal kernel)."""

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return sdpa(q, k, v, is_causal=q.shape[2] > 1)


class Masked:
    """Attention under an explicit boolean mask [B, 1, T_queries, T_keys] (True: may attend)."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return sdpa(q, k, v, self.mask)


class DocumentMask(Masked):
    """Packed sequences [B, T] of several documents: a token sees only earlier tokens of its own one.

    `positions` restart at 0 in each document (pass them to the model with this state), so a
    document packed after others is computed exactly as if it were alone.
    """

    def __init__(self, doc_ids: torch.Tensor) -> None:
        if doc_ids.dim() != 2:
            raise ValueError(f"doc_ids must be [batch, seq], got shape {tuple(doc_ids.shape)}")
        segments, self.positions = document_positions(doc_ids)
        super().__init__(block_causal_mask(segments))


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
