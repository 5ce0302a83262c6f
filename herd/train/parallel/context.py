"""Context parallelism as the paper does it: all-gather K and V per CP group, keep the document mask.

The sequence is cut into 2*cp chunks and rank r keeps chunks r and 2*cp-1-r, so under a causal mask
every rank has the same amount of attention work (the first chunks attend to little, the last ones
to almost everything). Each rank computes its queries, keys and values locally, all-gathers the keys
and values of the whole sequence within its CP group (Llama 3, section 3.3.2: all-gather rather than
ring attention, because it supports any mask, e.g. the document mask, and K/V are small under GQA),
and attends with a mask built from the tokens' global positions and document ids. The all-gather is
differentiable: its backward sums the key/value gradients of all ranks' queries into the owner's.

The model is not changed: the gather lives in an attention state (`GatheredKeys`) handed to its
forward, like the document mask it wraps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.distributed import _functional_collectives as funcol

from herd.model.attention import Masked, document_positions


def load_balanced_indices(seq_len: int, cp: int, rank: int, device: torch.device | None = None) -> torch.Tensor:
    """Global token indices that CP rank `rank` holds: chunks `rank` and `2*cp-1-rank` of 2*cp."""
    if seq_len % (2 * cp):
        raise ValueError(f"sequence length {seq_len} is not divisible by 2*cp = {2 * cp}")
    chunk = seq_len // (2 * cp)
    first = torch.arange(rank * chunk, (rank + 1) * chunk, device=device)
    second = torch.arange((2 * cp - 1 - rank) * chunk, (2 * cp - rank) * chunk, device=device)
    return torch.cat([first, second])


class ContextParallel:
    """Shards sequences for this CP rank and gathers keys/values across the CP group."""

    def __init__(self, group: dist.ProcessGroup, cp: int, rank: int) -> None:
        self.group = group
        self.cp = cp
        self.rank = rank

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """[B, H, T/cp, Dh] local keys or values -> [B, H, T, Dh] in rank order (see `key_indices`)."""
        return funcol.all_gather_tensor_autograd(local.contiguous(), gather_dim=2, group=self.group)

    def key_indices(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """Global index of each gathered key position (rank 0's tokens, then rank 1's, ...)."""
        return torch.cat([load_balanced_indices(seq_len, self.cp, r, device) for r in range(self.cp)])

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's tokens of [B, T] (or [B, T, ...]) along the sequence."""
        return tensor.index_select(1, load_balanced_indices(tensor.shape[1], self.cp, self.rank, tensor.device))

    def attention(self, kv_mask: torch.Tensor) -> GatheredKeys:
        """The attention state for this rank's queries under `kv_mask` (from `batch_tensors`)."""
        return GatheredKeys(kv_mask, self.gather)

    def batch_tensors(self, doc_ids: torch.Tensor | None, batch: int, seq_len: int,
                      device: torch.device) -> dict[str, torch.Tensor]:
        """This rank's batch tensors: RoPE positions of its tokens and the mask to gathered keys.

        Tensors (not a state object) so that pipeline schedules can split them into micro-batches.

        A query at global index i sees a key at global index j iff j <= i and (with `doc_ids`) both
        belong to the same document; positions restart at 0 per document, as without CP.
        """
        mine = load_balanced_indices(seq_len, self.cp, self.rank, device)
        keys = self.key_indices(seq_len, device)
        causal = keys[None, :] <= mine[:, None]  # [T_local, T]
        if doc_ids is None:
            positions = mine.expand(batch, -1)
            mask = causal.expand(batch, 1, -1, -1)
        else:
            segments, doc_positions = document_positions(doc_ids.to(device))
            positions = doc_positions.index_select(1, mine)
            same_doc = segments.index_select(1, mine)[:, :, None] == segments.index_select(1, keys)[:, None, :]
            mask = (same_doc & causal)[:, None]
        return {"positions": positions, "kv_mask": mask}


class GatheredKeys(Masked):
    """Attention of local queries to the keys/values of the whole sequence, gathered from all CP ranks."""

    def __init__(self, mask: torch.Tensor, gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(mask)
        self.gather = gather

    def attend(self, layer_id: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return super().attend(layer_id, q, self.gather(k), self.gather(v))
