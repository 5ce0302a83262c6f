"""Domain classifiers (general / code / math) and a knowledge-category classifier for downsampling.

Where the labels come from (the report repeats this):
* **domain**: an input's *given* label when its config says `domain = "code"` (e.g. standard-library
  source files) or `"math"` (synthetic worked problems); unlabelled documents get a *heuristic seed*
  (`domain_seed`): code when most non-blank lines look like code, math when the text is dense in
  numbers, operators and math words; otherwise general. The classifier (a hashed n-gram softmax, see
  quality_model) learns from those seeds and labels every document, including ones the seeds missed.
* **knowledge category**: keyword seeds (`KNOWLEDGE_KEYWORDS`, a document is seeded when one
  category has >= 3 keyword hits and >= 50% of its hits); the classifier generalises to the rest.
  Over-represented categories (share above `category_cap` of the sample) are downsampled: each of
  their documents is kept with probability cap/share, decided by a hash of its id (deterministic).

The mix category is `multilingual` for non-English documents and the domain otherwise.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

DOMAINS = ("general", "code", "math")
KNOWLEDGE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "computing": ("python", "function", "module", "class", "method", "return", "file", "object", "argument",
                  "software", "program", "server", "socket", "thread", "string", "byte", "api", "library",
                  "parameter", "exception", "variable", "compiler", "database", "protocol", "algorithm"),
    "science_math": ("theorem", "equation", "integer", "proof", "matrix", "probability", "physics", "chemistry",
                     "biology", "energy", "atom", "experiment", "logarithm", "derivative", "fraction", "number",
                     "sum", "average", "percent", "total"),
    "humanities": ("history", "philosophy", "art", "music", "literature", "war", "century", "religion", "poem",
                   "novel", "language", "culture", "king", "empire", "painting"),
    "society": ("law", "government", "economy", "business", "politics", "market", "tax", "health", "court",
                "election", "company", "price", "money", "policy", "school"),
    "everyday": ("recipe", "travel", "sport", "game", "home", "family", "food", "garden", "holiday", "shop",
                 "weather", "friend", "buy", "car", "house"),
}
KNOWLEDGE = tuple(KNOWLEDGE_KEYWORDS) + ("other",)

_CODE_LINE = re.compile(
    r"(^\s*(def|class|import|from|return|if|elif|else|for|while|try|except|with|#include|public|private|"
    r"function|var|let|const)\b)|([;{}]\s*$)|(^\s*@\w+)|(\w+\s*=\s*[\w\[\({'\"])|(^\s{4,}\S)"
)
_MATH_TOKEN = re.compile(r"\d+(?:\.\d+)?|[=+\-*/×÷^%]|\\(?:frac|sum|int|sqrt|cdot)|\$")
_MATH_WORDS = re.compile(r"\b(answer|solve|equation|total|sum|product|divide[sd]?|multipl\w+|percent|average|"
                         r"remainder|theorem|proof|compute|calculate)\b", re.I)
_WORD = re.compile(r"[a-z]+")


def domain_seed(text: str, given: str | None = None) -> tuple[str, str]:
    """(label, where it came from): the given label, else a heuristic seed."""
    if given:
        return given, "given"
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if lines:
        code_share = sum(bool(_CODE_LINE.search(ln)) for ln in lines) / len(lines)
        if code_share >= 0.6 and len(lines) >= 3:
            return "code", "heuristic"
    words = max(len(text.split()), 1)
    math_density = len(_MATH_TOKEN.findall(text)) / words
    if math_density >= 0.25 and len(_MATH_WORDS.findall(text)) >= 2:
        return "math", "heuristic"
    return "general", "heuristic"


def knowledge_seed(text: str) -> str | None:
    """The keyword category when the evidence is clear (>= 3 hits and >= half of all hits), else None."""
    words = Counter(_WORD.findall(text.lower()))
    hits = {cat: sum(words[k] for k in kws) for cat, kws in KNOWLEDGE_KEYWORDS.items()}
    total = sum(hits.values())
    best = max(hits, key=lambda c: hits[c])
    if hits[best] >= 3 and hits[best] >= 0.5 * total:
        return best
    return None


def keep_rates(categories: Sequence[str], cap: float) -> dict[str, float]:
    """Per category, the keep probability that brings a share above `cap` down to `cap` (others 1.0)."""
    counts = Counter(categories)
    n = max(sum(counts.values()), 1)
    return {c: (min(1.0, cap / (k / n)) if k else 1.0) for c, k in counts.items()}


def mix_category(domain: str, lang: str) -> str:
    return "multilingual" if lang not in ("en", "") else domain
