"""Contamination (paper 5.1.4): 8-gram overlap of items with real token shards, and the clean-vs-all table.

The corpus is real text (the pydoc topic pages) tokenized with herd's Llama 3 tokenizer and written
with herd's own ShardWriter. Planted items are made of random letter-words (seeded), so no 8 of their
tokens occur in the corpus unless the test put them there: a full plant must read 1.0, a half plant
exactly half, an unplanted item 0.0.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from herd.data.shards import ShardWriter
from herd.eval.contamination import (
    choose_threshold,
    contamination_report,
    contamination_table,
    open_shard_sources,
    report_markdown,
    write_report,
    scan,
    scan_items,
)
from herd.eval.ngram_scan import ItemNGrams, ngram_hashes, row_hashes, scan_sources

N = 8


def random_text(rng: np.random.Generator, words: int) -> str:
    letters = np.array(list("bcdfghjklmnpqrstvwxzaeiouy"))
    return " ".join("".join(rng.choice(letters, size=int(rng.integers(3, 9)))) for _ in range(words))


def write_source(directory: Path, docs: list[list[int]], vocab: int, max_shard_tokens: int = 1 << 20) -> Path:
    with ShardWriter(directory, directory.name, tokenizer={"name": "llama3", "vocab_size": vocab},
                     max_shard_tokens=max_shard_tokens) as writer:
        writer.add_many(docs)
        writer.close()
    return directory


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, llama3_tokenizer) -> dict:
    """Real pydoc text in several shard files, with items planted fully, half, or not at all."""
    from pydoc_data.topics import topics

    tok = llama3_tokenizer
    docs = [tok.encode(topics[k], bos=True, eos=True) for k in sorted(topics)[:24]]
    rng = np.random.default_rng(14)
    full = [tok.encode(random_text(rng, int(rng.integers(12, 40)))) for _ in range(12)]
    half = [tok.encode(random_text(rng, 30)) for _ in range(6)]
    clean = [tok.encode(random_text(rng, int(rng.integers(10, 40)))) for _ in range(10)]
    # plant: middle of a document, right after BOS, right before EOS
    for i, item in enumerate(full):
        doc = docs[i % len(docs)]
        at = [len(doc) // 2, 1, len(doc) - 1][i % 3]
        docs[i % len(docs)] = doc[:at] + item + doc[at:]
    half_lengths = []
    for i, item in enumerate(half):
        h = len(item) // 2
        half_lengths.append(h)
        doc = docs[-1 - i]
        docs[-1 - i] = doc[: len(doc) // 3] + item[:h] + doc[len(doc) // 3:]
    natural = [docs[2][100:140], docs[7][5:5 + N], docs[11][-30:]]  # real text, as stored
    path = write_source(tmp_path_factory.mktemp("shards") / "general", docs, tok.vocab_size,
                        max_shard_tokens=sum(map(len, docs)) // 4)  # several shard files
    return {"dir": path, "docs": docs, "full": full, "half": half, "half_lengths": half_lengths,
            "clean": clean, "natural": natural, "vocab": tok.vocab_size}


# -- the hash ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 13, 16])
def test_rolling_hash_is_the_polynomial_hash(n: int) -> None:
    rng = np.random.default_rng(n)
    tokens = rng.integers(0, 1 << 32, 40, dtype=np.uint64).astype(np.uint32)
    base = 0x9E3779B97F4A7C15
    expected = [sum(int(tokens[i + j]) * pow(base, n - 1 - j, 1 << 64) for j in range(n)) % (1 << 64)
                for i in range(len(tokens) - n + 1)]
    assert ngram_hashes(tokens, n).tolist() == expected
    windows = np.lib.stride_tricks.sliding_window_view(tokens, n)
    assert row_hashes(windows).tolist() == expected
    assert ngram_hashes(tokens[: n - 1], n).size == 0


# -- the scan ---------------------------------------------------------------------------------
def test_planted_items_found_and_nothing_else(corpus: dict) -> None:
    items = corpus["full"] + corpus["half"] + corpus["clean"] + corpus["natural"]
    result = scan(corpus["dir"], items)
    f = result.fractions
    nf, nh, nc = len(corpus["full"]), len(corpus["half"]), len(corpus["clean"])
    assert f[:nf] == [1.0] * nf  # 100% of the fully planted items, fully covered
    for got, item, h in zip(f[nf:nf + nh], corpus["half"], corpus["half_lengths"], strict=True):
        assert got == pytest.approx(h / len(item), abs=1e-12)  # exactly the planted half
        assert 0.4 < got < 0.6
    assert f[nf + nh:nf + nh + nc] == [0.0] * nc  # nothing else
    assert f[nf + nh + nc:] == [1.0, 1.0, 1.0]  # real corpus text (one item of exactly n tokens)
    assert result.stats.collisions == 0 and result.stats.shards > 1
    assert result.stats.tokens == sum(len(d) for d in corpus["docs"])
    assert scan_items(corpus["dir"], items) == f


def test_chunk_seams_change_nothing(corpus: dict) -> None:
    """Windows that straddle the scan's chunks are still seen (chunks overlap by n - 1 tokens)."""
    items = corpus["full"] + corpus["half"] + corpus["clean"]
    big = scan(corpus["dir"], items).fractions
    for chunk in (1, 7, 8, 9, 101):
        assert scan(corpus["dir"], items, chunk_tokens=chunk).fractions == big


