"""Build, load and call herd's int4 x int8 CPU kernel (`kernels/int4_linear.cpp`).

Why a kernel of our own: ATen's int4 matmul converts every weight to float before multiplying and
is compute-bound at about 10 GB/s of weights per core, well under memory bandwidth, while batch-1
decode does nothing but read weights. The C++ file explains the arithmetic (llama.cpp's Q4_1 x Q8_1).

The library is compiled once per machine with the system C++ compiler and `-march=native` (so the
AVX512-VNNI path is used where the CPU has it), into `~/.cache/herd/kernels/` (override with
`HERD_KERNEL_CACHE`), under a name that hashes the source, the flags and the torch version. A build
is written to a temporary file and renamed, so an interrupted build never leaves a broken library.
If there is no compiler or the build fails, `available()` is False and callers keep ATen's kernel.
Set `HERD_INT4_KERNEL=0` to skip it on purpose, `HERD_INT4_PORTABLE=1` to build the plain C++ path
(what CPUs without AVX512-VNNI get; the tests compare the two).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "kernels" / "int4_linear.cpp"
TILE, GROUP = 16, 32


def _compile_command(source: Path, output: Path) -> list[str]:
    from torch.utils import cpp_extension

    torch_lib = Path(torch.__file__).parent / "lib"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    portable = ["-DHERD_INT4_PORTABLE"] if os.environ.get("HERD_INT4_PORTABLE") == "1" else []
    return [
        os.environ.get("CXX", "g++"), str(source), "-o", str(output), "-shared", "-fPIC", "-std=c++17", "-O3",
        "-march=native", "-fopenmp", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *portable, *includes,
        f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-lc10", "-ltorch_cpu", "-lgomp",
    ]


def _cache_dir() -> Path:
    return Path(os.environ.get("HERD_KERNEL_CACHE", Path.home() / ".cache" / "herd" / "kernels"))


def build(force: bool = False) -> Path:
    """Compile the kernel library (or find it in the cache) and return its path; raises on failure."""
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler!r}) on PATH")
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(_compile_command(Path("s"), Path("o"))).encode() + torch.__version__.encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"herd_int4_{key}.so"
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / target.name
        print(f"herd: compiling the int4 CPU kernel into {target} (once per machine, ~30 s)", file=sys.stderr)
        result = subprocess.run(_compile_command(SOURCE, partial), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{result.stderr[-4000:]}")
        os.replace(partial, target)
    return target


@functools.cache
def available() -> bool:
    """True once the kernel library is built and loaded (False, with a warning, if it cannot be)."""
    if os.environ.get("HERD_INT4_KERNEL", "1") == "0":
        return False
    try:
        torch.ops.load_library(str(build()))
    except (RuntimeError, OSError) as error:  # no compiler, a failed build: ATen's int4 kernel still works
        log.warning("herd int4 kernel unavailable, using ATen's int4 matmul instead: %s", error)
        return False
    _register_fake()
    return True


def uses_vnni() -> bool:
    """Whether the loaded kernel was compiled with the AVX512-VNNI path (else the portable C++ one)."""
    return available() and bool(torch.ops.herd_kernels.int4_uses_vnni())


def _register_fake() -> None:
    """Shape function so `torch.compile` can trace through the op (it stays one opaque call)."""

    @torch.library.register_fake("herd_kernels::int4_linear")
    def _(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, n: int) -> torch.Tensor:
        return x.new_empty((x.shape[0], n), dtype=torch.float32)


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
