"""Build, load and call herd's C++ CPU kernels (`herd/infer/kernels/*.cpp`, one library).

- `int4_linear`: int4 weights x int8 activations (llama.cpp's Q4_1 x Q8_1 arithmetic: AVX512-VNNI
  integer dots where the CPU has them, else AVX2 byte dots; on aarch64 NEON sdot where the CPU has
  dot products, else NEON widening multiplies; else a portable loop). ATen's int4 matmul converts every
  weight to float first and is compute-bound at ~10 GB/s of weights per core, while batch-1 decode does
  nothing but read weights.
- `paged_decode_attention`: decode attention read in place from the paged KV cache, instead of
  gathering every sequence's keys and values into a copy each step; explicit SIMD per ISA (AVX-512,
  AVX2, NEON, portable: `attention_path()`), bfloat16/float16 caches widened in registers, a vector exp.

The library is compiled once per machine with the system C++ compiler and `-march=native` (on aarch64
`-march=armv8.2-a+dotprod` where the CPU lists asimddp, else `-march=armv8-a`), into
`~/.cache/herd/kernels/` (override with `HERD_KERNEL_CACHE`), under a name that hashes the sources,
the flags, the CPU's features and the torch version (~20 s on 2 cores). A build is written to a
temporary file and renamed, so an interrupted build never leaves a broken library. If there is no
compiler or the build fails, `available()` is False and callers keep their ATen paths. Set
`HERD_CPU_KERNELS=0` to skip them on purpose, `HERD_INT4_PATH=avx2|neon|portable` to build the library an
AVX2-only x86 CPU gets (`-march=haswell`), the one an ARMv8.0 CPU without dot products gets
(`-march=armv8-a`, on aarch64) or int4's plain C++ path (the tests compare them; the NEON paths are
tested under qemu-aarch64 by tests/test_cpu_kernels_neon.py, with the same C++ compiled without torch).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCES = sorted((Path(__file__).parent / "kernels").glob("*.cpp"))
HEADERS = sorted((Path(__file__).parent / "kernels").glob("*.h"))  # included by SOURCES: part of the build key
TILE, GROUP = 16, 32


def _compile_command(sources: list[Path], output: Path) -> list[str]:
    from torch.utils import cpp_extension

    torch_lib = Path(torch.__file__).parent / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    target = int4_target_flags(int4_path_requested(), platform.machine(), _cpu_flags().decode(errors="replace").split())
    return [
        os.environ.get("CXX", "g++"), *map(str, sources), "-o", str(output), "-shared", "-fPIC", "-std=c++17", "-O3",
        *target, "-fopenmp", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *includes,
        f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch_cpu", "-lgomp",
    ]


INT4_PATHS = ("auto", "avx2", "neon", "portable")
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")
ARM64_MACHINES = ("aarch64", "arm64")


def int4_path_requested() -> str:
    """`HERD_INT4_PATH`: auto (the best this CPU runs: AVX512-VNNI, else AVX2, else portable on x86;
    NEON with sdot where /proc/cpuinfo lists asimddp, else plain NEON on aarch64), avx2 (the library an
    AVX2-only x86 CPU builds, here too: the tests and benchmarks use it), neon (the library an ARMv8.0
    CPU without dot products builds, on aarch64) or portable. `HERD_INT4_PORTABLE=1` is the older
    spelling of portable."""
    path = os.environ.get("HERD_INT4_PATH", "").strip().lower() or (
        "portable" if os.environ.get("HERD_INT4_PORTABLE") == "1" else "auto")
    if path not in INT4_PATHS:
        raise ValueError(f"HERD_INT4_PATH={path!r}: choose one of {', '.join(INT4_PATHS)}")
    return path


def int4_target_flags(path: str, machine: str, cpu_flags: list[str]) -> list[str]:
    """The compiler's target flags for an int4 `path` on `machine` (platform.machine()) whose
    /proc/cpuinfo flags (x86) or Features (ARM) are `cpu_flags`: int4_core.h picks its path from what
    the compiler targets.

    x86: -march=native (VNNI or AVX2 where the CPU has them), or -march=haswell for avx2 (AVX2 + FMA +
    F16C, no AVX-512). aarch64: -march=armv8.2-a+dotprod only where the CPU lists asimddp (sdot), else
    -march=armv8-a (NEON is part of every ARMv8-A CPU); not -march=native, which older GCCs reject on
    ARM. portable adds -DHERD_INT4_PORTABLE to the default target."""
    machine = machine.lower()
    arm, x86 = machine in ARM64_MACHINES, machine in X86_MACHINES
    if path == "avx2" and not x86:
        raise ValueError(f"HERD_INT4_PATH=avx2 needs an x86-64 CPU, this one is {machine or 'unknown'}")
    if path == "neon" and not arm:
        raise ValueError(f"HERD_INT4_PATH=neon needs an aarch64 CPU, this one is {machine or 'unknown'}")
    if arm:
        march = "-march=armv8.2-a+dotprod" if "asimddp" in cpu_flags and path != "neon" else "-march=armv8-a"
    else:
        march = "-march=haswell" if path == "avx2" else "-march=native"  # haswell: AVX2 + FMA + F16C, no AVX-512
    return [march, "-DHERD_INT4_PORTABLE"] if path == "portable" else [march]


def _cpu_flags() -> bytes:
    """This CPU's feature flags: `-march=native` builds differ per CPU, and a home directory (the cache)
    may be shared by machines with different CPUs."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.encode()
    except OSError:
        pass
    return platform.processor().encode()


