"""Curation steps on small fixtures with known answers: MinHash, line dedup, URL dedup, classifiers, mix."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupCluster

from herd.data.curation.config import CurationConfigError, config_from_dict, load_config
from herd.data.curation.dedup_url import UrlFilterStep, UrlRecordStep, normalize_url, resolve_url_duplicates, to_epoch
from herd.data.curation.domain import domain_seed, keep_rates, knowledge_seed
from herd.data.curation.line_dedup import (
    LineDedupStep, LineMergeStep, LineSignatureStep, bucket_count, document_key,
)
from herd.data.curation.minhash import (
    HerdMinhashCluster, HerdMinhashSignature, MinHasher, MinhashRemoveStep, datatrove_config, s_curve,
    shingle_hashes, similarity_at,
)
from herd.data.curation.mix import build_mix
from herd.data.curation.quality_model import HashedNgramClassifier, heuristic_annotator, median_split

VOCAB = [f"w{i}" for i in range(5000)]


def _doc(rng: random.Random, n: int = 150) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def _perturb(text: str, rng: random.Random, frac: float) -> str:
    words = text.split()
    for _ in range(int(len(words) * frac)):
        words[rng.randrange(len(words))] = rng.choice(VOCAB)
    return " ".join(words)


def _run(pipeline, tasks, logdir):
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(logdir)).run()


class _ListReader:
    """A pipeline head that yields a fixed list of documents per rank."""

    def __init__(self, per_rank):
        self.per_rank = per_rank

    def __call__(self, data, rank=0, world_size=1):
        for text, meta, doc_id in self.per_rank[rank]:
            yield Document(text=text, id=doc_id, metadata=dict(meta))


class _Collect:
    def __init__(self, path):
        self.path = path

    def __call__(self, data, rank=0, world_size=1):
        with open(f"{self.path}-{rank}.jsonl", "w") as fh:
            for d in data:
                fh.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
                yield d


def _kept(path, ranks):
    out = {}
    for r in range(ranks):
        with open(f"{path}-{r}.jsonl") as fh:
            for line in fh:
                rec = json.loads(line)
                out[rec["id"]] = rec["text"]
    return out


def test_minhash_catches_injected_near_duplicates_and_keeps_unrelated(tmp_path):
    rng = random.Random(0)
    originals = [_doc(rng) for _ in range(40)]
    # 15 near-duplicates: 2 of 150 words replaced (Jaccard of the 5-gram sets ~0.88: caught with P > 0.99)
    dups = [(f"dup{i}", _perturb(originals[i], rng, 0.014)) for i in range(15)]
    for i, (_, text) in enumerate(dups):
        a, b = set(shingle_hashes(originals[i]).tolist()), set(shingle_hashes(text).tolist())
        assert 0.85 <= len(a & b) / len(a | b) < 1.0
    docs = [(f"orig{i}", t) for i, t in enumerate(originals)] + dups
    rng.shuffle(docs)
    # originals must come first in datatrove's keep order: put them all on rank 0, duplicates on rank 1
    per_rank = {0: [(t, {"lang": "en"}, i) for i, t in docs if i.startswith("orig")],
                1: [(t, {"lang": "en"}, i) for i, t in docs if i.startswith("dup")]}
    cfg = datatrove_config(14, 8, 5, 1)
    sigs, buckets, remove = (str(tmp_path / d) for d in ("sigs", "buckets", "remove"))
    _run([_ListReader(per_rank), HerdMinhashSignature(sigs)], 2, tmp_path / "l1")
    _run([MinhashDedupBuckets(sigs, buckets, config=cfg)], 14, tmp_path / "l2")
    _run([MinhashDedupCluster(buckets, remove, config=cfg)], 1, tmp_path / "l3")
    collect = tmp_path / "kept"
    _run([_ListReader(per_rank), MinhashRemoveStep(tmp_path / "out", remove, stage="t"), _Collect(collect)], 2,
         tmp_path / "l4")
    kept = _kept(collect, 2)
    assert all(f"orig{i}" in kept for i in range(40)), "an unrelated document was removed"
    assert not [k for k in kept if k.startswith("dup")], "a near-duplicate survived"


def _minhash_kept(tmp_path, name, per_rank):
    """herd's MinHash stages (signatures with document keys, datatrove's buckets, herd's clusters)."""
    ranks, cfg = len(per_rank), datatrove_config(14, 8, 5, 1)
    sigs, buckets, remove, keys = (str(tmp_path / name / d) for d in ("sigs", "buckets", "remove", "keys"))
    _run([_ListReader(per_rank), HerdMinhashSignature(sigs, keys_folder=keys)], ranks, tmp_path / name / "l1")
    _run([MinhashDedupBuckets(sigs, buckets, config=cfg)], 14, tmp_path / name / "l2")
    _run([HerdMinhashCluster(buckets, remove, keys)], 1, tmp_path / name / "l3")
    collect = tmp_path / name / "kept"
    _run([_ListReader(per_rank), MinhashRemoveStep(tmp_path / name / "out", remove, stage="t"), _Collect(collect)],
         ranks, tmp_path / name / "l4")
    return _kept(collect, ranks)


