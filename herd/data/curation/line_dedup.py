"""Line-level dedup (the paper: remove lines seen more than 6 times in each bucket of 30M documents).

Counting must see every task's documents, or the output depends on how the corpus was split: a line in
7 documents survives when two tasks see 4 and 3 of them. So, as datatrove's sentence dedup does, it is
three steps in three pipeline stages:

1. `LineSignatureStep` (one per task): for each document, its bucket key (xxh64 of its id) and the xxh64
   of every non-blank, whitespace-stripped line (seeded with the document's language when
   `per_language`, so a line is counted within its language) -> `<sig_dir>/{keys,sizes,lines}-<rank>.npy`.
2. `find_frequent_lines` (one task, `LineMergeStep`): the N documents of all tasks fall into
   ceil(N / bucket_docs) buckets by key; per bucket, lines are counted over every task (`np.unique`) and
   those seen more than `max_count` times go to `<frequent_dir>/<bucket>.npy` (sorted hashes).
3. `LineDedupStep` (one per task): drops those lines from each document of that bucket; a document
   left without text is removed ("empty_after_line_dedup"). Blank lines are kept (never counted).

A bucket is a function of the document (its id) and of N, never of its task or position, so `tasks = 1`
and `tasks = 3` give the same output. Steps 1 and 3 must see the same documents (the curation pipeline
replays the same URL and MinHash removals before each).

Memory: step 1 keeps 8 bytes per line occurrence of its task; step 2 reads the per-task files memory-
mapped and holds one bucket's line hashes at a time (8 bytes per occurrence, 30M documents of L lines ->
~240*L MB), step 3 only the frequent hashes. Documents whose input says `skip = ["line_dedup"]` (e.g.
source code, where `return None` is legitimately everywhere) are neither counted nor changed.
"""

from __future__ import annotations

import json
import math
import os
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from herd.data.curation.minhash import language_seed
from herd.data.curation.steps import HerdStep

SUMMARY = "summary.json"


def line_hashes(lines: list[str], seed: int = 0) -> np.ndarray:
    """xxh64 of each whitespace-stripped line; blank lines get 0 (never counted)."""
    return np.fromiter((xxhash.xxh64_intdigest(s, seed) if (s := ln.strip()) else 0 for ln in lines),
                       dtype=np.uint64, count=len(lines))


def document_key(doc_id: str) -> int:
    """The bucket key of a document: a hash of its id (stable across tasks, runs and machines)."""
    return xxhash.xxh64_intdigest(str(doc_id))


def bucket_count(documents: int, bucket_docs: int) -> int:
    return max(1, math.ceil(documents / bucket_docs))


def _skipped(doc: Document) -> bool:
    return "line_dedup" in doc.metadata.get("skip", ())


def _seed(doc: Document, per_language: bool) -> int:
    return language_seed(doc.metadata.get("lang", "")) if per_language else 0


def _save(path: Path, array_: np.ndarray) -> None:
    """np.save through a temporary name, so a killed task never leaves a truncated file behind."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array_)
    os.replace(tmp, path)


class LineSignatureStep(HerdStep):
    """Stage 1: writes each document's bucket key and line hashes for this task; yields nothing."""

    step_name = "line_signature"

    def __init__(self, output_dir: str | Path, sig_dir: str | Path, per_language: bool = True, **kw: Any) -> None:
        super().__init__(output_dir, **kw)
        self.sig_dir, self.per_language = str(sig_dir), per_language

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self._open(rank)
        keys, sizes, lines = array("Q"), array("I"), array("Q")  # compact: no per-document objects
        try:
            for doc in data or ():
                self.counts["in"] += 1
                if _skipped(doc):
                    continue
                h = line_hashes(doc.text.split("\n"), _seed(doc, self.per_language))
                h = h[h != 0]
                keys.append(document_key(doc.id))
                sizes.append(int(h.size))
                lines.frombytes(h.tobytes())
                self.counts["documents"] += 1
                self.counts["lines"] += int(h.size)
            out = Path(self.sig_dir)
            out.mkdir(parents=True, exist_ok=True)
            _save(out / f"lines-{rank:05d}.npy", np.frombuffer(lines, dtype=np.uint64))
            _save(out / f"sizes-{rank:05d}.npy", np.frombuffer(sizes, dtype=np.uint32))
            _save(out / f"keys-{rank:05d}.npy", np.frombuffer(keys, dtype=np.uint64))  # last: marks complete
        finally:
            self._close(rank)
        yield from ()


