"""The Llama Guard 3 hazard taxonomy (MLCommons): S1-S14.

Each category has its model-card name (what reports show: "S11 Suicide & Self-Harm") and the shorter
name the reference prompt writes in its category lines (llama-stack: "S11: Self-Harm."). S14, Code
Interpreter Abuse, is in the 8B guard's list and not in the 1B's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    code: str  # "S1"
    name: str  # the model card's name
    prompt_name: str  # the name in the guard prompt's category lines


CATEGORIES = (
    Category("S1", "Violent Crimes", "Violent Crimes"),
    Category("S2", "Non-Violent Crimes", "Non-Violent Crimes"),
    Category("S3", "Sex-Related Crimes", "Sex Crimes"),
    Category("S4", "Child Sexual Exploitation", "Child Exploitation"),
    Category("S5", "Defamation", "Defamation"),
    Category("S6", "Specialized Advice", "Specialized Advice"),
    Category("S7", "Privacy", "Privacy"),
    Category("S8", "Intellectual Property", "Intellectual Property"),
    Category("S9", "Indiscriminate Weapons", "Indiscriminate Weapons"),
    Category("S10", "Hate", "Hate"),
    Category("S11", "Suicide & Self-Harm", "Self-Harm"),
    Category("S12", "Sexual Content", "Sexual Content"),
    Category("S13", "Elections", "Elections"),
    Category("S14", "Code Interpreter Abuse", "Code Interpreter Abuse"),
)
BY_CODE = {c.code: c for c in CATEGORIES}
CODES = tuple(BY_CODE)


def check_codes(codes: Iterable[str], what: str = "categories") -> list[str]:
    """The codes, upper-cased and validated ("s6" -> "S6"); a ValueError names the unknown ones."""
    out = [c.strip().upper() for c in codes if c.strip()]
    unknown = [c for c in out if c not in BY_CODE]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; expected codes S1-S14 ({', '.join(CODES)})")
    return out


def parse_codes(text: str, what: str = "categories") -> list[str]:
    """`"S6,S8"` (the `--guard-exclude` spelling) -> ["S6", "S8"]."""
    return check_codes(text.split(","), what)
