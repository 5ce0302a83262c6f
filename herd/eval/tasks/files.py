"""Ad-hoc tasks from a JSONL file (`herd eval run --task-file FILE.jsonl`).

Each line is one item:
- multiple choice: `{"query": ..., "choices": [...], "gold": <index>}` (optional `"id"`);
- generation: `{"prompt": ..., "answer": ...}` (optional `"id"`).
A file holds one kind. Errors name the file and line, before any model work.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from herd.eval.tasks.base import GenerateItem, Item, MCItem, Task


class TaskFileError(ValueError):
    pass


def _item(row: object, where: str, n: int) -> Item:
    if not isinstance(row, dict):
        raise TaskFileError(f"{where}: each line must be a JSON object")
    item_id = str(row.get("id", n))
    if "choices" in row:
        missing = [k for k in ("query", "choices", "gold") if k not in row]
        if missing:
            raise TaskFileError(f"{where}: a multiple-choice line needs {', '.join(missing)}")
        query, choices, gold = row["query"], row["choices"], row["gold"]
        if not isinstance(query, str) or not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise TaskFileError(f"{where}: query must be a string and choices a list of strings")
        if isinstance(gold, bool) or not isinstance(gold, int):
            raise TaskFileError(f"{where}: gold must be the index of the right choice, got {gold!r}")
        try:
            return MCItem(item_id, query, tuple(choices), gold)
        except ValueError as exc:
            raise TaskFileError(f"{where}: {exc}") from None
    if "prompt" in row and "answer" in row:
        if not isinstance(row["prompt"], str) or not isinstance(row["answer"], (str, int, float)):
            raise TaskFileError(f"{where}: prompt must be a string and answer a string or number")
        return GenerateItem(item_id, row["prompt"], str(row["answer"]))
    raise TaskFileError(f"{where}: expected {{query, choices, gold}} or {{prompt, answer}}, got keys {sorted(row)}")


def load_task_file(path: str | Path) -> Task:
    """A Task over the file's items; its version is the file's content hash (results key on it)."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"task file {path} does not exist")
    raw = path.read_bytes()
    items: list[Item] = []
    for n, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskFileError(f"{path}:{n}: not JSON ({exc.msg})") from None
        items.append(_item(row, f"{path}:{n}", n))
    if not items:
        raise TaskFileError(f"{path} holds no items")
    kinds = {type(i) for i in items}
    if len(kinds) > 1:
        raise TaskFileError(f"{path} mixes multiple-choice and generation lines; use one kind per file")
    if len({i.id for i in items}) != len(items):
        raise TaskFileError(f"{path}: item ids must be unique")
    kind = "mc" if isinstance(items[0], MCItem) else "generate"
    return Task(
        name=path.stem, version=hashlib.sha256(raw).hexdigest()[:12], kind=kind, source=str(path),
        licence="(user file)", description=f"ad-hoc {kind} task from {path.name}", load=lambda: list(items),
    )