def test_minhash_cluster_survivor_does_not_depend_on_tasks(tmp_path):
    rng = random.Random(8)
    originals = [_doc(rng) for _ in range(6)]
    rows = [(t, {"lang": "en"}, f"orig{i}") for i, t in enumerate(originals)]
    # three copies of originals[0] (exact and near) and two of originals[1], interleaved with the rest
    rows += [(originals[0], {"lang": "en"}, "copy0a"), (_perturb(originals[0], rng, 0.007), {"lang": "en"}, "copy0b"),
             (originals[1], {"lang": "en"}, "copy1a"), (_perturb(originals[0], rng, 0.007), {"lang": "en"}, "copy0c")]
    one = _minhash_kept(tmp_path, "one", {0: rows})
    three = _minhash_kept(tmp_path, "three", {r: rows[::-1][r::3] for r in range(3)})  # another order and split
    assert one == three
    assert len(one) == 6  # one survivor per cluster, every unrelated document kept
    assert all(f"orig{i}" in one for i in range(2, 6))


def test_minhash_signature_estimates_jaccard_and_is_per_language():
    rng = random.Random(1)
    hasher = MinHasher(bands=16, rows=16, ngram=5, seed=3)  # 256 hashes: estimate within ~0.1
    for frac in (0.02, 0.1, 0.3):
        a = _doc(rng, 400)
        b = _perturb(a, rng, frac)
        sa, sb = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
        exact = len(sa & sb) / len(sa | sb)
        est = float(np.mean(hasher.signature(a) == hasher.signature(b)))
        assert abs(est - exact) < 0.1, (frac, exact, est)
    text = _doc(rng)
    assert np.array_equal(hasher.signature(text, "en"), hasher.signature(text, "en"))
    assert np.mean(hasher.signature(text, "en") == hasher.signature(text, "de")) < 0.05


def test_s_curve_parameters():
    assert similarity_at(0.5) == pytest.approx(0.6847, abs=1e-3)
    assert similarity_at(0.9) == pytest.approx(0.7900, abs=1e-3)
    assert s_curve(similarity_at(0.5)) == pytest.approx(0.5)
    assert s_curve(0.3) < 1e-3


def _line_docs(counts: dict[str, int], n_docs: int, rng: random.Random):
    """n_docs documents; line L appears in counts[L] distinct documents; every doc has a unique line."""
    docs = [[f"unique line {i} {rng.random()}"] for i in range(n_docs)]
    for line, c in counts.items():
        for i in rng.sample(range(n_docs), c):
            docs[i].append(line)
    return ["\n".join(d) for d in docs]


def _line_dedup_kept(tmp_path, name, per_rank, bucket_docs, per_language=True):
    """Signature (one task per rank), merge, filter: the kept documents by id."""
    out, sigs, frequent = tmp_path / f"out-{name}", tmp_path / f"sigs-{name}", tmp_path / f"frequent-{name}"
    tasks = len(per_rank)
    _run([_ListReader(per_rank), LineSignatureStep(out, sigs, per_language=per_language, stage="t")], tasks,
         tmp_path / f"log1-{name}")
    _run([LineMergeStep(str(sigs), str(frequent), tasks, bucket_docs, 6)], 1, tmp_path / f"log2-{name}")
    collect = tmp_path / name
    _run([_ListReader(per_rank), LineDedupStep(out, frequent, per_language=per_language, stage="t"),
          _Collect(collect)], tasks, tmp_path / f"log3-{name}")
    return _kept(collect, tasks)


def _line_dedup(tmp_path, name, per_rank, bucket_docs, per_language=True):
    return "\n".join(_line_dedup_kept(tmp_path, name, per_rank, bucket_docs, per_language).values())


def test_line_dedup_removes_seven_keeps_six(tmp_path):
    rng = random.Random(2)
    texts = _line_docs({"seen seven times": 7, "seen six times": 6}, 20, rng)
    kept = _line_dedup_kept(tmp_path, "k", {0: [(t, {"lang": "en"}, f"d{i}") for i, t in enumerate(texts)]}, 100)
    assert len(kept) == 20
    joined = "\n".join(kept.values())
    assert "seen seven times" not in joined
    assert joined.count("seen six times") == 6
    assert all(f"unique line {i} " in joined for i in range(20))


