"""Curation throughput on CPU: MinHash signatures (herd vs datatrove), line dedup, the full pipeline,
and peak memory of deduplicating many synthetic documents.

    .venv/bin/python benchmarks/curation_cpu.py speed            # docs/s per core (one process)
    .venv/bin/python benchmarks/curation_cpu.py pipeline --docs 2000
    .venv/bin/python benchmarks/curation_cpu.py memory --docs 1000000

Documents for `speed`: the real English text of `pydoc_data.topics` plus standard-library module
docstrings (herd.data.local_corpus), so shingle counts are those of real prose. datatrove's own
signature step tokenizes with NLTK, whose punkt data cannot be downloaded here; it is measured with its
`language="en"` tokenizer when that works, else with a regex word tokenizer (which makes datatrove
*faster* than with NLTK, so the comparison favours datatrove). Every number is single-process, i.e.
per core. Machine of record: 2-core AMD EPYC (no AVX2), torch 2.13 CPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    from host import describe
except ImportError:  # run from another directory
    from benchmarks.host import describe


def real_texts(limit: int = 400) -> list[str]:
    from pydoc_data.topics import topics

    from herd.data.local_corpus import _module_name, docstring_document, stdlib_dir, stdlib_sources

    texts = [t for t in topics.values() if len(t.split()) >= 50]
    root = stdlib_dir()
    for path in stdlib_sources():
        if len(texts) >= limit:
            break
        doc = docstring_document(path, _module_name(root, path))
        if doc and len(doc.split()) >= 50:
            texts.append(doc)
    return texts[:limit]


def _rate(fn, docs: list[str], min_seconds: float = 3.0) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        for d in docs:
            fn(d)
        n += len(docs)
    return n / (time.perf_counter() - start)


def bench_speed() -> dict:
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    from herd.data.curation.line_dedup import drop_frequent_lines, line_hashes
    from herd.data.curation.minhash import MinHasher, _RegexWords

    docs = real_texts()
    words = sum(len(d.split()) for d in docs) / len(docs)
    hasher = MinHasher(14, 8, 5, 1)
    herd_rate = _rate(lambda t: hasher.signature(t, "en"), docs)
    tmp = tempfile.mkdtemp()
    tokenizer = "nltk (language='en')"
    try:
        dt = MinhashDedupSignature(tmp, config=MinhashConfig())
        dt.get_shingles(docs[0])
    except Exception as exc:  # noqa: BLE001 - NLTK or its punkt data missing
        tokenizer = f"regex words (NLTK unavailable: {type(exc).__name__})"
        dt = MinhashDedupSignature(tmp, config=MinhashConfig(), language=_RegexWords())

    def dt_sig(t: str) -> None:
        sh = dt.get_shingles(t)
        if sh.size:
            dt.get_signature(sh)

    dt_rate = _rate(dt_sig, docs)

    def line_dedup_bucket(batch: list[str]) -> None:
        # the signature, merge and filter steps' work for one bucket, in one process
        hashes = np.concatenate([line_hashes(d.split("\n")) for d in batch])
        values, counts = np.unique(hashes[hashes != 0], return_counts=True)
        frequent = values[counts > 6]
        for d in batch:
            drop_frequent_lines(d, frequent)

    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 3.0:
        line_dedup_bucket(docs)
        n += len(docs)
    line_rate = n / (time.perf_counter() - start)
    return {"documents": len(docs), "mean_words": round(words, 1), "herd_minhash_docs_s": round(herd_rate, 1),
            "datatrove_minhash_docs_s": round(dt_rate, 1), "datatrove_tokenizer": tokenizer,
            "speedup": round(herd_rate / dt_rate, 2), "line_dedup_docs_s": round(line_rate, 1)}


def bench_pipeline(n_docs: int) -> dict:
    """The whole pipeline (heuristic annotator, no LLM) on JSONL of real texts, 1 task = 1 core."""
    from herd.data.curation.config import config_from_dict
    from herd.data.curation.pipeline import run_curation

    rng = random.Random(0)
    texts = real_texts()
    tmp = Path(tempfile.mkdtemp())
    with open(tmp / "docs.jsonl", "w") as fh:
        for i in range(n_docs):
            t = texts[i % len(texts)]
            if i >= len(texts):  # later copies: a perturbed paragraph order, so not all are exact duplicates
                paras = t.split("\n\n")
                rng.shuffle(paras)
                t = "\n\n".join(paras)
            fh.write(json.dumps({"id": f"d{i}", "url": f"https://example.com/{i}", "text": t}) + "\n")
    cfg = config_from_dict({"output_dir": str(tmp / "out"), "tasks": 1, "workers": 1,
                            "inputs": [{"name": "docs", "path": str(tmp / "docs.jsonl")}],
                            "quality": {"annotator": "heuristic", "sample": 50},
                            "mix": {"tokenize": False}})  # timing as before: no token shards
    start = time.perf_counter()
    summary = run_curation(cfg, report=False)
    seconds = time.perf_counter() - start
    return {"documents": n_docs, "seconds": round(seconds, 1), "docs_s_per_core": round(n_docs / seconds, 1),
            "stage_seconds": summary["seconds"]}


# ---------------------------------------------------------------- memory of dedup at scale


def _synthetic_jsonl(path: Path, n: int, seed: int = 0) -> None:
    """n documents of ~80 words (5,000-word vocabulary) in 8 lines, 10% near-duplicates, 5% repeated URLs,
    and a boilerplate line in 1% of documents."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    with open(path, "w") as fh:
        prev: list[str] = []
        for i in range(n):
            if prev and rng.random() < 0.10:
                words = list(prev)
                words[rng.randrange(len(words))] = rng.choice(vocab)
            else:
                words = [rng.choice(vocab) for _ in range(80)]
            prev = words
            lines = [" ".join(words[k : k + 10]) for k in range(0, 80, 10)]
            if rng.random() < 0.01:
                lines.append("Subscribe to our newsletter")
            url = f"https://site{rng.randrange(n)}.com/p" if rng.random() < 0.05 else f"https://example.com/{i}"
            fh.write(json.dumps({"id": f"d{i}", "url": url, "timestamp": i, "text": "\n".join(lines)}) + "\n")


