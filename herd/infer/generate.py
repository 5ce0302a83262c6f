"""Single-sequence generation with a contiguous KV cache: prefill the prompt once, then decode."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from herd.infer.sampling import SamplingParams, sample
from herd.model import KVCache, Transformer
from herd.tokenizer.base import IncrementalDecoder, Tokenizer


@dataclass
class Generation:
    """A finished generation: new tokens (stop token excluded), their text and why it ended."""

    tokens: list[int]
    text: str
    finish_reason: str  # "stop" (a stop token) or "length" (max_tokens / context full)
    stop_token: int | None = None


def generate_tokens(
    model: Transformer,
    prompt: list[int],
    params: SamplingParams,
    stop_ids: Iterable[int] = (),
) -> Iterator[int]:
    """Yield new token ids one by one; a stop token is yielded last, then generation ends."""
    config = model.config
    if not prompt:
        raise ValueError("the prompt is empty; generation needs at least one token")
    if len(prompt) >= config.max_seq_len:
        raise ValueError(f"prompt has {len(prompt)} tokens; the model's context is {config.max_seq_len}")
    stops = frozenset(stop_ids)
    max_len = min(len(prompt) + params.max_tokens, config.max_seq_len)
    device = model.tok_embeddings.weight.device
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    cache = KVCache(config, 1, max_len, dtype=model.tok_embeddings.weight.dtype, device=device)
    with torch.inference_mode():
        tokens = torch.tensor([prompt], device=device)
        logits = model(tokens, cache=cache, start_pos=0, last_only=True)
        position = len(prompt)
        while position < max_len:
            next_token = sample(logits[:, -1], params, generator)
            token_id = int(next_token)
            yield token_id
            if token_id in stops or position + 1 >= max_len:
                return
            logits = model(next_token.view(1, 1), cache=cache, start_pos=position)
            position += 1


def stream_text(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt: list[int],
    params: SamplingParams,
    stop_ids: Iterable[int] | None = None,
) -> Iterator[str]:
    """Yield text pieces as they are generated; never splits a UTF-8 character, never shows stop tokens."""
    stops = frozenset(tokenizer.stop_ids if stop_ids is None else stop_ids)
    decoder = IncrementalDecoder(tokenizer)
    for token_id in generate_tokens(model, prompt, params, stops):
        if token_id in stops:
            break
        piece = decoder.add(token_id)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail


def generate(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt: list[int],
    params: SamplingParams,
    stop_ids: Iterable[int] | None = None,
) -> Generation:
    """Run generation to the end and return tokens, text and the finish reason."""
    stops = frozenset(tokenizer.stop_ids if stop_ids is None else stop_ids)
    tokens = list(generate_tokens(model, prompt, params, stops))
    stop_token = tokens.pop() if tokens and tokens[-1] in stops else None
    reason = "stop" if stop_token is not None else "length"
    return Generation(tokens, tokenizer.decode(tokens), reason, stop_token)
