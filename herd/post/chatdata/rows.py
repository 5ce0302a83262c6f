"""Dialog rows that keep their record's other fields (id, capability, topic, scores) through curation.

`herd.post.records.read_dialogs` returns bare `Dialog`s; curation must carry everything else a record
holds from one step to the next (a `score` step's fields are what `dedup` sorts by), so rows are read
here with the same parser and the same skip-and-count rule, and written back as herd JSONL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from herd.post.records import Dialog, ReadReport, RecordError, iter_json_records, parse_dialog
from herd.tokenizer.chat import Message

# Keys that hold the dialog itself in one of the formats read; every other key is carried along.
DIALOG_KEYS = frozenset({"messages", "conversations", "prompt", "completion"})

T = TypeVar("T")


@dataclass
class Row:
    """One dialog, the file it came from, and its record's other fields."""

    dialog: Dialog
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def messages(self) -> tuple[Message, ...]:
        return self.dialog.messages

    def to_json(self) -> dict[str, Any]:
        return {"messages": [message_json(m) for m in self.dialog.messages], **self.extra}


def message_json(message: Message) -> dict[str, Any]:
    """herd's message dict: role and content, plus tool calls / end_of_message / `weight: 0` where present."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments},
                              **({"id": c.call_id} if c.call_id else {})} for c in message.tool_calls]
    if message.end_of_message:
        out["end_of_message"] = True
    if not message.train:
        out["weight"] = 0
    return out


def read_rows(paths: Sequence[str | Path], format: str = "auto", limit: int | None = None) -> ReadReport[Row]:
    """Rows from dialog files; malformed records counted by reason (ReadReport.skipped), never fatal."""
    report: ReadReport[Row] = ReadReport([])
    files = [Path(p) for p in paths]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such data file")
    for path in files:
        for value in iter_json_records(path, report.skipped):
            if limit is not None and len(report.records) >= limit:
                break
            try:
                dialog = parse_dialog(value, format)
            except RecordError as exc:
                report.skipped[exc.reason] += 1
                continue
            extra = {k: v for k, v in value.items() if k not in DIALOG_KEYS}
            report.records.append(Row(dialog, extra, path.name.split(".")[0]))
    report.total = len(report.records) + sum(report.skipped.values())
    return report


def write_rows(path: str | Path, rows: Iterable[Row]) -> int:
    """herd JSONL, one dialog a line; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def report_path(out: str | Path, report: str | Path | None = None) -> Path:
    """Where the JSON report goes: `--report`, else beside the output (`clean.jsonl` -> `clean.report.json`)."""
    if report:
        return Path(report)
    out = Path(out)
    return out.with_name(out.name.split(".")[0] + ".report.json")


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_summary(report: ReadReport[Any]) -> dict[str, Any]:
    """The reader's counts as a report section."""
    return {"records": report.total, "read": len(report.records), "skipped": dict(report.skipped.most_common())}


def progress(items: Iterable[T], total: int | None, desc: str, enabled: bool = True) -> Iterator[T]:
    """A tqdm bar on stderr when enabled (the CLI), the plain iterable otherwise (tests, library use)."""
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, dynamic_ncols=True)
