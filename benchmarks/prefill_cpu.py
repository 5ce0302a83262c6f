"""Prompt processing (prefill) tokens/s of SmolLM2-135M-Instruct on this CPU: herd int4 vs llama.cpp Q4_1.

The same prompt token ids (a window of Python's pydoc text, `--prompt-tokens` long) go through herd's
engine (`--quantization int4`: every projection and the head on the int4 x int8 kernel, the prompt in
one chunk) and through llama.cpp (`Llama.eval` with n_batch = the prompt length, Q4_1 weights from the
same GGUF). herd is timed as its time to first token with one new token (prefill + one sample, which is
what a user waits for); llama.cpp as `eval` of the prompt (prefill only, no sampling), so the
comparison slightly favours llama.cpp. Both alternate `--rounds` times, the median of `--runs` timed
prefills per round.

    .venv/bin/python benchmarks/prefill_cpu.py [--prompt-tokens 512] [--rounds 3] [--llama-cpp-python benchmarks/.env/bin/python]

llama.cpp runs through llama-cpp-python in its own environment (see decode_cpu.py).
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

LLAMA_CPP_SCRIPT = r"""
import json, statistics, sys, time
from llama_cpp import Llama
path, tokens, threads, runs = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=len(tokens) + 16, n_threads=threads, n_threads_batch=threads,
            n_batch=len(tokens), n_ubatch=len(tokens), verbose=False)
times = []
for run in range(runs + 1):          # run 0 warms up
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    if run:
        times.append(time.perf_counter() - start)
print(json.dumps({"tok_s": len(tokens) / statistics.median(times)}))
"""


def prompt_ids(tokenizer, count: int) -> list[int]:  # type: ignore[no-untyped-def]
    """`count` token ids of real prose (pydoc topics), the same for both peers."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = tokenizer.encode(text)
    if len(ids) < count:
        raise SystemExit(f"only {len(ids)} tokens of filler text")
    return ids[1000:1000 + count]


def herd_prefill(engine, prompt: list[int], runs: int) -> float:  # type: ignore[no-untyped-def]
    from herd.infer import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    times = []
    for run in range(runs + 1):  # run 0 warms up
        start = time.perf_counter()
        for _ in engine.stream(list(prompt), params):
            pass
        if run:
            times.append(time.perf_counter() - start)
    return len(prompt) / statistics.median(times)


def llama_cpp_prefill(python: str, path: Path, prompt: list[int], threads: int, runs: int) -> float | None:
    if not Path(python).exists():
        print(f"no llama-cpp-python at {python}; herd only", file=sys.stderr)
        return None
    proc = subprocess.run([python, "-c", LLAMA_CPP_SCRIPT, str(path), json.dumps(prompt), str(threads), str(runs)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["tok_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="timed prefills per round (median)")
    parser.add_argument("--llama-cpp-python", default="benchmarks/.env/bin/python")
    args = parser.parse_args()
    import herd
    from herd.infer import cpu_kernels
    from herd.infer.generate import single_request_engine
    from herd.loading import resolve_spec

    path = resolve_spec("smollm2-135m-instruct")
    loaded = herd.load_model("smollm2-135m-instruct", dtype=torch.float32)
    prompt = prompt_ids(loaded.tokenizer, args.prompt_tokens)
    engine = single_request_engine(loaded.model, None, len(prompt), 1, quantization="int4")
    threads = torch.get_num_threads()
    print(describe())
    print(f"int4 kernel path: {cpu_kernels.int4_path() or 'ATen'}; prompt {len(prompt)} tokens")
    ours: list[float] = []
    theirs: list[float] = []
    for round_ in range(args.rounds):
        ours.append(herd_prefill(engine, prompt, args.runs))
        result = llama_cpp_prefill(args.llama_cpp_python, path, prompt, threads, args.runs)
        if result is not None:
            theirs.append(result)
        print(f"round {round_ + 1}: herd int4 {ours[-1]:7.1f} tok/s | llama.cpp Q4_1 "
              f"{theirs[-1] if theirs else float('nan'):7.1f} tok/s", flush=True)
    line = f"median: herd int4 {statistics.median(ours):.1f} prompt tok/s"
    if theirs:
        line += (f", llama.cpp Q4_1 ({threads} threads) {statistics.median(theirs):.1f}: "
                 f"{statistics.median(ours) / statistics.median(theirs):.2f}x")
    print(line)


if __name__ == "__main__":
    main()
