"""Heuristic document filters (Gopher, C4, FineWeb rules, dirty words, token-distribution KL).

Every filter is a callable object with a ``name`` and ``__call__(text, lang="en") -> FilterResult``:

    FilterResult.keep    True to keep the document
    FilterResult.reason  None when kept, else a short machine-readable reason ("gopher_dup_line_frac")
    FilterResult.stats   the measured values (for reports and threshold tuning)
    FilterResult.text    the cleaned text when the filter rewrites lines (C4), else None

Filters never raise on odd input (empty text, a single word, binary junk): they decide. The
pipeline wraps them as datatrove steps; nothing here depends on datatrove. ``FilterResult``, the
dirty-words and the KL filters live in ``word_filters.py`` and are re-exported here.

Sources of the thresholds:
  * Gopher: Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training
    Gopher", appendix A.1.1 (quality filter) and table A1 (repetition removal).
  * C4: Raffel et al. 2020 (T5), section 2.2, with the constants of the reference implementation
    (TFDS ``c4_utils.py``: 5 words per line, 3 sentences, words up to 1000 characters, end marks
    ``. ? ! "``, the policy substrings).
  * FineWeb: Penedo et al. 2024, "The FineWeb Datasets", section 3.6 (custom filters).
  * Dirty words: the C4 rule (Raffel et al.), which Llama 3 (Dubey et al. 2024, section 3.1.1)
    uses "to filter out adult websites not covered by domain block lists".
  * KL outliers: Llama 3 section 3.1.1, "token-distribution Kullback-Leibler divergence to filter
    out documents containing excessive numbers of outlier tokens compared to the training corpus
    distribution".
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from herd.data.curation.word_filters import (
    _NO_SPACE_LANGS,
    DirtyWordsFilter,
    FilterResult,
    TokenDistributionKLFilter,
    _drop,
    load_wordlist,
    wordlist_languages,
    words,
)

__all__ = [
    "FilterResult",
    "GopherRepetitionFilter",
    "GopherQualityFilter",
    "C4QualityFilter",
    "FineWebQualityFilter",
    "DirtyWordsFilter",
    "TokenDistributionKLFilter",
    "load_wordlist",
    "wordlist_languages",
    "words",
]


# --------------------------------------------------------------------------- Gopher repetition


def _dup_stats(elements: list[str]) -> tuple[int, int]:
    """(# elements that repeat an earlier one, # characters in those repeats)."""
    seen: set[str] = set()
    dup = dup_chars = 0
    for el in elements:
        if el in seen:
            dup += 1
            dup_chars += len(el)
        else:
            seen.add(el)
    return dup, dup_chars


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _top_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters of the most frequent n-gram (words joined by spaces) times its count; 0 if none repeats."""
    grams = _ngrams(tokens, n)
    if not grams:
        return 0
    gram, count = Counter(grams).most_common(1)[0]
    return (sum(len(w) for w in gram) + n - 1) * count if count > 1 else 0


def _dup_ngram_chars(tokens: list[str], n: int) -> int:
    """Characters in repeats of earlier n-grams, scanning left to right and skipping past each
    repeat so that overlapping repeats are not counted twice (Gopher; datatrove's reading)."""
    seen: set[tuple[str, ...]] = set()
    chars, i = 0, 0
    while i <= len(tokens) - n:
        gram = tuple(tokens[i : i + n])
        if gram in seen:
            chars += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


class GopherRepetitionFilter:
    """Repetition removal of Gopher (Rae et al. 2021, table A1).

    Drops a document when the share of duplicate lines > 0.30, duplicate paragraphs > 0.30,
    characters in duplicate lines > 0.20, characters in duplicate paragraphs > 0.20, the most
    frequent 2/3/4-gram covers > 0.20/0.18/0.16 of the characters, or duplicated 5..10-grams
    cover > 0.15/0.14/0.13/0.12/0.11/0.10 of the characters. Paragraphs are split on blank lines;
    n-grams are over whitespace-separated words and the fractions are of ``len(text)``, as in the
    reference implementation used for FineWeb (datatrove), which a test checks agreement with.
    For languages written without spaces (zh, ja, th...) the n-gram rules use characters as
    tokens, since "words" there are whole clauses.
    """

    name = "gopher_repetition"

    def __init__(
        self,
        dup_line_frac: float = 0.30,
        dup_para_frac: float = 0.30,
        dup_line_char_frac: float = 0.20,
        dup_para_char_frac: float = 0.20,
        top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16)),
        dup_n_grams: tuple[tuple[int, float], ...] = (
            (5, 0.15),
            (6, 0.14),
            (7, 0.13),
            (8, 0.12),
            (9, 0.11),
            (10, 0.10),
        ),
    ) -> None:
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_n_grams, self.dup_n_grams = top_n_grams, dup_n_grams

    def __call__(self, text: str, lang: str = "en") -> FilterResult:
        stats: dict[str, float] = {}
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
        if paragraphs:
            dup, chars = _dup_stats(paragraphs)
            stats["dup_para_frac"] = dup / len(paragraphs)
            stats["dup_para_char_frac"] = chars / max(len(text), 1)
            if stats["dup_para_frac"] > self.dup_para_frac:
                return _drop("gopher_dup_para_frac", stats)
            if stats["dup_para_char_frac"] > self.dup_para_char_frac:
                return _drop("gopher_dup_para_char_frac", stats)
        lines = [x.strip() for x in text.splitlines() if x.strip()]
        if lines:
            dup, chars = _dup_stats(lines)
            stats["dup_line_frac"] = dup / len(lines)
            stats["dup_line_char_frac"] = chars / max(len(text), 1)
            if stats["dup_line_frac"] > self.dup_line_frac:
                return _drop("gopher_dup_line_frac", stats)
            if stats["dup_line_char_frac"] > self.dup_line_char_frac:
                return _drop("gopher_dup_line_char_frac", stats)
        base = lang.split("_")[0].split("-")[0].lower()
        tokens = [c for c in text if not c.isspace()] if base in _NO_SPACE_LANGS else text.split()
        total = len(text)
        if not tokens:
            return FilterResult(True, None, stats)
        for n, limit in self.top_n_grams:
            frac = _top_ngram_chars(tokens, n) / total
            stats[f"top_{n}_gram_frac"] = frac
            if frac > limit:
                return _drop(f"gopher_top_{n}_gram", stats)
        for n, limit in self.dup_n_grams:
            frac = _dup_ngram_chars(tokens, n) / total
            stats[f"dup_{n}_gram_frac"] = frac
            if frac > limit:
                return _drop(f"gopher_dup_{n}_gram", stats)
        return FilterResult(True, None, stats)


