"""Generation: SmolLM2 greedy decoding equals transformers token for token; sampling controls behave."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import herd
from herd.infer import SamplingParams, generate, generate_tokens, sample, stream_text
from herd.tokenizer.chat import Message

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Explain why the sky is blue in two sentences.",
]


@pytest.fixture(scope="module")
def smollm2():
    return herd.load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def hf_smollm2(smollm2_path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(smollm2_path.parent), gguf_file=smollm2_path.name, dtype=torch.float32
    ).eval()


def test_greedy_generation_equals_transformers(smollm2, hf_smollm2) -> None:
    # Both stop at the model's end of turn (<|im_end|>, which HF's generation config also names).
    compared = 0
    for text in PROMPTS:
        prompt = smollm2.chat_format.encode_dialog([Message(role="user", content=text)]).tokens
        ours = list(generate_tokens(smollm2.model, prompt, SamplingParams(max_tokens=32), smollm2.tokenizer.stop_ids))
        with torch.inference_mode():
            out = hf_smollm2.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=32)
        theirs = out[0, len(prompt):].tolist()
        assert ours == theirs, text
        compared += len(theirs)
    assert compared >= 60
    assert hf_smollm2.generation_config.eos_token_id in smollm2.tokenizer.stop_ids


def test_chat_reply_stops_at_end_of_turn(smollm2) -> None:
    prompt = smollm2.chat_format.encode_dialog([Message(role="user", content="Say hello.")]).tokens
    result = generate(smollm2.model, smollm2.tokenizer, prompt, SamplingParams(max_tokens=64))
    assert result.finish_reason == "stop"
    assert result.stop_token in smollm2.tokenizer.stop_ids
    assert result.text.strip() and "<|im_end|>" not in result.text
    streamed = "".join(stream_text(smollm2.model, smollm2.tokenizer, prompt, SamplingParams(max_tokens=64)))
    assert streamed == result.text


def test_max_tokens_ends_with_length(smollm2) -> None:
    prompt = smollm2.tokenizer.encode("Once upon a time")
    result = generate(smollm2.model, smollm2.tokenizer, prompt, SamplingParams(max_tokens=5), stop_ids=())
    assert result.finish_reason == "length" and len(result.tokens) == 5


def test_seeded_sampling_is_reproducible_and_varies(smollm2) -> None:
    prompt = smollm2.tokenizer.encode("My favourite animal is")
    runs = [
        list(generate_tokens(smollm2.model, prompt, SamplingParams(1.0, max_tokens=12, seed=s), stop_ids=()))
        for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    logits = torch.randn(4, 100, generator=torch.Generator().manual_seed(0))
    greedy = sample(logits, SamplingParams())
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample(logits, SamplingParams(temperature=1.5, top_k=1), gen), greedy)
    assert torch.equal(sample(logits, SamplingParams(temperature=1.5, top_p=1e-6), gen), greedy)


def test_sampling_follows_the_distribution() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(20000, 4)
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample(logits, SamplingParams(temperature=1.0), gen), minlength=4).float() / 20000
    assert torch.allclose(counts, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015)
    # top_p=0.8 keeps the two tokens that reach 80% of the mass, renormalised
    counts = torch.bincount(sample(logits, SamplingParams(1.0, top_p=0.8), gen), minlength=4).float() / 20000
    assert torch.allclose(counts, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.015)
    counts = torch.bincount(sample(logits, SamplingParams(1.0, top_k=3), gen), minlength=4).float() / 20000
    assert counts[3] == 0 and torch.allclose(counts[:3], torch.tensor([0.5, 0.3, 0.15]) / 0.95, atol=0.015)


def test_bad_sampling_parameters() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=-3)


def test_prompt_longer_than_context_is_rejected() -> None:
    loaded = herd.load_model("random:llama3-tiny")
    with pytest.raises(ValueError, match="context is 2048"):
        list(generate_tokens(loaded.model, [1] * 2048, SamplingParams()))
    with pytest.raises(ValueError, match="empty"):
        list(generate_tokens(loaded.model, [], SamplingParams()))
