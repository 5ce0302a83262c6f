"""Line-level dedup (the paper: remove lines seen more than 6 times in each bucket of 30M documents).

Within a task, documents are taken in consecutive buckets of `bucket_docs`. Pass 1 over a bucket hashes
every non-blank line (whitespace-stripped; per language when `per_language`, by seeding the hash with
the document's language) and counts occurrences; pass 2 drops every line whose count exceeds `max_count`
(so a line seen 7 times goes and one seen 6 times stays, with the default 6). This removes navigation
menus, cookie banners and other boilerplate that survives extraction.

Memory: the bucket's documents are spilled to a temporary file (not held in memory) and only 8 bytes
per line occurrence are kept (a numpy array, counted with `np.unique`), so a bucket of N documents
with L lines each needs ~8*N*L bytes. With T tasks, the paper's single 30M bucket becomes T buckets
of 30M/T if you set `bucket_docs` accordingly.

Documents whose input says `skip = ["line_dedup"]` (e.g. source code, where `return None` is
legitimately everywhere) are neither counted nor changed. Blank lines are kept as they are (never
counted); a document left without text is removed
("empty_after_line_dedup").
"""

from __future__ import annotations

import os
import pickle
from array import array
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import xxhash
from datatrove.data import Document

from herd.data.curation.minhash import language_seed
from herd.data.curation.steps import HerdStep


def line_hashes(lines: list[str], seed: int = 0) -> np.ndarray:
    """xxh64 of each whitespace-stripped line; blank lines get 0 (never counted)."""
    return np.fromiter((xxhash.xxh64_intdigest(s, seed) if (s := ln.strip()) else 0 for ln in lines),
                       dtype=np.uint64, count=len(lines))


class LineCounter:
    """Occurrence counts of line hashes in one bucket; `frequent()` is the sorted set above the cap."""

    def __init__(self) -> None:
        self._buf = array("Q")  # 8 bytes per line occurrence, no per-document object overhead

    def add(self, hashes: np.ndarray) -> None:
        hashes = hashes[hashes != 0]
        if hashes.size:
            self._buf.frombytes(hashes.astype(np.uint64).tobytes())

    def frequent(self, max_count: int) -> np.ndarray:
        if not self._buf:
            return np.zeros(0, dtype=np.uint64)
        values, counts = np.unique(np.frombuffer(self._buf, dtype=np.uint64), return_counts=True)
        self._buf = array("Q")
        return values[counts > max_count]


def drop_frequent_lines(text: str, frequent: np.ndarray, seed: int = 0) -> tuple[str, int]:
    """The text without the lines whose hash is in the sorted array `frequent`; returns (text, removed)."""
    lines = text.split("\n")
    if frequent.size == 0:
        return text, 0
    h = line_hashes(lines, seed)
    pos = np.searchsorted(frequent, h)
    hit = (pos < frequent.size) & (frequent[np.minimum(pos, frequent.size - 1)] == h) & (h != 0)
    if not hit.any():
        return text, 0
    return "\n".join(ln for ln, drop in zip(lines, hit) if not drop), int(hit.sum())


class LineDedupStep(HerdStep):
    """The bucketed two-pass line dedup as a datatrove step (see the module docstring)."""

    step_name = "line_dedup"

    def __init__(self, output_dir: str | Path, bucket_docs: int = 30_000_000, max_count: int = 6,
                 per_language: bool = True, **kw: Any) -> None:
        super().__init__(output_dir, **kw)
        self.bucket_docs, self.max_count, self.per_language = bucket_docs, max_count, per_language

    def _seed(self, doc: Document) -> int:
        return language_seed(doc.metadata.get("lang", "")) if self.per_language else 0

    def run(self, data, rank: int = 0, world_size: int = 1):
        self._open(rank)
        tmp_dir = Path(self.output_dir) / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        try:
            spill = None
            counter = LineCounter()
            n = 0
            for doc in data or ():
                self.counts["in"] += 1
                if spill is None:
                    fd, spill_path = tempfile.mkstemp(prefix=f"lines-{rank:05d}-", dir=tmp_dir)
                    spill = os.fdopen(fd, "w+b")
                if "line_dedup" not in doc.metadata.get("skip", ()):
                    counter.add(line_hashes(doc.text.split("\n"), self._seed(doc)))
                pickle.dump(doc, spill, protocol=pickle.HIGHEST_PROTOCOL)
                n += 1
                if n == self.bucket_docs:
                    yield from self._flush(spill, spill_path, counter)
                    spill, n, counter = None, 0, LineCounter()
            if spill is not None:
                yield from self._flush(spill, spill_path, counter)
        finally:
            self._close(rank)

    def _flush(self, spill, spill_path: str, counter: LineCounter) -> Iterator[Document]:
        frequent = counter.frequent(self.max_count)
        self.count("frequent_line_hashes", int(frequent.size))
        spill.flush()
        spill.seek(0)
        try:
            while True:
                try:
                    doc = pickle.load(spill)
                except EOFError:
                    break
                if "line_dedup" in doc.metadata.get("skip", ()):
                    self.counts["kept"] += 1
                    yield doc
                    continue
                before = doc.text
                doc.text, removed = drop_frequent_lines(doc.text, frequent, self._seed(doc))
                if removed:
                    self.count("lines_removed", removed)
                    self.count("chars_removed", len(before) - len(doc.text))
                    if self._examples.count < self.examples_per_step:
                        gone = [ln for ln in before.split("\n") if ln not in set(doc.text.split("\n"))][:5]
                        self._examples.write({"id": doc.id, "source": doc.metadata.get("source"),
                                              "reason": "frequent_lines", "text": "\n".join(gone)})
                if not doc.text.strip():
                    self.remove(doc, "empty_after_line_dedup")
                    continue
                self.counts["kept"] += 1
                yield doc
        finally:
            spill.close()
            os.unlink(spill_path)