def brute_force(docs: list[list[int]], items: list[list[int]], n: int) -> list[float]:
    """The definition, with Python sets: n-grams inside each document; covered tokens per item."""
    grams = {tuple(d[i:i + n]) for d in docs for i in range(len(d) - n + 1)}
    out = []
    for item in items:
        covered = set()
        for p in range(len(item) - n + 1):
            if tuple(item[p:p + n]) in grams:
                covered.update(range(p, p + n))
        out.append(len(covered) / len(item) if item else 0.0)
    return out


@pytest.mark.parametrize("chunk", [997, 1 << 22])
def test_matches_the_definition_on_many_items(corpus: dict, chunk: int) -> None:
    """Hundreds of items (corpus slices, spliced slices, foreign text) against the brute-force definition;
    thousands of n-grams are found, so the scan narrows its filter table mid-way; a second scan with
    the same index starts from the full table again."""
    rng = np.random.default_rng(7)
    docs, items = corpus["docs"], []
    for _ in range(400):
        d = docs[int(rng.integers(len(docs)))]
        a, length = int(rng.integers(0, len(d) - 60)), int(rng.integers(1, 60))
        items.append(d[a:a + length])
    for _ in range(100):  # the end of a document + the start of the next: stored back to back
        j = int(rng.integers(len(docs) - 1))
        items.append(docs[j][-int(rng.integers(1, 30)):] + docs[j + 1][:int(rng.integers(1, 30))])
    items += corpus["clean"] + corpus["half"]
    index = ItemNGrams(items, N)
    assert len(index) > 4000
    sources = open_shard_sources(corpus["dir"])
    expected = brute_force(docs, items, N)
    for _ in range(2):
        found, stats = scan_sources(sources, index, chunk_tokens=chunk)
        assert index.coverage(found).tolist() == pytest.approx(expected, abs=1e-12)
        assert index.table_rows < len(index)  # the table was narrowed to the n-grams still missing


def test_ngrams_across_a_document_boundary_do_not_count(corpus: dict, tmp_path: Path) -> None:
    docs = corpus["docs"]
    a, b = docs[3], docs[4]
    spanning = a[-6:] + b[:6]  # ... EOS | BOS ..., adjacent in the .bin but two documents
    split = scan(corpus["dir"], [spanning])
    assert split.fractions == [0.0]
    assert split.stats.cross_document > 0  # the tokens matched; the boundary rejected them
    joined = write_source(tmp_path / "joined", [a + b], corpus["vocab"])  # control: one document
    assert scan_items(joined, [spanning]) == [1.0]


