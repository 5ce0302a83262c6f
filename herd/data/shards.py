"""Memory-mapped token shards: one directory per source, `.bin` tokens + `.idx` offsets + manifest.json.

Layout of a source directory:

    manifest.json          format, version, source name, tokenizer, counts, split rule, sha256 per file
    shard-00000.bin        uint32 token ids of all documents of the shard, back to back
    shard-00000.idx        int64 document offsets into the .bin (documents + 1 entries, first 0)
    shard-00000.mask       optional: uint8 loss mask, one byte per token (1 = trained as a target)

The loss mask is for documents where only some tokens should be learned (synthetic retrieval data:
the answers, not the haystack, as supervised fine-tuning masks its prompts). A source has a mask for
all its shards or for none (`loss_mask: true` in the manifest); sources without one train on every
token, exactly as before masks existed.

Documents keep their boundaries (the .idx), so packing can mask attention between them. Every file
is written under a temporary name and renamed into place, and the manifest is renamed last, so a
crashed writer never leaves a directory that looks complete. Reading checks every file's size against
the manifest (a truncated or swapped file is a DataError naming it, before any batch is produced);
`verify=True` also recomputes the sha256 checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from herd.data.errors import DataError

FORMAT = "herd.tokens"
VERSION = 1
MANIFEST = "manifest.json"
TOKEN_DTYPE = np.dtype("<u4")  # 128,256 ids need more than 16 bits
INDEX_DTYPE = np.dtype("<i8")
MASK_DTYPE = np.dtype("u1")
DEFAULT_SHARD_TOKENS = 1 << 27  # 128M tokens = 512 MiB per .bin
SPLITS = ("train", "validation")
_MASK64 = (1 << 64) - 1


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays: a fast, well-mixed, platform-independent hash."""
    z = values.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def validation_count(num_documents: int, fraction: float) -> int:
    """How many documents are held out: round(fraction * n), at least 1 when fraction > 0, never all."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    if num_documents < 2 or fraction == 0.0:
        return 0
    return min(num_documents - 1, max(1, round(fraction * num_documents)))


def validation_documents(num_documents: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted global indices of the held-out documents.

    The rule (recorded in the manifest): hash every document index with splitmix64(index ^ seed) and
    hold out the `validation_count` documents with the smallest hashes. It depends only on the
    number of documents, so the reader recomputes it and never needs a per-document split file.
    """
    count = validation_count(num_documents, fraction)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    hashes = splitmix64(np.arange(num_documents, dtype=np.uint64) ^ np.uint64(seed & _MASK64))
    return np.sort(np.argsort(hashes, kind="stable")[:count]).astype(np.int64)


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class ShardWriter:
    """Append tokenized documents; `close()` renames the files into place and writes the manifest.

    Use as a context manager; on an exception the temporary files are removed and an existing
    complete directory is left untouched.
    """

    def __init__(
        self,
        out_dir: str | Path,
        source: str,
        *,
        tokenizer: dict[str, Any],
        validation_fraction: float = 0.0,
        split_seed: int = 0,
        max_shard_tokens: int = DEFAULT_SHARD_TOKENS,
        loss_mask: bool = False,
    ) -> None:
        validation_count(2, validation_fraction)  # validates the fraction early
        self.loss_mask = bool(loss_mask)
        self._mask: Any = None
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.tokenizer = dict(tokenizer)
        self.validation_fraction = float(validation_fraction)
        self.split_seed = int(split_seed)
        self.max_shard_tokens = int(max_shard_tokens)
        self._shards: list[dict[str, Any]] = []  # finished shards (tmp names until close)
        self._bin: Any = None
        self._offsets: list[int] = [0]
        self._vocab = int(self.tokenizer.get("vocab_size", 1 << 32))
        self.documents = 0
        self.tokens = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is not None:
            self.abort()

    def _open_shard(self) -> None:
        name = f"shard-{len(self._shards):05d}"
        self._bin_path = self.out_dir / f"{name}.bin.tmp"
        self._bin = open(self._bin_path, "wb")  # noqa: SIM115 - closed by _finish_shard/abort
        if self.loss_mask:
            self._mask_path = self.out_dir / f"{name}.mask.tmp"
            self._mask = open(self._mask_path, "wb")  # noqa: SIM115 - closed by _finish_shard/abort
        self._offsets = [0]
        self._name = name

    def _finish_shard(self) -> None:
        self._bin.close()
        self._bin = None
        if self._mask is not None:
            self._mask.close()
            self._mask = None
        idx_tmp = self.out_dir / f"{self._name}.idx.tmp"
        np.asarray(self._offsets, dtype=INDEX_DTYPE).tofile(idx_tmp)
        self._shards.append(
            {"name": self._name, "bin_tmp": self._bin_path, "idx_tmp": idx_tmp,
             "mask_tmp": self._mask_path if self.loss_mask else None,
             "documents": len(self._offsets) - 1, "tokens": self._offsets[-1]}
        )

    def add(self, tokens: Sequence[int] | np.ndarray, mask: Sequence[int] | np.ndarray | None = None) -> None:
        """Append one document (its full token ids, BOS/EOS included).

        `mask` (only for a writer made with `loss_mask=True`; default all ones): one 0/1 per token,
        1 where the token is a training target (the loader never trains on predicting a 0 token)."""
        array = np.asarray(tokens)
        if array.ndim != 1 or array.size == 0:
            raise DataError(f"a document must be a non-empty 1-D token array, got shape {array.shape}")
        if array.min() < 0 or array.max() >= self._vocab:
            raise DataError(f"token id out of range [0, {self._vocab}) in document {self.documents} of {self.source}")
        if mask is not None and not self.loss_mask:
            raise DataError(f"a loss mask was given for {self.source}, whose writer has loss_mask=False")
        if self.loss_mask:
            bits = np.ones(array.size, dtype=MASK_DTYPE) if mask is None else np.asarray(mask)
            if bits.shape != array.shape:
                raise DataError(f"loss mask shape {bits.shape} != token shape {array.shape} in document "
                                f"{self.documents} of {self.source}")
            if bits.size and (bits.min() < 0 or bits.max() > 1):
                raise DataError(f"loss mask values must be 0 or 1 in document {self.documents} of {self.source}")
        if self._bin is None or (self._offsets[-1] > 0 and self._offsets[-1] + array.size > self.max_shard_tokens):
            if self._bin is not None:
                self._finish_shard()
            self._open_shard()
        self._bin.write(array.astype(TOKEN_DTYPE, copy=False).tobytes())
        if self.loss_mask:
            self._mask.write(bits.astype(MASK_DTYPE, copy=False).tobytes())
        self._offsets.append(self._offsets[-1] + int(array.size))
        self.documents += 1
        self.tokens += int(array.size)

    def add_many(self, documents: Iterable[Sequence[int] | np.ndarray]) -> None:
        """Append documents without masks (see `add`)."""
        for doc in documents:
            self.add(doc)

    def abort(self) -> None:
        if self._bin is not None:
            self._bin.close()
            self._bin = None
            self._bin_path.unlink(missing_ok=True)
        if self._mask is not None:
            self._mask.close()
            self._mask = None
            self._mask_path.unlink(missing_ok=True)
        for shard in self._shards:
            for key in ("bin_tmp", "idx_tmp", "mask_tmp"):
                if shard.get(key) is not None:
                    shard[key].unlink(missing_ok=True)
        self._shards = []

    def close(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Rename the shards into place, write manifest.json last, return the manifest."""
        if self._bin is not None:
            self._finish_shard()
        if self.documents == 0:
            self.abort()
            raise DataError(f"source {self.source!r} has no documents to write to {self.out_dir}")
        old = self.out_dir / MANIFEST
        old_files: set[str] = set()
        if old.is_file():
            try:
                old_manifest = json.loads(old.read_text())
                old_files = {f for s in old_manifest.get("shards", []) for f in _shard_files(s)}
            except (ValueError, KeyError, TypeError):
                old_files = set()
            old.unlink()  # the directory is incomplete from here until the new manifest lands
        entries = []
        for shard in self._shards:
            bin_path = self.out_dir / f"{shard['name']}.bin"
            idx_path = self.out_dir / f"{shard['name']}.idx"
            os.replace(shard["bin_tmp"], bin_path)
            os.replace(shard["idx_tmp"], idx_path)
            entry = {
                "bin": bin_path.name, "idx": idx_path.name,
                "documents": shard["documents"], "tokens": shard["tokens"],
                "sha256": {"bin": sha256_file(bin_path), "idx": sha256_file(idx_path)},
            }
            if shard.get("mask_tmp") is not None:
                mask_path = self.out_dir / f"{shard['name']}.mask"
                os.replace(shard["mask_tmp"], mask_path)
                entry["mask"] = mask_path.name
                entry["sha256"]["mask"] = sha256_file(mask_path)
            entries.append(entry)
        for stale in old_files - {f for e in entries for f in _shard_files(e)}:
            (self.out_dir / stale).unlink(missing_ok=True)
        n_val = validation_count(self.documents, self.validation_fraction)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "tokenizer": self.tokenizer,
            "dtype": "uint32",
            "documents": self.documents,
            "tokens": self.tokens,
            "split": {
                "rule": "hold out the validation_documents document indices i with the smallest "
                        "splitmix64(i ^ seed) (herd.data.shards.validation_documents)",
                "validation_fraction": self.validation_fraction,
                "seed": self.split_seed,
                "validation_documents": n_val,
                "train_documents": self.documents - n_val,
            },
            "shards": entries,
            **({"loss_mask": True} if self.loss_mask else {}),
            **(extra or {}),
        }
        atomic_write_text(self.out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
        self._shards = []
        return manifest


def _shard_files(entry: dict[str, Any]) -> list[str]:
    """The file names of one manifest shard entry (the mask only where there is one)."""
    return [entry["bin"], entry["idx"]] + ([entry["mask"]] if entry.get("mask") else [])


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Parse and sanity-check `manifest.json` (not the shard files; see TokenShards)."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise DataError(f"token shard directory not found: {directory}")
    if not path.is_file():
        raise DataError(f"{path} not found: not a herd token shard directory (run `herd tokenize`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: format is not {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path}: version {manifest.get('version')!r} is not supported (expected {VERSION})")
    for key in ("source", "tokenizer", "documents", "tokens", "split", "shards"):
        if key not in manifest:
            raise DataError(f"{path}: missing key {key!r}")
    shards = manifest["shards"]
    if sum(s["documents"] for s in shards) != manifest["documents"]:
        raise DataError(f"{path}: shard document counts do not add up to documents={manifest['documents']}")
    if sum(s["tokens"] for s in shards) != manifest["tokens"]:
        raise DataError(f"{path}: shard token counts do not add up to tokens={manifest['tokens']}")
    if manifest.get("loss_mask") and not all(s.get("mask") for s in shards):
        raise DataError(f"{path}: loss_mask is set but a shard has no mask file")
    return manifest


class TokenShards:
    """Read-only view of one source directory: documents as zero-copy uint32 memmap slices."""

    def __init__(self, directory: str | Path, *, verify: bool = False) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.source: str = self.manifest["source"]
        self.num_documents: int = int(self.manifest["documents"])
        self.num_tokens: int = int(self.manifest["tokens"])
        self.has_loss_mask: bool = bool(self.manifest.get("loss_mask"))
        self._tokens: list[np.ndarray] = []
        self._offsets: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        for shard in self.manifest["shards"]:
            bin_path, idx_path = self.directory / shard["bin"], self.directory / shard["idx"]
            files = [(bin_path, shard["tokens"] * TOKEN_DTYPE.itemsize),
                     (idx_path, (shard["documents"] + 1) * INDEX_DTYPE.itemsize)]
            mask_path = self.directory / shard["mask"] if self.has_loss_mask else None
            if mask_path is not None:
                files.append((mask_path, shard["tokens"] * MASK_DTYPE.itemsize))
            for path, expected in files:
                if not path.is_file():
                    raise DataError(f"{path} is listed in {self.directory / MANIFEST} but missing")
                size = path.stat().st_size
                if size != expected:
                    raise DataError(
                        f"{path} has {size} bytes but the manifest says {expected} "
                        f"({'truncated' if size < expected else 'too long'}; re-run `herd tokenize`)"
                    )
                if verify and sha256_file(path) != shard["sha256"][path.suffix[1:]]:
                    raise DataError(f"{path}: sha256 does not match the manifest (corrupt file)")
            offsets = np.fromfile(idx_path, dtype=INDEX_DTYPE)
            if offsets[0] != 0 or offsets[-1] != shard["tokens"] or np.any(np.diff(offsets) <= 0):
                raise DataError(f"{idx_path}: document offsets are inconsistent with {bin_path} (corrupt index)")
            self._offsets.append(offsets)
            self._tokens.append(np.memmap(bin_path, dtype=TOKEN_DTYPE, mode="r") if shard["tokens"] else
                                np.zeros(0, dtype=TOKEN_DTYPE))
            if mask_path is not None:
                self._masks.append(np.memmap(mask_path, dtype=MASK_DTYPE, mode="r") if shard["tokens"] else
                                   np.zeros(0, dtype=MASK_DTYPE))
        self._first_doc = np.cumsum([0] + [s["documents"] for s in self.manifest["shards"]])
        split = self.manifest["split"]
        self._validation = validation_documents(self.num_documents, split["validation_fraction"], split["seed"])
        if len(self._validation) != split["validation_documents"]:
            raise DataError(f"{self.directory / MANIFEST}: split rule gives {len(self._validation)} validation "
                            f"documents, the manifest says {split['validation_documents']}")

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.num_documents:
            raise IndexError(f"document {index} out of range for {self.source} ({self.num_documents} documents)")
        shard = int(np.searchsorted(self._first_doc, index, side="right")) - 1
        return shard, index - int(self._first_doc[shard])

    def document(self, index: int) -> np.ndarray:
        """Token ids of document `index` (global within the source), a read-only memmap slice."""
        shard, local = self._locate(index)
        offsets = self._offsets[shard]
        return self._tokens[shard][offsets[local] : offsets[local + 1]]

    def document_mask(self, index: int) -> np.ndarray | None:
        """The loss mask of document `index` (uint8, 1 = trained target), or None for a source without one."""
        if not self.has_loss_mask:
            return None
        shard, local = self._locate(index)
        offsets = self._offsets[shard]
        return self._masks[shard][offsets[local] : offsets[local + 1]]

    def document_length(self, index: int) -> int:
        shard, local = self._locate(index)
        offsets = self._offsets[shard]
        return int(offsets[local + 1] - offsets[local])

    def document_lengths(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o in self._offsets]).astype(np.int64)

    def split_documents(self, split: str) -> np.ndarray:
        """Sorted global document indices of `split` ("train" or "validation")."""
        if split == "validation":
            return self._validation
        if split == "train":
            keep = np.ones(self.num_documents, dtype=bool)
            keep[self._validation] = False
            return np.flatnonzero(keep).astype(np.int64)
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")

    def token_arrays(self) -> list[np.ndarray]:
        """The raw token memmaps, one per shard (for corpus statistics)."""
        return list(self._tokens)
