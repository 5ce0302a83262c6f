"""The model a post-training run starts from: its shape, where its weights are, its tokenizer and chat format.

Any herd model spec works (`herd.loading`: a built-in name, `random:<size>`, a Meta/Hugging Face
directory, a .gguf file) and so does a herd training checkpoint (the output of `herd pretrain`,
`herd sft` or `herd dpo`), so the stages chain: SFT from the pre-trained model, DPO from SFT's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from herd.checkpoint.errors import CheckpointError
from herd.model import MODEL_SIZES, ModelConfig, get_config
from herd.tokenizer.base import Tokenizer
from herd.tokenizer.chat import ChatFormat, chat_format_for


@dataclass
class StartingModel:
    spec: str
    config: ModelConfig
    init_from: str  # weights for ModelInit ("" = seeded random init, for random:<size>)
    tokenizer: Tokenizer
    chat_template: str | None

    @property
    def chat_format(self) -> ChatFormat:
        return chat_format_for(self.tokenizer, self.chat_template)

    @classmethod
    def resolve(cls, spec: str) -> StartingModel:
        if spec.startswith("random:"):
            from herd.tokenizer.llama3 import Llama3Tokenizer

            size = spec.removeprefix("random:")
            if size not in MODEL_SIZES:
                raise CheckpointError(f"unknown model size {size!r} in {spec!r}; one of {', '.join(MODEL_SIZES)}")
            return cls(spec, get_config(size), "", Llama3Tokenizer(), None)
        path = Path(spec).expanduser()
        from herd.train import checkpointing

        if path.is_dir() and (checkpointing.is_complete(path) or checkpointing.latest_checkpoint(path) is not None):
            from herd.train.export import read_training_checkpoint

            ckpt = read_training_checkpoint(path)
            tokenizer_dir = next((d for d in (path, path.parent, path.parent.parent) if (d / "model").is_dir()), None)
            tokenizer, template = ckpt.tokenizer, None
            if tokenizer_dir is not None:  # herd sft/dpo write <out_dir>/model with the tokenizer
                from herd.checkpoint import read_checkpoint

                exported = read_checkpoint(tokenizer_dir / "model")
                tokenizer, template = exported.tokenizer, exported.chat_template
            if tokenizer is None:
                raise CheckpointError(f"{spec}: a training checkpoint without a known tokenizer")
            return cls(spec, ckpt.config, str(path), tokenizer, template)
        from herd.checkpoint import read_checkpoint
        from herd.loading import resolve_spec

        resolved = resolve_spec(spec)
        ckpt = read_checkpoint(resolved, require_tokenizer=True)
        assert ckpt.tokenizer is not None
        return cls(spec, ckpt.config, str(resolved), ckpt.tokenizer, ckpt.chat_template)