def test_line_dedup_counts_over_all_tasks(tmp_path):
    """A line in 7 documents split 3 + 2 + 2 over three tasks is removed, exactly as with one task."""
    rng = random.Random(6)
    texts = _line_docs({"seen seven times": 7, "seen six times": 6}, 21, rng)
    rows = [(t, {"lang": "en"}, f"d{i}") for i, t in enumerate(texts)]
    three = _line_dedup_kept(tmp_path, "three", {r: rows[r::3] for r in range(3)}, 100)
    spread = [sum("seen seven times" in t for t, _, _ in rows[r::3]) for r in range(3)]
    assert max(spread) <= 6, spread  # no task alone sees it more than 6 times
    one = _line_dedup_kept(tmp_path, "one", {0: rows}, 100)
    assert three == one
    assert "seen seven times" not in "\n".join(one.values())
    assert "\n".join(one.values()).count("seen six times") == 6


def test_line_dedup_counts_per_bucket(tmp_path):
    rng = random.Random(3)
    texts = _line_docs({}, 20, rng)
    ids = [f"d{i}" for i in range(20)]
    bucket = [document_key(i) % bucket_count(20, 10) for i in ids]  # 20 documents, 10 per bucket: 2 buckets
    first, second = [i for i in range(20) if bucket[i] == 0], [i for i in range(20) if bucket[i] == 1]
    assert len(first) >= 4 and len(second) >= 4
    for i in first[:4] + second[:4]:  # 8 occurrences, 4 + 4 over the two buckets: kept
        texts[i] += "\nsplit across buckets"
    for i in first[:7]:  # 7 in one bucket: removed
        texts[i] += "\nseven in one bucket"
    rows = {0: [(t, {"lang": "en"}, ids[i]) for i, t in enumerate(texts)]}
    joined = _line_dedup(tmp_path, "b", rows, 10)
    assert joined.count("split across buckets") == 8
    assert "seven in one bucket" not in joined
    joined = _line_dedup(tmp_path, "one", rows, 20)  # one bucket: 8 occurrences
    assert "split across buckets" not in joined


def test_line_dedup_per_language(tmp_path):
    rng = random.Random(5)
    texts = _line_docs({}, 16, rng)
    langs = ["en"] * 8 + ["fr"] * 8
    for i in (0, 1, 2, 3, 8, 9, 10, 11):  # 4 English + 4 French documents share a line
        texts[i] += "\nshared line"
    rows = {0: [(t, {"lang": langs[i]}, f"d{i}") for i, t in enumerate(texts)]}
    assert _line_dedup(tmp_path, "lang", rows, 100).count("shared line") == 8
    assert "shared line" not in _line_dedup(tmp_path, "nolang", rows, 100, per_language=False)


def test_url_dedup_keeps_most_recent(tmp_path):
    out = tmp_path / "out"
    rows = {
        0: [("old", {"url": "https://Example.com/page#top", "timestamp": "2019-05-01"}, "a-old"),
            ("other", {"url": "https://example.com/other", "timestamp": "2019-01-01"}, "b"),
            ("newest", {"url": "https://example.com:443/page", "timestamp": "2024-03-01T10:00:00Z"}, "a-new")],
        1: [("middle", {"url": "https://example.com/page", "timestamp": "1600000000"}, "a-mid"),
            ("solo", {"url": "https://example.org/", "timestamp": "0"}, "c")],
    }
    _run([_ListReader(rows), UrlRecordStep(out, stage="t")], 2, tmp_path / "l1")
    counts = resolve_url_duplicates(out / "url", 2)
    assert counts == {"documents": 5, "unique_urls": 3, "removed": 2}
    collect = tmp_path / "kept"
    _run([_ListReader(rows), UrlFilterStep(out, stage="t"), _Collect(collect)], 2, tmp_path / "l2")
    assert sorted(_kept(collect, 2)) == ["a-new", "b", "c"]
    # two copies crawled at the same time: the survivor is decided by content, not by task or read order
    tie = [("copy one", {"url": "https://example.com/t", "timestamp": "2020-01-01"}, "t1"),
           ("copy two", {"url": "https://example.com/t", "timestamp": "2020-01-01"}, "t2")]
    survivors = []
    for name, split in (("fwd", {0: tie[:1], 1: tie[1:]}), ("rev", {0: tie[1:], 1: tie[:1]}), ("one", {0: tie})):
        _run([_ListReader(split), UrlRecordStep(tmp_path / name, stage="t")], len(split), tmp_path / f"{name}-l1")
        resolve_url_duplicates(tmp_path / name / "url", len(split))
        _run([_ListReader(split), UrlFilterStep(tmp_path / name, stage="t"), _Collect(tmp_path / f"{name}-kept")],
             len(split), tmp_path / f"{name}-l2")
        survivors.append(sorted(_kept(tmp_path / f"{name}-kept", len(split))))
    assert survivors[0] == survivors[1] == survivors[2] and len(survivors[0]) == 1
    assert normalize_url("HTTP://Example.COM:80/a?b=1#x") == "http://example.com/a?b=1"
    assert to_epoch("2024-03-01T10:00:00Z") > to_epoch("1600000000") > to_epoch("2019-05-01") > to_epoch("junk")


