"""Scan one piece of source code with the rules of its language.

Two stages, as in Code Shield: every rule's `prescan` regex runs over the whole text first (one C-speed
pass each), and only the rules whose prescan matched pay for precise matching, so clean code, the
common case in model output, costs a few regex searches and no parse. Python is parsed at most once
per scan and only when an AST rule survived the prescan. Code that does not parse (a fragment, a
model's half-finished answer) still gets the regex rules and the AST rules' `fallback` regexes; those
findings carry fallback=True because they are coarser."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from herd.safety.code_shield.ast_matchers import MATCHERS
from herd.safety.code_shield.pyast import PyContext
from herd.safety.code_shield.rules import Rule, builtin_rules

_ALIASES = {
    "python": "python", "py": "python", "python3": "python", "py3": "python", "ipython": "python",
    "c": "c", "cpp": "c", "c++": "c", "cc": "c", "cxx": "c", "h": "c", "hpp": "c", "objc": "c",
    "javascript": "javascript", "js": "javascript", "node": "javascript", "nodejs": "javascript",
    "jsx": "javascript", "mjs": "javascript", "ts": "javascript", "typescript": "javascript", "tsx": "javascript",
}


@dataclass(frozen=True)
class Finding:
    """One rule hit. `line` is 1-based in the scanned text; `fallback` marks a coarse regex finding
    made because the Python did not parse."""

    pattern_id: str
    cwe_id: str
    severity: str
    line: int
    snippet: str
    description: str
    language: str = "python"
    fallback: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (for logs and the server's moderation answers)."""
        return asdict(self)


def normalize_language(language: str) -> str | None:
    """The rule language for a name or fence tag ('py', 'C++', 'ts' ...), or None when unsupported."""
    return _ALIASES.get(language.strip().lower())


def _line_of(code: str, offset: int) -> int:
    return code.count("\n", 0, offset) + 1


def _snippet(lines: list[str], line: int) -> str:
    return lines[line - 1].strip()[:200] if 0 < line <= len(lines) else ""


def _comment_line(lines: list[str], line: int, language: str) -> bool:
    """Whether a regex hit sits on a whole-line comment (documentation about a danger is not one)."""
    text = lines[line - 1].lstrip() if 0 < line <= len(lines) else ""
    return text.startswith("#" if language == "python" else ("//", "/*", "*"))


def _regex_hits(rule: Rule, pattern: re.Pattern[str], code: str, lines: list[str]) -> Iterable[int]:
    for m in pattern.finditer(code):
        line = _line_of(code, m.start())
        if not _comment_line(lines, line, rule.language):
            yield line


def scan(code: str, language: str = "python", rules: Iterable[Rule] | None = None) -> list[Finding]:
    """Findings for `code` in `language`, sorted by line; [] for a language without rules.

    `rules` defaults to herd's shipped rules (herd/safety/code_shield/rules/*.yaml)."""
    lang = normalize_language(language)
    if lang is None:
        return []
    candidates = [r for r in (builtin_rules() if rules is None else rules)
                  if r.language == lang and r.prescan.search(code)]
    if not candidates:
        return []
    lines = code.splitlines()
    ctx: PyContext | None = None
    if lang == "python" and any(r.ast for r in candidates):
        try:
            ctx = PyContext.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            ctx = None
    found: dict[tuple[str, int], Finding] = {}

    def add(rule: Rule, line: int, fallback: bool = False) -> None:
        found.setdefault((rule.pattern_id, line), Finding(
            rule.pattern_id, rule.cwe_id, rule.severity, line, _snippet(lines, line), rule.description,
            rule.language, fallback))

    for rule in candidates:
        if rule.regex is not None:
            for line in _regex_hits(rule, rule.regex, code, lines):
                add(rule, line)
        elif ctx is not None:
            for node in MATCHERS[rule.ast](ctx):  # type: ignore[index]
                add(rule, getattr(node, "lineno", 1))
        elif rule.fallback is not None:
            for line in _regex_hits(rule, rule.fallback, code, lines):
                add(rule, line, fallback=True)
    return sorted(found.values(), key=lambda f: (f.line, f.pattern_id))


def parses_as_python(code: str) -> bool:
    """Whether `code` is syntactically valid Python (used to tag untagged code blocks)."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True
