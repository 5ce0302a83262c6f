"""`run.dtype = "auto"`: bfloat16 autocast only where this device runs bfloat16 matmuls fast.

Most CPUs have no bfloat16 arithmetic: torch then emulates it, and a bfloat16 matmul on an AVX2 CPU
runs ~50x slower than float32 (1.1 vs 66 GFLOP/s measured on a 2-core EPYC), so a recipe that always
trains under bfloat16 autocast turns a 10-minute CPU run into hours. CUDA GPUs from Ampere on, and CPUs
with AVX512-BF16/AMX, run it natively. The answer is measured, not guessed from a model name: on CPU a
small matmul is timed once per process in both dtypes (herd.config.host_speed).
"""

from __future__ import annotations

import logging

import torch

from herd.config.host_speed import SLOW_RATIO, cpu_matmul_slowdown

log = logging.getLogger(__name__)

DTYPES = ("auto", "bfloat16", "float32")


def cpu_bf16_slowdown() -> float:
    """bfloat16 matmul time over float32's on this CPU (measured once per process)."""
    return cpu_matmul_slowdown("bfloat16")


def bf16_is_fast(device: torch.device) -> tuple[bool, str]:
    """(bfloat16 autocast is fast on `device`, the reason in a few words)."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "CUDA bf16 support" if ok else "this GPU has no bf16 support"
    if device.type == "cpu":
        ratio = cpu_bf16_slowdown()
        return ratio <= SLOW_RATIO, f"a bf16 matmul takes {ratio:.1f}x float32's time on this CPU"
    return False, f"no bf16 check for device {device.type!r}"


def resolve_dtype(requested: str, device: torch.device) -> tuple[str, str]:
    """The autocast dtype to train in ("bfloat16" or "float32") and a note for the log.

    "auto" picks bfloat16 only where it is fast. An explicit "bfloat16" is kept, with a warning when it
    is slow here, since the user may want the numerics anyway.
    """
    if requested not in DTYPES:
        raise ValueError(f"run.dtype = {requested!r}; choose one of {', '.join(DTYPES)}")
    if requested == "float32":
        return "float32", "float32"
    fast, why = bf16_is_fast(device)
    if requested == "auto":
        chosen = "bfloat16" if fast else "float32"
        return chosen, f"auto -> {chosen} ({why})"
    if not fast:
        log.warning("run.dtype = bfloat16 is slow here (%s); run.dtype = \"auto\" would train in float32", why)
    return "bfloat16", f"bfloat16 ({why})"
