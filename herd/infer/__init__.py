"""Inference: sampling, generation with a KV cache, chat sessions."""

from herd.infer.generate import Generation, generate, generate_tokens, stream_text
from herd.infer.sampling import SamplingParams, sample

__all__ = ["Generation", "generate", "generate_tokens", "stream_text", "SamplingParams", "sample"]
