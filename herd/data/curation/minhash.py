"""Global MinHash near-dedup: herd's fast signatures inside datatrove's four-stage MinHash machinery.

Stages (datatrove's design, run by the curation pipeline): 1. signatures per task (this module's
`HerdMinhashSignature`, a subclass of datatrove's `MinhashDedupSignature` writing its file format);
2. `MinhashDedupBuckets` (one task per band: sort-merge the band's signatures, emit duplicate pairs);
3. `HerdMinhashCluster` (one task: union-find over pairs, keep one document per cluster: the one with
   the smallest hash of id and text, so the survivor does not depend on how documents were split);
4. removal (`MinhashRemoveStep` below, which reads the `.remove` ids and counts/records removals).

**Parameters** (defaults = FineWeb's, the closest published recipe to the paper's intent; the Llama 3
paper says only "global MinHash ... near duplicate documents"):
  * shingles: word 5-grams of lower-cased text (`\\w+` tokens, Unicode-aware); a document shorter than
    5 words is one shingle;
  * 112 hash functions = 14 bands x 8 rows, 32-bit multiply-shift hashes of 64-bit shingle hashes;
  * two documents become a candidate pair when all 8 rows of any band agree, so for Jaccard
    similarity s the catch probability is P(s) = 1 - (1 - s^8)^14: 50% at s = 0.685, 90% at s = 0.790,
    99% at s = 0.853; P(0.5) = 5%, P(0.3) < 0.1%. `s_curve()` computes it for other settings.

**Per language**: word hashes are seeded with the document's language, so documents of different
languages never share a shingle and dedup runs within each language in the same pass.

Why not datatrove's own signature step: it tokenizes with NLTK (which needs downloaded punkt data, not
available offline here) and hashes each n-gram string in Python; hashing each *word* once with xxhash
and combining n-grams in numpy is several times faster (see benchmarks/curation_cpu.py).
"""

from __future__ import annotations

import re
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.dedup.minhash import MinhashConfig as DTMinhashConfig
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer

from herd.data.curation.steps import HerdStep

_WORD = re.compile(r"\w+")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_MUL1, _MUL2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def s_curve(similarity: float, bands: int = 14, rows: int = 8) -> float:
    """Probability that two documents with Jaccard `similarity` become a candidate pair."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def similarity_at(probability: float, bands: int = 14, rows: int = 8) -> float:
    """The Jaccard similarity caught with `probability` (inverse of `s_curve`)."""
    return (1.0 - (1.0 - probability) ** (1.0 / bands)) ** (1.0 / rows)


def _finalize(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MUL1
        z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def shingle_hashes(text: str, ngram: int = 5, seed: int = 0) -> np.ndarray:
    """64-bit hashes of the word n-grams of `text` (lower-cased `\\w+` words), shape (n,)."""
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    h = np.fromiter((xxhash.xxh64_intdigest(w, seed) for w in words), dtype=np.uint64, count=len(words))
    if len(h) <= ngram:
        acc = np.zeros(1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for v in h:
                acc = _finalize(acc * _MIX + v)
        return acc
    n = len(h) - ngram + 1
    acc = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(ngram):
            acc = _finalize(acc * _MIX + h[j : j + n])
    return acc


class MinHasher:
    """Signatures of `bands * rows` 32-bit values: min over shingles of ((a * x + b) mod 2^64) >> 32."""

    def __init__(self, bands: int = 14, rows: int = 8, ngram: int = 5, seed: int = 1) -> None:
        self.bands, self.rows, self.ngram = bands, rows, ngram
        gen = np.random.default_rng(seed)
        k = bands * rows
        self.a = (gen.integers(0, 2**63, size=k, dtype=np.uint64) * np.uint64(2) + np.uint64(1)).reshape(1, k)
        self.b = gen.integers(0, 2**63, size=k, dtype=np.uint64).reshape(1, k)

    def signature_of_shingles(self, shingles: np.ndarray) -> np.ndarray:
        """(bands*rows,) uint32 signature; an empty shingle set has no signature (caller skips it)."""
        with np.errstate(over="ignore"):
            phv = (shingles.reshape(-1, 1) * self.a + self.b) >> np.uint64(32)
        return phv.min(axis=0).astype(np.uint32)

    def signature(self, text: str, lang: str = "") -> np.ndarray | None:
        sh = shingle_hashes(text, self.ngram, seed=language_seed(lang))
        return None if sh.size == 0 else self.signature_of_shingles(sh)


def language_seed(lang: str) -> int:
    return xxhash.xxh32_intdigest(lang) if lang else 0


def datatrove_config(bands: int, rows: int, ngram: int, seed: int) -> DTMinhashConfig:
    """datatrove's MinhashConfig matching herd's signatures (32-bit values, hence precision=32)."""
    return DTMinhashConfig(n_grams=ngram, num_buckets=bands, hashes_per_bucket=rows, seed=seed,
                           hash_config=HashConfig(precision=32, hash_fc="xxhash"))


class _RegexWords(WordTokenizer):
    """Only to satisfy datatrove's constructor (it loads an NLTK tokenizer for a language name)."""

    def __init__(self) -> None:
        super().__init__("xx")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]


