"""Greedy decode tokens/s of SmolLM2-135M-Instruct on this CPU: herd vs HF transformers vs llama.cpp.

One run, same prompt, same number of new tokens (EOS ignored so every peer decodes the same count).
Decode rate excludes the prompt's prefill: herd and llama.cpp are timed from the first generated token;
transformers as (T(N new) - T(1 new)) / (N - 1).

    .venv/bin/python benchmarks/decode_cpu.py [--tokens 128] [--llama-cpp-python benchmarks/.env/bin/python]

llama.cpp runs through llama-cpp-python in its own environment (it compiles for minutes; never in CI):
    python3 -m venv benchmarks/.env && benchmarks/.env/bin/pip install llama-cpp-python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

PROMPT = "The history of the llama begins in the Andes, where"

LLAMA_CPP_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
path, prompt, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_batch=512, verbose=False)
tokens = llm.tokenize(prompt.encode(), add_bos=False)
out, start = [], None
for tok in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0):
    if start is None:
        start = time.perf_counter()
    out.append(tok)
    if len(out) == n:
        break
print(json.dumps({"tok_s": (n - 1) / (time.perf_counter() - start), "tokens": out}))
"""


def herd_decode(spec: str, n: int, dtype: torch.dtype, int4: bool = False) -> tuple[float, list[int]]:
    import herd
    from herd.infer import SamplingParams, generate_tokens

    loaded = herd.load_model(spec, dtype=dtype)
    if int4:  # every projection and the head in 4-bit groups of 32 (llama.cpp Q4_1's format class)
        from herd.infer.quant_int4 import quantize_int4

        quantize_int4(loaded.model)
    prompt = loaded.tokenizer.encode(PROMPT)
    best, tokens = 0.0, []
    for _ in range(2):  # the first run warms up allocator and kernels
        tokens, start = [], None
        for tok in generate_tokens(loaded.model, prompt, SamplingParams(max_tokens=n), stop_ids=()):
            if start is None:
                start = time.perf_counter()
            tokens.append(tok)
        best = max(best, (n - 1) / (time.perf_counter() - start))
    return best, tokens


def hf_decode(path: Path, n: int) -> tuple[float, list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ids = torch.tensor([tok.encode(PROMPT, add_special_tokens=False)])

    def timed(new: int) -> tuple[float, torch.Tensor]:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        return time.perf_counter() - start, out

    timed(8)
    t1, _ = timed(1)
    tn, out = timed(n)
    return (n - 1) / (tn - t1), out[0, ids.shape[1]:].tolist()


def llama_cpp_decode(python: str, path: Path, n: int, threads: int) -> tuple[float, list[int]] | None:
    if not Path(python).exists():
        return None
    proc = subprocess.run(
        [python, "-c", LLAMA_CPP_SCRIPT, str(path), PROMPT, str(n), str(threads)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["tok_s"], result["tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--llama-cpp-python", default="benchmarks/.env/bin/python")
    args = parser.parse_args()
    from herd.loading import resolve_spec

    path = resolve_spec("smollm2-135m-instruct")
    threads = torch.get_num_threads()
    rows = []
    for name, dtype, int4 in (("herd fp32", torch.float32, False), ("herd fp16", torch.float16, False),
                              ("herd bf16", torch.bfloat16, False), ("herd int4 (fp32 activations)", torch.float32, True)):
        rate, tokens = herd_decode("smollm2-135m-instruct", args.tokens, dtype, int4)
        rows.append((name, rate, tokens))
    rate, hf_tokens = hf_decode(path, args.tokens)
    rows.append(("transformers fp32", rate, hf_tokens))
    cpp = llama_cpp_decode(args.llama_cpp_python, path, args.tokens, threads)
    if cpp is not None:
        rows.append((f"llama.cpp Q4_1 ({threads} threads)", *cpp))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{threads} threads; {args.tokens} new tokens, greedy")
    hf_rate = rows[4][1]
    for name, rate, tokens in rows:
        same = sum(a == b for a, b in zip(tokens, hf_tokens))
        print(f"{name:32s} {rate:7.1f} tok/s  x{rate / hf_rate:4.2f} vs transformers  "
              f"tokens equal to transformers: {same}/{len(hf_tokens)}")


if __name__ == "__main__":
    main()
