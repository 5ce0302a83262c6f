"""Tokenize JSONL, Parquet and plain-text files into token shards, in parallel.

The main process reads the inputs in order and cuts them into chunks of documents; a process pool
(one Llama 3 tokenizer per worker) tokenizes the chunks; `imap` hands the results back in input order,
so the shards are byte-identical whatever the number of workers. Each document is stored as
`<|begin_of_text|> text <|end_of_text|>`; special-token text inside documents stays plain text.

Bad records never stop a run: malformed JSON lines, records without a string text field and
empty documents are counted (and the first few located) in the manifest's `skipped`/`warnings`.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from herd.data.errors import DataError
from herd.data.shards import DEFAULT_SHARD_TOKENS, ShardWriter

FORMATS = ("jsonl", "parquet", "text")
TEXT_MODES = ("file", "paragraphs")
MAX_WARNINGS = 20
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")

_TOKENIZER: Any = None  # per worker process


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories expand to their files (recursively, sorted, hidden ones skipped)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and not any(
                part.startswith(".") for part in f.relative_to(p).parts)))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"input not found: {p}")
    if not files:
        raise DataError(f"no input files in {[str(p) for p in paths]}")
    return files


def _open_text(path: Path):  # type: ignore[no-untyped-def]
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


# -- reading (main process): yields work items of at most `chunk` documents --------------------
def _jsonl_items(path: Path, chunk: int) -> Iterator[tuple]:
    with _open_text(path) as f:
        lines: list[str] = []
        first = 1
        for line_no, line in enumerate(f, start=1):
            if not lines:
                first = line_no
            lines.append(line)
            if len(lines) == chunk:
                yield ("jsonl", str(path), first, lines)
                lines = []
        if lines:
            yield ("jsonl", str(path), first, lines)


def _parquet_items(path: Path, chunk: int, text_field: str) -> Iterator[tuple]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise DataError("reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{path} is not a readable Parquet file: {exc}") from None
    columns = parquet.schema_arrow.names
    if text_field not in columns:
        raise DataError(f"{path} has no column {text_field!r}; columns: {', '.join(columns)} (use --text-field)")
    for batch in parquet.iter_batches(batch_size=chunk, columns=[text_field]):
        yield ("texts", str(path), batch.column(0).to_pylist())


def _text_items(path: Path, chunk: int, text_mode: str) -> Iterator[tuple]:
    with _open_text(path) as f:
        text = f.read()
    if text_mode == "file":
        yield ("texts", str(path), [text])
        return
    paragraphs = _PARAGRAPH_BREAK.split(text)
    for i in range(0, len(paragraphs), chunk):
        yield ("texts", str(path), paragraphs[i : i + chunk])


def _work_items(files: Sequence[Path], fmt: str | None, text_field: str, text_mode: str, chunk: int) -> Iterator[tuple]:
    for path in files:
        kind = fmt or detect_format(path)
        if kind == "jsonl":
            yield from _jsonl_items(path, chunk)
        elif kind == "parquet":
            yield from _parquet_items(path, chunk, text_field)
        else:
            yield from _text_items(path, chunk, text_mode)


# -- tokenizing (worker processes) ---------------------------------------------------------------
def _init_worker(tokenizer_path: str | None) -> None:
    global _TOKENIZER
    from herd.tokenizer.llama3 import Llama3Tokenizer, default_tokenizer_path

    path = Path(tokenizer_path) if tokenizer_path is not None else default_tokenizer_path()
    if _TOKENIZER is None or _TOKENIZER.path != path:  # loading the 128K ranks takes a moment
        _TOKENIZER = Llama3Tokenizer(path)


def _tokenize_item(item: tuple, text_field: str) -> tuple[list[np.ndarray], Counter, list[str]]:
    counts: Counter = Counter()
    notes: list[str] = []
    texts: list[Any]
    if item[0] == "jsonl":
        _, path, first, lines = item
        texts = []
        for line_no, line in enumerate(lines, start=first):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                counts["malformed_json"] += 1
                if len(notes) < MAX_WARNINGS:
                    notes.append(f"{path}:{line_no}: malformed JSON ({exc})")
                continue
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                counts["missing_text"] += 1
                if len(notes) < MAX_WARNINGS:
                    notes.append(f"{path}:{line_no}: no string field {text_field!r}")
                continue
            texts.append(record[text_field])
    else:
        _, path, texts = item
    documents: list[np.ndarray] = []
    for text in texts:
        if not isinstance(text, str):
            counts["missing_text"] += 1
            continue
        if not text.strip():
            counts["empty"] += 1
            continue
        documents.append(np.asarray(_TOKENIZER.encode(text, bos=True, eos=True), dtype=np.uint32))
    return documents, counts, notes


def _tokenize_star(args: tuple[tuple, str]) -> tuple[list[np.ndarray], Counter, list[str]]:
    return _tokenize_item(*args)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where available: workers inherit the loaded tokenizer and never re-import the caller's
    `__main__` (spawn would re-run an unguarded script and import torch again in every worker).
    Workers only run tiktoken and numpy, which are safe after fork."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def tokenizer_info(tokenizer_path: str | Path | None = None) -> dict[str, Any]:
    _init_worker(None if tokenizer_path is None else str(tokenizer_path))
    tok = _TOKENIZER
    return {"name": "llama3", "file": tok.path.name, "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id, "eos_id": tok.eos_id}


def tokenize_files(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    source: str,
    *,
    fmt: str | None = None,
    text_field: str = "text",
    text_mode: str = "file",
    workers: int | None = None,
    validation_fraction: float = 0.0,
    split_seed: int = 0,
    tokenizer_path: str | Path | None = None,
    max_shard_tokens: int = DEFAULT_SHARD_TOKENS,
    chunk_documents: int = 256,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize `inputs` (files or directories) into token shards in `out_dir`; return the manifest.

    `fmt` forces a format ("jsonl", "parquet", "text"); by default it is chosen per file by suffix.
    `text_mode` for plain text: "file" (a file is one document) or "paragraphs" (split on blank lines).
    `workers` defaults to the CPU count; 1 tokenizes in this process.
    """
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if text_mode not in TEXT_MODES:
        raise DataError(f"unknown text mode {text_mode!r}; expected one of {TEXT_MODES}")
    if not source or not re.fullmatch(r"[\w.-]+", source):
        raise DataError(f"source name must be a non-empty word (letters, digits, _ . -), got {source!r}")
    files = expand_inputs(inputs)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    info = tokenizer_info(tokenizer_path)
    items = ((item, text_field) for item in _work_items(files, fmt, text_field, text_mode, chunk_documents))
    counts: Counter = Counter()
    notes: list[str] = []
    bar = tqdm(desc=f"tokenize {source}", unit="doc", disable=not progress or None, dynamic_ncols=True)
    pool = None
    try:
        if workers == 1:
            _init_worker(None if tokenizer_path is None else str(tokenizer_path))
            results: Iterator = map(_tokenize_star, items)
        else:
            pool = _pool_context().Pool(
                workers, initializer=_init_worker, initargs=(None if tokenizer_path is None else str(tokenizer_path),))
            results = pool.imap(_tokenize_star, items, chunksize=1)
        with ShardWriter(out_dir, source, tokenizer=info, validation_fraction=validation_fraction,
                         split_seed=split_seed, max_shard_tokens=max_shard_tokens) as writer:
            for documents, chunk_counts, chunk_notes in results:
                writer.add_many(documents)
                counts.update(chunk_counts)
                notes.extend(chunk_notes[: MAX_WARNINGS - len(notes)])
                bar.update(len(documents))
                bar.set_postfix(tokens=writer.tokens, refresh=False)
            skipped = {k: int(counts.get(k, 0)) for k in ("malformed_json", "missing_text", "empty")}
            manifest = writer.close({
                "inputs": [{"path": str(f), "format": fmt or detect_format(f), "bytes": f.stat().st_size}
                           for f in files],
                "text_field": text_field,
                "text_mode": text_mode,
                "skipped": skipped,
                "warnings": notes,
            })
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    if skipped["malformed_json"] or skipped["missing_text"]:
        warnings.warn(f"{source}: skipped {skipped['malformed_json']} malformed JSON lines and "
                      f"{skipped['missing_text']} records without text (see {Path(out_dir) / 'manifest.json'})",
                      stacklevel=2)
    return manifest
