"""Pulling the answer out of generated text, and comparing it with the gold answer."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
EXTRACTORS = ("first_line", "last_number", "first_number")


def normalize_number(text: str) -> str:
    """'1,234.50' -> '1234.5'; '-3.0' -> '-3'."""
    text = text.replace(",", "")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def extract(text: str, how: str) -> str | None:
    """The answer in `text` by the task's rule, or None when there is none."""
    if how == "first_line":
        stripped = text.strip()
        return stripped.splitlines()[0].strip() if stripped else None
    if how in ("last_number", "first_number"):
        numbers = _NUMBER.findall(text)
        if not numbers:
            return None
        return normalize_number(numbers[-1] if how == "last_number" else numbers[0])
    raise ValueError(f"unknown answer extraction {how!r}; one of {', '.join(EXTRACTORS)}")


def matches(predicted: str | None, gold: str, how: str) -> bool:
    if predicted is None:
        return False
    if how in ("last_number", "first_number"):
        gold_n = normalize_number(gold.strip())
        try:
            return abs(float(predicted) - float(gold_n)) < 1e-9
        except ValueError:
            return predicted == gold_n
    return predicted.strip() == gold.strip()