class HerdMinhashSignature(MinhashDedupSignature):
    """datatrove's stage-1 step (file layout, sorting, verification) with herd's shingles and hashes."""

    name = "MinHash signatures (herd)"

    def __init__(self, output_folder: str | Path, bands: int = 14, rows: int = 8, ngram: int = 5, seed: int = 1,
                 per_language: bool = True, keys_folder: str | Path | None = None) -> None:
        super().__init__(str(output_folder), config=datatrove_config(bands, rows, ngram, seed), language=_RegexWords())
        self.hasher = MinHasher(bands, rows, ngram, seed)
        self.per_language = per_language
        self.keys_folder = str(keys_folder) if keys_folder else None
        self._lang = ""

    def get_shingles(self, text: str) -> np.ndarray:
        return shingle_hashes(text, self.config.n_grams, seed=language_seed(self._lang))

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        sig = self.hasher.signature_of_shingles(shingles)
        return sig.reshape(self.config.num_buckets, self.config.hashes_per_bucket).tolist()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        # datatrove's run() computes the signature of each document right after pulling it from `data`,
        # so recording the language here, as the document passes, keys that document's hashes.
        keys = array("Q")

        def tagged():
            for doc in data or ():
                self._lang = doc.metadata.get("lang", "") if self.per_language else ""
                keys.append(document_key(doc))
                yield doc
            if self.keys_folder:  # every document was read: its keys, by index, for the cluster stage
                folder = Path(self.keys_folder)
                folder.mkdir(parents=True, exist_ok=True)
                np.save(folder / f"{rank:05d}.npy", np.frombuffer(keys, dtype=np.uint64))

        return super().run(tagged(), rank, world_size)


def document_key(doc: Document) -> int:
    """Which copy of a near-duplicate cluster survives: the one with the smallest key, a hash of id and
    text, so the survivor is the same however the documents were split over tasks."""
    return xxhash.xxh64_intdigest(f"{doc.id}\0{doc.text}")


class HerdMinhashCluster(PipelineStep):
    """Stage 3 (one task): union-find over datatrove's duplicate pairs; per cluster, keep the document with
    the smallest `document_key` and write the others' indices to `<rank:06d>.remove` (datatrove's format).

    datatrove's own cluster step keeps the union-find root, which depends on the (task, index) numbering,
    so the curated output would depend on `tasks`; the clusters themselves do not.
    """

    type = "herd"
    name = "MinHash clusters (herd)"

    def __init__(self, input_folder: str | Path, output_folder: str | Path, keys_folder: str | Path) -> None:
        super().__init__()
        self.input_folder, self.output_folder = str(input_folder), str(output_folder)
        self.keys_folder = str(keys_folder)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from datatrove.utils.binaryio import read_tuples_from_file

        parent: dict[tuple[int, int], tuple[int, int]] = {}

        def find(x: tuple[int, int]) -> tuple[int, int]:
            root = x
            while parent.setdefault(root, root) != root:
                root = parent[root]
            while parent[x] != root:  # path compression
                parent[x], x = root, parent[x]
            return root

        for path in sorted(Path(self.input_folder).glob("*.dups")):
            with open(path, "rb") as fh:
                for f1, d1, f2, d2 in read_tuples_from_file(fh, "4I", lines_to_buffer=5):
                    ra, rb = find((f1, d1)), find((f2, d2))
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
        clusters: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for node in list(parent):
            clusters.setdefault(find(node), []).append(node)
        keys: dict[int, np.ndarray] = {}

        def key(node: tuple[int, int]) -> tuple[int, int, int]:
            if node[0] not in keys:
                keys[node[0]] = np.load(Path(self.keys_folder) / f"{node[0]:05d}.npy")
            return int(keys[node[0]][node[1]]), node[0], node[1]

        remove: dict[int, list[int]] = {}
        for members in clusters.values():
            keep = min(members, key=key)
            for f, d in members:
                if (f, d) != keep:
                    remove.setdefault(f, []).append(d)
        out = Path(self.output_folder)
        out.mkdir(parents=True, exist_ok=True)
        for f, docs in sorted(remove.items()):
            np.asarray(sorted(docs), dtype="<u4").tofile(out / f"{f:06d}.remove")
            self.stat_update("to_remove", value=len(docs))
        self.stat_update("clusters", value=len(clusters))
        yield from ()


class MinhashRemoveStep(HerdStep):
    """Stage 4: drop the documents whose index is in the cluster stage's `<rank>.remove` file."""

    step_name = "minhash"

    def __init__(self, output_dir: str | Path, remove_folder: str | Path, **kw: Any) -> None:
        super().__init__(output_dir, **kw)
        self.remove_folder = str(remove_folder)

    def begin(self, rank: int, world_size: int) -> None:
        path = Path(self.remove_folder) / f"{rank:06d}.remove"
        self._remove = set(np.fromfile(path, dtype="<u4").tolist()) if path.is_file() else set()
        self._idx = -1

    def process(self, doc: Document, rank: int) -> Document | None:
        self._idx += 1
        if self._idx in self._remove:
            self.remove(doc, "near_duplicate")
            return None
        return doc
