"""Shared filter result type, plus the word-statistics filters: dirty words and token-distribution KL.

Re-exported by ``herd.data.curation.filters`` (use that module); split out to keep files small.
See ``filters`` for the common ``__call__(text, lang="en") -> FilterResult`` contract.

Sources: dirty words, the C4 rule (Raffel et al. 2020), which Llama 3 (Dubey et al. 2024,
section 3.1.1) uses "to filter out adult websites not covered by domain block lists"; KL
outliers, Llama 3 section 3.1.1, "token-distribution Kullback-Leibler divergence to filter out
documents containing excessive numbers of outlier tokens compared to the training corpus
distribution".
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = [
    "FilterResult",
    "DirtyWordsFilter",
    "TokenDistributionKLFilter",
    "load_wordlist",
    "wordlist_languages",
    "words",
]

WORDLIST_DIR = Path(__file__).parent / "wordlists"
_WORD_RE = re.compile(r"\w+", re.UNICODE)
_NO_SPACE_LANGS = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu"})


@dataclass(frozen=True)
class FilterResult:
    keep: bool
    reason: str | None = None
    stats: dict[str, float] = field(default_factory=dict)
    text: str | None = None


def words(text: str) -> list[str]:
    """Word tokens: maximal runs of Unicode letters/digits/underscore (language-agnostic, fast)."""
    return _WORD_RE.findall(text)


def _drop(reason: str, stats: dict[str, float]) -> FilterResult:
    return FilterResult(False, reason, stats)


# --------------------------------------------------------------------------- dirty words


def wordlist_languages() -> list[str]:
    """Language codes with a shipped dirty-word list (``wordlists/<lang>.txt``)."""
    return sorted(p.stem for p in WORDLIST_DIR.glob("*.txt") if re.fullmatch(r"[a-z]{2,3}", p.stem))


@lru_cache(maxsize=64)
def load_wordlist(lang: str, path: str | None = None) -> frozenset[str]:
    """Lower-cased entries of a word list (one entry a line, ``#`` comments); empty when none ships."""
    file = Path(path) if path else WORDLIST_DIR / f"{lang}.txt"
    if not file.exists():
        if path:
            raise FileNotFoundError(f"dirty-word list not found: {file}")
        return frozenset()
    entries = (x.strip().lower() for x in file.read_text(encoding="utf-8").splitlines())
    return frozenset(x for x in entries if x and not x.startswith("#"))


class DirtyWordsFilter:
    """Counts dirty words from per-language lists (C4's rule; Llama 3 section 3.1.1).

    The lists in ``wordlists/`` come from the MIT-licensed PyPI package ``safetext`` 0.3.3 (see
    ``wordlists/SOURCE.md``). Matching is whole-word (word n-grams up to the longest entry) for
    languages with spaces; for zh/ja, substring match of the native-script entries of two or more
    characters (single characters such as 交 would hit ordinary words) plus whole-word romanizations. C4 drops a page on the first hit
    (``min_hits=1, max_ratio=0``); the default here is milder, since single hits are mostly
    false positives in medical or news text: drop when at least ``min_hits`` (2) hits make up at
    least ``max_ratio`` (0.5%) of the words. A language without a list keeps everything.
    """

    name = "dirty_words"

    def __init__(
        self, min_hits: int = 2, max_ratio: float = 0.005, wordlist_paths: Mapping[str, str] | None = None
    ) -> None:
        self.min_hits, self.max_ratio = min_hits, max_ratio
        self.wordlist_paths = dict(wordlist_paths or {})
        self._compiled: dict[str, tuple[dict[int, frozenset[str]], re.Pattern[str] | None]] = {}

    def _lists(self, base: str) -> tuple[dict[int, frozenset[str]], re.Pattern[str] | None]:
        if base not in self._compiled:
            entries = load_wordlist(base, self.wordlist_paths.get(base))
            pattern = None
            if (
                base in _NO_SPACE_LANGS
            ):  # substring match, but single characters (e.g. zh 交 "exchange") would hit everything
                alts = sorted((e for e in entries if not e.isascii() and len(e) >= 2), key=len, reverse=True)
                pattern = re.compile("|".join(map(re.escape, alts))) if alts else None
                entries = frozenset(e for e in entries if e.isascii())  # romanizations: whole words
            by_len: dict[int, set[str]] = {}
            for e in entries:
                toks = _WORD_RE.findall(e)
                if toks and " ".join(toks) == " ".join(e.replace("-", " ").split()):
                    by_len.setdefault(len(toks), set()).add(" ".join(toks))
            self._compiled[base] = ({k: frozenset(v) for k, v in by_len.items()}, pattern)
        return self._compiled[base]

    def count(self, text: str, lang: str = "en") -> tuple[int, int]:
        """(dirty-word hits, word count) of ``text`` for ``lang``."""
        base = lang.split("_")[0].split("-")[0].lower()
        by_len, pattern = self._lists(base)
        toks = [w.lower() for w in words(text)]
        hits = 0
        n_words = len(toks)
        if base in _NO_SPACE_LANGS:
            hits += len(pattern.findall(text.lower())) if pattern is not None else 0
            n_words = max(n_words, sum(1 for c in text if not c.isspace()) // 2)  # ~2 characters a word
        for n, entries in by_len.items():
            hits += sum(1 for i in range(len(toks) - n + 1) if " ".join(toks[i : i + n]) in entries)
        return hits, n_words

    def __call__(self, text: str, lang: str = "en") -> FilterResult:
        hits, n = self.count(text, lang)
        stats = {"dirty_hits": float(hits), "dirty_ratio": hits / max(n, 1)}
        if hits >= self.min_hits and stats["dirty_ratio"] >= self.max_ratio:
            return _drop("dirty_words", stats)
        return FilterResult(True, None, stats)


# --------------------------------------------------------------------------- token-distribution KL


def _lower_words(text: str) -> list[str]:
    return [w.lower() for w in words(text)]


class TokenDistributionKLFilter:
    """Outlier filter: KL(document unigram || corpus unigram) above a threshold (Llama 3 3.1.1).

    Usage: ``f = TokenDistributionKLFilter(); f.fit(counts)`` with corpus token counts (e.g.
    ``TokenDistributionKLFilter.count_tokens(texts)``), then either pass ``threshold=`` or call
    ``f.calibrate(sample_texts, quantile=0.99)``; ``f(text)`` drops documents scoring above it.

    Score: ``sum_t p_doc(t) * log(p_doc(t) / q(t))`` with ``p_doc`` the document's maximum-
    likelihood unigram distribution and ``q`` the corpus distribution with add-``alpha``
    smoothing over the corpus vocabulary plus one bucket for unseen tokens, so a token never seen
    in the corpus costs about ``log(N / alpha)``. Documents with fewer than ``min_tokens`` tokens
    are kept unscored (their estimate is noise).

    Tokens: lower-cased word tokens (``\\w+``) by default, because they need no asset, are fast
    (~MB/s in ``re``) and are what "outlier tokens" means for boilerplate, random strings and
    encoding junk. Any ``tokenize`` callable works, e.g. the Llama 3 tokenizer's ``encode`` for
    subword statistics (``herd.tokenizer``); counts must then come from the same callable.
    """

    name = "token_kl"

    def __init__(
        self,
        threshold: float | None = None,
        alpha: float = 0.5,
        min_tokens: int = 20,
        tokenize: Callable[[str], list] | None = None,
    ) -> None:
        self.threshold, self.alpha, self.min_tokens = threshold, alpha, min_tokens
        self.tokenize = tokenize or _lower_words
        self._logq: dict = {}
        self._log_unseen = 0.0

    @staticmethod
    def count_tokens(texts: Iterable[str], tokenize: Callable[[str], list] | None = None) -> Counter:
        counts: Counter = Counter()
        tok = tokenize or _lower_words
        for text in texts:
            counts.update(tok(text))
        return counts

    def fit(self, corpus_token_counts: Mapping) -> TokenDistributionKLFilter:
        total = sum(corpus_token_counts.values())
        if total <= 0:
            raise ValueError("TokenDistributionKLFilter.fit: corpus_token_counts is empty")
        denom = total + self.alpha * (len(corpus_token_counts) + 1)
        self._logq = {t: math.log((c + self.alpha) / denom) for t, c in corpus_token_counts.items()}
        self._log_unseen = math.log(self.alpha / denom)
        return self

    def score(self, text: str) -> float | None:
        """KL divergence in nats, or None when the document has too few tokens to score."""
        if not self._logq:
            raise RuntimeError("TokenDistributionKLFilter: call fit() before scoring")
        toks = self.tokenize(text)
        n = len(toks)
        if n < self.min_tokens:
            return None
        kl = 0.0
        for tok, c in Counter(toks).items():
            p = c / n
            kl += p * (math.log(p) - self._logq.get(tok, self._log_unseen))
        return kl

    def calibrate(self, texts: Iterable[str], quantile: float = 0.99) -> float:
        """Set ``threshold`` to the given quantile of the scores of ``texts``; returns it."""
        scores = sorted(s for s in map(self.score, texts) if s is not None)
        if not scores:
            raise ValueError("TokenDistributionKLFilter.calibrate: no text had enough tokens to score")
        idx = min(len(scores) - 1, max(0, math.ceil(quantile * len(scores)) - 1))
        self.threshold = scores[idx]
        return self.threshold

    def __call__(self, text: str, lang: str = "en") -> FilterResult:
        if self.threshold is None:
            raise RuntimeError("TokenDistributionKLFilter: set threshold= or call calibrate() first")
        kl = self.score(text)
        if kl is None:
            return FilterResult(True, None, {"kl": float("nan")})
        if kl > self.threshold:
            return _drop("token_kl_outlier", {"kl": kl})
        return FilterResult(True, None, {"kl": kl})

    def save(self, path: str | Path) -> None:
        """Write the fitted distribution and threshold as JSON (string tokens only)."""
        data = {
            "alpha": self.alpha,
            "threshold": self.threshold,
            "min_tokens": self.min_tokens,
            "log_unseen": self._log_unseen,
            "logq": self._logq,
        }
        Path(path).write_text(json.dumps(data), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TokenDistributionKLFilter:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            obj = cls(threshold=data["threshold"], alpha=data["alpha"], min_tokens=data["min_tokens"])
            obj._logq, obj._log_unseen = dict(data["logq"]), float(data["log_unseen"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"bad KL filter file {path}: {exc}") from exc
        return obj
