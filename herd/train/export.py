"""Export a training checkpoint (one process or any distributed layout) as a Meta/HF/GGUF model.

A distributed checkpoint is consolidated in this one process (torch.distributed.checkpoint reads
every rank's shards into full tensors on CPU); no process group or GPU is needed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from herd.checkpoint import Checkpoint, write_checkpoint
from herd.checkpoint.errors import CheckpointError
from herd.model import ModelConfig
from herd.train import checkpointing

LLAMA3_VOCAB = 128_256


def export_checkpoint(source: str | Path, destination: str | Path, fmt: str, *,
                      dtype: torch.dtype | None = None, gguf_type: str = "f16") -> tuple[Path, Path]:
    """Write the newest checkpoint under `source` (or `source` itself) as `fmt`; (checkpoint, written path)."""
    path = checkpointing.resolve_resume(str(source), source)
    if path is None:
        raise CheckpointError(f"{source}: no training checkpoint found")
    meta = checkpointing.read_meta(path)
    if "model_config" not in meta:
        raise CheckpointError(f"{path}/state.json has no model_config: not a herd training checkpoint")
    config = ModelConfig.from_meta_params(meta["model_config"])
    state = checkpointing.load_model_weights(path)
    tokenizer = None
    if config.vocab_size == LLAMA3_VOCAB:
        from herd.tokenizer import Llama3Tokenizer

        tokenizer = Llama3Tokenizer()
    out = write_checkpoint(Checkpoint(config, state, tokenizer, "train", path), destination, fmt,
                           dtype=dtype, gguf_type=gguf_type)
    return path, out
