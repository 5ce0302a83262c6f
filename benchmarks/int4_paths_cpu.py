"""The int4 x int8 kernel's paths on this CPU: AVX512-VNNI (where present), AVX2, portable, vs llama.cpp.

    .venv/bin/python benchmarks/int4_paths_cpu.py [--rounds 3] [--tokens 64] [--paths auto,avx2,portable]
        [--llama-cpp-python benchmarks/.env/bin/python] [--compile]

Each path is a separate build of herd's kernel library (`HERD_INT4_PATH`, `-march=haswell` for avx2: no
AVX-512 instruction at all, as an AVX2-only CPU compiles it), so each runs in its own process. Per path:
the kernel alone on SmolLM2-135M's shapes and a Llama 3.2 1B FFN shape (median microseconds per call,
1 row = decode, 16 rows = a prefill chunk), then greedy decode of SmolLM2-135M-Instruct with int4 weights
through the engine (tok/s, EOS ignored). Paths and llama.cpp Q4_1 alternate `--rounds` times so a noisy
neighbour slows all alike. llama.cpp is its own native build: on an AVX-512 host it uses AVX-512, so the
AVX2 row's ratio here is a floor for what an AVX2-only host (where both are AVX2 builds) would show.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

try:
    from host import describe
    from decode_cpu import llama_cpp_decode
except ImportError:  # run from another directory
    from benchmarks.host import describe
    from benchmarks.decode_cpu import llama_cpp_decode

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(576, 576), (1536, 576), (576, 1536), (8192, 2048)]   # (N out, K in)

WORKER = r"""
import json, statistics, sys, time
import torch
sys.path.insert(0, sys.argv[1])
from herd.infer import cpu_kernels as K
from herd.infer.quant_int4 import quantize_groups
from benchmarks.decode_cpu import herd_decode
shapes, tokens, compile = json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
assert K.available()
kernel = {}
for n, k in shapes:
    w = torch.randn(n, k) * 0.05
    packed, scales = K.pack(*quantize_groups(w))
    for m in (1, 16):
        x = torch.randn(m, k)
        for _ in range(5):
            K.int4_linear(x, packed, scales, n)
        times = []
        for _ in range(50 if n * k < 4e6 else 10):
            t = time.perf_counter(); K.int4_linear(x, packed, scales, n); times.append(time.perf_counter() - t)
        kernel[f"{n}x{k} m={m}"] = statistics.median(times) * 1e6
rates, out = herd_decode("smollm2-135m-instruct", tokens, torch.float32, "int4", compile, runs=1)
print(json.dumps({"path": K.int4_path(), "kernel_us": kernel, "tok_s": rates[0], "tokens": out}))
"""


def run_path(path: str, tokens: int, compile: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HERD_INT4_PORTABLE",)}
    env["HERD_INT4_PATH"] = path
    proc = subprocess.run([sys.executable, "-c", WORKER, str(ROOT), json.dumps(SHAPES), str(tokens), str(int(compile))],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"HERD_INT4_PATH={path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--paths", default="auto,avx2,portable")
    parser.add_argument("--compile", action="store_true", help="decode through torch.compile (slower to start)")
    parser.add_argument("--llama-cpp-python", default=str(ROOT / "benchmarks/.env/bin/python"))
    args = parser.parse_args()
    import torch

    from herd.loading import resolve_spec

    gguf = resolve_spec("smollm2-135m-instruct")
    threads = torch.get_num_threads()
    paths = args.paths.split(",")
    results: dict[str, list[dict]] = {p: [] for p in paths}
    cpp: list[float] = []
    for _ in range(args.rounds):
        for path in paths:
            results[path].append(run_path(path, args.tokens, args.compile))
        got = llama_cpp_decode(args.llama_cpp_python, gguf, args.tokens, threads)
        if got is not None:
            cpp.append(got[0])
    print(f"machine: {describe()}")
    print(f"decode: SmolLM2-135M-Instruct int4, {args.tokens} new tokens, greedy, "
          f"{'compiled' if args.compile else 'eager'}; medians of {args.rounds} alternating rounds")
    cpp_median = statistics.median(cpp) if cpp else None
    names = list(results[paths[0]][0]["kernel_us"])
    print("| path | " + " | ".join(f"{n} (us)" for n in names) + " | decode tok/s | vs llama.cpp |")
    print("|---|" + "---:|" * (len(names) + 2))
    reference = results[paths[0]][0]["tokens"]
    for path in paths:
        runs = results[path]
        cells = [f"{statistics.median(r['kernel_us'][n] for r in runs):.0f}" for n in names]
        rate = statistics.median(r["tok_s"] for r in runs)
        ratio = f"{rate / cpp_median:.2f}x" if cpp_median else "-"
        same = sum(a == b for a, b in zip(runs[0]["tokens"], reference))
        print(f"| {runs[0]['path']} | " + " | ".join(cells) + f" | {rate:.1f} | {ratio} |  (tokens equal to "
              f"{paths[0]}: {same}/{len(reference)})")
    if cpp_median:
        print("| llama.cpp Q4_1 (native build) | " + " | ".join("-" for _ in names) + f" | {cpp_median:.1f} | 1.00x |")


if __name__ == "__main__":
    main()