def test_short_items_are_defined(corpus: dict) -> None:
    doc = corpus["docs"][5]
    items = [doc[10:15], doc[10:10 + N - 1], doc[10:10 + N], []]
    result = scan(corpus["dir"], items)
    assert result.fractions == [0.0, 0.0, 1.0, 0.0]
    assert result.too_short == [True, True, False, True]
    assert scan_items(corpus["dir"], [doc[10:14]], n=4) == [1.0]  # short for 8, long enough for 4


def test_partial_overlap_counts_covered_tokens(corpus: dict) -> None:
    """Coverage is the union of matched windows: runs of 10 and 8 corpus tokens,
    each followed by 4 foreign ones: 18 of 26 tokens covered (windows overlapping inside the 10 count once)."""
    doc = corpus["docs"][6]
    rng = np.random.default_rng(5)
    noise = [int(t) for t in rng.integers(100_000, 110_000, 4)]
    item = doc[20:30] + noise + doc[200:208] + noise
    assert scan_items(corpus["dir"], [item]) == [pytest.approx(18 / 26)]


def test_hash_collisions_never_count(corpus: dict, tmp_path: Path) -> None:
    """With base 1 the hash is the token sum, so any permutation collides; the exact check rejects it."""
    rng = np.random.default_rng(3)
    item = [int(t) for t in rng.integers(1000, 2000, 12)]
    source = write_source(tmp_path / "perm", [[128000] + item[::-1] + [128001], [128000] + item[:9] + [128001]],
                          corpus["vocab"])
    index = ItemNGrams([item], N, base=1)
    found, stats = scan_sources(open_shard_sources(source), index)
    assert stats.collisions > 0
    assert index.coverage(found).tolist() == [9 / 12]  # only the two real 8-grams of item[:9]
    # the reversed item's n-grams collide with the item's own: both sit in one equal-hash group
    both = ItemNGrams([item, item[::-1]], N, base=1)
    assert len(both) == 10 and len(set(both.hashes.tolist())) == 5
    found, stats = scan_sources(open_shard_sources(source), both)
    assert both.coverage(found).tolist() == [9 / 12, 1.0]
    plain = ItemNGrams([item, item[::-1]], N)
    assert np.array_equal(np.sort(plain.rows.view("V32").ravel()), np.sort(both.rows.view("V32").ravel()))


def test_source_layouts_and_duplicates(corpus: dict, tmp_path: Path) -> None:
    parent = tmp_path / "tokens"
    shutil.copytree(corpus["dir"], parent / "general")
    shutil.copytree(corpus["dir"], parent / "general_hq")  # identical shard files: scanned once
    result = scan(parent, corpus["full"][:2])
    assert result.fractions == [1.0, 1.0]
    assert result.stats.duplicate_shards_skipped == result.stats.shards
    assert scan([parent / "general", corpus["dir"]], corpus["clean"][:1]).fractions == [0.0]
    with pytest.raises(ValueError, match="no herd token shards"):
        scan(tmp_path, [[1] * 10])
    with pytest.raises(ValueError, match="not found"):
        scan(tmp_path / "missing", [[1] * 10])
    with pytest.raises(ValueError, match="item 1 has a token id"):
        scan(corpus["dir"], [[1] * 10, [-1] * 10])
    with pytest.raises(ValueError, match="n-gram length"):
        scan(corpus["dir"], [[1] * 10], n=0)


# -- the table --------------------------------------------------------------------------------
def test_table_math_by_hand() -> None:
    fractions = [0, 0, 0, 0, 0, 0.5, 0.5, 1, 1, 1]
    correct = [1, 0, 0, 1, 0, 1, 1, 1, 1, 1]
    rows = contamination_table(fractions, correct, thresholds=(0.4, 0.8, 1.0))
    r = rows[0]
    assert (r["n_all"], r["n_clean"], r["n_contaminated"]) == (10, 5, 5)
    assert r["contaminated_share"] == 0.5
    assert (r["acc_all"], r["acc_clean"], r["acc_contaminated"]) == (0.7, 0.4, 1.0)
    assert r["gain"] == pytest.approx(0.3)
    p1, p2 = 6 / 7, 3 / 7  # Agresti-Caffo: (5+1)/(5+2), (2+1)/(5+2)
    half = 1.959963984540054 * math.sqrt(p1 * (1 - p1) / 7 + p2 * (1 - p2) / 7)
    assert r["gain_ci95"] == pytest.approx([0.5 * (p1 - p2 - half), 0.5 * (p1 - p2 + half)])
    assert r["significant"] is False  # N = 5 + 5 cannot show it
    r = rows[1]
    assert (r["n_clean"], r["n_contaminated"]) == (7, 3)
    assert r["acc_clean"] == pytest.approx(4 / 7) and r["gain"] == pytest.approx(0.7 - 4 / 7)
    assert rows[2]["n_contaminated"] == 3  # fraction >= T, so T = 1.0 keeps the fully covered
    assert choose_threshold(rows) is None


