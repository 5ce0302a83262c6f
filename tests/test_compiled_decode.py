"""`EngineConfig(compile=True)`: decode steps through torch.compile give the eager engine's tokens.

The compiled graph is the model's own forward with the engine's attention state, so these tests
compare whole generations (logits feed sampling, so any numeric drift would show as other tokens):
one sequence (no mask), several of different lengths (masked, a dynamic batch), n samples sharing
a long prompt (cascade attention), and int4 weights. Compiling takes tens of seconds on 2 cores,
so one module-scoped engine per configuration is reused.
"""

from __future__ import annotations

import pytest
import torch

import herd
from herd.infer import EngineConfig, LLMEngine, SamplingParams
from herd.infer.compiled_decode import CompiledDecodeStep
from herd.infer.paged_attention import MIN_SHARED_PREFIX
from herd.loading import LoadedModel


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return herd.load_model("random:llama3-tiny")


def prompts(lengths: list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 128_000, (n,), generator=g).tolist() for n in lengths]


def tokens(engine: LLMEngine, batch: list[list[int]], params: SamplingParams) -> list[list[list[int]]]:
    return [[c.token_ids for c in out.outputs] for out in engine.generate(batch, params)]


@pytest.fixture(scope="module")
def engines(tiny: LoadedModel) -> tuple[LLMEngine, LLMEngine]:
    eager = LLMEngine(tiny, EngineConfig(num_blocks=128, block_size=8))
    compiled = LLMEngine(tiny, EngineConfig(num_blocks=128, block_size=8, compile=True))
    return eager, compiled


def test_one_sequence_and_a_mixed_batch_equal_eager(engines: tuple[LLMEngine, LLMEngine]) -> None:
    eager, compiled = engines
    greedy = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    one = prompts([9])
    assert tokens(compiled, one, greedy) == tokens(eager, one, greedy)
    # different lengths: masked decode attention; requests finish at different steps (batch shrinks)
    batch = prompts([5, 17, 11], seed=1)
    mixed = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True) for n in (12, 4, 8)]
    assert tokens(compiled, batch, mixed) == tokens(eager, batch, mixed)
    assert compiled.stats().kv_blocks_used == 0
    assert compiled._compiled_decode is not None and compiled._compiled_decode.steps >= 11 + 11


def test_shared_prompt_samples_equal_eager(engines: tuple[LLMEngine, LLMEngine]) -> None:
    eager, compiled = engines
    # n samples of a prompt long enough for cascade attention over its shared blocks
    prompt = prompts([MIN_SHARED_PREFIX + 20], seed=2)
    params = SamplingParams(temperature=0.8, top_p=0.9, n=3, seed=7, max_tokens=6, ignore_eos=True)
    before = compiled._compiled_decode.steps  # type: ignore[union-attr]
    assert tokens(compiled, prompt, params) == tokens(eager, prompt, params)
    assert compiled._compiled_decode.steps == before + 5  # type: ignore[union-attr]


def test_engines_share_graphs_per_model_and_int4_gets_its_own() -> None:
    """Engines over one model share its compiled forward; an int4 engine runs a prepared copy with other
    modules, which must not reuse the float graph (module guards are skipped, so this is on us)."""
    loaded = herd.load_model("random:llama3-tiny")
    greedy = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    batch = prompts([7], seed=3)
    first = LLMEngine(loaded, EngineConfig(num_blocks=64, compile=True))
    second = LLMEngine(loaded, EngineConfig(num_blocks=32, compile=True))  # another cache size
    assert first._compiled_decode is not None and second._compiled_decode is not None
    assert first._compiled_decode._compiled is second._compiled_decode._compiled
    assert tokens(first, batch, greedy) == tokens(second, batch, greedy)
    compiled = LLMEngine(loaded, EngineConfig(num_blocks=64, quantization="int4", compile=True))
    assert compiled._compiled_decode is not None
    assert compiled._compiled_decode._compiled is not first._compiled_decode._compiled
    eager = LLMEngine(herd.load_model("random:llama3-tiny"), EngineConfig(num_blocks=64, quantization="int4"))
    assert tokens(compiled, batch, greedy) == tokens(eager, batch, greedy)
    assert compiled._compiled_decode.steps == 7


def test_applies_only_to_decode_steps(engines: tuple[LLMEngine, LLMEngine]) -> None:
    from herd.infer.paged_attention import build_metadata

    step = engines[1]._compiled_decode
    assert isinstance(step, CompiledDecodeStep)
    decode, _ = build_metadata([[0, 1]], [5], [1], 4, torch.device("cpu"))
    mixed, _ = build_metadata([[0, 1], [2]], [5, 0], [1, 3], 4, torch.device("cpu"))
    assert step.applies(decode)
    assert not step.applies(mixed)


def test_compile_needs_the_portable_attention(tiny: LoadedModel) -> None:
    with pytest.raises(ValueError, match="portable"):
        LLMEngine(tiny, EngineConfig(num_blocks=8, compile=True, attention="flex"))


def test_changing_batches_stay_within_a_few_graphs(engines: tuple[LLMEngine, LLMEngine]) -> None:
    from torch._dynamo.utils import counters

    eager, compiled = engines
    step = compiled._compiled_decode
    assert step is not None
    before = counters["stats"]["unique_graphs"]
    for seed, lengths in enumerate(([3, 30, 12, 7, 19, 4], [25, 25, 25, 25], [6, 40])):
        batch = prompts(lengths, seed=10 + seed)
        params = [SamplingParams(temperature=0.0, max_tokens=2 + i, ignore_eos=True) for i in range(len(lengths))]
        assert tokens(compiled, batch, params) == tokens(eager, batch, params)
    assert not step.disabled
    assert counters["stats"]["unique_graphs"] - before <= 2  # batch and context sizes are symbolic


def test_warm_up_builds_the_graphs_before_the_first_request(tiny: LoadedModel) -> None:
    """`herd serve --compile` warms up before it opens its port: afterwards no request compiles anything."""
    from torch._dynamo.utils import counters

    engine = LLMEngine(tiny, EngineConfig(num_blocks=64, block_size=8, compile=True))
    assert engine.warm_up() > 0
    assert engine._compiled_decode is not None and engine._compiled_decode.steps >= 4
    stats = engine.stats()
    assert stats.requests_total == 0 and stats.generation_tokens_total == 0 and stats.kv_blocks_used == 0
    graphs = counters["stats"]["unique_graphs"]
    greedy = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    tokens(engine, prompts([6, 13], seed=5), greedy)
    tokens(engine, prompts([4], seed=6), greedy)
    assert counters["stats"]["unique_graphs"] == graphs
    assert LLMEngine(tiny, EngineConfig(num_blocks=64)).warm_up() == 0.0   # nothing to compile
