"""Inference: the paged-KV continuous-batching engine, sampling, generation helpers, chat sessions.

Public API:
    LLMEngine(model, tokenizer, EngineConfig(...)) / AsyncEngine(...): batched generation over paged KV
    SamplingParams, sample; generate / generate_tokens / stream_text -> Generation
    prepare_for_inference(model, ...): fusion and quantization before serving

The names are imported on first use (PEP 562), not when the package is: every `herd` command registers
through herd.infer.cli, and `herd --help` must not pay torch's start-up (about a second) for it.
`from herd.infer import LLMEngine` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "herd.infer.async_engine": ("AsyncEngine",),
    "herd.infer.engine": ("CompletionOutput", "EngineConfig", "EngineStats", "LLMEngine", "RequestOutput",
                          "TokenLogprob"),
    "herd.infer.generate": ("Generation", "generate", "generate_tokens", "stream_text"),
    "herd.infer.prepare": ("prepare_for_inference",),
    "herd.infer.sampling": ("SamplingParams", "sample"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for names in _EXPORTS.values() for name in names]

if TYPE_CHECKING:
    from herd.infer.async_engine import AsyncEngine
    from herd.infer.engine import (
        CompletionOutput,
        EngineConfig,
        EngineStats,
        LLMEngine,
        RequestOutput,
        TokenLogprob,
    )
    from herd.infer.generate import Generation, generate, generate_tokens, stream_text
    from herd.infer.prepare import prepare_for_inference
    from herd.infer.sampling import SamplingParams, sample


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'herd.infer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
