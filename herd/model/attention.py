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

    On CPU, when the documents are short, attention runs per block of `QUERY_BLOCK` queries against only
    the keys from the start of the block's first document: a row of 128-token documents packed into
    1,024 tokens then costs about a quarter of the full masked 1,024 x 1,024 attention, with the same
    result (the skipped keys are masked anyway). Long documents, GPUs and compiled graphs (where the
    blocks' data-dependent bounds would recompile) take the one full masked call.
    """

    QUERY_BLOCK = 128
    MAX_WORK = 0.5   # use the blocks only when they compute at most this share of the full attention

    def __init__(self, doc_ids: torch.Tensor) -> None:
        if doc_ids.dim() != 2:
            raise ValueError(f"doc_ids must be [batch, seq], got shape {tuple(doc_ids.shape)}")
        segments, self.positions = document_positions(doc_ids)
        super().__init__(block_causal_mask(segments))
        self._blocks: list[tuple[int, int, int]] | None = None
        self._decided = False

    def key_blocks(self) -> list[tuple[int, int, int]] | None:
        """(first query, end query, first key) per query block, or None when one full call is cheaper."""
        if not self._decided:
            self._decided = True
            seqlen, step = self.positions.shape[1], self.QUERY_BLOCK
            if seqlen >= 2 * step:
                firsts = torch.arange(0, seqlen, step, device=self.positions.device)
                # the earliest key any query of a block may see: the start of its first token's document
                starts = (firsts - self.positions[:, firsts]).amin(dim=0).tolist()
                blocks = [(q0, min(q0 + step, seqlen), k0) for q0, k0 in zip(firsts.tolist(), starts)]
                work = sum((q1 - q0) * (q1 - k0) for q0, q1, k0 in blocks)
                if work <= self.MAX_WORK * seqlen * seqlen:
                    self._blocks = blocks
        return self._blocks

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        plain = q.device.type != "cpu" or q.shape[2] != k.shape[2] or torch.compiler.is_compiling()
        blocks = None if plain else self.key_blocks()
        if blocks is None:
            return sdpa(q, k, v, self.mask)
        return torch.cat([sdpa(q[:, :, q0:q1], k[:, :, k0:q1], v[:, :, k0:q1], self.mask[:, :, q0:q1, k0:q1])
                          for q0, q1, k0 in blocks], dim=2)


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