def _cache_dir() -> Path:
    return Path(os.environ.get("HERD_KERNEL_CACHE", Path.home() / ".cache" / "herd" / "kernels"))


def build(force: bool = False) -> Path:
    """Compile the kernel library (or find it in the cache) and return its path; raises on failure."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler!r}) on PATH")
    key = hashlib.sha256(
        b"".join(source.read_bytes() for source in (*SOURCES, *HEADERS))
        + " ".join(_compile_command([Path("s")], Path("o"))).encode() + torch.__version__.encode() + _cpu_flags()
    ).hexdigest()[:16]
    target = _cache_dir() / f"herd_kernels_{key}.so"
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        print(f"herd: compiling the C++ CPU kernels into {target} (once per machine, ~20 s)", file=sys.stderr)
        result = subprocess.run(_compile_command(SOURCES, partial), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"compiling herd's CPU kernels failed:\n{result.stderr[-4000:]}")
        os.replace(partial, target)
    return target


loaded = False  # True once the library is loaded: a plain flag that traced code (torch.compile) can read


@functools.cache
def available() -> bool:
    """True once the kernel library is built and loaded (False, with a warning, if it cannot be)."""
    if os.environ.get("HERD_CPU_KERNELS", "1") == "0":
        return False
    try:
        torch.ops.load_library(str(build()))
    except (RuntimeError, OSError) as error:  # no compiler, a failed build: ATen's int4 kernel still works
        log.warning("herd CPU kernels unavailable, using the ATen paths instead: %s", error)
        return False
    _register_fake()
    global loaded
    loaded = True
    return True


def uses_vnni() -> bool:
    """Whether the loaded kernel was compiled with the AVX512-VNNI path."""
    return available() and bool(torch.ops.herd_kernels.int4_uses_vnni())


def int4_path() -> str:
    """The int4 path the loaded library runs: "avx512_vnni", "avx2", "neon_dotprod", "neon" or "portable"
    ("" when not loaded)."""
    return str(torch.ops.herd_kernels.int4_path()) if available() else ""


def attention_path() -> str:
    """The paged decode attention's vector path in the loaded library: "avx512", "avx2", "neon" or
    "portable" (the same build flags as int4_path; "" when not loaded)."""
    return str(torch.ops.herd_kernels.attention_path()) if available() else ""


def _register_fake() -> None:
    """Shape functions so `torch.compile` can trace through the ops (each stays one opaque call)."""

    @torch.library.register_fake("herd_kernels::int4_linear")
    def _(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, n: int) -> torch.Tensor:
        return x.new_empty((x.shape[0], n), dtype=torch.float32)

    @torch.library.register_fake("herd_kernels::paged_decode_attention")
    def _(q, key_cache, value_cache, slots, mask, scale):  # type: ignore[no-untyped-def]
        return torch.empty_like(q, memory_format=torch.contiguous_format)


def pack(q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's layout from 4-bit codes q [N, K] (0..15), scale and minimum [N, K/32].

    Returns (packed uint8 [N/16, K/32, 256], scales fp16 [N/16, K/32, 2, 16]); N is padded to a
    multiple of 16 with zero rows. See the C++ file for the byte order.
    """
    n, k = q.shape
    if k % GROUP:
        raise ValueError(f"int4 kernel: K={k} is not a multiple of {GROUP}")
    if max(scale.abs().max().item(), minimum.abs().max().item()) > 6.0e4:
        raise ValueError("int4 kernel: a scale or minimum does not fit in fp16")
    tiles, groups = -(-n // TILE), k // GROUP
    padded = torch.zeros(tiles * TILE, k, dtype=torch.uint8)
    padded[:n] = q
    # q[t*16 + j, 32g + 16h + 4b + kk] -> [t, g, b, j, kk, h]; h=0 is the low nibble, h=1 the high one
    codes = padded.view(tiles, TILE, groups, 2, 4, 4).permute(0, 2, 4, 1, 5, 3)
    packed = (codes[..., 0] | (codes[..., 1] << 4)).contiguous().view(tiles, groups, 256)

    def per_tile(values: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(tiles * TILE, groups, dtype=torch.float32)
        full[:n] = values.float()
        return full.view(tiles, TILE, groups).permute(0, 2, 1)

    scales = torch.stack([per_tile(scale), per_tile(minimum)], dim=2).to(torch.float16).contiguous()
    return packed, scales


def int4_linear(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, n: int) -> torch.Tensor:
    """y [M, n] float32 = x [M, K] @ W^T for a weight packed by `pack` (call `available()` first)."""
    return torch.ops.herd_kernels.int4_linear(x, packed, scales, n)


def paged_decode_attention(
    q: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, slots: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """q [B, H, hd] attending over each sequence's cache slots [B, L] (mask [B, L] or any shape with
    B * L bools; None = no padding) -> [B, H, hd]. The caches are [slots, Hkv, hd], read in place."""
    empty = torch.empty(0, dtype=torch.bool)
    return torch.ops.herd_kernels.paged_decode_attention(
        q, key_cache, value_cache, slots, empty if mask is None else mask, q.shape[-1] ** -0.5
    )
