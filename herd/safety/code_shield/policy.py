"""What to do about findings: block, warn or ignore, per severity.

The default follows Code Shield's treatment: block what is exploitable as written (high, critical),
warn on likely weaknesses (medium), ignore the low-confidence hints (low) that would otherwise make
every answer with `random.shuffle` or a literal `os.system("clear")` noisy. `herd serve --code-shield
warn` maps to `Policy.warn_only()`: nothing is blocked, medium and above are reported."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from herd.safety.code_shield.rules import SEVERITIES
from herd.safety.code_shield.scanner import Finding


class Treatment(str, Enum):
    """Actions, weakest first; a decision takes the strongest any finding calls for."""

    IGNORE = "ignore"
    WARN = "warn"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        return list(Treatment).index(self)


DEFAULT_TREATMENTS: dict[str, Treatment] = {
    "low": Treatment.IGNORE, "medium": Treatment.WARN, "high": Treatment.BLOCK, "critical": Treatment.BLOCK,
}


@dataclass(frozen=True)
class Policy:
    """Severity -> treatment (every severity must be mapped), with per-rule overrides by pattern_id
    (a deployment that must allow, say, `0.0.0.0` binds sets that rule to ignore)."""

    treatments: Mapping[str, Treatment] = field(default_factory=lambda: dict(DEFAULT_TREATMENTS))
    overrides: Mapping[str, Treatment] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [s for s in SEVERITIES if s not in self.treatments]
        if missing:
            raise ValueError(f"code-shield policy: no treatment for severity {missing[0]!r}")
        extra = [s for s in self.treatments if s not in SEVERITIES]
        if extra:
            raise ValueError(f"code-shield policy: unknown severity {extra[0]!r} (known: {', '.join(SEVERITIES)})")

    @classmethod
    def from_mode(cls, mode: str) -> Policy:
        """'block' = the default table; 'warn' = warn_only(); 'off' = ignore everything."""
        if mode == "block":
            return cls()
        if mode == "warn":
            return cls.warn_only()
        if mode == "off":
            return cls({s: Treatment.IGNORE for s in SEVERITIES})
        raise ValueError(f"code-shield mode must be block, warn or off, got {mode!r}")

    @classmethod
    def warn_only(cls) -> Policy:
        """Never block; warn on medium and above."""
        return cls({s: Treatment.IGNORE if s == "low" else Treatment.WARN for s in SEVERITIES})

    def treatment(self, finding: Finding) -> Treatment:
        """The action one finding calls for."""
        return self.overrides.get(finding.pattern_id, self.treatments[finding.severity])


@dataclass(frozen=True)
class Decision:
    """The action for a scan and the findings that caused it (those whose treatment equals the action;
    empty when the action is IGNORE)."""

    action: Treatment
    findings: tuple[Finding, ...] = ()

    @property
    def blocked(self) -> bool:
        return self.action is Treatment.BLOCK


def decide(findings: Iterable[Finding], policy: Policy | None = None) -> Decision:
    """The strongest treatment any finding calls for under `policy` (default: the documented table)."""
    policy = policy or Policy()
    treated = [(policy.treatment(f), f) for f in findings]
    action = max((t for t, _ in treated), key=lambda t: t.rank, default=Treatment.IGNORE)
    if action is Treatment.IGNORE:
        return Decision(Treatment.IGNORE)
    return Decision(action, tuple(f for t, f in treated if t is action))
