"""The pretraining loss: summed next-token cross-entropy over trained targets.

Summed (not averaged) so that micro-batches, data-parallel ranks, context-parallel chunks and pipeline
micro-batches can all be added up and divided once by the number of trained targets of the whole
global batch: every layout then computes the same gradient as one process on one big batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from herd.model.attention import AttentionState
from herd.model.transformer import Transformer
from herd.train.fused_loss import fused_linear_cross_entropy_sum


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Float32 cross-entropy summed over targets != -100 (logits may be a vocabulary-sharded DTensor)."""
    return F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(0, 1), ignore_index=-100, reduction="sum"
    )


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """bf16 autocast for `dtype` = bfloat16; a disabled context for None (float32 training)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def loss_sum(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    forward_inputs: tuple[torch.Tensor | None, AttentionState | None],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    fused_head: bool = False,
) -> torch.Tensor:
    """Forward at `forward_inputs` = (positions, attention state) under optional autocast, then
    `cross_entropy_sum` in float32.

    `fused_head` (a whole, unwrapped model in one process, float32): the output projection and the
    loss run chunk by chunk (herd.train.fused_loss), never materializing the batch's logits.
    """
    positions, attention = forward_inputs
    if fused_head and autocast_dtype is None and type(model) is Transformer and model.output is not None:
        if positions is None:
            positions = torch.arange(inputs.shape[-1], device=inputs.device)
        h = model.norm(model.run_layers(model.embed(inputs), positions, attention))
        return fused_linear_cross_entropy_sum(h, model.output.weight, targets)
    with autocast(device, autocast_dtype):
        logits = model(inputs, positions, attention)
    return cross_entropy_sum(logits, targets)
