"""How much slower this CPU runs a matmul in bfloat16 or float16 than in float32, measured once.

Both `run.dtype = "auto"` (training, herd.train.precision) and the one-line warning of `--dtype
bfloat16|float16` on CPU (herd.cli_args) ask it. Most CPUs have no bfloat16 or float16 arithmetic:
torch then converts element by element, ~20-50x slower than float32 on an AVX2 CPU, while CPUs with
AVX512-BF16 or AMX run bfloat16 faster than float32. Timing a small matmul answers it for the CPU at
hand instead of guessing from flags that differ between vendors and torch builds (~0.1 s where the
dtype is fast, ~1 s where it is emulated).
"""

from __future__ import annotations

import functools
import time

SLOW_RATIO = 1.25  # a dtype whose matmul takes longer than this x float32's counts as slow here


@functools.cache
def cpu_matmul_slowdown(dtype: str, rows: int = 128, size: int = 512, repeats: int = 5, warmup: int = 16) -> float:
    """Seconds of a [rows, size] @ [size, size] matmul in `dtype` over float32's, best of `repeats`."""
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(rows, size, generator=gen)
    b = torch.randn(size, size, generator=gen)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        # warm-up: thread pool, kernels, and oneDNN, whose bf16 matmul on an AVX512-BF16 CPU takes the
        # slow path ~20x for the first ~13 calls of a shape before it switches to the native one
        for _ in range(warmup):
            x @ y
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - start)
        return min(times)

    low = getattr(torch, dtype)
    return best(a.to(low), b.to(low)) / max(best(a, b), 1e-9)
