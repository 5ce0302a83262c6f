"""The seam where multi-process parallelism plugs into the trainer, and its one-process implementation.

The loop never touches `torch.distributed`; it asks a plan to build the model, shard a global batch
for this rank, run forward/backward over it, reduce scalars across ranks, clip the (possibly sharded)
gradient norm, and read/write checkpoints. `SingleProcessPlan` is the identity for all of these;
`herd.train.parallel.distributed.DistributedPlan` implements them with FSDP2, tensor, pipeline and
context parallelism.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from herd.model.attention import AttentionState, DocumentMask
from herd.train import checkpointing
from herd.train.config import OptimSection
from herd.train.init import ModelInit
from herd.train.loss import loss_sum
from herd.train.optim import build_optimizer


@dataclass
class LocalBatch:
    """This rank's share of a global batch: model inputs, targets and the tensors that say how to
    attend (`doc_ids`, `positions`, a context-parallel `kv_mask`; see `attention_inputs`).

    Tensors rather than an attention state, so that micro-batches (and pipeline schedules) can split
    them by rows; each micro-batch builds its state from its own rows.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    model_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)

    def rows(self, part: slice) -> LocalBatch:
        return LocalBatch(self.inputs[part], self.targets[part], {k: v[part] for k, v in self.model_kwargs.items()})


def attention_inputs(tensors: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor | None, AttentionState | None]:
    """(RoPE positions, attention state) for the model from a batch's tensors.

    Packed documents (`doc_ids`) get the document mask and positions that restart per document;
    otherwise attention is causal at the given `positions` (or the model's default 0..T-1).
    """
    doc_ids = tensors.get("doc_ids")
    if doc_ids is not None:
        state = DocumentMask(doc_ids)
        return state.positions, state
    return tensors.get("positions"), None


def activation_checkpointing(layers: Any) -> None:
    """Recompute each block's activations in backward instead of storing them (memory for compute).

    The block's `forward` is replaced on the instance, so parameter names (and checkpoints) are
    unchanged.
    """
    import torch.utils.checkpoint

    for layer in layers:
        inner = layer.forward

        def checkpointed(*args: Any, _inner: Callable = inner) -> torch.Tensor:
            return torch.utils.checkpoint.checkpoint(_inner, *args, use_reentrant=False)

        layer.forward = checkpointed  # type: ignore[method-assign]


class SingleProcessPlan:
    """One process, one device: every hook is the identity (or the plain torch call)."""

    rank = 0
    world_size = 1
    description = "single process"

    @property
    def is_main(self) -> bool:
        """Only the main rank writes logs, plots and checkpoint metadata."""
        return self.rank == 0

    def build_model(
        self, meta_model: nn.Module, init: ModelInit, device: torch.device,
        *, checkpoint_activations: bool = False,
    ) -> nn.Module:
        """Materialise the meta-device model on `device` and initialise it."""
        meta_model.to_empty(device=device)
        init.apply(meta_model)
        if checkpoint_activations:
            activation_checkpointing(meta_model.layers)
        return meta_model

    def build_optimizer(self, model: nn.Module, cfg: OptimSection, device: torch.device) -> tuple[Any, str]:
        return build_optimizer(model, cfg, device)

    def compile(self, model: nn.Module) -> nn.Module:
        """torch.compile for run.compile: the whole model in one process."""
        return torch.compile(model)  # type: ignore[return-value]

    def shard_batch(self, inputs: torch.Tensor, targets: torch.Tensor, doc_ids: torch.Tensor | None,
                    device: torch.device) -> LocalBatch:
        """This rank's rows (and sequence chunk) of a global batch, on `device`."""
        kwargs = {"doc_ids": doc_ids.to(device)} if doc_ids is not None else {}
        return LocalBatch(inputs.to(device), targets.to(device), kwargs)

    def forward_backward(
        self, model: nn.Module, batch: LocalBatch, micro_batch_rows: int, n_targets: torch.Tensor,
        device: torch.device, autocast_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        """Gradient of sum-CE / n_targets over the batch, in micro-batches; returns the summed loss."""
        total = torch.zeros((), device=device)
        for i in range(0, batch.inputs.shape[0], micro_batch_rows):
            part = batch.rows(slice(i, i + micro_batch_rows))
            loss = loss_sum(model, part.inputs, part.targets, attention_inputs(part.model_kwargs), device,
                            autocast_dtype, fused_head=True)
            (loss / n_targets).backward()
            total += loss.detach()
        return total

    @torch.no_grad()
    def eval_loss_sum(self, model: nn.Module, batch: LocalBatch, device: torch.device,
                      autocast_dtype: torch.dtype | None) -> torch.Tensor:
        return loss_sum(model, batch.inputs, batch.targets, attention_inputs(batch.model_kwargs), device,
                        autocast_dtype, fused_head=True)

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks that hold different tokens (data and context parallel)."""
        return value

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a stop request must stop all ranks at one step)."""
        return flag

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """Total gradient norm before clipping (max_norm 0 = measure only)."""
        params = [p for p in model.parameters() if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"), foreach=True)

    def save(
        self, directory: Path, step: int, model: nn.Module, optimizer: Any,
        meta: dict[str, Any], keep_last: int,
    ) -> Path:
        return checkpointing.save_checkpoint(
            directory, step, model.state_dict(), optimizer.state_dict(), meta, keep_last
        )

    def load(self, path: Path, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        """Restore model and optimizer in place; returns the checkpoint's metadata."""
        state = checkpointing.load_checkpoint(path)
        model.load_state_dict(state.model)
        optim = state.optim
        if checkpointing.is_distributed(Path(path)):  # written by a multi-process run: FQN-keyed state
            from herd.train.parallel.dcp import indexed_optimizer_state

            optim = indexed_optimizer_state(model, optimizer, optim)
        optimizer.load_state_dict(optim)
        return state.meta

    def barrier(self) -> None:
        return None

    def close(self) -> None:
        return None