# --------------------------------------------------------------------------- Gopher quality

_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})


def _is_symbol_word(word: str) -> bool:
    return all(unicodedata.category(c)[0] in "PS" for c in word)


_BULLETS = (
    "\u2022",
    "\u2023",
    "\u25b6",
    "\u25cf",
    "\u25e6",
    "\u25a0",
    "\u25a1",
    "\u25aa",
    "\u25ab",
    "-",
    "*",
    "\u2013",
)


class GopherQualityFilter:
    """Quality filter of Gopher (Rae et al. 2021, appendix A.1.1).

    Drops a document with fewer than 50 or more than 100,000 words, mean word length outside
    [3, 10] characters, a symbol-to-word ratio above 0.1 for "#" or for "..."/"\u2026", more than
    90% of lines starting with a bullet, more than 30% of lines ending with an ellipsis, fewer
    than 80% of words containing an alphabetic character, or fewer than 2 of the stop words
    {the, be, to, of, and, that, have, with}. Word counts and the mean length leave out words made
    only of punctuation/symbols (as datatrove does); the ratios divide by all words. The stop-word rule is English-specific (Gopher's
    corpus was English) and applies only when ``lang`` is "en"; the word-length rule is skipped
    for languages written without spaces.
    """

    name = "gopher_quality"

    def __init__(
        self,
        min_words: int = 50,
        max_words: int = 100_000,
        min_avg_word_len: float = 3,
        max_avg_word_len: float = 10,
        max_symbol_word_ratio: float = 0.1,
        max_bullet_lines_ratio: float = 0.9,
        max_ellipsis_lines_ratio: float = 0.3,
        min_alpha_words_ratio: float = 0.8,
        min_stop_words: int = 2,
    ) -> None:
        self.min_words, self.max_words = min_words, max_words
        self.min_avg_word_len, self.max_avg_word_len = min_avg_word_len, max_avg_word_len
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio, self.max_ellipsis_lines_ratio = max_bullet_lines_ratio, max_ellipsis_lines_ratio
        self.min_alpha_words_ratio, self.min_stop_words = min_alpha_words_ratio, min_stop_words

    def __call__(self, text: str, lang: str = "en") -> FilterResult:
        base = lang.split("_")[0].split("-")[0].lower()
        toks = text.split()  # Gopher counts whitespace-separated words
        n = len(toks)
        word_toks = [w for w in toks if not _is_symbol_word(w)]  # "--" or "|" are not words
        stats: dict[str, float] = {"n_words": len(word_toks)}
        no_space = base in _NO_SPACE_LANGS
        if n == 0 or (not no_space and len(word_toks) < self.min_words):
            return _drop("gopher_too_few_words", stats)
        if len(word_toks) > self.max_words:
            return _drop("gopher_too_many_words", stats)
        if not no_space:
            avg = sum(len(w) for w in word_toks) / max(len(word_toks), 1)
            stats["avg_word_len"] = avg
            if not self.min_avg_word_len <= avg <= self.max_avg_word_len:
                return _drop("gopher_avg_word_len", stats)
        stats["hash_ratio"] = text.count("#") / n
        stats["ellipsis_ratio"] = (text.count("...") + text.count("\u2026")) / n
        if stats["hash_ratio"] > self.max_symbol_word_ratio:
            return _drop("gopher_hash_ratio", stats)
        if stats["ellipsis_ratio"] > self.max_symbol_word_ratio:
            return _drop("gopher_ellipsis_ratio", stats)
        lines = [x.strip() for x in text.splitlines() if x.strip()]
        if lines:
            stats["bullet_lines_ratio"] = sum(x.startswith(_BULLETS) for x in lines) / len(lines)
            stats["ellipsis_lines_ratio"] = sum(x.endswith(("...", "\u2026")) for x in lines) / len(lines)
            if stats["bullet_lines_ratio"] > self.max_bullet_lines_ratio:
                return _drop("gopher_bullet_lines", stats)
            if stats["ellipsis_lines_ratio"] > self.max_ellipsis_lines_ratio:
                return _drop("gopher_ellipsis_lines", stats)
        stats["alpha_words_ratio"] = sum(any(c.isalpha() for c in w) for w in toks) / n
        if stats["alpha_words_ratio"] < self.min_alpha_words_ratio:
            return _drop("gopher_alpha_words", stats)
        if base == "en":
            stats["stop_words"] = len(_STOP_WORDS.intersection(w.lower().strip(".,;:!?\"'()") for w in toks))
            if stats["stop_words"] < self.min_stop_words:
                return _drop("gopher_stop_words", stats)
        return FilterResult(True, None, stats)


