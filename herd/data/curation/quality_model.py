"""Model-based quality: an annotator LLM labels a sample, a fast classifier learns the labels, scores all.

The paper distils Llama 2's quality judgments into DistilRoBERTa. Here the annotator is any herd chat
model (default SmolLM2-135M-Instruct through herd's `LLMEngine`) asked whether a document meets written
criteria (`QUALITY_CRITERIA`), and the fast student is `HashedNgramClassifier`: a softmax regression
on hashed word unigrams+bigrams, which is exactly fastText's supervised model with the hidden layer
removed. We train it ourselves in numpy because the fastText runtime in this environment
(`fasttext-predict`, used for language ID) cannot train, and the student must run at thousands of
documents/s per core.

Labels from a small annotator are biased (SmolLM2-135M answers "Yes" to nearly everything), so the
annotator returns a *score*, log P(yes) - log P(no) at the first answer token, and the sample is split at
the median into high (1) and low (0) quality; the report states this. A transparent `heuristic`
annotator (no model; word statistics) exists for tests and offline smoke runs.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import xxhash

QUALITY_CRITERIA = (
    "You rate web documents for training a language model. A HIGH-QUALITY document is coherent, "
    "informative prose or well-explained code or mathematics, written for a reader (an article, a "
    "tutorial, reference documentation). A LOW-QUALITY document is boilerplate, navigation menus, "
    "lists of links, spam, advertising, gibberish, or fragments without explanation."
)
QUESTION = "Is this a high-quality document? Answer Yes or No."

_WORD = re.compile(r"\w+")


def hashed_features(text: str, dim: int, max_words: int = 2000) -> np.ndarray:
    """Indices of the hashed unigrams and bigrams of the lower-cased words (the first `max_words`)."""
    words = _WORD.findall(text.lower())[:max_words]
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    if not grams:
        return np.zeros(1, dtype=np.int64)  # the "empty" bucket 0
    return np.fromiter((xxhash.xxh64_intdigest(g) % dim for g in grams), dtype=np.int64, count=len(grams))


@dataclass
class HashedNgramClassifier:
    """Softmax regression over the mean of hashed n-gram embeddings (fastText supervised, no hidden layer)."""

    labels: list[str]
    dim: int = 1 << 18
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None

    def _logits(self, feats: np.ndarray) -> np.ndarray:
        assert self.weights is not None and self.bias is not None
        return self.weights[feats].mean(axis=0) + self.bias

    def fit(self, texts: Sequence[str], y: Sequence[str], epochs: int = 10, lr: float = 0.5, l2: float = 1e-4,
            seed: int = 0) -> "HashedNgramClassifier":
        """Plain SGD on the cross-entropy; classes are weighted inversely to their frequency."""
        if len(texts) != len(y) or not texts:
            raise ValueError(f"fit needs as many labels as texts (got {len(texts)} texts, {len(y)} labels)")
        unknown = sorted(set(y) - set(self.labels))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classifier's classes {self.labels}")
        k = len(self.labels)
        self.weights = np.zeros((self.dim, k), dtype=np.float32)
        self.bias = np.zeros(k, dtype=np.float32)
        target = np.array([self.labels.index(v) for v in y])
        freq = np.bincount(target, minlength=k).astype(np.float64)
        class_w = np.where(freq > 0, len(target) / (k * np.maximum(freq, 1)), 0.0)
        feats = [hashed_features(t, self.dim) for t in texts]
        rng = np.random.default_rng(seed)
        for epoch in range(epochs):
            step = lr * (1.0 - epoch / epochs)
            for i in rng.permutation(len(texts)):
                f = feats[i]
                logits = self._logits(f)
                p = np.exp(logits - logits.max())
                p /= p.sum()
                p[target[i]] -= 1.0
                grad = (class_w[target[i]] * p).astype(np.float32)
                np.subtract.at(self.weights, f, step * (grad + l2 * self.weights[f]))
                self.bias -= step * grad
        return self

    def predict_proba(self, text: str) -> np.ndarray:
        logits = self._logits(hashed_features(text, self.dim))
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def predict(self, text: str) -> tuple[str, float]:
        p = self.predict_proba(text)
        i = int(p.argmax())
        return self.labels[i], float(p[i])

    def save(self, path: str | Path) -> None:
        """Sparse save: only rows that training touched (a few MB, not 2^18 x k floats)."""
        assert self.weights is not None and self.bias is not None
        rows = np.flatnonzero(np.abs(self.weights).sum(axis=1))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, rows=rows, values=self.weights[rows], bias=self.bias,
                            meta=np.array(json.dumps({"labels": self.labels, "dim": self.dim})))

    @classmethod
    def load(cls, path: str | Path) -> "HashedNgramClassifier":
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            model = cls(labels=meta["labels"], dim=meta["dim"])
            model.weights = np.zeros((model.dim, len(model.labels)), dtype=np.float32)
            model.weights[z["rows"]] = z["values"]
            model.bias = z["bias"].astype(np.float32)
        return model


# ----- annotators: text -> score (higher = better); labels come from a median split


def heuristic_annotator(texts: Sequence[str]) -> list[float]:
    """A transparent stand-in for the LLM (tests, offline smoke runs): rewards long, word-rich sentences.

    score = mean words per line (capped at 20) x share of alphabetic words; menus, link lists and
    symbol soup score low, prose high."""
    scores = []
    for t in texts:
        lines = [ln for ln in t.split("\n") if ln.strip()]
        words = t.split()
        if not lines or not words:
            scores.append(0.0)
            continue
        alpha = sum(w.isalpha() for w in words) / len(words)
        scores.append(min(len(words) / len(lines), 20.0) * alpha)
    return scores


class LLMAnnotator:
    """Asks a herd chat model the quality question; score = log P(Yes) - log P(No) at the first token."""

    def __init__(self, model: str = "smollm2-135m-instruct", max_tokens: int = 4, max_chars: int = 1200,
                 top_logprobs: int = 20) -> None:
        self.model_spec, self.max_tokens, self.max_chars, self.top_logprobs = model, max_tokens, max_chars, top_logprobs

    def __call__(self, texts: Sequence[str]) -> list[float]:
        import herd
        from herd.infer import LLMEngine, SamplingParams
        from herd.tokenizer import Message

        loaded = herd.load_model(self.model_spec)
        engine = LLMEngine(loaded)
        prompts = [
            loaded.chat_format.encode_dialog(
                [Message("system", QUALITY_CRITERIA),
                 Message("user", f"Document:\n{t[: self.max_chars]}\n\n{QUESTION}")]
            ).tokens
            for t in texts
        ]
        params = SamplingParams(max_tokens=self.max_tokens, logprobs=True, top_logprobs=self.top_logprobs)
        outs = engine.generate(prompts, params, progress=True)
        self.answers = [o.outputs[0].text for o in outs]
        return [_yes_no_margin(o.outputs[0]) for o in outs]


def _yes_no_margin(completion: Any) -> float:
    """log P(yes) - log P(no) from the first generated token's top alternatives (missing side: -30)."""
    if not completion.logprobs:
        return _parse_answer(completion.text)
    first = completion.logprobs[0]
    cands = first.top or [(first.token_id, first.token, first.logprob)]
    yes = [lp for _, tok, lp in cands if tok.strip().lower().startswith("yes")]
    no = [lp for _, tok, lp in cands if tok.strip().lower().startswith("no")]

    def lse(v: list[float]) -> float:
        return max(v) + math.log(sum(math.exp(x - max(v)) for x in v)) if v else -30.0

    return lse(yes) - lse(no)


def _parse_answer(text: str) -> float:
    """Fallback when no log-probabilities: +1 for an answer starting with yes, -1 for no, 0 otherwise."""
    t = text.strip().lower()
    return 1.0 if t.startswith("yes") else -1.0 if t.startswith("no") else 0.0


def make_annotator(spec: str, max_tokens: int = 4, max_chars: int = 1200) -> Callable[[Sequence[str]], list[float]]:
    return heuristic_annotator if spec == "heuristic" else LLMAnnotator(spec, max_tokens, max_chars)


def median_split(scores: Sequence[float]) -> list[str]:
    """'high' above the median score, 'low' otherwise (ties at the median go low)."""
    med = float(np.median(scores))
    labels = ["high" if s > med else "low" for s in scores]
    if len(set(labels)) < 2 and len(scores) >= 2:  # all equal: split by rank so both classes exist
        order = np.argsort(scores, kind="stable")
        labels = ["low"] * len(scores)
        for i in order[len(scores) // 2 :]:
            labels[i] = "high"
    return labels
