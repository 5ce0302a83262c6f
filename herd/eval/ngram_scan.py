"""Exact n-gram lookup of evaluation items in herd token shards: a vectorised rolling hash + exact check.

Why this shape: a benchmark has far fewer n-grams (thousands of items x ~100 tokens) than a pretraining
corpus has tokens, so the items' n-grams are indexed in memory and the shards are *streamed* past them
chunk by chunk (memory stays bounded by the chunk, whatever the corpus size). Per chunk, with no Python
loop per token:

1. every window's 64-bit polynomial hash `sum_j t[i+j] * B^(n-1-j) mod 2^64` is computed by doubling
   (hashes of width 1 -> 2 -> 4 -> 8 combine as `h_2w[i] = h_w[i] * B^w + h_w[i+w]`: three multiply-adds
   over the chunk for n = 8);
2. a bit table indexed by the hash's top bits (about 128 bits per indexed n-gram, so < 1% of windows
   pass when nothing matches) drops almost every window with one gather; the few survivors are looked
   up by binary search in the sorted item hashes;
3. every hash hit is checked token by token against the item n-gram (a collision never counts), and a
   match is kept only when its window lies inside one document of the shard's index (an n-gram made of
   the end of one document and the start of the next is not in the corpus).

4. n-grams found once leave the bit table (it is rebuilt from the missing ones when many were found),
   so text that the corpus repeats is checked once, not at every copy.

`np.isin` of the window hashes against the item hashes sorts the chunk (1.5-2M windows/s here); the
table + search runs at tens of millions of windows/s on one core (benchmarks/RESULTS.md). Memory: the
item index (44 bytes per distinct n-gram plus the table, at most 32 MiB) and a few chunk-sized arrays.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from herd.data import TokenShards

BASE = 0x9E3779B97F4A7C15  # odd (invertible mod 2^64), high-entropy bits: the golden-ratio constant
DEFAULT_CHUNK_TOKENS = 1 << 18  # 256K windows per step: 2 MiB per uint64 temporary, cache-sized (1.7x 4M here)
MIN_TABLE_BITS, MAX_TABLE_BITS = 16, 28  # the filter table: 8 KiB .. 32 MiB
_MAX_TOKEN = 1 << 32  # shards store uint32 ids


def _u64(value: int) -> np.uint64:
    return np.uint64(value & ((1 << 64) - 1))


def ngram_hashes(tokens: np.ndarray, n: int, base: int = BASE) -> np.ndarray:
    """The uint64 hash of every n-gram of `tokens` (window start order; empty when len < n).

    hash(t[i:i+n]) = sum_j t[i+j] * base^(n-1-j) mod 2^64, built by doubling the window width and
    adding the binary parts of n, so the cost is O(log n) vector passes over the array.
    """
    if n < 1:
        raise ValueError(f"n-gram length must be >= 1, got {n}")
    tokens = np.asarray(tokens)
    if tokens.size < n:
        return np.zeros(0, dtype=np.uint64)
    cur = tokens.astype(np.uint64)  # hashes of width `width`
    width = 1
    acc: np.ndarray | None = None  # hashes of width `acc_width` (a prefix of the final window)
    acc_width = 0
    remaining = n
    with np.errstate(over="ignore"):
        while True:
            if remaining & 1:
                if acc is None:
                    acc, acc_width = cur, width
                else:
                    size = cur.size - acc_width  # windows of width acc_width + width
                    acc = acc[:size] * _u64(pow(base, width, 1 << 64)) + cur[acc_width:acc_width + size]
                    acc_width += width
            remaining >>= 1
            if not remaining:
                break
            cur = cur[:-width] * _u64(pow(base, width, 1 << 64)) + cur[width:]
            width *= 2
    assert acc is not None and acc_width == n
    return acc[: tokens.size - n + 1]


def row_hashes(rows: np.ndarray, base: int = BASE) -> np.ndarray:
    """The same hash as `ngram_hashes` for each row of an (m, n) array of n-grams (Horner by column)."""
    h = np.zeros(rows.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in range(rows.shape[1]):
            h = h * _u64(base) + rows[:, column].astype(np.uint64)
    return h


def as_item_array(item: Sequence[int] | np.ndarray, index: int) -> np.ndarray:
    """One item's token ids as a uint32 array, or a one-line ValueError naming the item."""
    try:
        array = np.asarray(item, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"item {index} is not a list of integer token ids") from None
    if array.ndim != 1:
        raise ValueError(f"item {index} must be a flat list of token ids, got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= _MAX_TOKEN):
        raise ValueError(f"item {index} has a token id outside [0, 2^32)")
    return array.astype(np.uint32)


def _distinct_ngrams(windows: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct rows sorted by hash, their hashes, the row of each window), exactly.

    Fast path: sort the windows by hash; when every window equals the first of its equal-hash run
    (no two distinct item n-grams share a hash: the usual case), the runs are the distinct n-grams.
    Otherwise fall back to an exact row-wise unique (several times slower, always right).
    """
    hashes = row_hashes(windows, base)
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    starts = np.ones(order.size, dtype=bool)
    starts[1:] = sorted_hashes[1:] != sorted_hashes[:-1]
    group = np.cumsum(starts) - 1
    firsts = order[starts]
    if np.array_equal(windows[order], windows[firsts[group]]):
        row_of = np.empty(order.size, dtype=np.int64)
        row_of[order] = group
        return np.ascontiguousarray(windows[firsts]), sorted_hashes[starts], row_of
    unique, inverse = np.unique(windows, axis=0, return_inverse=True)
    unique_hashes = row_hashes(unique, base)
    by_hash = np.argsort(unique_hashes, kind="stable")
    rank = np.empty_like(by_hash)
    rank[by_hash] = np.arange(by_hash.size)
    return np.ascontiguousarray(unique[by_hash]), unique_hashes[by_hash], rank[inverse.reshape(-1)]


class ItemNGrams:
    """The distinct n-grams of a list of items, sorted by hash, with a bit-table prefilter.

    `rows[k]` is the k-th distinct n-gram (sorted by hash, `hashes[k]` its hash); `item_rows[i][p]` is
    the row of item i's n-gram starting at token p. Items shorter than n have no n-grams.
    """

    def __init__(self, items: Sequence[Sequence[int] | np.ndarray], n: int, base: int = BASE) -> None:
        if n < 1:
            raise ValueError(f"n-gram length must be >= 1, got {n}")
        self.n, self.base = n, base
        self.items = [as_item_array(item, i) for i, item in enumerate(items)]
        self.lengths = np.array([a.size for a in self.items], dtype=np.int64)
        counts = np.maximum(self.lengths - n + 1, 0)
        windows = [np.lib.stride_tricks.sliding_window_view(a, n) for a, c in zip(self.items, counts, strict=True)
                   if c > 0]
        all_windows = np.concatenate(windows) if windows else np.zeros((0, n), dtype=np.uint32)
        self.rows, self.hashes, flat = _distinct_ngrams(all_windows, base)
        self.item_rows: list[np.ndarray] = np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []
        wanted_bits = int(np.ceil(np.log2(max(len(self.hashes), 1)))) + 7  # ~128 table bits per n-gram
        self.table_bits = min(MAX_TABLE_BITS, max(MIN_TABLE_BITS, wanted_bits))
        self._shift = np.uint64(64 - self.table_bits)
        self.table = np.zeros(1 << (self.table_bits - 3), dtype=np.uint8)
        self.table_rows = 0  # how many n-grams the table holds
        self.set_table(np.ones(len(self.hashes), dtype=bool))

    def set_table(self, keep: np.ndarray) -> None:
        """Let only the n-grams in `keep` through the bit table (the scan drops those already found, so
        a corpus that repeats them stops paying for the exact check)."""
        self.table[:] = 0
        slots = self.hashes[keep] >> self._shift
        np.bitwise_or.at(self.table, (slots >> np.uint64(3)).astype(np.int64),
                         np.left_shift(np.uint8(1), (slots & np.uint64(7)).astype(np.uint8)))
        self.table_rows = int(slots.size)

    def __len__(self) -> int:
        return len(self.hashes)

    def candidates(self, hashes: np.ndarray) -> np.ndarray:
        """Positions whose hash passes the bit table (a superset of the positions with an item hash)."""
        slots = hashes >> self._shift
        bytes_ = self.table[slots >> np.uint64(3)]
        return np.flatnonzero((bytes_ >> (slots & np.uint64(7)).astype(np.uint8)) & np.uint8(1))

    def coverage(self, found: np.ndarray) -> np.ndarray:
        """Per item: the share of its tokens inside at least one found n-gram (0.0 when it has none)."""
        out = np.zeros(len(self.items), dtype=np.float64)
        for i, rows in enumerate(self.item_rows):
            starts = np.flatnonzero(found[rows])
            if starts.size == 0:
                continue
            edges = np.zeros(self.lengths[i] + 1, dtype=np.int64)
            np.add.at(edges, starts, 1)
            np.add.at(edges, starts + self.n, -1)
            out[i] = np.count_nonzero(np.cumsum(edges[:-1])) / self.lengths[i]
        return out


@dataclass
class ScanStats:
    """What a scan did. `hash_hits`: windows whose hash equals an item n-gram's; those of n-grams not
    found yet are checked token by token: `collisions` differed (rejected), `cross_document` matched
    across a document boundary (rejected), `matches` are real occurrences."""

    sources: list[str] = field(default_factory=list)
    shards: int = 0
    duplicate_shards_skipped: int = 0
    documents: int = 0
    tokens: int = 0
    item_ngrams: int = 0
    candidates: int = 0
    hash_hits: int = 0
    collisions: int = 0
    cross_document: int = 0
    matches: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}


def _shard_offsets(shards: TokenShards) -> list[np.ndarray]:
    """Per shard file: its document offsets (documents + 1 entries, first 0), from the public API."""
    lengths = shards.document_lengths()
    out, first = [], 0
    for entry in shards.manifest["shards"]:
        count = int(entry["documents"])
        out.append(np.concatenate([[0], np.cumsum(lengths[first:first + count])]).astype(np.int64))
        first += count
    return out


def scan_tokens(tokens: np.ndarray, offsets: np.ndarray, index: ItemNGrams, found: np.ndarray,
                stats: ScanStats, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> None:
    """Mark in `found` every item n-gram that occurs inside one document of this token array."""
    n, total = index.n, int(tokens.size)
    arange_n = np.arange(n)
    for start in range(0, max(total - n + 1, 0), chunk_tokens):
        chunk = np.asarray(tokens[start : min(start + chunk_tokens + n - 1, total)])
        hashes = ngram_hashes(chunk, n, index.base)
        positions = index.candidates(hashes)
        stats.candidates += int(positions.size)
        if positions.size == 0:
            continue
        wanted = hashes[positions]
        lo = np.searchsorted(index.hashes, wanted, side="left")
        k = 0
        while positions.size:  # k-th item n-gram with the same hash (k > 0 only for colliding items)
            rows = lo + k
            hit = rows < len(index.hashes)
            hit[hit] = index.hashes[rows[hit]] == wanted[hit]
            positions, wanted, lo, rows = positions[hit], wanted[hit], lo[hit], rows[hit]
            if positions.size == 0:
                break
            stats.hash_hits += int(positions.size)
            todo = ~found[rows]  # an n-gram already found needs no second occurrence
            if todo.any():
                at, check = positions[todo], rows[todo]
                same = (chunk[at[:, None] + arange_n] == index.rows[check]).all(axis=1)
                stats.collisions += int(np.count_nonzero(~same))
                at, check = start + at[same], check[same]
                doc = np.searchsorted(offsets, at, side="right") - 1
                inside = at + n <= offsets[doc + 1]
                stats.cross_document += int(np.count_nonzero(~inside))
                stats.matches += int(np.count_nonzero(inside))
                found[check[inside]] = True
            k += 1
        missing = len(found) - int(np.count_nonzero(found))
        if index.table_rows - missing > max(1024, index.table_rows // 8):  # many found since the last rebuild
            index.set_table(~found)


def scan_sources(sources: Sequence[TokenShards], index: ItemNGrams,
                 chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> tuple[np.ndarray, ScanStats]:
    """Stream every shard of `sources` past the items' n-grams; return (found per n-gram row, stats).

    Shard files whose .bin and .idx have the same sha256 as a shard already scanned (e.g. a curated
    `_hq` copy of a source) are skipped: they cannot add a match.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    found = np.zeros(len(index), dtype=bool)
    if index.table_rows != len(index):  # a previous scan narrowed the table
        index.set_table(~found)
    stats = ScanStats(item_ngrams=len(index))
    seen: set[str] = set()
    began = time.perf_counter()
    for source in sources:
        stats.sources.append(str(source.directory))
        for entry, tokens, offsets in zip(source.manifest["shards"], source.token_arrays(), _shard_offsets(source),
                                          strict=True):
            sums = entry.get("sha256", {})
            digest = f"{sums['bin']}:{sums['idx']}" if "bin" in sums and "idx" in sums else None
            if digest is not None and digest in seen:
                stats.duplicate_shards_skipped += 1
                continue
            if digest is not None:
                seen.add(digest)
            stats.shards += 1
            stats.documents += int(entry["documents"])
            stats.tokens += int(tokens.size)
            if len(index):
                scan_tokens(tokens, offsets, index, found, stats, chunk_tokens)
    stats.seconds = time.perf_counter() - began
    return found, stats
