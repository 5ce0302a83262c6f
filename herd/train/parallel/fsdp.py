"""FSDP2 (`fully_shard`): parameters, gradients and optimizer state sharded over the data-parallel ranks.

Each Transformer block is its own FSDP unit (its parameters are all-gathered just before it runs and
freed after), and the root holds the embedding, final norm and output head. Mixed precision follows
the paper: bf16 compute with float32 master weights and float32 gradient reduction. Gradients are
*summed* across ranks (divide factor 1) because the loss is already normalised by the global number
of target tokens. With a replicate dimension (HSDP) parameters are sharded within a group and
gradients all-reduced across groups. Context-parallel ranks join the shard group: they hold the same
parameters and their gradients must be summed too.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def apply_fsdp(
    model: nn.Module, dp_mesh: DeviceMesh, param_dtype: torch.dtype | None, reshard_after_forward: bool
) -> None:
    """Shard `model` (a Transformer or a pipeline stage) in place over `dp_mesh`."""
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    layers = list(model.layers.values() if isinstance(model.layers, nn.ModuleDict) else model.layers)
    for i, block in enumerate(layers):
        # the last block's parameters are needed again first in backward: keep them gathered
        reshard = reshard_after_forward and i < len(layers) - 1
        fully_shard(block, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=reshard)
    fully_shard(model, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    for module in [*layers, model]:
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no PREMUL_SUM
