"""Single-sequence generation helpers, as thin wrappers over `LLMEngine` (one inference path).

Each call runs one request on an engine whose paged KV cache is sized for exactly that request
(prompt + max_tokens, the model's context at most) and whose token budget takes the whole prompt
in one prefill, so the computation is the classic prefill-then-decode loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from herd.infer.engine import EngineConfig, LLMEngine, RequestOutput
from herd.infer.sampling import SamplingParams
from herd.model import Transformer
from herd.tokenizer.base import Tokenizer


@dataclass
class Generation:
    """A finished generation: new tokens (stop token excluded), their text and why it ended."""

    tokens: list[int]
    text: str
    finish_reason: str  # "stop" (a stop token or stop string) or "length" (max_tokens / context full)
    stop_token: int | None = None


def single_request_engine(
    model: Transformer, tokenizer: Tokenizer | None, prompt_len: int, max_tokens: int, block_size: int = 16,
    *, quantization: str | None = None, compile: bool = False,
) -> LLMEngine:
    """An engine whose cache holds one sequence of prompt_len + max_tokens tokens (capped at the context).

    `quantization` and `compile` are `EngineConfig`'s (int4 + compile is the fast CPU decode).
    """
    from herd.loading import LoadedModel

    config = model.config
    tokens = min(max(prompt_len, 1) + max(max_tokens, 1), config.max_seq_len)
    engine_config = EngineConfig(
        block_size=block_size,
        num_blocks=-(-tokens // block_size),
        max_num_seqs=1,
        max_batched_tokens=max(prompt_len, 1),
        enable_prefix_caching=False,
        quantization=quantization,
        compile=compile,
    )
    return LLMEngine(LoadedModel(model, tokenizer, None, config, "<model>"), engine_config)  # type: ignore[arg-type]


def _run(
    model: Transformer, tokenizer: Tokenizer | None, prompt: list[int], params: SamplingParams, stops: Iterable[int]
) -> Iterator[RequestOutput]:
    params = replace(
        params, n=1, stop_token_ids=tuple(sorted(set(stops) | set(params.stop_token_ids))), ignore_eos=True,
        stop=params.stop if tokenizer is not None else (),
    )
    engine = single_request_engine(model, tokenizer, len(prompt), params.max_tokens)
    yield from engine.stream(list(prompt), params)


def generate_tokens(
    model: Transformer,
    prompt: list[int],
    params: SamplingParams,
    stop_ids: Iterable[int] = (),
) -> Iterator[int]:
    """Yield new token ids one by one; a stop token is yielded last, then generation ends."""
    for out in _run(model, None, prompt, params, stop_ids):
        choice = out.outputs[0]
        yield from choice.delta_token_ids
        if out.finished and isinstance(choice.stop_reason, int):
            yield choice.stop_reason


def stream_text(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt: list[int],
    params: SamplingParams,
    stop_ids: Iterable[int] | None = None,
) -> Iterator[str]:
    """Yield text pieces as they are generated; never splits a UTF-8 character, never shows stop tokens."""
    stops = tokenizer.stop_ids if stop_ids is None else stop_ids
    for out in _run(model, tokenizer, prompt, params, stops):
        piece = out.outputs[0].delta_text
        if piece:
            yield piece


def generate(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt: list[int],
    params: SamplingParams,
    stop_ids: Iterable[int] | None = None,
) -> Generation:
    """Run generation to the end and return tokens, text and the finish reason."""
    stops = tokenizer.stop_ids if stop_ids is None else stop_ids
    final = None
    for final in _run(model, tokenizer, prompt, params, stops):
        pass
    if final is None:  # max_tokens == 0 still yields one (finished) output; guard anyway
        return Generation([], "", "length")
    choice = final.outputs[0]
    stop_token = choice.stop_reason if isinstance(choice.stop_reason, int) else None
    return Generation(list(choice.token_ids), choice.text, choice.finish_reason or "length", stop_token)
