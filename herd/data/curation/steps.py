"""herd's per-document curation steps as datatrove pipeline steps, plus the bookkeeping they share.

The document-level logic lives in extract/filters/pii/langid/blocklist (plain functions and objects,
testable without datatrove); this module adapts it to datatrove's `PipelineStep` protocol (a generator
over `Document`s, run per rank by an executor) and adds what a pipeline needs around it:

* **counts** per step and rank (`in`, `kept`, `removed:<reason>`, `rejected:<reason>`) written as
  JSON when the step's generator ends, which the report sums over ranks;
* **examples** of removed documents (the first `examples_per_step` per rank) for the report;
* **rejects**: bad input (malformed JSON, undecodable bytes, HTML that breaks the parser, empty
  documents) goes to `rejects/<stage>-<rank>.jsonl` with its reason; one bad record never raises.

Files are opened with "w" per (stage, step, rank), so a relaunched task rewrites its own files and
a run twice gives the same outputs.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import IO, Any, Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

SNIPPET_CHARS = 300


class _Sink:
    """A lazily opened JSONL file for one (kind, stage, step, rank); `limit` caps the records written."""

    def __init__(self, path: Path, limit: int | None = None) -> None:
        self.path, self.limit, self.count = path, limit, 0
        self._fh: IO[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self.limit is not None and self.count >= self.limit:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class HerdStep(PipelineStep):
    """Base of herd's steps: counting, examples of removals, rejects. Subclasses implement `process`.

    `process(doc, rank)` returns the document (kept, possibly modified) or None after calling
    `self.remove(...)` or `self.reject(...)`. An unexpected exception on one document is caught and
    that document is rejected with the exception's type, so one bad record never kills a task.
    """

    type = "herd"
    step_name = "step"

    def __init__(self, output_dir: str | Path, stage: str = "filter", examples_per_step: int = 5) -> None:
        super().__init__()
        self.output_dir = str(output_dir)
        self.stage = stage
        self.examples_per_step = examples_per_step
        self.name = self.step_name

    # --- bookkeeping
    def _open(self, rank: int) -> None:
        out = Path(self.output_dir)
        self.counts: Counter[str] = Counter()
        self._examples = _Sink(out / "removed" / self.step_name / f"{rank:05d}.jsonl", self.examples_per_step)
        self._rejects = _Sink(out / "rejects" / f"{self.stage}-{self.step_name}-{rank:05d}.jsonl")

    def _close(self, rank: int) -> None:
        self._examples.close()
        self._rejects.close()
        path = Path(self.output_dir) / "counts" / self.stage / self.step_name / f"{rank:05d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(self.counts), sort_keys=True))

    def remove(self, doc: Document, reason: str, **extra: Any) -> None:
        """A well-formed document that a curation rule drops (counted; the first few kept as examples)."""
        self.counts[f"removed:{reason}"] += 1
        self.counts[f"lang_removed:{doc.metadata.get('lang', '?')}"] += 1
        self.stat_update(f"removed:{reason}")
        self._examples.write(
            {"id": doc.id, "source": doc.metadata.get("source"), "reason": reason,
             "text": doc.text[:SNIPPET_CHARS], **extra}
        )

    def reject(self, doc_id: str, source: str | None, reason: str, snippet: str = "", path: str | None = None) -> None:
        """Bad input: counted and written to the rejects file with its reason."""
        self.counts[f"rejected:{reason}"] += 1
        self.stat_update(f"rejected:{reason}")
        self._rejects.write(
            {"id": doc_id, "source": source, "file": path, "step": self.step_name, "reason": reason,
             "snippet": snippet[:SNIPPET_CHARS]}
        )

    def count(self, key: str, value: int = 1) -> None:
        self.counts[key] += value

    # --- the datatrove protocol
    def process(self, doc: Document, rank: int) -> Document | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def begin(self, rank: int, world_size: int) -> None:
        """Per-rank setup (load models, open files); runs inside the worker process."""

    def end(self, rank: int) -> Iterator[Document]:
        """Per-rank teardown; may yield documents held back (e.g. a buffered bucket)."""
        return iter(())

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self._open(rank)
        try:
            self.begin(rank, world_size)
            for doc in data or ():
                self.counts["in"] += 1
                self.stat_update("in")
                with self.track_time():
                    try:
                        out = self.process(doc, rank)
                    except Exception as exc:  # noqa: BLE001 - one bad record never kills a task
                        self.reject(doc.id, doc.metadata.get("source"), f"{self.step_name}_error:{type(exc).__name__}",
                                    f"{exc}: {doc.text[:200]}")
                        out = None
                if out is not None:
                    self.counts["kept"] += 1
                    yield out
            for out in self.end(rank):
                self.counts["kept"] += 1
                yield out
        finally:
            self._close(rank)


class ExtractStep(HerdStep):
    """HTML -> main text with herd's extractor; parser failures and empty pages are rejects."""

    step_name = "extract"

    def process(self, doc: Document, rank: int) -> Document | None:
        raw = doc.metadata.pop("_html_bytes", None)
        if doc.metadata.get("kind") != "html":
            return doc
        if raw is None:
            raw = doc.text
        if "extract" in doc.metadata.get("skip", ()):
            doc.text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            return doc
        from herd.data.curation.extract import extract_main_content

        try:
            result = extract_main_content(raw, url=doc.metadata.get("url"))
        except Exception as exc:  # noqa: BLE001 - the extractor promises not to raise; guard anyway
            self.reject(doc.id, doc.metadata.get("source"), f"html_parse_error:{type(exc).__name__}",
                        _snippet(raw), doc.metadata.get("file"))
            return None
        if result.error:
            reason = "empty_document" if result.error in ("no_content", "empty_input") else result.error
            self.reject(doc.id, doc.metadata.get("source"), reason, _snippet(raw), doc.metadata.get("file"))
            return None
        doc.text = result.text
        if result.title:
            doc.metadata["title"] = result.title
        return doc


