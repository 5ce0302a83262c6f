"""Paged decode attention on this CPU: herd's kernel now vs an earlier commit's vs gather + SDPA.

Each kernel library is its own build (the same compile command as herd.infer.cpu_kernels, sources from
the working tree or from `--before REV` via `git archive`), loaded in its own process (two builds
register the same op names), and the processes alternate `--rounds` times, since a shared VM's speed
drifts between minutes. The peer is the engine's portable path (herd.infer.paged_attention: gather each
sequence's cached K/V into a padded tensor, one SDPA call), timed in the current build's process.

Shapes: the engine's decode batch on SmolLM2-135M (16 sequences x 540 tokens, 9 heads, 3 KV heads,
head_dim 64), one long SmolLM2 sequence (2,048 tokens) and one Llama 3 8B layer's decode at 4,096 tokens
(32 heads, 8 KV heads, head_dim 128); float32 and bfloat16 caches; microseconds per call (median).

    .venv/bin/python benchmarks/paged_attention_cpu.py [--before HEAD] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [  # (name, batch, length, heads, kv_heads, head_dim)
    ("SmolLM2 batch 16 x 540", 16, 540, 9, 3, 64),
    ("SmolLM2 1 x 2048", 1, 2048, 9, 3, 64),
    ("Llama-3-8B layer 1 x 4096", 1, 4096, 32, 8, 128),
]
DTYPES = ("float32", "bfloat16")

WORKER = r"""
import json, statistics, sys, time, torch
import torch.nn.functional as F
library, with_peer, shapes = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3])
if len(sys.argv) > 4: torch.set_num_threads(int(sys.argv[4]))
torch.ops.load_library(library)
path = str(torch.ops.herd_kernels.attention_path()) if hasattr(torch.ops.herd_kernels, "attention_path") else "?"
def timed(fn, repeat):
    fn(); fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter(); fn(); samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6
out = {"path": path, "kernel": {}, "sdpa": {}}
for name, batch, length, heads, kv_heads, hd in shapes:
    for dtype_name in ("float32", "bfloat16"):
        dtype = getattr(torch, dtype_name)
        gen = torch.Generator().manual_seed(0)
        slots_total = batch * length + 64
        kc = torch.randn(slots_total, kv_heads, hd, generator=gen).to(dtype)
        vc = torch.randn(slots_total, kv_heads, hd, generator=gen).to(dtype)
        slots = torch.randperm(slots_total, generator=gen)[: batch * length].view(batch, length)
        q = torch.randn(batch, heads, hd, generator=gen).to(dtype)
        mask = torch.ones(batch, length, dtype=torch.bool)
        empty = torch.empty(0, dtype=torch.bool)
        repeat = 30 if batch * length * heads * hd < 2e7 else 10
        key = f"{name} | {dtype_name}"
        out["kernel"][key] = timed(lambda: torch.ops.herd_kernels.paged_decode_attention(q, kc, vc, slots, empty, hd ** -0.5), repeat)
        if with_peer:
            def sdpa():
                k = kc.index_select(0, slots.flatten()).view(batch, length, kv_heads, hd).transpose(1, 2)
                v = vc.index_select(0, slots.flatten()).view(batch, length, kv_heads, hd).transpose(1, 2)
                return F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask[:, None, None],
                                                      enable_gqa=heads != kv_heads)
            out["sdpa"][key] = timed(sdpa, repeat)
print(json.dumps(out))
"""


def build_library(source_root: Path, output: Path) -> Path:
    """Compile herd/infer/kernels/*.cpp under `source_root` with herd's own compile command."""
    from herd.infer import cpu_kernels

    sources = sorted((source_root / "herd" / "infer" / "kernels").glob("*.cpp"))
    result = subprocess.run(cpu_kernels._compile_command(sources, output), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"build failed for {source_root}:\n{result.stderr[-3000:]}")
    return output


def sources_at(rev: str, target: Path) -> Path:
    """The repository's herd/infer/kernels at `rev`, extracted under `target`."""
    archive = target / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "herd/infer/kernels"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target / "tree", filter="data")
    return target / "tree"


def run_worker(library: Path, with_peer: bool, threads: int = 0) -> dict:
    result = subprocess.run([sys.executable, "-c", WORKER, str(library), "1" if with_peer else "0", json.dumps(SHAPES),
                             *([str(threads)] if threads else [])],
                            capture_output=True, text=True, check=False, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="HEAD", help="git revision whose kernels are the 'before' build")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the workers (0: torch's default)")
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        print("building both libraries ...", flush=True)
        after = build_library(ROOT, tmp / "after.so")
        before = build_library(sources_at(args.before, tmp), tmp / "before.so")
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for round_ in range(args.rounds):
            for label, library in (("before", before), ("after", after)):
                runs[label].append(run_worker(library, with_peer=label == "after", threads=args.threads))
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    print(f"\nattention path: before {runs['before'][0]['path']}, after {runs['after'][0]['path']}")
    print("| shape | cache | gather + SDPA (us) | herd before (us) | herd now (us) | now vs before | now vs SDPA |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for key in runs["after"][0]["kernel"]:
        name, dtype = key.split(" | ")
        b = statistics.median(r["kernel"][key] for r in runs["before"])
        a = statistics.median(r["kernel"][key] for r in runs["after"])
        s = statistics.median(r["sdpa"][key] for r in runs["after"])
        print(f"| {name} | {dtype} | {s:.0f} | {b:.0f} | {a:.0f} | {b / a:.2f}x | {s / a:.2f}x |")


if __name__ == "__main__":
    main()
