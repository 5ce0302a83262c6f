"""The host line every benchmark prints: CPU model, the flags that decide which kernels run, cores,
threads, torch. Figures from different CPU classes are not comparable (AVX512-VNNI/BF16 hosts run
int4 and bf16 paths that AVX2 and ARM hosts do not have), so each result names its host."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
         "asimd", "asimddp", "sve", "bf16")


def _cpuinfo(key: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> str:
    """The host's CPU flags that matter to herd's kernels and dtypes ("unknown" off Linux)."""
    flags = _cpuinfo("flags") or _cpuinfo("Features")
    if not flags:
        return "unknown"
    present = set(flags.split())
    return " ".join(f for f in FLAGS if f in present) or "none of " + ",".join(FLAGS)


def describe() -> str:
    """One line: CPU model, cores, torch and its threads, CPU flags."""
    import torch

    model = _cpuinfo("model name") or platform.processor() or platform.machine()
    return (f"{model} ({platform.machine()}), {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; CPU flags: {cpu_flags()}")