def test_hashed_ngram_classifier_learns_and_roundtrips(tmp_path):
    rng = random.Random(4)
    code = [f"def f{i}(x):\n    return x + {i}\nimport os\nclass C{i}: pass" for i in range(20)]
    prose = [f"The river valley in spring {rng.choice(['is', 'was'])} green and the farmers sow wheat {i}."
             for i in range(20)]
    clf = HashedNgramClassifier(["general", "code"], dim=1 << 14).fit(code + prose, ["code"] * 20 + ["general"] * 20)
    assert clf.predict("def g(y):\n    return y * 2")[0] == "code"
    assert clf.predict("The farmers in the valley harvest wheat in autumn.")[0] == "general"
    clf.save(tmp_path / "m.npz")
    again = HashedNgramClassifier.load(tmp_path / "m.npz")
    assert np.allclose(again.predict_proba("def h(): return 1"), clf.predict_proba("def h(): return 1"))
    with pytest.raises(ValueError, match="not among"):
        HashedNgramClassifier(["a", "b"]).fit(["x"], ["c"])


def test_annotator_labels_and_seeds():
    scores = heuristic_annotator(["Home\nAbout\nLogin\nMenu", "This is a long and informative sentence about "
                                  "the history of the river valley and its people."])
    assert scores[1] > scores[0]
    assert median_split([0.1, 0.9, 0.5, 0.7]) == ["low", "high", "low", "high"]
    assert sorted(median_split([1.0, 1.0, 1.0, 1.0])) == ["high", "high", "low", "low"]
    assert domain_seed("def f(x):\n    y = x + 1\n    return y\n") == ("code", "heuristic")
    problem = "Ada has 12 apples and buys 3 more. 12 + 3 = 15. Answer: the total is 15."
    assert domain_seed(problem) == ("math", "heuristic")
    assert domain_seed("A walk in the park.", "code") == ("code", "given")
    text = "The python function returns a string; the module defines a class and a method."
    assert knowledge_seed(text) == "computing"
    assert knowledge_seed("Hello there.") is None
    rates = keep_rates(["computing"] * 8 + ["society"] * 2, cap=0.4)
    assert rates["computing"] == pytest.approx(0.5) and rates["society"] == 1.0


def test_build_mix_weights_budget_and_missing():
    counts = {"general": {"documents": 10, "tokens": 1000}, "math": {"documents": 5, "tokens": 100},
              "code": {"documents": 2, "tokens": 340}}
    mix = build_mix({"general": 0.5, "math": 0.25, "code": 0.17, "multilingual": 0.08}, counts, max_epochs=2.0)
    w = mix["weights"]
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["general"] / w["math"] == pytest.approx(2.0)
    assert mix["dropped"] == ["multilingual"]
    # math is scarcest per weight: budget = 100 tokens * 2 epochs / w_math
    assert mix["budget_tokens"] == int(100 * 2.0 / w["math"])
    assert mix["sources"]["math"]["epochs_at_budget"] == pytest.approx(2.0)
    up = build_mix({"general": 0.5, "math": 0.25}, counts, 4.0, upsample={"math": 2.0})
    assert up["weights"]["math"] == pytest.approx(0.5)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(CurationConfigError, match=r"unknown config key 'minhash.bandz'; valid keys in \[minhash\]: enabled, ngram, bands"):
        config_from_dict({"inputs": [{"name": "a", "path": "x"}], "minhash": {"bandz": 3}})
    with pytest.raises(CurationConfigError, match=r"inputs\[0\].kind='csv'"):
        config_from_dict({"inputs": [{"name": "a", "path": "x", "kind": "csv"}]})
    with pytest.raises(CurationConfigError, match="nothing to curate"):
        config_from_dict({})
    path = tmp_path / "c.toml"
    path.write_text('output_dir = "o"\n[[inputs]]\nname = "a"\npath = "x"\n')
    cfg = load_config(path, ["line_dedup.max_count=3", "mix.target={general=1.0}"])
    assert cfg.line_dedup.max_count == 3 and cfg.mix.target == {"general": 1.0}
    path.write_text("output_dir = [")
    with pytest.raises(CurationConfigError, match="not valid TOML"):
        load_config(path)