# --------------------------------------------------------------------------- C4

_C4_END_MARKS = (".", "?", "!", '"')
_C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_C4_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*(?=\s|$)")


class C4QualityFilter:
    """C4 cleaning (Raffel et al. 2020, section 2.2; constants of TFDS ``c4_utils.py``).

    Line level (the cleaned text comes back in ``FilterResult.text``): citation markers like
    "[1]", "[edit]", "[citation needed]" are removed; a line is dropped when it does not end in
    a terminal mark (``. ? ! "``, or ends in "..."), has fewer than 5 words, contains
    "javascript", contains a policy phrase ("terms of use", "uses cookies"...), or contains a word
    over 1000 characters. Document level: dropped when a line that passed those checks contains
    "lorem ipsum" or "{" (C4's way to drop code; ``filter_curly_bracket=False`` keeps code pages,
    which Llama 3 wants), or fewer than 3 sentences are kept (regex sentence split on . ! ? and CJK stops, instead of
    C4's NLTK punkt). ``min_words_per_line`` counts characters/2 for zh/ja lines, which have no
    spaces.
    """

    name = "c4_quality"

    def __init__(
        self,
        min_words_per_line: int = 5,
        min_sentences: int = 3,
        max_word_length: int = 1000,
        filter_terminal_punct: bool = True,
        filter_javascript: bool = True,
        filter_policy: bool = True,
        filter_lorem_ipsum: bool = True,
        filter_curly_bracket: bool = True,
        remove_citations: bool = True,
    ) -> None:
        self.min_words_per_line, self.min_sentences, self.max_word_length = (
            min_words_per_line,
            min_sentences,
            max_word_length,
        )
        self.filter_terminal_punct, self.filter_javascript, self.filter_policy = (
            filter_terminal_punct,
            filter_javascript,
            filter_policy,
        )
        self.filter_lorem_ipsum, self.filter_curly_bracket = filter_lorem_ipsum, filter_curly_bracket
        self.remove_citations = remove_citations

    def __call__(self, text: str, lang: str = "en") -> FilterResult:
        base = lang.split("_")[0].split("-")[0].lower()
        stats: dict[str, float] = {}
        kept: list[str] = []
        removed = Counter()
        end_marks = _C4_END_MARKS + (("\u3002", "\uff01", "\uff1f", "\u300d") if base in _NO_SPACE_LANGS else ())
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if self.remove_citations:
                line = _C4_CITATION.sub("", line).strip()
            low = line.lower()
            n_words = len(line) // 2 if base in _NO_SPACE_LANGS else len(line.split())
            if any(len(w) > self.max_word_length for w in line.split()):
                removed["long_word"] += 1
            elif self.filter_terminal_punct and (not line.endswith(end_marks) or line.endswith("...")):
                removed["no_terminal_punct"] += 1
            elif n_words < self.min_words_per_line:
                removed["short_line"] += 1
            elif self.filter_lorem_ipsum and "lorem ipsum" in low:
                return _drop("c4_lorem_ipsum", stats)
            elif self.filter_javascript and "javascript" in low:
                removed["javascript"] += 1
            elif self.filter_curly_bracket and "{" in line:
                return _drop("c4_curly_bracket", stats)
            elif self.filter_policy and any(p in low for p in _C4_POLICY):
                removed["policy"] += 1
            else:
                kept.append(line)
        stats.update({f"lines_removed_{k}": float(v) for k, v in removed.items()})
        cleaned = "\n".join(kept)
        stats["sentences"] = float(sum(max(1, len(_SENTENCE_END.findall(x))) for x in kept))  # a kept line is >= 1
        if stats["sentences"] < self.min_sentences:
            return FilterResult(False, "c4_too_few_sentences", stats, cleaned)
        return FilterResult(True, None, stats, cleaned)


