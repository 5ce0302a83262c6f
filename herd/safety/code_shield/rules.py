"""Code-shield rules: the YAML format, its validation, and the rule files shipped with herd.

Rules live in data, not code, so a deployment can add or tighten one without a release, and so each
rule carries the facts a reviewer needs (CWE id, severity, why it is flagged) next to its matcher.

Format (one file per language under ``rules/``; a file is a mapping with a ``rules:`` list)::

    rules:
      - pattern_id: python.subprocess-shell-true   # unique, "<language>.<slug>"
        cwe_id: CWE-78                             # "CWE-<number>"
        description: subprocess call with shell=True runs the command through /bin/sh
        severity: high                             # low | medium | high | critical
        language: python                           # python | c | javascript
        prescan: 'shell\\s*='                      # cheap regex; the rule runs only if it matches
        ast: subprocess_shell_true                 # a Python-AST matcher (herd.safety.code_shield.ast_matchers)
        fallback: 'shell\\s*=\\s*True'             # optional, AST rules only: regex used when the code
                                                   # does not parse (findings marked fallback=True)
      - pattern_id: python.tempfile-mktemp
        ...
        regex: '\\bmktemp\\s*\\('                  # or a precise regex (Python `re`, multiline)

Exactly one of ``regex`` / ``ast`` is required; ``ast`` is for Python only. Severity scheme:
``low`` (worth a look, often fine), ``medium`` (likely a weakness), ``high`` (exploitable as written
in common use), ``critical`` (memory-unsafe or always exploitable). Unknown fields are errors, so a
typo (``severty``) cannot silently disable a rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
LANGUAGES: tuple[str, ...] = ("python", "c", "javascript")
_REQUIRED = ("pattern_id", "cwe_id", "description", "severity", "language", "prescan")
_OPTIONAL = ("regex", "ast", "fallback")
_CWE = re.compile(r"CWE-[1-9][0-9]*")
_PATTERN_ID = re.compile(r"[a-z0-9+]+\.[a-z0-9][a-z0-9._-]*")


class RuleError(ValueError):
    """A rule file or rule is malformed; the message names the source, the rule and the field."""


@dataclass(frozen=True)
class Rule:
    """One validated rule with its regexes compiled (compiled once: scans are latency-bound)."""

    pattern_id: str
    cwe_id: str
    description: str
    severity: str
    language: str
    prescan: re.Pattern[str]
    regex: re.Pattern[str] | None = None
    ast: str | None = None
    fallback: re.Pattern[str] | None = None

    @property
    def rank(self) -> int:
        """Position in SEVERITIES (0 = low), for comparisons."""
        return SEVERITIES.index(self.severity)


def _compile(source: str, rule: str, field: str, value: Any) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise RuleError(f"{source}: rule {rule}: field {field!r} must be a non-empty regex string")
    try:
        return re.compile(value, re.MULTILINE)
    except re.error as e:
        raise RuleError(f"{source}: rule {rule}: field {field!r} is not a valid regex ({e})") from None


def parse_rule(raw: Any, source: str = "<rules>", index: int = 0) -> Rule:
    """Validate one rule mapping; raise RuleError naming the rule and the offending field."""
    if not isinstance(raw, dict):
        raise RuleError(f"{source}: rule #{index + 1}: must be a mapping, got {type(raw).__name__}")
    pid = raw.get("pattern_id")
    name = repr(pid) if isinstance(pid, str) and pid else f"#{index + 1}"
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise RuleError(f"{source}: rule {name}: unknown field {unknown[0]!r} "
                        f"(allowed: {', '.join(_REQUIRED + _OPTIONAL)})")
    for field in _REQUIRED:
        if field not in raw:
            raise RuleError(f"{source}: rule {name}: missing field {field!r}")
        if field not in ("prescan", "cwe_id") and (not isinstance(raw[field], str) or not raw[field].strip()):
            raise RuleError(f"{source}: rule {name}: field {field!r} must be a non-empty string")
    if not _PATTERN_ID.fullmatch(pid):
        raise RuleError(f"{source}: rule {name}: field 'pattern_id' must look like 'python.some-slug'")
    if not _CWE.fullmatch(str(raw["cwe_id"])):
        raise RuleError(f"{source}: rule {name}: field 'cwe_id' must look like 'CWE-78', got {raw['cwe_id']!r}")
    if raw["severity"] not in SEVERITIES:
        raise RuleError(f"{source}: rule {name}: field 'severity' must be one of {', '.join(SEVERITIES)}, "
                        f"got {raw['severity']!r}")
    if raw["language"] not in LANGUAGES:
        raise RuleError(f"{source}: rule {name}: field 'language' must be one of {', '.join(LANGUAGES)}, "
                        f"got {raw['language']!r}")
    if ("regex" in raw) == ("ast" in raw):
        raise RuleError(f"{source}: rule {name}: exactly one of field 'regex' or field 'ast' is required")
    ast_name = raw.get("ast")
    if ast_name is not None:
        from herd.safety.code_shield.ast_matchers import MATCHERS

        if raw["language"] != "python":
            raise RuleError(f"{source}: rule {name}: field 'ast' is for language python only")
        if ast_name not in MATCHERS:
            raise RuleError(f"{source}: rule {name}: field 'ast' names no matcher: {ast_name!r} "
                            f"(known: {', '.join(sorted(MATCHERS))})")
    elif "fallback" in raw:
        raise RuleError(f"{source}: rule {name}: field 'fallback' is for 'ast' rules only")
    return Rule(
        pattern_id=pid, cwe_id=raw["cwe_id"], description=raw["description"].strip(),
        severity=raw["severity"], language=raw["language"],
        prescan=_compile(source, name, "prescan", raw["prescan"]),
        regex=_compile(source, name, "regex", raw["regex"]) if "regex" in raw else None,
        ast=ast_name,
        fallback=_compile(source, name, "fallback", raw["fallback"]) if "fallback" in raw else None,
    )


def parse_rules(text: str, source: str = "<rules>") -> list[Rule]:
    """Parse and validate a YAML rule document (see the module docstring for the format)."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RuleError(f"{source}: not valid YAML ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError(f"{source}: a rule file is a mapping with a 'rules:' list")
    rules = [parse_rule(raw, source, i) for i, raw in enumerate(doc["rules"])]
    seen: set[str] = set()
    for rule in rules:
        if rule.pattern_id in seen:
            raise RuleError(f"{source}: rule {rule.pattern_id!r}: duplicate pattern_id")
        seen.add(rule.pattern_id)
    return rules


def load_rule_file(path: str | Path) -> list[Rule]:
    """Rules from one YAML file on disk (a deployment's own rules)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RuleError(f"{path}: cannot read rule file ({e.strerror})") from None
    return parse_rules(text, str(path))


@lru_cache(maxsize=1)
def builtin_rules() -> tuple[Rule, ...]:
    """Every rule shipped in herd/safety/code_shield/rules/*.yaml (cached: parsed once per process)."""
    folder = resources.files("herd.safety.code_shield") / "rules"
    rules: list[Rule] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            rules.extend(parse_rules(entry.read_text(encoding="utf-8"), f"rules/{entry.name}"))
    ids = [r.pattern_id for r in rules]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup:
        raise RuleError(f"rules/: rule {dup!r}: duplicate pattern_id across files")
    return tuple(rules)
