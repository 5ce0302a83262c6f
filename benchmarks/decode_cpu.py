"""Greedy decode tokens/s of SmolLM2-135M-Instruct on this CPU: herd vs HF transformers vs llama.cpp.

One run, same prompt, same number of new tokens (EOS ignored so every peer decodes the same count).
Decode rate excludes the prompt's prefill: herd and llama.cpp are timed from the first generated token;
transformers as (T(N new) - T(1 new)) / (N - 1). herd runs through its engine (`herd generate`'s path).
The two fastest, herd int4 + compile (`--quantization int4 --compile`) and llama.cpp Q4_1, alternate
`--rounds` times in one process tree, since a shared 2-core VM's speed drifts by 20-30% between minutes.

    .venv/bin/python benchmarks/decode_cpu.py [--tokens 128] [--rounds 3] [--llama-cpp-python benchmarks/.env/bin/python]

llama.cpp runs through llama-cpp-python in its own environment (it compiles for minutes; never in CI):
    python3 -m venv benchmarks/.env && benchmarks/.env/bin/pip install llama-cpp-python
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

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


def herd_decode(
    spec: str, n: int, dtype: torch.dtype, quantization: str | None = None, compile: bool = False, runs: int = 2,
) -> tuple[list[float], list[int]]:
    """Decode rates of `runs` timed generations (after one warm-up, which also compiles) and the tokens."""
    import herd
    from herd.infer import SamplingParams
    from herd.infer.generate import single_request_engine

    loaded = herd.load_model(spec, dtype=dtype)
    prompt = loaded.tokenizer.encode(PROMPT)
    engine = single_request_engine(loaded.model, None, len(prompt), n, quantization=quantization, compile=compile)
    params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
    rates, tokens = [], []
    for run in range(runs + 1):  # run 0 warms up allocator and kernels (and compiles)
        tokens, start = [], None
        for out in engine.stream(list(prompt), params):
            if start is None:
                start = time.perf_counter()
            tokens += out.outputs[0].delta_token_ids
        if run:
            rates.append((n - 1) / (time.perf_counter() - start))
    return rates, tokens


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
    parser.add_argument("--rounds", type=int, default=3, help="alternating herd-compiled / llama.cpp rounds")
    args = parser.parse_args()
    from herd.loading import resolve_spec

    path = resolve_spec("smollm2-135m-instruct")
    threads = torch.get_num_threads()
    rows: list[tuple[str, list[float], list[int]]] = []
    for name, dtype, quant in (("herd fp32", torch.float32, None), ("herd fp16", torch.float16, None),
                               ("herd bf16", torch.bfloat16, None), ("herd int4 (eager)", torch.float32, "int4")):
        rows.append((name, *herd_decode("smollm2-135m-instruct", args.tokens, dtype, quant)))
    rate, hf_tokens = hf_decode(path, args.tokens)
    rows.append(("transformers fp32", [rate], hf_tokens))
    # The two fastest alternate, `--rounds` times each, so a noisy neighbour slows both alike.
    compiled: list[float] = []
    cpp: list[float] = []
    compiled_tokens: list[int] = []
    cpp_tokens: list[int] = []
    for _ in range(args.rounds):
        rates, compiled_tokens = herd_decode("smollm2-135m-instruct", args.tokens, torch.float32, "int4", True)
        compiled += rates
        result = llama_cpp_decode(args.llama_cpp_python, path, args.tokens, threads)
        if result is not None:
            cpp.append(result[0])
            cpp_tokens = result[1]
    rows.append(("herd int4 + compile", compiled, compiled_tokens))
    if cpp:
        rows.append((f"llama.cpp Q4_1 ({threads} threads)", cpp, cpp_tokens))
    from herd.infer import cpu_kernels

    print(f"machine: {describe()}; int4 kernel path: {cpu_kernels.int4_path() or 'ATen'}; "
          f"{args.tokens} new tokens, greedy")
    hf_rate = rows[4][1][0]
    for name, rates, tokens in rows:
        same = sum(a == b for a, b in zip(tokens, hf_tokens))
        spread = f"(median of {len(rates)}: {statistics.median(rates):6.1f})" if len(rates) > 1 else ""
        print(f"{name:32s} best {max(rates):7.1f} tok/s {spread:24s} x{max(rates) / hf_rate:4.2f} vs transformers  "
              f"tokens equal to transformers: {same}/{len(hf_tokens)}")
    if cpp:
        print("alternating rounds (herd int4 + compile runs | llama.cpp):")
        for i, rate in enumerate(cpp):
            print(f"  round {i + 1}: {' '.join(f'{r:6.1f}' for r in compiled[2 * i:2 * i + 2])} | {rate:6.1f}")


if __name__ == "__main__":
    main()
