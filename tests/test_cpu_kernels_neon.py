"""The int4 kernel's ARM NEON paths, tested under emulation; the same standalone driver natively.

There is no ARM machine (and no aarch64 torch) in CI, so the kernel's torch-free core
(herd/infer/kernels/int4_core.h) is compiled with tests/kernels/int4_core_test.cpp, cross-compiled for
aarch64 with the flags cpu_kernels.py would pass on an ARM CPU with and without dot products, and run
under qemu-aarch64: each NEON path must be exact against the kernel's arithmetic in float64 and equal
to the portable loop, for N not a multiple of the tile, row tails and worst-case (int16-saturating)
inputs. This checks correctness only: emulated speed says nothing about a real ARM CPU. Natively, the
same driver checks the x86 paths (AVX512-VNNI / AVX2) against the portable loop, without torch.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from herd.infer import cpu_kernels

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "kernels" / "int4_core_test.cpp"
ATTENTION_DRIVER = ROOT / "tests" / "kernels" / "attention_core_test.cpp"
CROSS_CXX, QEMU = "aarch64-linux-gnu-g++", "qemu-aarch64"
NATIVE_CXX = os.environ.get("CXX", "g++")

arm_emulation = pytest.mark.optional_extra(
    "arm_emulation", bool(shutil.which(CROSS_CXX) and shutil.which(QEMU)),
    "apt-get install qemu-user g++-aarch64-linux-gnu (an aarch64 cross compiler and qemu-aarch64)",
)
native_compiler = pytest.mark.optional_extra(
    "cpu_kernels", bool(shutil.which(NATIVE_CXX)), "a C++ compiler (g++ or clang++) builds herd's CPU kernels"
)


def compile_driver(compiler: str, target_flags: list[str], output: Path, static: bool, driver: Path = DRIVER) -> Path:
    command = [compiler, str(driver), "-o", str(output), "-O2", "-std=c++17", *target_flags,
               *(["-static"] if static else [])]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-3000:]}"
    return output


def run_driver(command: list[str], expected_path: str) -> str:
    """Run the driver, which exits 0 only if every shape passes and it was built with expected_path."""
    result = subprocess.run([*command, expected_path], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == f"path {expected_path}" and result.stdout.rstrip().endswith("PASS")
    return result.stdout


ARM_BUILDS = [  # (HERD_INT4_PATH, the CPU's Features, the path int4_core.h must pick)
    ("auto", ["fp", "asimd", "asimddp"], "neon_dotprod"),
    ("auto", ["fp", "asimd"], "neon"),
    ("neon", ["fp", "asimd", "asimddp"], "neon"),
    ("portable", ["fp", "asimd", "asimddp"], "portable"),
]


@arm_emulation
@pytest.mark.parametrize("requested,features,expected", ARM_BUILDS)
def test_neon_paths_under_qemu(requested: str, features: list[str], expected: str, tmp_path: Path) -> None:
    """Each aarch64 build cpu_kernels.py would make runs under `qemu-aarch64 -cpu max` (which has sdot)
    and is exact; the non-dotprod builds also run on an emulated Cortex-A53 (ARMv8.0, no sdot), and the
    sdot build does not, which shows it really executes dot-product instructions."""
    flags = cpu_kernels.int4_target_flags(requested, "aarch64", features)
    binary = compile_driver(CROSS_CXX, flags, tmp_path / "int4_core_test", static=True)
    run_driver([QEMU, "-cpu", "max", str(binary)], expected)
    on_armv80 = subprocess.run([QEMU, "-cpu", "cortex-a53", str(binary), expected], capture_output=True, text=True,
                               check=False, timeout=120)
    if expected == "neon_dotprod":
        assert on_armv80.returncode != 0 and "PASS" not in on_armv80.stdout  # SIGILL at the first sdot
    else:
        assert on_armv80.returncode == 0 and on_armv80.stdout.rstrip().endswith("PASS"), on_armv80.stdout[-2000:]


def _host_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def _native_builds() -> list[tuple[str, str]]:
    """(HERD_INT4_PATH, the path it must build) for every int4 path this host can run."""
    machine, flags = platform.machine().lower(), set(_host_flags())
    if machine in cpu_kernels.ARM64_MACHINES:
        return [("auto", "neon_dotprod" if "asimddp" in flags else "neon"), ("neon", "neon"), ("portable", "portable")]
    if machine not in cpu_kernels.X86_MACHINES:
        return [("portable", "portable")]
    avx2 = {"avx2", "fma", "f16c"} <= flags
    best = "avx512_vnni" if {"avx512f", "avx512bw", "avx512_vnni"} <= flags else "avx2" if avx2 else "portable"
    return [("auto", best), *([("avx2", "avx2")] if avx2 else []), ("portable", "portable")]


@native_compiler
@pytest.mark.parametrize("requested,expected", _native_builds())
def test_int4_core_natively(requested: str, expected: str, tmp_path: Path) -> None:
    """The same driver on this host, built with the flags cpu_kernels.py uses for each path."""
    flags = cpu_kernels.int4_target_flags(requested, platform.machine(), _host_flags())
    binary = compile_driver(NATIVE_CXX, flags, tmp_path / "int4_core_test", static=False)
    run_driver([str(binary)], expected)


# The attention core's path for each int4 path a build was asked for (the same flags build both).
ATTENTION_ON_ARM = {"neon_dotprod": "neon", "neon": "neon", "portable": "portable"}


@arm_emulation
@pytest.mark.parametrize("requested,features,expected", ARM_BUILDS)
def test_attention_neon_path_under_qemu(requested: str, features: list[str], expected: str, tmp_path: Path) -> None:
    """The paged decode attention core (attention_core.h) built as each aarch64 library would be: the
    NEON path (vector exp, bf16/fp16 widened in registers) is exact against float64 under emulation."""
    flags = cpu_kernels.int4_target_flags(requested, "aarch64", features)
    binary = compile_driver(CROSS_CXX, flags, tmp_path / "attention_core_test", static=True, driver=ATTENTION_DRIVER)
    run_driver([QEMU, "-cpu", "max", str(binary)], ATTENTION_ON_ARM[expected])


def _attention_path(int4_path: str, flags: set[str]) -> str:
    if int4_path == "portable":
        return "portable"
    if int4_path.startswith("neon"):
        return "neon"
    return "avx512" if int4_path == "avx512_vnni" or "avx512f" in flags and int4_path != "avx2" else "avx2"


@native_compiler
@pytest.mark.parametrize("requested,expected", _native_builds())
def test_attention_core_natively(requested: str, expected: str, tmp_path: Path) -> None:
    """The attention core's driver on this host, built with each path's flags (AVX-512 where the CPU has
    it, the -march=haswell AVX2 build, portable): exact against float64 and equal to the portable path."""
    flags = cpu_kernels.int4_target_flags(requested, platform.machine(), _host_flags())
    binary = compile_driver(NATIVE_CXX, flags, tmp_path / "attention_core_test", static=False, driver=ATTENTION_DRIVER)
    run_driver([str(binary)], _attention_path(expected, set(_host_flags())))


def test_aarch64_target_flags_follow_the_cpu_features() -> None:
    """sdot is compiled in only where /proc/cpuinfo lists asimddp; a path the machine cannot build is a
    clear error, not a compiler failure."""
    assert cpu_kernels.int4_target_flags("auto", "aarch64", ["fp", "asimd", "asimddp"]) == ["-march=armv8.2-a+dotprod"]
    assert cpu_kernels.int4_target_flags("auto", "aarch64", ["fp", "asimd"]) == ["-march=armv8-a"]
    assert cpu_kernels.int4_target_flags("neon", "aarch64", ["asimddp"]) == ["-march=armv8-a"]
    assert cpu_kernels.int4_target_flags("portable", "aarch64", ["asimddp"]) == [
        "-march=armv8.2-a+dotprod", "-DHERD_INT4_PORTABLE"]
    assert cpu_kernels.int4_target_flags("auto", "x86_64", ["avx2"]) == ["-march=native"]
    assert cpu_kernels.int4_target_flags("avx2", "x86_64", []) == ["-march=haswell"]
    with pytest.raises(ValueError, match="avx2 needs an x86-64 CPU"):
        cpu_kernels.int4_target_flags("avx2", "aarch64", ["asimddp"])
    with pytest.raises(ValueError, match="neon needs an aarch64 CPU"):
        cpu_kernels.int4_target_flags("neon", "x86_64", ["avx2"])


@arm_emulation
def test_the_torch_op_compiles_for_aarch64(tmp_path: Path) -> None:
    """The op wrapper (int4_linear.cpp: ATen + int4_core.h) compiles for aarch64 with the flags
    cpu_kernels.py passes there, against this torch's headers, and the object holds sdot. It is not
    linked or run: there is no aarch64 torch here."""
    from torch.utils import cpp_extension

    flags = cpu_kernels.int4_target_flags("auto", "aarch64", ["fp", "asimd", "asimddp"])
    source = ROOT / "herd" / "infer" / "kernels" / "int4_linear.cpp"
    command = [CROSS_CXX, "-c", str(source), "-o", str(tmp_path / "int4_linear.o"), "-fPIC", "-std=c++17", "-O1",
               *flags, "-fopenmp", *(f"-I{path}" for path in cpp_extension.include_paths())]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump:
        listing = subprocess.run([objdump, "-d", str(tmp_path / "int4_linear.o")], capture_output=True, text=True,
                                 check=True, timeout=60).stdout
        assert "sdot" in listing
