"""The guard's baseline: logistic regression on hashed word n-grams.

Word unigrams and bigrams (lower-cased) are hashed (CRC-32) into 2^18 buckets as binary features, and a
class-balanced, L2-regularised logistic regression is fitted full-batch with Adam on a sparse matrix. It
trains in seconds on a few thousand prompts and sets the bar a model-based guard must clear (the issue
asks the guard's AUPRC to beat it by >= 0.03 on held-out sources).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence

import torch

_WORD = re.compile(r"[a-z0-9']+")


def ngram_ids(text: str, buckets: int) -> list[int]:
    words = _WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
    return sorted({zlib.crc32(g.encode()) % buckets for g in grams})


def hashed_matrix(texts: Sequence[str], buckets: int, featurize: Callable[[str, int], list[int]] = ngram_ids
                  ) -> torch.Tensor:
    """Binary (texts x buckets) sparse matrix of each text's hashed feature ids."""
    rows, cols = [], []
    for i, text in enumerate(texts):
        ids = featurize(text, buckets)
        rows += [i] * len(ids)
        cols += ids
    values = torch.ones(len(rows))
    return torch.sparse_coo_tensor(torch.tensor([rows, cols], dtype=torch.long).reshape(2, -1), values,
                                   (len(texts), buckets), check_invariants=False).coalesce()


class NgramGuard:
    def __init__(self, buckets: int = 1 << 18, l2: float = 1e-4, steps: int = 300, lr: float = 0.05) -> None:
        self.buckets, self.l2, self.steps, self.lr = buckets, l2, steps, lr
        self.weight = torch.zeros(buckets)
        self.bias = torch.zeros(())

    def _matrix(self, texts: Sequence[str]) -> torch.Tensor:
        return hashed_matrix(texts, self.buckets)

    def fit(self, texts: Sequence[str], unsafe: Sequence[bool]) -> NgramGuard:
        if not texts or len(texts) != len(unsafe):
            raise ValueError("fit needs texts and one label per text")
        y = torch.tensor([float(u) for u in unsafe])
        if y.min() == y.max():
            raise ValueError("fit needs both unsafe and safe examples")
        x = self._matrix(texts)
        pos = y.mean()
        sample_weight = torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))
        weight = torch.zeros(self.buckets, requires_grad=True)
        bias = torch.zeros((), requires_grad=True)
        opt = torch.optim.Adam([weight, bias], lr=self.lr)
        for _ in range(self.steps):
            opt.zero_grad()
            logits = torch.sparse.mm(x, weight[:, None]).squeeze(1) + bias
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
                    * sample_weight).mean() + self.l2 * weight.square().sum()
            loss.backward()
            opt.step()
        self.weight, self.bias = weight.detach(), bias.detach()
        return self

    def score(self, texts: Sequence[str]) -> list[float]:
        """P(unsafe) per text."""
        if not texts:
            return []
        logits = torch.sparse.mm(self._matrix(texts), self.weight[:, None]).squeeze(1) + self.bias
        return torch.sigmoid(logits).tolist()
