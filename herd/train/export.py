"""A training checkpoint (one process or any distributed layout) as a herd.checkpoint `Checkpoint`.

`herd convert` takes a training checkpoint as a source and writes it with herd.checkpoint's writers
(Hugging Face, Meta with --shards, GGUF with --gguf-type). A distributed checkpoint is consolidated
in this one process (torch.distributed.checkpoint reads every rank's shards into full tensors on
CPU); no process group or GPU is needed.
"""

from __future__ import annotations

from pathlib import Path

import torch

from herd.checkpoint import Checkpoint, write_checkpoint
from herd.checkpoint.errors import CheckpointError
from herd.model import ModelConfig
from herd.train import checkpointing

LLAMA3_VOCAB = 128_256


def read_training_checkpoint(source: str | Path) -> Checkpoint:
    """The newest checkpoint under `source` (or `source` itself): config, full weights, tokenizer if known."""
    source = Path(source)
    if not source.exists():
        raise CheckpointError(f"{source}: no such training checkpoint (a step_XXXXXXXX directory or a directory "
                              "of them)")
    path = checkpointing.resolve_resume(str(source), source)
    if path is None:
        raise CheckpointError(f"{source}: no training checkpoint found")
    meta = checkpointing.read_meta(path)
    if "model_config" not in meta:
        raise CheckpointError(f"{path}/state.json has no model_config: not a herd training checkpoint")
    config = ModelConfig.from_meta_params(meta["model_config"])
    state = checkpointing.load_model_weights(path)
    tokenizer = None
    if config.vocab_size == LLAMA3_VOCAB:  # herd pretrains with the Llama 3 tokenizer at this vocabulary
        from herd.tokenizer import Llama3Tokenizer

        tokenizer = Llama3Tokenizer()
    return Checkpoint(config, state, tokenizer, "train", path)


def export_checkpoint(source: str | Path, destination: str | Path, fmt: str, *,
                      dtype: torch.dtype | None = None, gguf_type: str = "f16",
                      num_shards: int = 1) -> tuple[Path, Path]:
    """Write the newest checkpoint under `source` as `fmt`; (checkpoint read, path written)."""
    checkpoint = read_training_checkpoint(source)
    out = write_checkpoint(checkpoint, destination, fmt, dtype=dtype, gguf_type=gguf_type, num_shards=num_shards)
    return checkpoint.path, out
