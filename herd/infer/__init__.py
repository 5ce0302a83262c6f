"""Inference: the paged-KV continuous-batching engine, sampling, generation helpers, chat sessions."""

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

__all__ = [
    "AsyncEngine", "CompletionOutput", "EngineConfig", "EngineStats", "LLMEngine", "RequestOutput", "TokenLogprob",
    "Generation", "generate", "generate_tokens", "stream_text", "SamplingParams", "sample",
    "prepare_for_inference",
]
