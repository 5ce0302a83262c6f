"""Multiple-choice sets read straight out of OpenAI's `evals` wheel (never installed: it pulls ~40
dependencies; only the zip's `evals/registry/data/` members are read).

Each sample is a chat (`input`: system + user messages) whose user message lists lettered options
("A. ...", "A: ...", "a) ...", one per line, or inline "A: ...; B: ..." as in SocialIQA) and an `ideal` answer ("A", "[A]", or "c) Atrophy"). herd turns it into a
letter-format multiple-choice item: the system and user text, then "Answer:", and one continuation per
option label (" A", " B", ...), scored by log-likelihood.

Where the wheel comes from: `scripts/setup.sh` runs `pip download --no-deps evals==3.0.1.post1` into
`$HERD_CACHE` (default `~/.cache/herd`); `HERD_EVALS_WHEEL` names another copy. Licences differ per set
and are listed in the registry.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from functools import lru_cache
from pathlib import Path

from herd.eval.tasks.base import Item, MCItem
from herd.eval.tasks.packaged import TaskDataMissing

WHEEL_NAME = "evals-3.0.1.post1-py3-none-any.whl"
_OPTION = re.compile(r"^\s*([A-Za-z])\s*[.):]\s*(\S.*)$")
_INLINE_OPTION = re.compile(r"(?:^|[\s;?.!])([A-E]): ")   # "... Others? A: talk; B: hate; C: thank." (SocialIQA)


def wheel_path() -> Path:
    explicit = os.environ.get("HERD_EVALS_WHEEL")
    if explicit:
        path = Path(explicit)
    else:
        path = Path(os.environ.get("HERD_CACHE", Path.home() / ".cache" / "herd")) / WHEEL_NAME
    if not path.is_file():
        raise TaskDataMissing(
            f"this task reads OpenAI's evals wheel, not found at {path}: pip download --no-deps "
            f"evals==3.0.1.post1 -d {path.parent} (scripts/setup.sh does), or set HERD_EVALS_WHEEL"
        )
    return path


@lru_cache(maxsize=16)
def _rows(member: str) -> tuple[dict, ...]:
    with zipfile.ZipFile(wheel_path()) as z:
        text = z.read(f"evals/registry/data/{member}").decode("utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def letter_mc_item(row: dict, item_id: str) -> MCItem | None:
    """A sample as a letter-format item, or None when its options or answer cannot be read."""
    messages = row.get("input")
    if not isinstance(messages, list) or not messages:
        return None
    user = str(messages[-1].get("content", ""))
    system = "\n\n".join(str(m.get("content", "")) for m in messages[:-1] if m.get("role") == "system")
    labels = []
    for line in user.splitlines():
        m = _OPTION.match(line)
        if m and (not labels or ord(m.group(1).lower()) == ord(labels[-1].lower()) + 1):
            labels.append(m.group(1))
        elif m and m.group(1).lower() == "a":      # a new option list restarts (a passage quoted options)
            labels = [m.group(1)]
    if len(labels) < 2:
        inline = [m.group(1) for m in _INLINE_OPTION.finditer(user)]
        if inline[:2] == ["A", "B"] and all(ord(b) == ord(a) + 1 for a, b in zip(inline, inline[1:])):
            labels = inline
    if len(labels) < 2:
        return None
    ideal = str(row.get("ideal", "")).strip().strip("[]() ")
    if not ideal:
        return None
    wanted = ideal[0].lower()
    gold = next((i for i, lab in enumerate(labels) if lab.lower() == wanted), None)
    if gold is None:
        return None
    body = user.rstrip()
    if not body.endswith("Answer:"):
        body += "\nAnswer:"
    query = f"{system}\n\n{body}" if system else body
    return MCItem(item_id, query, tuple(" " + lab for lab in labels), gold)


def load_set(name: str, member: str) -> list[Item]:
    items: list[Item] = []
    for n, row in enumerate(_rows(member)):
        item = letter_mc_item(row, f"{name}-{n:05d}")
        if item is not None:
            items.append(item)
    if not items:
        raise TaskDataMissing(f"{member} in {wheel_path()} holds no readable multiple-choice sample")
    return items