class EmptyCheckStep(HerdStep):
    """Documents with fewer than `min_chars` non-space characters are rejects (`empty_document`)."""

    step_name = "empty"

    def __init__(self, output_dir: str | Path, min_chars: int = 1, step_name: str = "empty", **kw: Any) -> None:
        self.step_name = step_name
        super().__init__(output_dir, **kw)
        self.min_chars = min_chars

    def process(self, doc: Document, rank: int) -> Document | None:
        if len(doc.text.strip()) < self.min_chars:
            self.reject(doc.id, doc.metadata.get("source"), "empty_document", doc.text, doc.metadata.get("file"))
            return None
        return doc


class BlocklistStep(HerdStep):
    """Drops documents whose URL is on the domain blocklist (adult, unsafe, known PII-heavy sites)."""

    step_name = "blocklist"

    def begin(self, rank: int, world_size: int) -> None:
        from herd.data.curation.blocklist import DomainBlocklist

        self._blocklist = DomainBlocklist.default()

    def process(self, doc: Document, rank: int) -> Document | None:
        url = doc.metadata.get("url")
        if not url or "blocklist" in doc.metadata.get("skip", ()):
            return doc
        reason = self._blocklist.is_blocked(url)
        if reason:
            self.remove(doc, f"blocked:{reason}", url=url)
            return None
        return doc


class LangIdStep(HerdStep):
    """Sets `metadata.lang`/`lang_score` (fastText lid.176); the language keys dedup and the mix."""

    step_name = "langid"

    def begin(self, rank: int, world_size: int) -> None:
        from herd.data.curation.langid import LanguageIdentifier

        self._lid = LanguageIdentifier()

    def process(self, doc: Document, rank: int) -> Document | None:
        if "langid" in doc.metadata.get("skip", ()):
            doc.metadata.setdefault("lang", "en")
            return doc
        lang, score = self._lid.predict(doc.text)
        doc.metadata["lang"], doc.metadata["lang_score"] = lang, round(float(score), 4)
        self.count(f"lang:{lang}")
        return doc


_FILTER_CLASSES = {
    "gopher_repetition": "GopherRepetitionFilter",
    "gopher_quality": "GopherQualityFilter",
    "c4": "C4QualityFilter",
    "fineweb": "FineWebQualityFilter",
    "dirty_words": "DirtyWordsFilter",
}


class FiltersStep(HerdStep):
    """Heuristic quality filters in order; the first that says no removes the document with its reason."""

    step_name = "filters"

    def __init__(self, output_dir: str | Path, names: list[str], models_dir: str | Path | None = None,
                 **kw: Any) -> None:
        super().__init__(output_dir, **kw)
        self.names = list(names)
        self.models_dir = str(models_dir) if models_dir else None

    def begin(self, rank: int, world_size: int) -> None:
        from herd.data.curation import filters

        self._filters = [getattr(filters, _FILTER_CLASSES[n])() for n in self.names if n != "token_kl"]
        # token_kl: one fitted distribution per language (models/token_kl-<lang>.json, from the train stage)
        self._kl: dict[str, Any] = {}
        if "token_kl" in self.names and self.models_dir:
            for path in Path(self.models_dir).glob("token_kl-*.json"):
                self._kl[path.stem.split("-", 1)[1]] = filters.TokenDistributionKLFilter.load(path)

    def process(self, doc: Document, rank: int) -> Document | None:
        if "filters" in doc.metadata.get("skip", ()):
            return doc
        lang = doc.metadata.get("lang", "en")
        chain = self._filters + ([self._kl[lang]] if lang in self._kl else [])
        for flt in chain:
            res = flt(doc.text, lang=lang)
            if not res.keep:
                self.remove(doc, f"{flt.name}:{res.reason}")
                return None
        return doc


class PiiStep(HerdStep):
    """Replaces e-mail addresses, phone numbers, IPs... with placeholders; counts what it replaced."""

    step_name = "pii"

    def process(self, doc: Document, rank: int) -> Document | None:
        if "pii" in doc.metadata.get("skip", ()):
            return doc
        from herd.data.curation.pii import scrub_pii

        doc.text, counts = scrub_pii(doc.text)
        for kind, n in counts.items():
            if n:
                self.count(f"pii:{kind}", n)
        return doc


def _snippet(raw: str | bytes) -> str:
    if isinstance(raw, bytes):
        return raw[:SNIPPET_CHARS].decode("utf-8", "replace")
    return raw[:SNIPPET_CHARS]