def test_table_edges_and_choice() -> None:
    rows = contamination_table([0.0, 0.1], None, thresholds=(0.5,))
    assert rows[0]["contaminated_share"] == 0.0 and rows[0]["acc_all"] is None and rows[0]["gain"] is None
    everything = contamination_table([1.0, 1.0], [True, False], thresholds=(0.5,))[0]
    assert everything["acc_clean"] is None and everything["gain"] is None and everything["gain_ci95"] is None
    # a large, clear effect: 200 contaminated all right, 800 clean at 50%
    fractions = [0.9] * 200 + [0.0] * 800
    correct = [1.0] * 200 + [1.0, 0.0] * 400
    rows = contamination_table(fractions, correct, thresholds=(0.2, 0.95))
    assert rows[0]["significant"] and rows[0]["gain"] == pytest.approx(0.6 - 0.5)
    assert rows[1]["n_contaminated"] == 0 and rows[1]["gain"] == pytest.approx(0.0)
    assert choose_threshold(rows) == 0.2
    for bad, match in ((dict(thresholds=(0.0,)), "thresholds"), (dict(thresholds=(1.5,)), "thresholds"),
                       (dict(correct=[1]), "one correctness value"), (dict(correct=[2, 0]), r"\[0, 1\]")):
        with pytest.raises(ValueError, match=match):
            contamination_table([0.1, 0.2], **{"correct": None, **bad})
    with pytest.raises(ValueError, match="fractions"):
        contamination_table([1.5])


def test_report_is_json_and_markdown(corpus: dict, tmp_path: Path) -> None:
    tasks = {"planted": corpus["full"] + corpus["clean"], "clean": corpus["clean"][:4], "unscored": corpus["full"][:3]}
    correct = {"planted": [True] * len(corpus["full"]) + [False] * len(corpus["clean"]), "clean": [True] * 4}
    report = contamination_report(corpus["dir"], tasks, correct)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    planted = report["tasks"]["planted"]
    assert planted["items"] == 22 and planted["too_short"] == 0
    assert planted["fractions"] == [1.0] * 12 + [0.0] * 10
    row = planted["table"][0]
    assert (row["n_contaminated"], row["acc_all"], row["acc_clean"]) == (12, 12 / 22, 0.0)
    assert planted["chosen_threshold"] == 0.2  # the same gain at every threshold: the first
    assert report["tasks"]["clean"]["table"][0]["contaminated_share"] == 0.0
    assert report["tasks"]["clean"]["chosen_threshold"] is None
    assert report["corpus"]["tokens"] == sum(len(d) for d in corpus["docs"])
    md = report_markdown(report)
    json_path, md_path = write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text()) == report and md_path.read_text() == md
    assert "| planted | 22 | 0.2 | 54.5 | 54.5 | 0.0 | +54.5 |" in md
    assert "| clean | 4 | 0.2 (no sig. gain) | 0.0 | 100.0 | 100.0 | +0.0 |" in md
    assert "| unscored | 3 | 0.2 (no accuracies) | 100.0 | - | - | - |" in md
    assert report["tasks"]["unscored"]["table"][-1]["n_contaminated"] == 3
    with pytest.raises(ValueError, match="unknown task"):
        contamination_report(corpus["dir"], tasks, {"nope": [True]})
    with pytest.raises(ValueError, match="one correctness value"):
        contamination_report(corpus["dir"], tasks, {"clean": [True]})
