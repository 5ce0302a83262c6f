"""Reading the configured inputs as one datatrove step, tolerant of bad records.

HTML and plain-text files are one document each; JSONL is one document per line (our own line loop, so
a malformed line or undecodable bytes is a *reject with a reason* rather than a log line); Parquet and
WARC go through datatrove's own readers. Files of all inputs are listed once, sorted, and split
round-robin over ranks, so every rank reads a fixed, reproducible subset and a relaunch reads the same.

Each document gets metadata: `source` (input name), `kind`, `file`, `url` (the record's `url`, else the
file's `file://` URL, with `?record=<line>` for a JSONL record), `timestamp` (the record's
`date`/`timestamp`/`crawl_date`, else the file's mtime; URL
dedup keeps the most recent), `domain_label` (the input's given domain) and `skip` (steps not to apply).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from datatrove.data import Document, DocumentsPipeline

from herd.data.curation.config import InputConfig
from herd.data.curation.steps import HerdStep

_DEFAULT_GLOBS = {"html": "**/*.html", "jsonl": "**/*.jsonl", "text": "**/*.txt", "parquet": "**/*.parquet",
                  "warc": "**/*.warc.gz"}
_TIME_KEYS = ("timestamp", "date", "crawl_date", "last_modified")


def list_input_files(inputs: list[InputConfig]) -> list[tuple[InputConfig, Path]]:
    """All (input, file) pairs in a stable order; a missing input path is a FileNotFoundError naming it."""
    pairs: list[tuple[InputConfig, Path]] = []
    for inp in inputs:
        root = Path(inp.path)
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(p for p in root.glob(inp.glob or _DEFAULT_GLOBS[inp.kind]) if p.is_file())
        else:
            raise FileNotFoundError(f"input {inp.name!r}: path {root} does not exist")
        if inp.limit >= 0:
            files = files[: inp.limit]
        pairs.extend((inp, f) for f in files)
    return pairs


class SourceReader(HerdStep):
    """Reads every configured input; the first step of the per-document stage."""

    step_name = "read"

    def __init__(self, output_dir: str | Path, inputs: list[InputConfig], **kw: Any) -> None:
        super().__init__(output_dir, **kw)
        self.inputs = inputs

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self._open(rank)
        try:
            files = list_input_files(self.inputs)[rank::world_size]
            for inp, path in files:
                for doc in self._read_file(inp, path):
                    self.counts["in"] += 1
                    self.counts["kept"] += 1
                    self.counts[f"source:{inp.name}"] += 1
                    self.stat_update("documents")
                    yield doc
        finally:
            self._close(rank)

    def _meta(self, inp: InputConfig, path: Path, record: dict[str, Any] | None = None,
              position: int | None = None) -> dict[str, Any]:
        record = record or {}
        cache = self.__dict__.setdefault("_file_info", {})
        if path not in cache:  # one stat/resolve per file, not per record
            cache.clear()
            cache[path] = (path.resolve().as_uri(), f"{os.stat(path).st_mtime:.6f}")
        uri, mtime = cache[path]
        url = record.get("url") if isinstance(record.get("url"), str) else None
        if url is None and position is not None:  # a record without a URL: its place, unique, never URL-deduped
            url = f"{uri}?record={position}"
        stamp = next((str(record[k]) for k in _TIME_KEYS if k in record), None)
        meta: dict[str, Any] = {
            "source": inp.name, "kind": inp.kind, "file": str(path), "url": url or uri,
            "timestamp": stamp or mtime, "skip": list(inp.skip),
        }
        if inp.domain:
            meta["domain_label"] = inp.domain
        return meta

    def reject(self, doc_id: str, source: str | None, reason: str, snippet: str = "", path: str | None = None) -> None:
        self.counts["in"] += 1  # "in" counts records (good or bad); "files" counts files
        super().reject(doc_id, source, reason, snippet, path)

    def _read_file(self, inp: InputConfig, path: Path):
        self.counts["files"] += 1
        doc_id = f"{inp.name}/{path.name}"
        if inp.kind == "jsonl":  # streamed line by line: a JSONL file can be larger than memory
            try:
                fh = open(path, "rb")
            except OSError as exc:
                self.reject(doc_id, inp.name, f"unreadable_file:{type(exc).__name__}", str(exc), str(path))
                return
            with fh:
                yield from self._read_jsonl(inp, path, fh)
            return
        if inp.kind in ("parquet", "warc"):
            yield from self._read_datatrove(inp, path)
            return
        try:
            raw = path.read_bytes()
        except OSError as exc:
            self.reject(doc_id, inp.name, f"unreadable_file:{type(exc).__name__}", str(exc), str(path))
            return
        if inp.kind == "html":
            meta = self._meta(inp, path)
            meta["_html_bytes"] = raw
            yield Document(text="", id=doc_id, metadata=meta)
        else:  # text: one document per file
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.reject(doc_id, inp.name, "undecodable_bytes", f"{exc}", str(path))
                return
            yield Document(text=text, id=doc_id, metadata=self._meta(inp, path))

    def _read_jsonl(self, inp: InputConfig, path: Path, lines: Iterable[bytes]):
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            doc_id = f"{inp.name}/{path.name}:{lineno}"
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                self.reject(doc_id, inp.name, "undecodable_bytes", str(exc), str(path))
                continue
            except json.JSONDecodeError as exc:
                self.reject(doc_id, inp.name, "malformed_json", f"{exc}: {line[:200].decode('utf-8', 'replace')}",
                            str(path))
                continue
            if not isinstance(record, dict):
                self.reject(doc_id, inp.name, "malformed_json", f"not an object: {line[:200]!r}", str(path))
                continue
            text = record.get(inp.text_key)
            if not isinstance(text, str):
                self.reject(doc_id, inp.name, f"missing_{inp.text_key}", line[:200].decode("utf-8", "replace"),
                            str(path))
                continue
            meta = self._meta(inp, path, record, lineno)
            if inp.content == "html":
                meta["kind"], meta["_html_bytes"] = "html", text
            rid = record.get("id")
            yield Document(text=text, id=str(rid) if rid is not None else doc_id, metadata=meta)

    def _read_datatrove(self, inp: InputConfig, path: Path):
        """Parquet/WARC through datatrove's readers (WARC needs the `warcio` package)."""
        if inp.kind == "parquet":
            from datatrove.pipeline.readers import ParquetReader as Reader
        else:
            from datatrove.pipeline.readers import WarcReader as Reader
        reader = Reader(str(path.parent), glob_pattern=path.name, text_key=inp.text_key)
        for doc in reader.read_file(path.name):
            meta = self._meta(inp, path, doc.metadata)
            doc.metadata.update(meta)
            if inp.kind == "warc":
                doc.metadata["kind"] = "html"
                doc.metadata["_html_bytes"] = doc.text
            yield doc
