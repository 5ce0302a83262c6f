"""The fixed-shape cache used for compiled GPU decoding equals the contiguous KV-cache path."""

from __future__ import annotations

import torch

from herd.infer.static_cache import CompiledDecoder
from herd.model import KVCache, Transformer, get_config, init_weights


def greedy_reference(model: Transformer, prompt: torch.Tensor, steps: int) -> list[int]:
    cache = KVCache(model.config, 1, prompt.shape[1] + steps)
    out: list[int] = []
    with torch.no_grad():
        logits = model(prompt, cache=cache, last_only=True)
        for i in range(steps):
            token = logits[:, -1].argmax(-1)
            out.append(int(token))
            logits = model(token.view(1, 1), cache=cache, start_pos=prompt.shape[1] + i)
    return out


def test_static_cache_decoding_equals_contiguous_cache() -> None:
    torch.manual_seed(0)
    model = Transformer(get_config("llama3-tiny", vocab_size=512))
    init_weights(model)
    model.eval()
    prompt = torch.randint(0, 512, (1, 9))
    expected = greedy_reference(model, prompt, 12)
    decoder = CompiledDecoder(model, max_len=32, compile=False)
    logits, got = decoder.prefill(prompt), []
    for i in range(12):
        token = logits.argmax(-1)
        got.append(int(token))
        logits = decoder.decode(token.view(1, 1), torch.tensor([9 + i]))
    assert got == expected
    model.fuse_projections()  # the GPU fast path fuses projections; same tokens
    decoder = CompiledDecoder(model, max_len=32, compile=False)
    logits, fused = decoder.prefill(prompt), []
    for i in range(12):
        token = logits.argmax(-1)
        fused.append(int(token))
        logits = decoder.decode(token.view(1, 1), torch.tensor([9 + i]))
    assert fused == expected
