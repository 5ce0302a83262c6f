"""Tensor parallelism with DTensor (Megatron-style), sequence parallel norms and loss parallel.

Per block: wq/wk/wv and w1/w3 are split column-wise (each rank owns n_heads/tp heads and ffn/tp hidden
units), wo and w2 row-wise, so each block needs one all-gather before attention/FFN and one
reduce-scatter after. Between those, the residual stream and the RMSNorms are split along the
sequence (sequence parallelism), which divides activation memory by tp. The output head is split
along the vocabulary; with loss parallel the cross-entropy runs on the vocabulary-sharded logits, so
the full [tokens, 128K] logits never exist on one rank.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

# Attention.forward(x, cos, sin, attention_state): only x is split along the sequence
_ATTENTION_INPUTS = (Shard(1), None, None, None)


def apply_tensor_parallel(model: nn.Module, tp_mesh: DeviceMesh, loss_parallel: bool) -> None:
    """Parallelize a Transformer (or a pipeline stage of one) in place over `tp_mesh`."""
    top: dict[str, object] = {}
    if model.tok_embeddings is not None:
        top["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1))
    if model.output is not None:
        top["norm"] = SequenceParallel()
        top["output"] = ColwiseParallel(
            input_layouts=Shard(1),
            output_layouts=Shard(-1) if loss_parallel else Replicate(),
            use_local_output=not loss_parallel,
        )
    if top:
        parallelize_module(model, tp_mesh, top)  # type: ignore[arg-type]
    # Between pipeline stages the hidden state travels sequence-sharded: TP rank t of one stage sends
    # its [B, T/tp, dim] slice to TP rank t of the next, which is what that stage's first block expects.
    for block in model.blocks():
        parallelize_module(block, tp_mesh, {
            "attention_norm": SequenceParallel(),
            "attention": PrepareModuleInput(input_layouts=_ATTENTION_INPUTS,
                                            desired_input_layouts=(Replicate(),) + (None,) * 3),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
            "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
            "feed_forward.w3": ColwiseParallel(),
        })
