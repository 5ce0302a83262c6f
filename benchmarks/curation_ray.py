"""`herd curate` on a local Ray instance vs the local executor: same recipe, same corpus, same output?

    PYTHONPATH=. .venv/bin/python benchmarks/curation_ray.py --docs 2000 --tasks 2 --workers 2

Writes `--docs` synthetic documents (~80 words in 8 lines, 10% near-duplicates, 5% repeated URLs, a
boilerplate line in 1% of documents) to JSONL files (one per 50 documents, so tasks get several files),
curates them once with `[executor] kind = "local"` and once with `kind = "ray"` (herd starts a local Ray
instance with `workers` CPUs and stops it), and prints JSON: wall seconds and per-stage seconds of each,
and whether the curated documents are byte-identical. Ray start-up is part of the Ray wall time.
The machine line names the CPU and its vector flags, so numbers from different hosts are not mixed up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine() -> str:
    model, flags = platform.processor() or platform.machine(), []
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name"))
        have = next(ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags"))
        flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in have]
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(flags) or 'none of avx2/avx512'}"


def write_corpus(folder: Path, n: int, per_file: int = 50, seed: int = 0) -> None:
    """curation_cpu.py's synthetic documents, split into files of `per_file` (one reader task each)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from curation_cpu import _synthetic_jsonl

    folder.mkdir(parents=True)
    whole = folder.parent / f"{folder.name}.all.jsonl"
    _synthetic_jsonl(whole, n, seed)
    lines = whole.read_text(encoding="utf-8").splitlines(keepends=True)
    whole.unlink()
    for k in range(0, len(lines), per_file):
        (folder / f"part{k // per_file:05d}.jsonl").write_text("".join(lines[k:k + per_file]), encoding="utf-8")


def curated(out: Path) -> bytes:
    """Every curated record, sorted by id: the output independent of which task wrote it."""
    rows = []
    for path in sorted((out / "curated").glob("*/*.jsonl")):
        rows += [(json.loads(line)["id"], f"{path.parent.name}\t{line}") for line in path.read_text().splitlines()]
    return "\n".join(r for _, r in sorted(rows)).encode()


def run(corpus: Path, out: Path, kind: str, tasks: int, workers: int) -> dict:
    from herd.data.curation.config import config_from_dict
    from herd.data.curation.pipeline import run_curation

    cfg = config_from_dict({
        "output_dir": str(out), "tasks": tasks, "workers": workers,
        "inputs": [{"name": "docs", "path": str(corpus), "kind": "jsonl"}],
        "steps": {"langid": False, "filters": ["gopher_repetition", "dirty_words"]},
        "quality": {"annotator": "heuristic", "sample": 50}, "mix": {"tokenizer": "chars4"},
        "executor": {"kind": kind},
    })
    start = time.perf_counter()
    summary = run_curation(cfg, report=False)
    return {"seconds": round(time.perf_counter() - start, 1), "stage_seconds": summary["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="herd-curation-ray-"))
    write_corpus(tmp / "corpus", args.docs)
    local = run(tmp / "corpus", tmp / "local", "local", args.tasks, args.workers)
    ray = run(tmp / "corpus", tmp / "ray", "ray", args.tasks, args.workers)
    same = curated(tmp / "local") == curated(tmp / "ray")
    result = {"machine": machine(), "python": platform.python_version(), "documents": args.docs,
              "tasks": args.tasks, "workers": args.workers, "local": local, "ray": ray,
              "curated_documents": curated(tmp / "local").count(b"\n") + 1, "identical_output": same}
    print(json.dumps(result, indent=1))
    if not same:
        raise SystemExit("Ray and local executors curated different output")


if __name__ == "__main__":
    main()