# --------------------------------------------------------------------------- FineWeb

# terminal punctuation of the main scripts (datatrove's TERMINAL_PUNCTUATION has 159 marks of many scripts)
_FW_PUNCT = tuple(
    ".!?\u203c\u203d\u2047\u2048\u2049\u3002\uff01\uff1f\uff0e\u061f\u06d4\u0964\u0965\u0589\u1362\u104a\u104b\u17d4\u17d5"
)


class FineWebQualityFilter:
    """FineWeb's custom filters (Penedo et al. 2024, section 3.6).

    Drops a document when fewer than 12% of its lines end with punctuation, more than 67% of its
    lines are 30 characters or shorter, more than 1% of its characters (newlines not counted)
    sit in repeats of earlier lines, or it has more than 0.3 newlines per word (lists of short
    items). The values, comparisons and the 1% (the paper's text says 10%) are those of the
    reference implementation that built FineWeb (datatrove ``FineWebQualityFilter``).
    """

    name = "fineweb_quality"

    def __init__(
        self,
        line_punct_thr: float = 0.12,
        short_line_thr: float = 0.67,
        short_line_length: int = 30,
        char_dup_ratio: float = 0.01,
        new_line_ratio: float = 0.3,
    ) -> None:
        self.line_punct_thr, self.short_line_thr, self.short_line_length = (
            line_punct_thr,
            short_line_thr,
            short_line_length,
        )
        self.char_dup_ratio, self.new_line_ratio = char_dup_ratio, new_line_ratio

    def __call__(self, text: str, lang: str = "en") -> FilterResult:
        lines = [x.strip() for x in text.splitlines() if x.strip()]
        if not lines:
            return _drop("fineweb_empty", {})
        stats = {
            "line_punct_ratio": sum(x.endswith(_FW_PUNCT) for x in lines) / len(lines),
            "short_line_ratio": sum(len(x) <= self.short_line_length for x in lines) / len(lines),
            "char_dup_ratio": _dup_stats(lines)[1] / max(len(text.replace("\n", "")), 1),
        }
        n_words = max(len(words(text)), 1)
        stats["new_line_ratio"] = text.count("\n") / n_words
        if stats["line_punct_ratio"] < self.line_punct_thr:
            return _drop("fineweb_line_punct_ratio", stats)
        if stats["short_line_ratio"] > self.short_line_thr:
            return _drop("fineweb_short_line_ratio", stats)
        if stats["char_dup_ratio"] > self.char_dup_ratio:
            return _drop("fineweb_char_dup_ratio", stats)
        if stats["new_line_ratio"] > self.new_line_ratio:
            return _drop("fineweb_list_ratio", stats)
        return FilterResult(True, None, stats)
