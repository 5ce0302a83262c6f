"""Training the quality/domain/knowledge classifiers on a sample, and scoring every document with them.

`train_models` runs once (a one-task pipeline stage, so a relaunch skips it): it draws a seeded sample
of the filtered documents, seeds domain and knowledge labels (see domain.py), asks the annotator for
quality scores on `quality.sample` English documents (see quality_model.py), trains three
`HashedNgramClassifier`s, estimates knowledge-category shares on the sample and the keep rates that cap
them, and writes everything to `models/` with `models/training.json` describing where labels came from.

`ClassifyStep` then labels each document: `quality` (P(high)), `domain`, `knowledge`, `category` (the mix
category), drops documents below the quality threshold, and downsamples over-represented categories.
The quality model and the knowledge categories concern web text: they apply to the mix categories in
`quality.apply_to` (default: English general-domain documents); code and math sources, curated by
construction, get quality 1.0 and no knowledge category.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import xxhash
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from herd.data.curation.config import CurateConfig
from herd.data.curation.domain import DOMAINS, KNOWLEDGE, domain_seed, keep_rates, knowledge_seed, mix_category
from herd.data.curation.quality_model import HashedNgramClassifier, make_annotator, median_split
from herd.data.curation.steps import HerdStep


def sample_documents(folder: Path, world_size: int, k: int, seed: int) -> list[dict[str, Any]]:
    """A uniform sample of k records from `<folder>/<rank>.jsonl` over all ranks, in a fixed order.

    The sample is the k records with the smallest seeded hash of (id, text) ("bottom-k"), ordered by that
    hash, so it depends only on the set of documents: the same corpus curated with 1 or 3 tasks trains
    the same classifiers (a reservoir over the rank files would depend on how files were split).
    Memory is bounded by 2k records (pruned to the k smallest whenever it doubles).
    """
    kept: list[tuple[int, bytes]] = []
    for rank in range(world_size):
        path = folder / f"{rank:05d}.jsonl"
        if not path.is_file():
            continue
        with open(path, "rb") as fh:
            for line in fh:
                rec = json.loads(line)
                key = xxhash.xxh64_intdigest(f"{rec.get('id')}\0{rec.get('text')}", seed)
                kept.append((key, line))  # the raw line breaks ties between identical (id, text)
                if len(kept) >= 2 * max(k, 1):
                    kept = sorted(kept)[:k]
    return [json.loads(line) for _, line in sorted(kept)[:k]]


def train_models(cfg: CurateConfig, filtered_dir: Path, models_dir: Path) -> dict[str, Any]:
    docs = sample_documents(filtered_dir, cfg.tasks, cfg.domain.sample, cfg.domain.seed)
    info: dict[str, Any] = {"sample": len(docs)}
    models_dir.mkdir(parents=True, exist_ok=True)
    if not docs:
        (models_dir / "training.json").write_text(json.dumps(info | {"note": "no documents"}, indent=1))
        return info
    texts = [d["text"] for d in docs]
    meta = [d.get("metadata", {}) for d in docs]

    # domain: given labels + heuristic seeds
    seeds = [domain_seed(t, m.get("domain_label")) for t, m in zip(texts, meta)]
    info["domain_seeds"] = {f"{lab}:{src}": n for (lab, src), n in sorted(Counter(seeds).items())}
    labels = [lab for lab, _ in seeds]
    if len(set(labels)) >= 2:
        HashedNgramClassifier(list(DOMAINS)).fit(texts, labels, seed=cfg.domain.seed).save(models_dir / "domain.npz")
    info["domain_model"] = len(set(labels)) >= 2

    # knowledge categories: keyword seeds on English general-domain documents
    eng = [i for i, m in enumerate(meta) if m.get("lang", "en") == "en" and labels[i] == "general"]
    kseeds = {i: knowledge_seed(texts[i]) for i in eng}
    seeded = {i: c for i, c in kseeds.items() if c}
    info["knowledge_seeds"] = dict(Counter(seeded.values()).most_common())
    info["knowledge_unseeded"] = len(eng) - len(seeded)
    kmodel = None
    if len(set(seeded.values())) >= 2:
        kmodel = HashedNgramClassifier(list(KNOWLEDGE)).fit([texts[i] for i in seeded], list(seeded.values()),
                                                            seed=cfg.domain.seed)
        kmodel.save(models_dir / "knowledge.npz")
    predicted = [kmodel.predict(texts[i])[0] if kmodel else (kseeds[i] or "other") for i in eng]
    shares = Counter(predicted)
    info["knowledge_shares"] = {c: round(n / max(len(predicted), 1), 4) for c, n in shares.most_common()}
    info["keep_rates"] = keep_rates(predicted, cfg.domain.category_cap) if cfg.domain.enabled else {}

    if "token_kl" in cfg.steps.filters:
        info["token_kl"] = fit_token_kl(texts, meta, cfg, models_dir)

    # quality: annotator scores on a sample of English documents -> median split -> student
    if cfg.quality.enabled:
        rng = random.Random(cfg.quality.seed)
        # the documents the quality filter applies to (English general web text by default)
        pool = [i for i, m in enumerate(meta)
                if mix_category(labels[i], m.get("lang", "en")) in cfg.quality.apply_to]
        chosen = sorted(rng.sample(pool, min(cfg.quality.sample, len(pool))))
        if len(chosen) >= 2:
            annotator = make_annotator(cfg.quality.annotator, cfg.quality.max_tokens, cfg.quality.max_chars)
            scores = annotator([texts[i] for i in chosen])
            qlabels = median_split(scores)
            HashedNgramClassifier(["low", "high"]).fit([texts[i] for i in chosen], qlabels,
                                                       seed=cfg.quality.seed).save(models_dir / "quality.npz")
            answers = getattr(annotator, "answers", None)
            info["quality"] = {
                "annotator": cfg.quality.annotator, "annotated": len(chosen),
                "labels": dict(Counter(qlabels)),
                "examples": [
                    {"id": docs[i].get("id"), "score": round(float(s), 3), "label": lab,
                     **({"answer": answers[j]} if answers else {}), "text": texts[i][:160]}
                    for j, (i, s, lab) in enumerate(zip(chosen, scores, qlabels))
                ][:12],
            }
    (models_dir / "training.json").write_text(json.dumps(info, indent=1, ensure_ascii=False))
    return info


def fit_token_kl(texts: list[str], meta: list[dict[str, Any]], cfg: CurateConfig, models_dir: Path) -> dict:
    """Per language: the sample's unigram distribution and the KL threshold at `kl_quantile` of its
    documents (documents of inputs that skip the filters, e.g. code, are left out)."""
    from herd.data.curation.filters import TokenDistributionKLFilter

    by_lang: dict[str, list[str]] = {}
    for t, m in zip(texts, meta):
        if "filters" not in m.get("skip", ()):
            by_lang.setdefault(m.get("lang", "en"), []).append(t)
    fitted = {}
    for lang, docs in sorted(by_lang.items()):
        if len(docs) < cfg.steps.kl_min_docs:
            continue
        flt = TokenDistributionKLFilter().fit(TokenDistributionKLFilter.count_tokens(docs))
        try:
            threshold = flt.calibrate(docs, cfg.steps.kl_quantile)
        except ValueError:
            continue
        flt.save(models_dir / f"token_kl-{lang}.json")
        fitted[lang] = {"documents": len(docs), "threshold": round(threshold, 4)}
    return fitted


class TrainModelsStep(PipelineStep):
    """One-task pipeline stage wrapping `train_models` (so the executor's completion marker covers it)."""

    name = "train classifiers"
    type = "herd"

    def __init__(self, cfg: CurateConfig, filtered_dir: str, models_dir: str) -> None:
        super().__init__()
        self.cfg, self.filtered_dir, self.models_dir = cfg, filtered_dir, models_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        train_models(self.cfg, Path(self.filtered_dir), Path(self.models_dir))
        return iter(())


def _unit(key: str) -> float:
    return xxhash.xxh64_intdigest(key) / float(1 << 64)


class ClassifyStep(HerdStep):
    """Quality score, domain, knowledge category, mix category; quality threshold and downsampling."""

    step_name = "classify"

    def __init__(self, output_dir: str | Path, models_dir: str | Path, quality_threshold: float = 0.0,
                 downsample: bool = True, quality_applies_to: tuple[str, ...] = ("general",), **kw: Any) -> None:
        super().__init__(output_dir, **kw)
        self.models_dir, self.quality_threshold, self.downsample = str(models_dir), quality_threshold, downsample
        self.quality_applies_to = tuple(quality_applies_to)

    def begin(self, rank: int, world_size: int) -> None:
        d = Path(self.models_dir)

        def load(name: str) -> HashedNgramClassifier | None:
            return HashedNgramClassifier.load(d / name) if (d / name).is_file() else None

        self._quality, self._domain, self._knowledge = load("quality.npz"), load("domain.npz"), load("knowledge.npz")
        info = json.loads((d / "training.json").read_text()) if (d / "training.json").is_file() else {}
        self._keep = info.get("keep_rates", {}) if self.downsample else {}

    def process(self, doc: Document, rank: int) -> Document | None:
        text, meta = doc.text, doc.metadata
        lang = meta.get("lang", "en")
        if meta.get("domain_label"):
            domain = meta["domain_label"]
        elif self._domain is not None:
            domain = self._domain.predict(text)[0]
        else:
            domain = domain_seed(text)[0]
        meta["domain"] = domain
        meta["category"] = mix_category(domain, lang)
        applies = meta["category"] in self.quality_applies_to
        # curated sources outside the quality filter's scope (code, math...) count as high quality
        quality = float(self._quality.predict_proba(text)[1]) if self._quality is not None and applies else 1.0
        meta["quality"] = round(quality, 4)
        self.count(f"category:{meta['category']}")
        if meta["category"] == "general":
            knowledge = self._knowledge.predict(text)[0] if self._knowledge else (knowledge_seed(text) or "other")
            meta["knowledge"] = knowledge
            self.count(f"knowledge:{knowledge}")
            rate = float(self._keep.get(knowledge, 1.0))
            if rate < 1.0 and _unit(f"downsample:{doc.id}") >= rate:
                self.remove(doc, f"downsampled:{knowledge}")
                return None
        if quality < self.quality_threshold:
            self.remove(doc, "low_quality_score", quality=round(quality, 4))
            return None
        return doc


class RecordStep(HerdStep):
    """Per-document statistics for the report and the mix (tokens per category, lengths, quality, language)
    and the annealing copy of high-quality documents; passes every document on."""

    step_name = "record"

    def __init__(self, output_dir: str | Path, tokenizer: str = "llama3", anneal_threshold: float = 0.6,
                 **kw: Any) -> None:
        super().__init__(output_dir, **kw)
        self.tokenizer, self.anneal_threshold = tokenizer, anneal_threshold

    def begin(self, rank: int, world_size: int) -> None:
        if self.tokenizer == "llama3":
            from herd.tokenizer import Llama3Tokenizer

            tok = Llama3Tokenizer()
            self._count = lambda t: len(tok.encode(t))
        else:  # "chars4": a quick estimate, 4 characters per token
            self._count = lambda t: max(1, len(t) // 4)
        out = Path(self.output_dir)
        (out / "records").mkdir(parents=True, exist_ok=True)
        self._rec = open(out / "records" / f"{rank:05d}.jsonl", "w", encoding="utf-8")
        self._anneal: dict[str, Any] = {}
        self._rank = rank

    def process(self, doc: Document, rank: int) -> Document | None:
        m = doc.metadata
        tokens = self._count(doc.text)
        m["tokens"] = tokens
        row = {"category": m.get("category"), "lang": m.get("lang"), "tokens": tokens, "chars": len(doc.text),
               "quality": m.get("quality"), "source": m.get("source"), "knowledge": m.get("knowledge")}
        self._rec.write(json.dumps(row) + "\n")
        if (m.get("quality") or 0.0) >= self.anneal_threshold:
            cat = m.get("category", "general")
            fh = self._anneal.get(cat)
            if fh is None:
                path = Path(self.output_dir) / "anneal" / cat / f"{self._rank:05d}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                fh = self._anneal[cat] = open(path, "w", encoding="utf-8")
            fh.write(json.dumps({"id": doc.id, "text": doc.text, "metadata": clean_metadata(m)},
                                ensure_ascii=False) + "\n")
        return doc

    def end(self, rank: int):
        self._rec.close()
        for fh in self._anneal.values():
            fh.close()
        return iter(())


_INTERNAL = ("skip", "_html_bytes", "file")


def clean_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k not in _INTERNAL}