def _stage_child(name: str, pipeline_fn, tasks: int, logdir: str, q) -> None:
    from datatrove.executor import LocalPipelineExecutor

    start = time.perf_counter()
    LocalPipelineExecutor(pipeline=pipeline_fn(), tasks=tasks, workers=1, logging_dir=logdir).run()
    q.put((name, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def bench_memory(n_docs: int) -> dict:
    """Peak RSS (MiB) of each dedup stage over n synthetic documents, each stage in its own process."""
    import logging

    logging.disable(logging.CRITICAL)
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupCluster
    from loguru import logger

    from herd.data.curation.dedup_url import UrlFilterStep, UrlRecordStep, resolve_url_duplicates
    from herd.data.curation.line_dedup import LineDedupStep
    from herd.data.curation.minhash import HerdMinhashSignature, MinhashRemoveStep, datatrove_config
    from herd.data.curation.pipeline import RankFileReader
    from herd.data.curation.readers import SourceReader
    from herd.data.curation.config import InputConfig

    logger.remove()
    tmp = Path(tempfile.mkdtemp())
    src = tmp / "in"
    src.mkdir()
    t0 = time.perf_counter()
    _synthetic_jsonl(src / "00000.jsonl", n_docs)
    gen_s = time.perf_counter() - t0
    out = tmp / "out"
    dt_cfg = datatrove_config(14, 8, 5, 1)
    inp = [InputConfig(name="syn", path=str(src / "00000.jsonl"))]
    from datatrove.pipeline.writers import JsonlWriter

    stages = [
        ("read+url-record", lambda: [SourceReader(out, inp, stage="m"),
                                     JsonlWriter(str(out / "f"), output_filename="${rank}.jsonl", compression=None),
                                     UrlRecordStep(out, stage="m")], 1),
        ("minhash-signatures", lambda: [RankFileReader(str(out / "f")), UrlFilterStep(out, stage="m"),
                                        HerdMinhashSignature(str(out / "sigs"))], 1),
        ("minhash-buckets", lambda: [MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"), config=dt_cfg)], 14),
        ("minhash-cluster", lambda: [MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=dt_cfg)], 1),
        ("filter+line-dedup", lambda: [RankFileReader(str(out / "f")), UrlFilterStep(out, stage="m2"),
                                       MinhashRemoveStep(out, str(out / "remove"), stage="m"),
                                       LineDedupStep(out, bucket_docs=30_000_000, stage="m")], 1),
    ]
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    # children are forked from this process, so their peak RSS includes this baseline (imports, ~50 MiB)
    results: dict = {"baseline_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    for name, fn, tasks in stages:
        if name == "minhash-signatures":
            t = time.perf_counter()
            counts = resolve_url_duplicates(out / "url", 1)
            results["url-resolve"] = {"seconds": round(time.perf_counter() - t, 1), "removed": counts["removed"]}
        p = ctx.Process(target=_stage_child, args=(name, fn, tasks, str(tmp / "logs" / name), q))
        p.start()
        stage, seconds, rss = q.get()
        p.join()
        results[stage] = {"seconds": round(seconds, 1), "peak_rss_mib": round(rss, 1)}
        print(stage, results[stage], file=sys.stderr, flush=True)
    counts = json.loads((out / "counts" / "m" / "minhash" / "00000.json").read_text())
    lines = json.loads((out / "counts" / "m" / "line_dedup" / "00000.json").read_text())
    return {"documents": n_docs, "generate_seconds": round(gen_s, 1), "stages": results,
            "minhash_removed": counts.get("removed:near_duplicate", 0), "lines_removed": lines.get("lines_removed", 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "pipeline", "memory"])
    ap.add_argument("--docs", type=int, default=None)
    args = ap.parse_args()
    if args.what == "speed":
        result = bench_speed()
    elif args.what == "pipeline":
        result = bench_pipeline(args.docs or 2000)
    else:
        result = bench_memory(args.docs or 1_000_000)
    print(json.dumps({"benchmark": args.what, "machine": describe()} | result,
                     indent=1))


if __name__ == "__main__":
    main()
