"""The paged-KV continuous-batching engine: same tokens as full recomputation with the bare model,
block sharing (fork, copy-on-write, prefix cache), preemption, stops, logprobs, streaming, async."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

import herd
from herd.infer import AsyncEngine, EngineConfig, LLMEngine, SamplingParams
from herd.infer.detokenize import Detokenizer
from herd.loading import LoadedModel
from herd.tokenizer.chat import Message

# ---------------------------------------------------------------------------------------------
# Reference: greedy decoding by full recomputation (the whole sequence through the bare model at
# every step; no cache at all, so the comparison is independent of any cache or of herd.infer.generate).


def reference_greedy(model, prompt: list[int], max_tokens: int, stops=()) -> list[int]:
    sequence, out = list(prompt), []
    with torch.inference_mode():
        while len(out) < max_tokens:
            token = int(model(torch.tensor([sequence]), select=torch.tensor([len(sequence) - 1]))[0, -1].argmax())
            if token in stops:
                break
            out.append(token)
            sequence.append(token)
    return out


def random_prompts(lengths, seed=0, vocab=128_000) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def run_all(engine: LLMEngine, prompts, params) -> list:
    return engine.generate(prompts, params)


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return herd.load_model("random:llama3-tiny")


def engine(loaded: LoadedModel, **kw) -> LLMEngine:
    kw.setdefault("num_blocks", 256)
    return LLMEngine(loaded, EngineConfig(**kw))


GREEDY = SamplingParams(max_tokens=16, ignore_eos=True)

# ---------------------------------------------------------------------------------------------
# Batching equals the single-sequence path


def test_mixed_batch_equals_single_sequence_greedy(tiny) -> None:
    lengths = [5, 37, 1, 70, 16, 23, 48, 9]
    max_tokens = [12, 5, 20, 9, 17, 3, 11, 25]
    prompts = random_prompts(lengths)
    eng = engine(tiny, block_size=8, max_batched_tokens=32, max_num_seqs=4)
    steps = []
    schedule = eng.scheduler.schedule

    def recording_schedule():
        out = schedule()
        steps.append([(c.seq.group.request_id, c.start, c.length) for c in out.chunks])
        return out

    eng.scheduler.schedule = recording_schedule  # type: ignore[method-assign]
    outs = eng.generate(prompts, [replace(GREEDY, max_tokens=m) for m in max_tokens])
    for prompt, m, out in zip(prompts, max_tokens, outs):
        assert out.finished and out.outputs[0].finish_reason == "length"
        assert out.outputs[0].token_ids == reference_greedy(tiny.model, prompt, m)
    assert all(sum(length for _, _, length in s) <= 32 for s in steps)
    # Chunked prefill: a prompt continued from a cached prefix in a later step.
    assert any(start > 0 and length > 1 for s in steps for _, start, length in s)
    # Continuous batching: decodes and a prefill in the same step.
    assert any(any(l == 1 for *_, l in s) and any(l > 1 for *_, l in s) for s in steps)
    assert max(len(s) for s in steps) <= 4
    assert eng.stats().kv_blocks_used == 0 and eng.stats().requests_total == len(prompts)


def test_preemption_by_recompute_keeps_greedy_tokens(tiny) -> None:
    prompts = random_prompts([30, 22, 41, 12, 35, 27], seed=1)
    for caching in (False, True):
        eng = engine(tiny, block_size=4, num_blocks=20, max_batched_tokens=64, enable_prefix_caching=caching)
        outs = eng.generate(prompts, replace(GREEDY, max_tokens=30))
        stats = eng.stats()
        assert stats.preemptions_total > 0
        for prompt, out in zip(prompts, outs):
            assert out.outputs[0].token_ids == reference_greedy(tiny.model, prompt, 30)
        assert stats.kv_blocks_used == 0 and stats.running == 0 and stats.waiting == 0


def test_prompt_that_can_never_fit_is_rejected(tiny) -> None:
    eng = engine(tiny, block_size=4, num_blocks=5)
    with pytest.raises(ValueError, match="can never run"):
        eng.add_request(list(range(1, 21)), GREEDY)
    eng.add_request(list(range(1, 20)), GREEDY)  # 19 tokens + 1 fit in 20 slots
    with pytest.raises(ValueError, match="context is 2048"):
        engine(tiny).add_request([1] * 2048, GREEDY)
    with pytest.raises(ValueError, match="empty"):
        eng.add_request([], GREEDY)
    with pytest.raises(ValueError, match="max_num_seqs"):
        engine(tiny, max_num_seqs=2).add_request([1, 2], replace(GREEDY, n=3))


# ---------------------------------------------------------------------------------------------
# Sharing: fork + copy-on-write, prefix cache


def test_prefix_shared_sampling_equals_unshared_runs(tiny) -> None:
    prompt = random_prompts([38], seed=2)[0]  # 38 tokens, block 16: the prompt ends mid-block
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=12, seed=1234, n=4, ignore_eos=True)
    eng = engine(tiny, block_size=16, enable_prefix_caching=False)
    rid = eng.add_request(prompt, params)
    eng.step()  # prefill once, fork into 4, sample their first tokens
    group = eng._groups[rid]
    assert len(group.seqs) == 4 and all(s.block_table == group.seqs[0].block_table for s in group.seqs)
    assert [eng.blocks.ref_counts[b] for b in group.seqs[0].block_table] == [4, 4, 4]
    assert eng.stats().kv_blocks_used == 3
    eng.step()  # each sample writes its token into the shared partial block: 3 copies, 1 in place
    tables = [s.block_table for s in group.seqs]
    assert all(t[:2] == tables[0][:2] for t in tables) and len({t[2] for t in tables}) == 4
    assert eng.stats().cow_copies_total == 3 and eng.stats().kv_blocks_used == 2 + 4
    shared = None
    while eng.has_unfinished():
        for out in eng.step():
            if out.finished:
                shared = [c.token_ids for c in out.outputs]
    assert eng.stats().kv_blocks_used == 0
    single = engine(tiny, block_size=16, enable_prefix_caching=False)
    unshared = [
        single.generate([prompt], replace(params, n=1, seed=1234 + i))[0].outputs[0].token_ids for i in range(4)
    ]
    assert shared == unshared
    assert len({tuple(s) for s in shared}) == 4  # four different samples


def test_copy_on_write_keeps_shared_prompt_intact(tiny) -> None:
    # Greedy n=3 with a prompt ending mid-block: every sample must equal the single-sequence path.
    prompt = random_prompts([13], seed=3)[0]
    eng = engine(tiny, block_size=4, enable_prefix_caching=False)
    out = eng.generate([prompt], replace(GREEDY, n=3))[0]
    ref = reference_greedy(tiny.model, prompt, 16)
    assert [c.token_ids for c in out.outputs] == [ref] * 3
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert eng.stats().cow_copies_total == 2 and eng.stats().kv_blocks_used == 0


def test_prefix_cache_hit_across_requests(tiny) -> None:
    shared = random_prompts([48], seed=4)[0]
    a, b = shared + [11, 12, 13], shared + [21, 22]
    ref_a, ref_b = reference_greedy(tiny.model, a, 10), reference_greedy(tiny.model, b, 10)
    params = replace(GREEDY, max_tokens=10)
    used = {}
    for caching in (False, True):
        eng = engine(tiny, block_size=16, enable_prefix_caching=caching)
        eng.add_request(a, params, "a")
        eng.step()  # a's prompt is in the cache now
        eng.add_request(b, params, "b")
        eng.step()
        used[caching] = eng.stats().kv_blocks_used
        outs = {}
        while eng.has_unfinished():
            outs.update({o.request_id: o for o in eng.step() if o.finished})
        assert outs["a"].outputs[0].token_ids == ref_a and outs["b"].outputs[0].token_ids == ref_b
        assert eng.stats().prefix_cache_hit_tokens == (48 if caching else 0)
        assert eng.stats().kv_blocks_used == 0
    assert used[True] == used[False] - 3  # b reused a's three full prompt blocks
    # A later identical prompt hits the (now unreferenced, still cached) blocks too.
    eng.generate([b], params)
    assert eng.stats().prefix_cache_hit_tokens == 96


# ---------------------------------------------------------------------------------------------
# Stops, lengths, abort


class ScriptedModel(nn.Module):
    """The real tiny model (so paged attention runs), with logits forced to follow a script:
    the token after position p is script[p + 1 - prompt_len]."""

    def __init__(self, inner, prompt_len: int, script: list[int]) -> None:
        super().__init__()
        self.inner, self.config, self.tok_embeddings = inner, inner.config, inner.tok_embeddings
        self.prompt_len, self.script = prompt_len, script

    def forward(self, tokens, positions, attention, *, select):
        logits = self.inner(tokens, positions, attention, select=select).clone()
        for row, pos in enumerate(positions[0, select].tolist()):
            index = pos + 1 - self.prompt_len
            if index < len(self.script):
                logits[0, row, self.script[index]] = 1e4
        return logits


def scripted(tiny, text: str, prompt: list[int]) -> tuple[LoadedModel, list[int]]:
    script = tiny.tokenizer.encode(text)
    return replace(tiny, model=ScriptedModel(tiny.model, len(prompt), script)), script


def test_stop_strings_spanning_tokens(tiny) -> None:
    prompt = [1, 2, 3]
    text = "The answer is 42.\nUser: thanks\nAssistant: you're welcome"
    loaded, script = scripted(tiny, text, prompt)
    pieces = [tiny.tokenizer.decode([t]) for t in script]
    assert "\nUser:" not in pieces and any(p.startswith("\n") for p in pieces)  # the stop spans tokens
    eng = engine(loaded)
    params = SamplingParams(max_tokens=len(script), stop=("\nUser:", "never"), ignore_eos=True)
    deltas = []
    for out in eng.stream(prompt, params):
        deltas.append(out.outputs[0].delta_text)
    final = out.outputs[0]
    assert final.text == "The answer is 42." == "".join(deltas)
    assert final.finish_reason == "stop" and final.stop_reason == "\nUser:"
    assert not any("\n" in d for d in deltas)  # held back while it could still be the stop string
    assert eng.stats().kv_blocks_used == 0
    # A prefix of a stop string that does not complete is released.
    out = eng.generate([prompt], replace(params, stop=("\nUser: no",)))[0].outputs[0]
    assert out.text == text and out.finish_reason == "length"


def test_detokenizer_stop_string_inside_one_piece(llama3_tokenizer) -> None:
    det = Detokenizer(llama3_tokenizer, stop=("STOP",))
    for t in llama3_tokenizer.encode("abc xSTOPy"):
        det.add(t)
    assert det.text == "abc x" and det.stopped == "STOP"


def test_stop_token_ids_ignore_eos_and_length(tiny) -> None:
    prompt = random_prompts([9], seed=5)[0]
    ref = reference_greedy(tiny.model, prompt, 12)
    stop = ref[4]
    first = ref.index(stop)
    eng = engine(tiny)
    out = eng.generate([prompt], replace(GREEDY, max_tokens=12, stop_token_ids=(stop,)))[0].outputs[0]
    assert out.token_ids == ref[:first] and out.finish_reason == "stop" and out.stop_reason == stop
    # The tokenizer's end-of-text ids stop generation unless ignore_eos.
    tok = copy.copy(tiny.tokenizer)
    tok.stop_ids = frozenset({stop})
    eos_engine = engine(replace(tiny, tokenizer=tok))
    out = eos_engine.generate([prompt], SamplingParams(max_tokens=12))[0].outputs[0]
    assert out.token_ids == ref[:first] and out.finish_reason == "stop"
    out = eos_engine.generate([prompt], SamplingParams(max_tokens=12, ignore_eos=True))[0].outputs[0]
    assert out.token_ids == ref and out.finish_reason == "length" and out.stop_reason is None
    out = eng.generate([prompt], replace(GREEDY, max_tokens=0))[0]
    assert out.finished and out.outputs[0].token_ids == [] and out.outputs[0].finish_reason == "length"


def test_abort_frees_blocks(tiny) -> None:
    eng = engine(tiny, block_size=4)
    prompts = random_prompts([20, 25], seed=6)
    eng.add_request(prompts[0], replace(GREEDY, max_tokens=40), "keep")
    eng.add_request(prompts[1], replace(GREEDY, max_tokens=40), "drop")
    for _ in range(3):
        eng.step()
    before = eng.stats().kv_blocks_used
    held = eng._groups["drop"].seqs[0].block_table
    assert len(held) == 7  # 25 prompt + 2 decoded tokens computed, 4-token blocks
    eng.abort("drop")
    assert eng.stats().kv_blocks_used == before - 7
    outs = eng.step()
    dropped = [o for o in outs if o.request_id == "drop"]
    assert dropped and dropped[0].finished and dropped[0].outputs[0].finish_reason == "abort"
    final = {}
    while eng.has_unfinished():
        final.update({o.request_id: o for o in eng.step() if o.finished})
    assert set(final) == {"keep"} and final["keep"].outputs[0].token_ids == reference_greedy(tiny.model, prompts[0], 40)
    assert eng.stats().kv_blocks_used == 0
    eng.abort("no-such-request")  # harmless


def copy_last_token_model(loaded: LoadedModel) -> LoadedModel:
    """A model whose greedy choice is always the previous token: residual blocks zeroed, unit-norm
    embeddings tied to a scaled output, so logits are cosine similarities (3 for itself, ~0 else)."""
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.wo.weight.zero_()
            layer.feed_forward.w2.weight.zero_()
        emb = model.tok_embeddings.weight
        emb.copy_(torch.nn.functional.normalize(emb, dim=-1))
        model.output.weight = nn.Parameter(emb.clone() * 3 / emb.shape[1] ** 0.5)
    return replace(loaded, model=model)


def test_penalties_change_outputs_in_the_right_direction(tiny) -> None:
    prompts = random_prompts([6, 8, 10], seed=7)
    eng = engine(copy_last_token_model(tiny))
    base = SamplingParams(max_tokens=40, ignore_eos=True)

    def distinct(params) -> list[tuple[int, int]]:
        """Per request: distinct output tokens, and how many of them also occur in the prompt."""
        outs = eng.generate(prompts, params)
        return [(len(set(o.outputs[0].token_ids)), len(set(o.outputs[0].token_ids) & set(p)))
                for o, p in zip(outs, prompts)]

    assert distinct(base) == [(1, 1)] * 3  # greedy repeats the prompt's last token forever
    # repetition penalty covers prompt and output: no repeats, and no prompt token either
    assert distinct(replace(base, repetition_penalty=10.0)) == [(40, 0)] * 3
    # frequency/presence penalties cover the output only: the first token still copies the prompt
    assert distinct(replace(base, frequency_penalty=2.0)) == [(40, 1)] * 3
    assert distinct(replace(base, presence_penalty=2.0)) == [(40, 1)] * 3
    assert distinct(replace(base, frequency_penalty=-2.0)) == [(1, 1)] * 3


def test_logprobs_equal_log_softmax_of_a_direct_forward(tiny) -> None:
    prompt = random_prompts([11], seed=8)[0]
    eng = engine(tiny, block_size=4)
    params = SamplingParams(temperature=0.8, max_tokens=8, seed=3, logprobs=True, top_logprobs=5, ignore_eos=True)
    out = eng.generate([prompt], params)[0].outputs[0]
    with torch.inference_mode():
        logits = tiny.model(torch.tensor([prompt + out.token_ids]))[0].float()
    logp = torch.log_softmax(logits, dim=-1)[len(prompt) - 1:-1]
    assert out.logprobs is not None and len(out.logprobs) == len(out.token_ids) == 8
    for i, lp in enumerate(out.logprobs):
        assert lp.token_id == out.token_ids[i]
        assert lp.logprob == pytest.approx(logp[i, lp.token_id].item(), abs=1e-4)
        assert lp.token == tiny.tokenizer.token_bytes(lp.token_id).decode("utf-8", errors="replace")
        values = [v for _, _, v in lp.top]
        assert len(lp.top) == 5 and values == sorted(values, reverse=True)
        assert [t for t, _, _ in lp.top] == logp[i].topk(5).indices.tolist()
        assert values == pytest.approx(logp[i].topk(5).values.tolist(), abs=1e-4)


def test_utf8_safe_streaming(tiny) -> None:
    prompt = [5, 6]
    text = "llamas 🦙🦙 and 日本語 done"
    loaded, script = scripted(tiny, text, prompt)
    assert any("\ufffd" in tiny.tokenizer.decode([t]) for t in script)  # characters split across tokens
    eng = engine(loaded)
    deltas = [o.outputs[0].delta_text for o in eng.stream(prompt, SamplingParams(max_tokens=len(script)))]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text


def test_progress_bar(tiny, capsys) -> None:
    outs = engine(tiny).generate(random_prompts([4, 5]), replace(GREEDY, max_tokens=3), progress=True)
    assert len(outs) == 2 and "generating" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# AsyncEngine


def test_async_engine_concurrent_streams_and_cancellation(tiny) -> None:
    eng = engine(tiny, block_size=4, max_num_seqs=8)
    prompts = random_prompts([7, 12, 5, 20, 9, 15, 3, 11], seed=9)

    async def consume(async_engine, prompt, rid, cancel_after=None):
        outs, tokens = [], []
        async for out in async_engine.generate(prompt, replace(GREEDY, max_tokens=24), request_id=rid):
            tokens += out.outputs[0].delta_token_ids
            outs.append(out)
            if cancel_after is not None and len(tokens) >= cancel_after:
                break  # closing the iterator aborts the request
        return outs, tokens

    async def main():
        async_engine = AsyncEngine(eng)
        try:
            tasks = [asyncio.create_task(consume(async_engine, p, f"r{i}")) for i, p in enumerate(prompts)]
            cancelled = asyncio.create_task(consume(async_engine, prompts[0] * 3, "cancel-me", cancel_after=3))
            sleeper = asyncio.create_task(consume(async_engine, prompts[1] * 2, "task-cancelled"))
            results = await asyncio.gather(*tasks)
            _, partial = await cancelled
            sleeper.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sleeper
            for _ in range(200):  # let the engine thread process the aborts
                if async_engine.stats().kv_blocks_used == 0 and not eng.has_unfinished():
                    break
                await asyncio.sleep(0.01)
            return results, partial, async_engine.stats()
        finally:
            async_engine.shutdown()

    results, partial, stats = asyncio.run(main())
    for prompt, (outs, tokens) in zip(prompts, results):
        assert outs[-1].finished and tokens == reference_greedy(tiny.model, prompt, 24)
        assert outs[-1].outputs[0].token_ids == tokens
    assert 3 <= len(partial) < 24
    assert stats.kv_blocks_used == 0 and stats.running == 0 and stats.waiting == 0
    assert stats.requests_total == 10


# ---------------------------------------------------------------------------------------------
# Real weights


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    return herd.load_model("smollm2-135m-instruct")


def test_smollm2_batched_chat_equals_single_sequence(smollm2) -> None:
    questions = ["What is the capital of France?", "Name three colors.", "Write a haiku about llamas."]
    prompts = [smollm2.chat_format.encode_dialog([Message(role="user", content=q)]).tokens for q in questions]
    eng = engine(smollm2, max_batched_tokens=24, max_num_seqs=8)
    outs = eng.generate(prompts, SamplingParams(max_tokens=24))
    stops = smollm2.tokenizer.stop_ids
    for prompt, out in zip(prompts, outs):
        ref = reference_greedy(smollm2.model, prompt, 24, stops)
        choice = out.outputs[0]
        assert choice.token_ids == ref
        assert choice.text == smollm2.tokenizer.decode(ref)
        assert choice.finish_reason == ("stop" if len(ref) < 24 else "length")
    assert outs[0].outputs[0].text.strip().startswith("The capital of France is Paris")


def test_cascade_decode_attention_equals_attention_over_the_whole_context() -> None:
    """The n samples of one prompt read the shared prompt keys once; the result must not change."""
    import torch.nn.functional as F

    from herd.infer.paged_attention import cascade_decode_attention

    gen = torch.Generator().manual_seed(0)
    b, n_kv, group, hd, prefix, suffix = 5, 3, 3, 16, 70, 9
    key_cache = torch.randn(200, n_kv, hd, generator=gen)
    value_cache = torch.randn(200, n_kv, hd, generator=gen)
    shared = torch.randperm(200, generator=gen)[:prefix]
    own_k = torch.randn(b, n_kv, suffix, hd, generator=gen)
    own_v = torch.randn(b, n_kv, suffix, hd, generator=gen)
    lengths = torch.tensor([9, 3, 1, 7, 9])
    mask = (torch.arange(suffix)[None, :] < lengths[:, None])[:, None, None, :]
    q = torch.randn(b, n_kv * group, 1, hd, generator=gen)
    got = cascade_decode_attention(q, key_cache, value_cache, shared, own_k, own_v, mask)
    full_k = torch.cat([key_cache[shared].transpose(0, 1).expand(b, -1, -1, -1), own_k], dim=2)
    full_v = torch.cat([value_cache[shared].transpose(0, 1).expand(b, -1, -1, -1), own_v], dim=2)
    full_mask = torch.cat([torch.ones(b, 1, 1, prefix, dtype=torch.bool), mask], dim=-1)
    want = F.scaled_dot_product_attention(q, full_k, full_v, attn_mask=full_mask, enable_gqa=True)
    assert (got - want).abs().max() < 1e-5


def test_decodes_sharing_a_prompt_use_cascade_metadata() -> None:
    from herd.infer.paged_attention import build_metadata

    shared_blocks = list(range(10))  # 10 blocks x 16 = 160 shared prompt tokens
    tables = [shared_blocks + [10 + i] for i in range(4)]
    meta, _ = build_metadata(tables, [165, 166, 170, 163], [1, 1, 1, 1], 16, torch.device("cpu"))
    assert meta.shared_slots is not None and meta.shared_slots.tolist() == list(range(160))
    assert meta.decode_slots is not None and meta.decode_slots.shape == (4, 171 - 160)
    unshared, _ = build_metadata([[1, 2], [3, 4]], [20, 20], [1, 1], 16, torch.device("cpu"))
    assert unshared.shared_slots is None


def test_flex_attention_backend_gives_the_same_tokens_without_copying_the_cache(tiny) -> None:
    """attention="flex": queries read the cache in place through a block mask (eager FlexAttention on CPU).

    Mixed prefill/decode steps, chunked prefill and n=3 samples sharing their prompt's blocks.
    """
    prompts = random_prompts([5, 37, 20], seed=3)
    params = [replace(GREEDY, max_tokens=6), replace(GREEDY, max_tokens=4),
              SamplingParams(max_tokens=5, n=3, temperature=0.8, seed=7, ignore_eos=True)]
    portable = engine(tiny, block_size=8, max_batched_tokens=24).generate(prompts, params)
    flex = engine(tiny, block_size=8, max_batched_tokens=24, attention="flex").generate(prompts, params)
    for a, b in zip(portable, flex):
        assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]
    with pytest.raises(ValueError, match="attention"):
        EngineConfig(attention="triton")


def test_partial_sort_nucleus_equals_the_full_sort() -> None:
    """Top-k/top-p over the 1,024 best candidates keeps exactly what sorting the vocabulary keeps,
    and falls back to the full sort when a row's nucleus is wider (a flat distribution)."""
    from herd.infer.sampling import CANDIDATES, _nucleus

    gen = torch.Generator().manual_seed(0)
    peaked = torch.randn(4, 50_000, generator=gen) * 10
    flat = torch.randn(2, 50_000, generator=gen) * 0.01
    for scaled, top_ks, top_ps in ((peaked, [0, 50, 2000, 0], [0.9, 1.0, 0.95, 0.5]), (flat, [0, 10], [0.99, 1.0])):
        probs, order = _nucleus(scaled, top_ks, top_ps)
        want_probs, want_order = _nucleus(scaled, top_ks, top_ps, width=50_000)  # the whole vocabulary sorted
        width = probs.shape[-1]
        assert width == (CANDIDATES if scaled is peaked else 50_000)
        kept = probs > 0
        assert torch.equal(kept, want_probs[:, :width] > 0) and not (want_probs[:, width:] > 0).any()
        assert torch.equal(order[kept], want_order[:, :width][kept])
        torch.testing.assert_close(probs, want_probs[:, :width], rtol=1e-5, atol=1e-7)
