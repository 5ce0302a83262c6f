"""HumanEval generation: herd's engine (all problems batched) vs transformers `generate` one by one.

What the evaluation harness does for pass@k: greedy completions of HumanEval prompts. The peer is the
usual script: a loop of Hugging Face `model.generate(max_new_tokens=...)` per problem. Both load the
same SmolLM2-135M-Instruct GGUF dequantized to float32 and generate greedily with no stop strings (so
both produce exactly `--max-tokens` tokens unless EOS comes first); the figure is generated tokens per
second, alternating rounds, best of each. Greedy tokens are compared for the first problems.

    python benchmarks/humaneval_gen_cpu.py --problems 16 --max-tokens 96 --rounds 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--problems", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()

    from host import describe
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from herd.eval.passk import read_humaneval
    from herd.infer.engine import LLMEngine
    from herd.infer.sampling import SamplingParams
    from herd.loading import load_model, resolve_spec

    print(describe())
    problems = read_humaneval()[: a.problems]
    loaded = load_model("smollm2-135m-instruct")
    prompts = [loaded.tokenizer.encode(pr["prompt"].rstrip(), bos=False) for pr in problems]
    path = resolve_spec("smollm2-135m-instruct")
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert hf_tok(problems[0]["prompt"].rstrip())["input_ids"] == prompts[0], "tokenizers differ"
    params = SamplingParams(temperature=0.0, max_tokens=a.max_tokens)

    def run_herd() -> tuple[float, int, list[list[int]]]:
        engine = LLMEngine(loaded)
        t0 = time.perf_counter()
        outs = engine.generate(prompts, params)
        seconds = time.perf_counter() - t0
        ids = [o.outputs[0].token_ids for o in outs]
        return seconds, sum(map(len, ids)), ids

    def run_hf() -> tuple[float, int, list[list[int]]]:
        ids = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for prompt in prompts:
                out = hf.generate(torch.tensor([prompt]), max_new_tokens=a.max_tokens, do_sample=False,
                                  pad_token_id=hf_tok.eos_token_id)
                new = out[0, len(prompt):].tolist()
                if hf_tok.eos_token_id in new:   # herd stops before the EOS token; count the same tokens
                    new = new[: new.index(hf_tok.eos_token_id)]
                ids.append(new)
        return time.perf_counter() - t0, sum(map(len, ids)), ids

    # warm-up (oneDNN picks kernels per shape on first use; herd loads its C++ kernels)
    LLMEngine(loaded).generate(prompts[:2], SamplingParams(temperature=0.0, max_tokens=4))
    with torch.no_grad():
        hf.generate(torch.tensor([prompts[0]]), max_new_tokens=4, do_sample=False, pad_token_id=hf_tok.eos_token_id)
    best: dict[str, tuple[float, int, list[list[int]]]] = {}
    for r in range(a.rounds):
        for name, fn in (("herd", run_herd), ("transformers", run_hf)):
            res = fn()
            print(f"  round {r} {name:12} {res[0]:.1f} s, {res[1]} tokens, {res[1] / res[0]:.1f} tok/s", flush=True)
            if name not in best or res[1] / res[0] > best[name][1] / best[name][0]:
                best[name] = res
    h, t = best["herd"], best["transformers"]
    same = sum(x == y for x, y in zip(h[2], t[2]))
    print(f"herd engine {h[1] / h[0]:.1f} tok/s vs transformers generate (sequential) {t[1] / t[0]:.1f} tok/s -> "
          f"{(h[1] / h[0]) / (t[1] / t[0]):.2f}x; identical greedy completions {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
