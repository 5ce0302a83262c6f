"""The seam where multi-process parallelism plugs into the trainer.

The loop never touches `torch.distributed`; it asks a `ParallelPlan` to wrap the model, pick this
rank's rows of a global batch, reduce scalars across ranks, clip the (possibly sharded) gradient norm,
and read/write checkpoints. `SingleProcessPlan` is the identity for all of these. An FSDP plan would
wrap each TransformerBlock with `fully_shard` in `wrap_model`, all-reduce in `all_reduce_sum`, slice
rows by rank in `local_batch`, and save with torch.distributed.checkpoint in `save`/`load`; a tensor-
parallel plan would parallelize the projections in `wrap_model`. The loop itself stays unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from herd.train import checkpointing


class SingleProcessPlan:
    """One process, one device: every hook is the identity (or the plain torch call)."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes logs, plots and checkpoint metadata."""
        return self.rank == 0

    def wrap_model(self, model: nn.Module) -> nn.Module:
        return model

    def local_batch(self, inputs: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global batch tensor [B, ...] (data parallel: rows rank::world)."""
        return inputs

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """Total gradient norm before clipping (max_norm 0 = measure only)."""
        params = [p for p in model.parameters() if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"), foreach=True)

    def save(
        self, directory: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
        meta: dict[str, Any], keep_last: int,
    ) -> Path:
        return checkpointing.save_checkpoint(
            directory, step, model.state_dict(), optimizer.state_dict(), meta, keep_last
        )

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Restore model and optimizer in place; returns the checkpoint's metadata."""
        state = checkpointing.load_checkpoint(path)
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optim)
        return state.meta

    def barrier(self) -> None:
        return None
