"""Rejection sampling end to end (paper 4.2.2): herd vs a naive pipeline, same machine, same run.

Per prompt: K samples, the verifier, and a reward model's score for each sample. The work is fixed:
EOS is ignored so every sample has exactly `--tokens` new tokens, and every pipeline scores the same
number of (prompt + response) sequences with the same reward model.

- herd: `LLMEngine.generate` with `SamplingParams(n=K)` (the prompt prefilled once, its KV blocks
  shared copy-on-write by the K samples), the math verifier, then `herd.post.rejection.score_samples`
  (the reward model sees the prompt once with its K responses after it: one row). This is what
  `herd rs` runs, with the sampling knob `ignore_eos` added for equal work.
- naive (Hugging Face transformers, what one writes by hand): `model.generate(num_return_sequences=K)`
  (K copies of the prompt in the KV cache), then the reward model on K padded rows of prompt + response,
  the reward read at each row's closing token.
- herd-unshared: herd's engine without prefix caching on K separate requests, and the reward model on
  separate rows (`one_row=False`): what herd would cost without the two sharings.

Model: SmolLM2-135M-Instruct float32 (the Hugging Face directory `benchmarks/dpo_vs_trl.py` writes; both
sides read it); reward model: the same trunk with a seeded score head (a Llama
`LlamaForSequenceClassification` directory, read by herd's `load_reward_model` and by transformers).
Prompts: a system prompt plus worked math problems up to `--prompt-tokens`, then a question.
The reward of one sample is compared across herd and naive (same text, same weights): it must agree.

    .venv/bin/python benchmarks/rs_vs_naive.py --prompts 2 --k 16 --prompt-tokens 512 --tokens 64 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

WORK = REPO / "runs" / "bench-rs"
HF_DIR = REPO / "runs" / "bench-dpo-vs-trl" / "smollm2-135m-instruct-hf-f32"
SYSTEM = "You are a careful math tutor. Solve the problem step by step and finish with 'Answer: N'."


def make_prompts(n: int, prompt_tokens: int, tokenizer: Any, seed: int = 0) -> list[dict[str, str]]:
    """n prompt records: worked examples up to about prompt_tokens tokens, then a question with its answer."""
    from herd.data.synthetic_math import word_problem

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        examples: list[str] = []
        while len(tokenizer.encode("\n\n".join(examples))) < prompt_tokens - 80:
            examples.append(word_problem(rng))
        question, solution = word_problem(rng).split("\nSolution: ", 1)
        out.append({"prompt": "Worked examples:\n\n" + "\n\n".join(examples[:-1]) + "\n\nNow solve:\n"
                    + question.removeprefix("Question: "), "answer": solution.rsplit("Answer: ", 1)[1]})
    return out


def prepare() -> Path:
    """The float32 HF policy directory and a reward model directory with a seeded score head."""
    if not (HF_DIR / "model.safetensors").is_file():
        subprocess.run([sys.executable, "-m", "herd", "convert", "smollm2-135m-instruct", str(HF_DIR), "--to", "hf",
                        "--dtype", "float32"], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    rm_dir = WORK / "reward-model"
    if not (rm_dir / "model.safetensors").is_file():
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(HF_DIR, num_labels=1, dtype=torch.float32)
        with torch.no_grad():
            model.score.weight.normal_(std=model.config.hidden_size ** -0.5)
        model.save_pretrained(rm_dir)
        AutoTokenizer.from_pretrained(HF_DIR).save_pretrained(rm_dir)
    return rm_dir


def run_herd(prompts: list[Any], k: int, tokens: int, seed: int, rm_dir: Path, shared: bool) -> dict[str, Any]:
    from herd.infer import EngineConfig, LLMEngine, SamplingParams
    from herd.loading import load_model
    from herd.post.encoding import encode_preference
    from herd.post.rejection import Sample, score_samples, verify_math
    from herd.post.reward_model import load_reward_model, preference_rewards
    from herd.tokenizer.chat import Message

    loaded = load_model(str(HF_DIR), dtype=torch.float32)
    reward_model, _ = load_reward_model(rm_dir)
    fmt = loaded.chat_format
    ids = [fmt.encode_dialog(r.messages, add_generation_prompt=True).tokens for r in prompts]
    blocks = len(ids) * k * ((max(map(len, ids)) + tokens) // 16 + 2)  # room for every sample unshared
    engine = LLMEngine(loaded, EngineConfig(num_blocks=blocks, max_num_seqs=max(64, k), enable_prefix_caching=shared))
    start = time.perf_counter()  # the engine is built once per process, like the naive side's model
    params = {"temperature": 0.8, "top_p": 0.95, "max_tokens": tokens, "ignore_eos": True}
    if shared:
        outs = engine.generate(ids, [SamplingParams(n=k, seed=seed + j * k, **params) for j in range(len(ids))])
        texts = [[c.text for c in sorted(o.outputs, key=lambda c: c.index)] for o in outs]
    else:
        outs = engine.generate([p for p in ids for _ in range(k)],
                               [SamplingParams(seed=seed + i, **params) for i in range(len(ids) * k)])
        flat = [o.outputs[0].text for o in outs]
        texts = [flat[j * k:(j + 1) * k] for j in range(len(ids))]
    groups = [[Sample(t, tokens, "length", {"math": bool(verify_math(r, t))}) for t in g] for r, g in zip(prompts, texts)]
    generated = time.perf_counter() - start
    if shared:
        score_samples(reward_model, fmt, prompts, groups)
    else:
        encoded = [encode_preference(fmt, r.messages, [[Message("assistant", s.text)] for s in g], "completion")
                   for r, g in zip(prompts, groups)]
        with torch.no_grad():
            for e, g in zip(encoded, groups):
                for s, value in zip(g, preference_rewards(reward_model, [e], one_row=False)[0]):
                    s.reward = float(value)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "generate_seconds": generated, "texts": texts,
            "rewards": [[s.reward for s in g] for g in groups]}


def run_naive(prompts: list[Any], k: int, tokens: int, seed: int, rm_dir: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from herd.loading import load_model
    from herd.post.rejection import verify_math
    from herd.tokenizer.chat import Message

    fmt = load_model(str(HF_DIR), dtype=torch.float32).chat_format  # the same token ids as herd's
    model = AutoModelForCausalLM.from_pretrained(HF_DIR, dtype=torch.float32).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    start = time.perf_counter()
    texts, rewards = [], []
    gen_seconds = 0.0
    with torch.no_grad():
        for j, record in enumerate(prompts):
            t0 = time.perf_counter()
            ids = fmt.encode_dialog(record.messages, add_generation_prompt=True).tokens
            torch.manual_seed(seed + j)
            out = model.generate(torch.tensor([ids]), do_sample=True, temperature=0.8, top_p=0.95, top_k=0,
                                 max_new_tokens=tokens, min_new_tokens=tokens, num_return_sequences=k,
                                 pad_token_id=0)
            group = [fmt.tokenizer.decode(row[len(ids):].tolist()) for row in out]
            [verify_math(record, t) for t in group]
            gen_seconds += time.perf_counter() - t0
            rows = [fmt.encode_dialog([*record.messages, Message("assistant", t)], add_generation_prompt=False).tokens
                    for t in group]
            width = max(map(len, rows))
            batch = torch.tensor([r + [0] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            hidden = rm.model(input_ids=batch, attention_mask=mask).last_hidden_state
            last = torch.tensor([len(r) - 1 for r in rows])
            rewards.append(rm.score(hidden[torch.arange(len(rows)), last]).squeeze(-1).tolist())
            texts.append(group)
    return {"seconds": time.perf_counter() - start, "generate_seconds": gen_seconds, "texts": texts,
            "rewards": rewards}


def reward_agreement(result: dict[str, Any], prompts: list[Any], rm_dir: Path) -> float:
    """|herd reward - transformers reward| for the naive run's first sample (same text, same weights)."""
    from transformers import AutoModelForSequenceClassification

    from herd.loading import load_model
    from herd.post.rejection import Sample, score_samples
    from herd.post.reward_model import load_reward_model
    from herd.tokenizer.chat import Message

    fmt = load_model(str(HF_DIR), dtype=torch.float32).chat_format
    reward_model, _ = load_reward_model(rm_dir)
    group = [Sample(t, 0, None, {}) for t in result["texts"][0][:2]]
    score_samples(reward_model, fmt, prompts[:1], [group])
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32).eval()
    row = fmt.encode_dialog([*prompts[0].messages, Message("assistant", group[0].text)],
                            add_generation_prompt=False).tokens
    with torch.no_grad():
        hidden = rm.model(input_ids=torch.tensor([row])).last_hidden_state
        reference = float(rm.score(hidden[0, -1]))
    return abs(group[0].reward - reference)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from host import describe

    from herd.loading import load_model
    from herd.post.rejection import parse_prompt

    print(describe(), flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    rm_dir = prepare()
    fmt = load_model(str(HF_DIR), dtype=torch.float32).chat_format
    raw = make_prompts(a.prompts, a.prompt_tokens, fmt.tokenizer)
    prompts = [parse_prompt({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["prompt"]}],
                             "answer": r["answer"]}, i) for i, r in enumerate(raw)]
    lengths = [len(fmt.encode_dialog(r.messages, add_generation_prompt=True).tokens) for r in prompts]
    print(f"{a.prompts} prompts of {lengths} tokens, K={a.k} samples x {a.tokens} new tokens each (EOS ignored), "
          f"reward model on every sample; {a.threads} threads", flush=True)
    runs = {"herd": lambda: run_herd(prompts, a.k, a.tokens, 0, rm_dir, True),
            "herd-unshared": lambda: run_herd(prompts, a.k, a.tokens, 0, rm_dir, False),
            "naive": lambda: run_naive(prompts, a.k, a.tokens, 0, rm_dir)}
    best: dict[str, dict[str, Any]] = {}
    for r in range(a.rounds):
        for name, run in runs.items():
            res = run()
            extra = f" (generation {res['generate_seconds']:.1f} s)" if "generate_seconds" in res else ""
            print(f"  round {r} {name:13} {res['seconds']:7.1f} s{extra}", flush=True)
            if name not in best or res["seconds"] < best[name]["seconds"]:
                best[name] = res
    samples = a.prompts * a.k
    for name, res in best.items():
        print(f"  best {name:13} {res['seconds']:7.1f} s  {samples * a.tokens / res['seconds']:7.1f} generated tok/s"
              + (f"  herd {res['seconds'] / best['herd']['seconds']:.2f}x faster" if name != "herd" else ""))
    print(f"  reward of one naive sample, herd vs transformers: |diff| {reward_agreement(best['naive'], prompts, rm_dir):.2e}")
    (WORK / "result.json").write_text(json.dumps({k: {"seconds": v["seconds"]} for k, v in best.items()}))


if __name__ == "__main__":
    main()
