"""One entry point over the three on-disk formats: detect, read (weights + tokenizer), write, convert."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from herd.checkpoint.errors import CheckpointError
from herd.checkpoint.validate import check_state_dict
from herd.model.config import LLAMA3_VOCAB_SIZE, ModelConfig
from herd.tokenizer.base import Tokenizer, TokenizerError

FORMATS = ("meta", "hf", "gguf")
log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """Everything a checkpoint holds: shape, weights (herd names, Meta RoPE layout) and tokenizer."""

    config: ModelConfig
    state: dict[str, torch.Tensor]
    tokenizer: Tokenizer | None
    format: str
    path: Path

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)


def detect_format(path: str | Path) -> str:
    """'gguf' for a .gguf file, 'meta' for a directory with params.json, 'hf' for one with config.json."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                return "gguf"
        raise CheckpointError(f"{path} is a file but not a GGUF model (expected a .gguf file or a directory)")
    if path.is_dir():
        if (path / "params.json").is_file():
            return "meta"
        if (path / "config.json").is_file():
            return "hf"
        raise CheckpointError(
            f"{path} is neither a Meta checkpoint (params.json) nor a Hugging Face one (config.json)"
        )
    raise CheckpointError(f"checkpoint not found: {path}")


def read_checkpoint(path: str | Path, *, require_tokenizer: bool = False) -> Checkpoint:
    """Read any supported checkpoint; the tokenizer is None only when the checkpoint ships none."""
    path = Path(path)
    fmt = detect_format(path)
    tokenizer: Tokenizer | None
    if fmt == "gguf":
        from herd.checkpoint.gguf_io import read_gguf
        from herd.tokenizer.bpe import BPETokenizer

        config, state, metadata = read_gguf(path)
        check_state_dict(config, state, str(path))
        tokenizer = BPETokenizer.from_gguf_metadata(metadata) if "tokenizer.ggml.model" in metadata else None
    else:
        if fmt == "meta":
            from herd.checkpoint.meta import read_meta

            config, state = read_meta(path)
        else:
            from herd.checkpoint.hf import read_hf

            config, state = read_hf(path)
        check_state_dict(config, state, str(path))
        tokenizer = directory_tokenizer(path, config)
    if tokenizer is None and require_tokenizer:
        raise TokenizerError(f"{path} ships no tokenizer (tokenizer.model, tokenizer.json or GGUF vocabulary)")
    if tokenizer is not None:
        tokenizer.check_fits(config.vocab_size)
    return Checkpoint(config, state, tokenizer, fmt, path)


def directory_tokenizer(path: Path, config: ModelConfig) -> Tokenizer | None:
    from herd.tokenizer.files import tokenizer_from_directory

    if any((path / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        return tokenizer_from_directory(path)
    if config.vocab_size == LLAMA3_VOCAB_SIZE:
        from herd.tokenizer.llama3 import Llama3Tokenizer

        log.warning("%s has no tokenizer file; using the Llama 3 tokenizer (vocabulary size matches)", path)
        return Llama3Tokenizer()
    return None


def write_checkpoint(
    checkpoint: Checkpoint,
    destination: str | Path,
    fmt: str,
    *,
    dtype: torch.dtype | None = None,
    gguf_type: str = "f16",
    num_shards: int = 1,
) -> Path:
    """Write `checkpoint` in `fmt` ('meta', 'hf' or 'gguf'), tokenizer included; returns the path written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; choose one of {', '.join(FORMATS)}")
    destination = Path(destination)
    state = checkpoint.state
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    tokenizer = checkpoint.tokenizer
    if fmt == "gguf":
        from herd.checkpoint.gguf_io import write_gguf
        from herd.tokenizer.export import to_gguf_metadata

        if destination.is_dir() or destination.suffix != ".gguf":
            destination = destination / (checkpoint.path.stem + f".{gguf_type}.gguf")
        metadata = to_gguf_metadata(tokenizer, checkpoint.chat_template) if tokenizer is not None else {}
        write_gguf(destination, checkpoint.config, state, metadata, qtype=gguf_type)
        return destination
    if fmt == "meta":
        from herd.checkpoint.meta import write_meta

        write_meta(destination, checkpoint.config, state, num_shards=num_shards)
    else:
        from herd.checkpoint.hf import write_hf

        write_hf(destination, checkpoint.config, state)
    if tokenizer is not None:
        from herd.tokenizer.files import save_tokenizer

        save_tokenizer(tokenizer, destination, fmt, chat_template=checkpoint.chat_template)
    return destination


def convert(
    source: str | Path, destination: str | Path, fmt: str, **write_options: object
) -> Path:
    """Read any format and write it as `fmt`."""
    return write_checkpoint(read_checkpoint(source), destination, fmt, **write_options)  # type: ignore[arg-type]
