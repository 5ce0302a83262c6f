"""The local corpus (stdlib docs/code, synthetic math, local translations) and its statistics."""

from __future__ import annotations

import ast
import json
import math
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from herd.data import DataError, build_loader
from herd.data.local_corpus import build_local_corpus, roff_to_text, unigram_entropy
from herd.data.shards import ShardWriter
from herd.data.synthetic_math import TEMPLATES, word_problem
from herd.data.tokenize_sources import tokenize_files


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_local_corpus(tmp_path_factory.mktemp("corpus"), max_docs_per_source=6, seed=0)


def test_corpus_sources_are_real_and_limited(corpus: dict[str, Path]) -> None:
    assert {"general", "code", "math"} <= set(corpus)
    summary = json.loads((corpus["general"].parent / "corpus.json").read_text(encoding="utf-8"))
    for name, path in corpus.items():
        docs = read_jsonl(path)
        assert len(docs) == 6 == summary["sources"][name]["documents"]
        assert all(d["text"].strip() and d["id"] for d in docs)
        assert len({d["id"] for d in docs}) == 6
    for doc in read_jsonl(corpus["code"]):  # real Python source, unmodified
        assert doc["id"].startswith("stdlib:")
        ast.parse(doc["text"])
    assert all(d["id"].startswith(("pydoc-topic:", "docstrings:")) for d in read_jsonl(corpus["general"]))
    if "multilingual" in corpus:
        for doc in read_jsonl(corpus["multilingual"]):
            assert sum(ord(c) > 127 for c in doc["text"]) > 10  # non-English text really is there
    else:
        assert "multilingual" in summary["absent"]


def test_corpus_is_deterministic(corpus: dict[str, Path], tmp_path: Path) -> None:
    again = build_local_corpus(tmp_path, max_docs_per_source=6, seed=0)
    for name, path in corpus.items():
        assert again[name].read_bytes() == path.read_bytes()
    other = build_local_corpus(tmp_path / "seed1", max_docs_per_source=6, seed=1)
    assert other["math"].read_bytes() != corpus["math"].read_bytes()
    with pytest.raises(DataError, match="positive"):
        build_local_corpus(tmp_path / "bad", max_docs_per_source=0)


def test_math_problems_are_correct() -> None:
    """Every `a op b = c` step of every worked solution checks out, over all templates."""
    rng = random.Random(0)
    kinds = set()
    for _ in range(500):
        text = word_problem(rng)
        question, solution = text.split("\nSolution: ")
        kinds.add(question.split()[1])
        assert re.search(r"\nAnswer: \d", solution)
        steps = 0
        for expression, result in re.findall(r"((?:\d+ [-+×÷] )+\d+) = (\d+)", solution):
            assert eval(expression.replace("×", "*").replace("÷", "//")) == int(result), text
            steps += 1
        for a, b, q, r in re.findall(r"(\d+) ÷ (\d+) = (\d+) remainder (\d+)", solution):
            assert divmod(int(a), int(b)) == (int(q), int(r)), text
        assert steps, text
    assert len(TEMPLATES) >= 8 and len(kinds) > 5


def test_roff_to_text() -> None:
    page = ('.\\" comment\n.TH "X" "1"\n.SH "BESCHREIBUNG"\n.PP\nDie Datei f\\(:ur Passw\\(:orter\\&.\n'
            '.B fett\nText mit \\fBFett\\fR und \\-o.\n')
    assert roff_to_text(page) == "BESCHREIBUNG\n\nDie Datei für Passwörter.\nfett\nText mit Fett und -o."


def test_corpus_tokenizes_and_loads(corpus: dict[str, Path], tmp_path: Path, llama3_tokenizer) -> None:
    dirs = {}
    for name, path in corpus.items():
        dirs[name] = tmp_path / name
        manifest = tokenize_files([path], dirs[name], name, workers=1, validation_fraction=0.2, progress=False)
        assert manifest["documents"] == 6 and manifest["split"]["validation_documents"] == 1
    mix = "llama3" if "multilingual" in dirs else {"general": 0.5, "math": 0.25, "code": 0.17}
    batch = build_loader(dirs, mix, seed=0).next_batch(2, 128)
    assert batch.inputs.shape == (2, 128) and int(batch.inputs[0, 0]) == llama3_tokenizer.bos_id
    # The unigram entropy equals an independent count over the texts (every token but BOS).
    counts: Counter = Counter()
    for path in corpus.values():
        for doc in read_jsonl(path):
            counts.update(llama3_tokenizer.encode(doc["text"], eos=True))
    p = np.array(list(counts.values()), dtype=np.float64) / sum(counts.values())
    assert unigram_entropy(list(dirs.values())) == pytest.approx(float(-(p * np.log(p)).sum()), rel=1e-9)
    assert 0 < unigram_entropy(dirs) < math.log(llama3_tokenizer.vocab_size)


def test_unigram_entropy_of_a_weighted_mix(tmp_path: Path) -> None:
    for name, token in (("a", 5), ("b", 6)):
        with ShardWriter(tmp_path / name, name, tokenizer={"name": "t", "vocab_size": 10, "bos_id": 0}) as w:
            w.add([0, token, token, token])
            w.close()
    dirs = {"a": tmp_path / "a", "b": tmp_path / "b"}
    assert unigram_entropy(dirs) == pytest.approx(math.log(2))
    assert unigram_entropy(dirs, {"a": 0.25, "b": 0.75}) == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert unigram_entropy(dirs, {"a": 1.0}) == pytest.approx(0.0)


def test_cli_corpus_with_tokenize(tmp_path: Path, capsys) -> None:
    from herd.cli import main

    assert main(["corpus", str(tmp_path), "--max-docs", "3", "--tokenize", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "unigram entropy of the corpus" in out
    for name in ("general", "code", "math"):
        assert json.loads((tmp_path / "tokens" / name / "manifest.json").read_text())["documents"] == 3
