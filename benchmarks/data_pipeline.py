"""Throughput of herd.data: local corpus build, parallel tokenization, packed loading.

    .venv/bin/python benchmarks/data_pipeline.py [--max-docs N] [--workers 1 2] [--json out.json]

Builds the local corpus (stdlib docstrings/pydoc topics, stdlib code, synthetic math, local
translations) in a temporary directory, tokenizes every source with each worker count (characters/s
and tokens/s over the whole run, tokenizer loading and shard writing included), then times the
packed loader on the "llama3" mix (or general/math/code renormalised when a source is absent) at
batch 8 x 2048 (tokens/s, median of 20 batches after 3 warm-up batches).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from herd.data.loader import build_loader
from herd.data.local_corpus import build_local_corpus, unigram_entropy
from herd.data.tokenize_sources import tokenize_files

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-docs", type=int, default=None, help="documents per source (default: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results: dict = {"machine": describe(),
                     "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        paths = build_local_corpus(root / "corpus", max_docs_per_source=args.max_docs)
        results["corpus_build_s"] = round(time.perf_counter() - start, 2)
        chars = sum(len(json.loads(line)["text"]) for p in paths.values() for line in p.open(encoding="utf-8"))
        results["corpus_chars"] = chars
        dirs: dict[str, Path] = {}
        for workers in args.workers:
            start = time.perf_counter()
            tokens = 0
            for name, path in paths.items():
                dirs[name] = root / f"tokens-{workers}" / name
                tokens += tokenize_files([path], dirs[name], name, workers=workers, validation_fraction=0.01,
                                         progress=False)["tokens"]
            elapsed = time.perf_counter() - start
            results[f"tokenize_workers_{workers}"] = {
                "seconds": round(elapsed, 2), "tokens": tokens,
                "chars_per_s": round(chars / elapsed), "tokens_per_s": round(tokens / elapsed)}
            print(f"tokenize, {workers} worker(s): {elapsed:.1f} s, {chars / elapsed / 1e6:.2f} M chars/s, "
                  f"{tokens / elapsed / 1e3:.0f} k tokens/s ({tokens} tokens)")
        mix = "llama3" if "multilingual" in dirs else {"general": 0.5, "math": 0.25, "code": 0.17}
        loader = build_loader(dirs, mix, seed=0)
        for _ in range(3):
            loader.next_batch(8, 2048)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            loader.next_batch(8, 2048)
            times.append(time.perf_counter() - start)
        per_batch = statistics.median(times)
        results["loader_8x2048_tokens_per_s"] = round(8 * 2048 / per_batch)
        results["unigram_entropy_nats"] = round(unigram_entropy(dirs, mix), 4)
        print(f"loader 8x2048: {per_batch * 1e3:.1f} ms/batch, {8 * 2048 / per_batch / 1e6:.2f} M tokens/s")
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
