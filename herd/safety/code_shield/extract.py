"""Find the code in a model's answer: fenced Markdown blocks, each scanned in its own language.

Models put code in ``` fences with a language tag most of the time; the tag picks the rules. An
untagged block is Python when it parses (the common case for an assistant), else C or JavaScript by a
few unmistakable markers, else Python anyway: regex rules and AST fallbacks still apply, and a shield
should look rather than skip. An unterminated last fence is scanned to the end of the text, because a
streamed answer is checked before its closing fence arrives."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from herd.safety.code_shield.scanner import Finding, normalize_language, parses_as_python, scan

_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`{]*)")
_C_MARKERS = re.compile(r"^\s*#\s*include\s*[<\"]|\bint\s+main\s*\(|\bprintf\s*\(|\bmalloc\s*\(", re.MULTILINE)
_JS_MARKERS = re.compile(r"\bfunction\s*\w*\s*\(|=>|\b(?:const|let|var)\s+\w+\s*=|\brequire\s*\(|"
                         r"\bconsole\.|\bdocument\.|\bmodule\.exports\b")


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block: the tag as written ('' if none), the rule language chosen (None = not scanned),
    the code, and the 1-based line of the answer on which the code starts."""

    tag: str
    language: str | None
    code: str
    start_line: int


def guess_language(code: str) -> str:
    """Language of an untagged block (see the module docstring for the order)."""
    if parses_as_python(code):
        return "python"
    if _C_MARKERS.search(code):
        return "c"
    if _JS_MARKERS.search(code):
        return "javascript"
    return "python"


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced block in `text`, in order (the last may be unterminated)."""
    lines = text.splitlines()
    blocks: list[CodeBlock] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        fence, tag = m.group(1), m.group(2)
        close = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        code = "\n".join(lines[i + 1:j]) + "\n"
        language = normalize_language(tag) if tag else guess_language(code)
        blocks.append(CodeBlock(tag, language, code, i + 2))
        i = j + 1
    return blocks


def scan_output(text: str) -> list[Finding]:
    """Findings in every fenced code block of a model answer, with lines counted in the whole answer.
    Blocks tagged with a language herd has no rules for (bash, sql, ...) are not scanned."""
    findings: list[Finding] = []
    for block in code_blocks(text):
        if block.language is None:
            continue
        for f in scan(block.code, block.language):
            findings.append(replace(f, line=f.line + block.start_line - 1))
    return findings
