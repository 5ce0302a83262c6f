"""No-regression check for a refactor: the same decode and engine measurements from two source trees,
alternating in one run, with llama.cpp between them as the fixed peer.

A shared 2-core VM's speed drifts by 20-30% between minutes, so each round measures, back to back:
herd int4 + compile decode from the BEFORE tree, the same from the AFTER tree, llama.cpp Q4_1; and then
`engine_cpu.py` (8 concurrent requests, rejection sampling n vs independent) from each tree. Every
measurement is its own process with the tree first on `sys.path`, so the two trees never mix.

    git worktree add --detach /tmp/before <commit>
    .venv/bin/python benchmarks/before_after.py --before /tmp/before --after . [--rounds 2]
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
except ImportError:  # run from another directory
    from benchmarks.host import describe

DECODE = r"""
import json, sys, torch
tree = sys.argv[1]
sys.path[:0] = [tree, tree + "/benchmarks"]
from decode_cpu import herd_decode
rates, tokens = herd_decode("smollm2-135m-instruct", int(sys.argv[2]), torch.float32, "int4", True)
print(json.dumps({"rates": rates, "tokens": tokens}))
"""


def run_tree(tree: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, check=False)


def decode(tree: Path, tokens: int) -> list[float]:
    proc = run_tree(tree, ["-c", DECODE, str(tree), str(tokens)], tree)
    if proc.returncode != 0:
        raise SystemExit(f"decode in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["rates"]


def llama_cpp(after: Path, python: str, tokens: int) -> float | None:
    code = ("import sys, torch; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/benchmarks']\n"
            "from decode_cpu import llama_cpp_decode\nfrom herd.loading import resolve_spec\n"
            "r = llama_cpp_decode(sys.argv[2], resolve_spec('smollm2-135m-instruct'), int(sys.argv[3]), "
            "torch.get_num_threads())\nprint(r[0] if r else 'none')")
    proc = run_tree(after, ["-c", code, str(after), python, str(tokens)], after)
    last = proc.stdout.strip().splitlines()[-1:] or ["none"]
    return None if last[0] == "none" else float(last[0])


def engine(tree: Path, extra: list[str]) -> str:
    proc = run_tree(tree, [str(tree / "benchmarks" / "engine_cpu.py"), *extra], tree)
    if proc.returncode != 0:
        raise SystemExit(f"engine_cpu in {tree} failed:\n{proc.stderr[-3000:]}")
    return "\n".join(line for line in proc.stdout.splitlines() if not line.startswith("machine:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--llama-cpp-python", default=str(Path("benchmarks/.env/bin/python").absolute()))  # not resolve(): a venv python is a symlink
    parser.add_argument("--engine-args", default="--dtype float32 --quantization int4 --tokens 32 --samples 8",
                        help="arguments for engine_cpu.py in both trees ('' to skip)")
    args = parser.parse_args()
    before, after = args.before.resolve(), args.after.resolve()
    if not Path(args.llama_cpp_python).exists():
        print(f"llama.cpp peer skipped: {args.llama_cpp_python} does not exist (see decode_cpu.py for its setup)")
    print(f"machine: {describe()}")
    rates: dict[str, list[float]] = {"before": [], "after": [], "llama.cpp": []}
    for i in range(args.rounds):
        b, a = decode(before, args.tokens), decode(after, args.tokens)
        c = llama_cpp(after, args.llama_cpp_python, args.tokens)
        rates["before"] += b
        rates["after"] += a
        if c is not None:
            rates["llama.cpp"].append(c)
        print(f"round {i + 1}: herd int4+compile before {' '.join(f'{r:6.1f}' for r in b)} | "
              f"after {' '.join(f'{r:6.1f}' for r in a)} | llama.cpp {c if c is None else round(c, 1)} tok/s",
              flush=True)
        if args.engine_args:
            for name, tree in (("before", before), ("after", after)):
                print(f"  engine_cpu.py {args.engine_args} ({name}):")
                print("    " + engine(tree, args.engine_args.split()).replace("\n", "\n    "), flush=True)
    for name, values in rates.items():
        if values:
            print(f"{name:10s} median {statistics.median(values):7.1f} tok/s, best {max(values):7.1f} ({len(values)} runs)")
    if rates["llama.cpp"]:
        cpp = statistics.median(rates["llama.cpp"])
        for name in ("before", "after"):
            print(f"{name} / llama.cpp (medians): {statistics.median(rates[name]) / cpp:.2f}x")


if __name__ == "__main__":
    main()