def find_frequent_lines(sig_dir: str | Path, world_size: int, frequent_dir: str | Path, bucket_docs: int,
                        max_count: int) -> dict[str, int]:
    """Stage 2: count lines per bucket over all tasks; writes `<bucket>.npy` and a summary; returns it."""
    sig_dir, frequent_dir = Path(sig_dir), Path(frequent_dir)
    parts = []
    for rank in range(world_size):
        paths = [sig_dir / f"{kind}-{rank:05d}.npy" for kind in ("keys", "sizes", "lines")]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"line dedup: signature files of task {rank} are missing: {missing}")
        parts.append(tuple(np.load(p, mmap_mode="r") for p in paths))
    documents = sum(len(keys) for keys, _, _ in parts)
    buckets = bucket_count(documents, bucket_docs)
    frequent_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for bucket in range(buckets):
        hashes = []
        for keys, sizes, lines in parts:
            if buckets == 1:
                hashes.append(np.asarray(lines))
            else:
                hashes.append(np.asarray(lines)[np.repeat(np.asarray(keys) % buckets == bucket, sizes)])
        values, counts = np.unique(np.concatenate(hashes) if hashes else np.zeros(0, np.uint64), return_counts=True)
        frequent = values[counts > max_count]
        total += int(frequent.size)
        _save(frequent_dir / f"{bucket:05d}.npy", frequent.astype(np.uint64))
    summary = {"documents": documents, "buckets": buckets, "frequent_line_hashes": total}
    (frequent_dir / SUMMARY).write_text(json.dumps(summary))
    return summary


class LineMergeStep(PipelineStep):
    """Stage 2 as a one-task pipeline step (so the executor's completion marker covers it)."""

    name = "line dedup: count lines per bucket"
    type = "herd"

    def __init__(self, sig_dir: str, frequent_dir: str, world_size: int, bucket_docs: int, max_count: int) -> None:
        super().__init__()
        self.sig_dir, self.frequent_dir, self.tasks = sig_dir, frequent_dir, world_size
        self.bucket_docs, self.max_count = bucket_docs, max_count

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        summary = find_frequent_lines(self.sig_dir, self.tasks, self.frequent_dir, self.bucket_docs, self.max_count)
        for key, value in summary.items():
            self.stat_update(key, value=value)
        yield from ()


def drop_frequent_lines(text: str, frequent: np.ndarray, seed: int = 0) -> tuple[str, int]:
    """The text without the lines whose hash is in the sorted array `frequent`; returns (text, removed)."""
    if frequent.size == 0:
        return text, 0
    lines = text.split("\n")
    h = line_hashes(lines, seed)
    pos = np.searchsorted(frequent, h)
    hit = (pos < frequent.size) & (frequent[np.minimum(pos, frequent.size - 1)] == h) & (h != 0)
    if not hit.any():
        return text, 0
    return "\n".join(ln for ln, drop in zip(lines, hit) if not drop), int(hit.sum())


class LineDedupStep(HerdStep):
    """Stage 3: drops the lines stage 2 found frequent in each document's bucket."""

    step_name = "line_dedup"

    def __init__(self, output_dir: str | Path, frequent_dir: str | Path, per_language: bool = True,
                 **kw: Any) -> None:
        super().__init__(output_dir, **kw)
        self.frequent_dir, self.per_language = str(frequent_dir), per_language

    def begin(self, rank: int, world_size: int) -> None:
        folder = Path(self.frequent_dir)
        if not (folder / SUMMARY).is_file():
            raise FileNotFoundError(f"line dedup: {folder / SUMMARY} is missing; the line-merge stage has not run")
        self._buckets = json.loads((folder / SUMMARY).read_text())["buckets"]
        self._frequent = [np.load(folder / f"{b:05d}.npy") for b in range(self._buckets)]

    def process(self, doc: Document, rank: int) -> Document | None:
        if _skipped(doc):
            return doc
        frequent = self._frequent[document_key(doc.id) % self._buckets]
        before = doc.text
        doc.text, removed = drop_frequent_lines(before, frequent, _seed(doc, self.per_language))
        if removed:
            self.count("lines_removed", removed)
            self.count("chars_removed", len(before) - len(doc.text))
            if self._examples.count < self.examples_per_step:
                left = set(doc.text.split("\n"))
                gone = [ln for ln in before.split("\n") if ln not in left][:5]
                self._examples.write({"id": doc.id, "source": doc.metadata.get("source"),
                                      "reason": "frequent_lines", "text": "\n".join(gone)})
        if not doc.text.strip():
            self.remove(doc, "empty_after_line_dedup")
            return None
        return doc
