"""Per-run overhead of herd's sandbox: the median wall time of a trivial `print(1)` over 20 runs, next to
the same interpreter started plainly (what the sandbox adds: unshare, the launcher, the new root, the
seccomp filter, teardown). Target (issue 14): median <= 0.3 s.

    PYTHONPATH=. python benchmarks/sandbox_cpu.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from host import describe

from herd.sandbox import Sandbox, isolation
from herd.sandbox.policy import interpreter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sandbox = Sandbox()
    python, _ = interpreter()
    sandbox.run_python("print(1)")  # warm the page cache and the isolation probe
    inside, plain = [], []
    for _ in range(args.runs):  # alternating rounds, so load on the host hits both alike
        t = time.perf_counter()
        result = sandbox.run_python("print(1)")
        inside.append(time.perf_counter() - t)
        assert result.status == "ok" and result.stdout == "1\n", result
        t = time.perf_counter()
        subprocess.run([python, "-I", "-B", "-c", "print(1)"], check=True, capture_output=True)
        plain.append(time.perf_counter() - t)
    print(f"host: {describe()}")
    print(f"isolation: {isolation()}, runs: {args.runs}")
    print(f"sandboxed print(1): median {statistics.median(inside):.3f} s "
          f"(min {min(inside):.3f}, max {max(inside):.3f})")
    print(f"plain interpreter:  median {statistics.median(plain):.3f} s")
    print(f"overhead (median difference): {statistics.median(inside) - statistics.median(plain):.3f} s")


if __name__ == "__main__":
    main()
