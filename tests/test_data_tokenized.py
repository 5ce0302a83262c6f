"""herd.data: token shards, tokenization, mixture sampling, packing and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from herd.data import DataError, build_loader
from herd.data.loader import IGNORE_INDEX
from herd.data.mixture import NAMED_MIXES, MixtureSampler, resolve_weights
from herd.data.shards import ShardWriter, TokenShards, read_manifest, sha256_file, validation_documents
from herd.data.tokenize_sources import tokenize_files

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Ünïcödé, 日本語のテキスト, emoji 🎉 and <|end_of_text|> written as plain text.",
    "Question: 3 + 4?\nSolution: 3 + 4 = 7.\nAnswer: 7",
    "a " * 300,
]
VOCAB = 128_256


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def synthetic_source(directory: Path, name: str, lengths: list[int], *, seed: int = 0,
                     validation_fraction: float = 0.0, max_shard_tokens: int = 1 << 20) -> list[np.ndarray]:
    """A source of random documents (ids < 1000, BOS/EOS around them) with the given lengths."""
    rng = np.random.default_rng(seed)
    docs = [np.concatenate([[128000], rng.integers(0, 1000, n - 2), [128001]]).astype(np.uint32) for n in lengths]
    with ShardWriter(directory / name, name, tokenizer={"name": "llama3", "vocab_size": VOCAB},
                     validation_fraction=validation_fraction, max_shard_tokens=max_shard_tokens) as writer:
        writer.add_many(docs)
        writer.close()
    return docs


@pytest.fixture()
def three_sources(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(1)
    synthetic_source(tmp_path, "short", list(rng.integers(3, 20, 300)), seed=1, validation_fraction=0.1)
    synthetic_source(tmp_path, "long", list(rng.integers(50, 150, 100)), seed=2, validation_fraction=0.1,
                     max_shard_tokens=2000)
    synthetic_source(tmp_path, "mid", list(rng.integers(20, 60, 200)), seed=3, validation_fraction=0.1)
    return {name: tmp_path / name for name in ("short", "long", "mid")}


# -- shards and tokenization ------------------------------------------------------------------
def test_jsonl_round_trip_and_manifest(tmp_path: Path, llama3_tokenizer) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "id": i} for i, t in enumerate(TEXTS)])
    manifest = tokenize_files([src], tmp_path / "out", "general", workers=1, max_shard_tokens=100, progress=False)
    shards = TokenShards(tmp_path / "out", verify=True)
    expected = [llama3_tokenizer.encode(t, bos=True, eos=True) for t in TEXTS]
    assert [shards.document(i).tolist() for i in range(shards.num_documents)] == expected
    assert manifest["documents"] == len(TEXTS) == shards.num_documents
    assert manifest["tokens"] == sum(map(len, expected)) == shards.num_tokens
    assert len(manifest["shards"]) > 1  # max_shard_tokens forced a split; documents are never cut
    assert sum(s["documents"] for s in manifest["shards"]) == len(TEXTS)
    assert manifest["tokenizer"]["vocab_size"] == llama3_tokenizer.vocab_size
    for shard in manifest["shards"]:
        assert sha256_file(tmp_path / "out" / shard["bin"]) == shard["sha256"]["bin"]
        assert (tmp_path / "out" / shard["bin"]).stat().st_size == 4 * shard["tokens"]
    assert read_manifest(tmp_path / "out") == manifest
    assert not list((tmp_path / "out").glob("*.tmp"))
    # Rewriting the directory replaces it whole: stale shards of the old manifest are removed.
    again = tokenize_files([src], tmp_path / "out", "general", workers=1, progress=False)
    assert len(again["shards"]) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "shard-00000.bin",
                                                                     "shard-00000.idx"]


def test_failed_write_leaves_no_partial_directory(tmp_path: Path) -> None:
    with (pytest.raises(DataError, match="out of range"),
          ShardWriter(tmp_path / "s", "s", tokenizer={"name": "llama3", "vocab_size": 100}) as writer):
        writer.add([1, 2, 3])
        writer.add([1, 200])
    assert list((tmp_path / "s").iterdir()) == []
    with pytest.raises(DataError, match="not a herd token shard directory"):
        TokenShards(tmp_path / "s")


def test_parallel_tokenization_is_identical_to_serial(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": f"{t} #{i}"} for i in range(40) for t in TEXTS[:2]])
    serial = tokenize_files([src], tmp_path / "one", "s", workers=1, chunk_documents=7, progress=False)
    parallel = tokenize_files([src], tmp_path / "two", "s", workers=2, chunk_documents=7, progress=False)
    assert [s["sha256"] for s in serial["shards"]] == [s["sha256"] for s in parallel["shards"]]


def test_malformed_json_lines_are_counted_and_skipped(tmp_path: Path, llama3_tokenizer) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"text": "first"}, '{"text": "broken', "", {"content": "wrong field"}, {"text": 7}, {"text": "   "},
        "[1, 2]", {"text": "last"},
    ])
    with pytest.warns(UserWarning, match="1 malformed JSON lines and 3 records without text"):
        manifest = tokenize_files([src], tmp_path / "out", "g", workers=1, progress=False)
    assert manifest["skipped"] == {"malformed_json": 1, "missing_text": 3, "empty": 1}
    assert any(":2: malformed JSON" in w for w in manifest["warnings"])
    shards = TokenShards(tmp_path / "out")
    assert [shards.document(i).tolist() for i in range(2)] == [
        llama3_tokenizer.encode(t, bos=True, eos=True) for t in ("first", "last")]


def test_parquet_input(tmp_path: Path, llama3_tokenizer) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": TEXTS + [None], "n": list(range(len(TEXTS) + 1))}), tmp_path / "in.parquet")
    with pytest.warns(UserWarning, match="1 records without text"):
        manifest = tokenize_files([tmp_path / "in.parquet"], tmp_path / "out", "p", text_field="content",
                                  workers=1, chunk_documents=2, progress=False)
    assert manifest["skipped"]["missing_text"] == 1
    shards = TokenShards(tmp_path / "out")
    assert [shards.document(i).tolist() for i in range(shards.num_documents)] == [
        llama3_tokenizer.encode(t, bos=True, eos=True) for t in TEXTS]
    with pytest.raises(DataError, match="no column 'text'.*content"):
        tokenize_files([tmp_path / "in.parquet"], tmp_path / "bad", "p", workers=1, progress=False)


def test_plain_text_file_and_paragraph_modes(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("One para.\n\nTwo para.\n \nThree.", encoding="utf-8")
    (tmp_path / "docs" / "b.txt").write_text("Single.", encoding="utf-8")
    whole = tokenize_files([tmp_path / "docs"], tmp_path / "whole", "t", workers=1, progress=False)
    paras = tokenize_files([tmp_path / "docs"], tmp_path / "paras", "t", text_mode="paragraphs", workers=1,
                           progress=False)
    assert (whole["documents"], paras["documents"]) == (2, 4)
    with pytest.raises(DataError, match="input not found"):
        tokenize_files([tmp_path / "nope.txt"], tmp_path / "x", "t", workers=1, progress=False)


def test_validation_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    synthetic_source(tmp_path, "s", [5] * 200, validation_fraction=0.05)
    shards = TokenShards(tmp_path / "s")
    train, val = shards.split_documents("train"), shards.split_documents("validation")
    assert len(val) == 10 and len(train) == 190 and not set(train) & set(val)
    assert np.array_equal(val, validation_documents(200, 0.05, 0))
    assert not np.array_equal(val, validation_documents(200, 0.05, 1))  # the seed matters
    loader = build_loader({"s": tmp_path / "s"}, {"s": 1.0}, split="validation")
    assert loader.documents["s"].tolist() == val.tolist()
    synthetic_source(tmp_path, "nov", [5] * 20)
    with pytest.raises(DataError, match="no validation documents"):
        build_loader({"nov": tmp_path / "nov"}, {"nov": 1.0}, split="validation")


# -- bad input: a clear error before any batch ------------------------------------------------
def test_truncated_shard_is_a_data_error_before_any_batch(three_sources: dict[str, Path]) -> None:
    bin_file = three_sources["long"] / "shard-00001.bin"
    bin_file.write_bytes(bin_file.read_bytes()[:-4])
    with pytest.raises(DataError, match=r"shard-00001\.bin has .* bytes .*truncated"):
        build_loader(three_sources, {"short": 1, "long": 1})
    # A source with weight 0 is not read at all.
    assert build_loader(three_sources, {"short": 1, "long": 0}).next_batch(1, 8).inputs.shape == (1, 8)


def test_inconsistent_manifest_and_corrupt_files(three_sources: dict[str, Path]) -> None:
    manifest_path = three_sources["mid"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tokens"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="token counts do not add up"):
        build_loader(three_sources, {"mid": 1})
    idx = three_sources["short"] / "shard-00000.idx"
    offsets = np.fromfile(idx, dtype=np.int64)
    offsets[5] = offsets[7]  # same size, wrong content: only the checksum or the offsets can tell
    offsets.tofile(idx)
    with pytest.raises(DataError, match="offsets are inconsistent"):
        build_loader(three_sources, {"short": 1})
    bin_file = three_sources["long"] / "shard-00000.bin"
    data = bytearray(bin_file.read_bytes())
    data[10] ^= 1
    bin_file.write_bytes(bytes(data))
    build_loader(three_sources, {"long": 1})  # sizes still match
    with pytest.raises(DataError, match="sha256"):
        build_loader(three_sources, {"long": 1}, verify=True)


def test_unknown_or_missing_sources(three_sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="'wiki'.*available sources: short, long, mid"):
        build_loader(three_sources, {"short": 1, "wiki": 0.5})
    loader = build_loader(three_sources, {"short": 1, "wiki": 0.5}, missing="renormalize")
    assert loader.sampler.weights == {"short": 1.0}
    with pytest.raises(DataError, match="'general'"):
        build_loader(three_sources, "llama3")
    with pytest.raises(DataError, match="unknown mix 'llama4'"):
        build_loader(three_sources, "llama4")
    with pytest.raises(DataError, match="not found"):
        build_loader({"short": tmp_path / "missing"}, {"short": 1})
    with pytest.raises(DataError, match=">= 0"):
        build_loader(three_sources, {"short": -1})


def test_named_mixes() -> None:
    assert NAMED_MIXES["llama3"] == {"general": 0.50, "math": 0.25, "code": 0.17, "multilingual": 0.08}
    for mix in NAMED_MIXES.values():
        assert sum(mix.values()) == pytest.approx(1.0)
    anneal, base = NAMED_MIXES["llama3-anneal"], NAMED_MIXES["llama3"]
    assert anneal["math"] > base["math"] and anneal["code"] > base["code"]
    assert resolve_weights("llama3", ["general", "math", "code"], missing="renormalize") == pytest.approx(
        {"general": 0.5 / 0.92, "math": 0.25 / 0.92, "code": 0.17 / 0.92})


# -- mixture sampling ---------------------------------------------------------------------------
def test_mixture_token_shares_and_epochs() -> None:
    rng = np.random.default_rng(0)
    lengths = {"a": rng.integers(5, 15, 50), "b": rng.integers(80, 120, 30), "c": rng.integers(30, 50, 40)}
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    sampler = MixtureSampler(weights, {k: len(v) for k, v in lengths.items()},
                             {k: v.mean() for k, v in lengths.items()}, seed=3)
    tokens = dict.fromkeys(weights, 0)
    seen: dict[str, list[int]] = {k: [] for k in weights}
    for _ in range(30_000):
        name, position = sampler.next()
        tokens[name] += int(lengths[name][position])
        seen[name].append(position)
    total = sum(tokens.values())
    for name, weight in weights.items():
        assert tokens[name] / total == pytest.approx(weight, abs=0.015)
        n = len(lengths[name])
        full_epochs = len(seen[name]) // n
        assert sampler.epochs[name] == full_epochs > 1
        for e in range(full_epochs):  # every epoch visits every document exactly once
            assert sorted(seen[name][e * n : (e + 1) * n]) == list(range(n))
        assert seen[name][:n] != seen[name][n : 2 * n]  # ... in a fresh order


# -- packing ---------------------------------------------------------------------------------------
def expected_stream(sources: dict[str, Path], weights: dict[str, float], seed: int, count: int) -> list[list[int]]:
    """The documents the loader should pack, drawn independently through a fresh sampler."""
    shards = {n: TokenShards(sources[n]) for n in weights}
    train = {n: s.split_documents("train") for n, s in shards.items()}
    mean = {n: shards[n].document_lengths()[train[n]].mean() for n in weights}
    total = sum(weights.values())
    sampler = MixtureSampler({n: w / total for n, w in weights.items()}, {n: len(t) for n, t in train.items()},
                             mean, seed=seed)
    docs, got = [], 0
    while got < count:
        name, position = sampler.next()
        docs.append(shards[name].document(int(train[name][position])).tolist())
        got += len(docs[-1])
    return docs


def test_packed_rows_are_the_concatenated_documents(three_sources: dict[str, Path]) -> None:
    weights = {"short": 2.0, "long": 1.0, "mid": 1.0}
    batch = build_loader(three_sources, weights, seed=5).next_batch(4, 64)
    docs = expected_stream(three_sources, weights, 5, 4 * 64)
    stream = [t for d in docs for t in d]
    assert batch.inputs.flatten().tolist() == stream[: 4 * 64]
    ends = np.cumsum([len(d) for d in docs])  # index of the first token of the next document
    expected_targets = [IGNORE_INDEX if i + 1 in ends else stream[i + 1] for i in range(4 * 64)]
    assert batch.targets.flatten().tolist() == expected_targets
    doc_of = np.searchsorted(ends, np.arange(4 * 64), side="right").reshape(4, 64)
    for row in range(4):  # a new id exactly where the document changes; each row starts at 0
        starts = np.flatnonzero(np.diff(doc_of[row])) + 1
        assert batch.doc_ids[row, 0] == 0
        assert (np.flatnonzero(np.diff(batch.doc_ids[row].numpy())) + 1).tolist() == starts.tolist()
    assert batch.inputs.dtype == batch.targets.dtype == batch.doc_ids.dtype == torch.int64


def test_packing_matches_running_documents_separately(three_sources: dict[str, Path]) -> None:
    from herd.model import DocumentMask, Transformer, get_config

    torch.manual_seed(0)
    model = Transformer(get_config("llama3-tiny")).float().eval()
    loader = build_loader(three_sources, {"short": 1, "mid": 1}, seed=2)
    loader.next_batch(1, 37)  # so the row starts in the middle of a document
    batch = loader.next_batch(2, 96)
    assert int(batch.doc_ids.max()) >= 2  # several documents per row
    with torch.no_grad():
        documents = DocumentMask(batch.doc_ids)
        packed = model(batch.inputs, documents.positions, documents)
        for row in range(2):
            for doc in batch.doc_ids[row].unique():
                cols = (batch.doc_ids[row] == doc).nonzero().flatten()
                alone = model(batch.inputs[row, cols][None])[0]
                assert (packed[row, cols] - alone).abs().max().item() < 1e-5


# -- resume --------------------------------------------------------------------------------------
SHAPES = [(2, 16), (1, 40), (3, 8), (2, 33), (1, 7)]


def test_exact_resume_across_shape_changes(three_sources: dict[str, Path]) -> None:
    weights = {"short": 1.0, "long": 1.0, "mid": 0.5}
    loader = build_loader(three_sources, weights, seed=11)
    for shape in SHAPES:
        loader.next_batch(*shape)
    state = json.loads(json.dumps(loader.state_dict()))  # must survive JSON
    after = [loader.next_batch(*shape) for shape in reversed(SHAPES)]
    resumed = build_loader(three_sources, weights, seed=11)
    resumed.load_state_dict(state)
    for a, b in zip(after, [resumed.next_batch(*shape) for shape in reversed(SHAPES)], strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
    # Shape changes neither skip nor repeat tokens: the flattened stream equals one long row's.
    total = sum(b * t for b, t in SHAPES)
    pieces = build_loader(three_sources, weights, seed=11)
    batches = [pieces.next_batch(*shape) for shape in SHAPES]
    one = build_loader(three_sources, weights, seed=11).next_batch(1, total)
    assert torch.cat([b.inputs.flatten() for b in batches]).tolist() == one.inputs.flatten().tolist()
    assert torch.cat([b.targets.flatten() for b in batches]).tolist() == one.targets.flatten().tolist()


def test_state_from_another_configuration_is_rejected(three_sources: dict[str, Path]) -> None:
    loader = build_loader(three_sources, {"short": 1, "mid": 1}, seed=0)
    loader.next_batch(2, 16)
    state = loader.state_dict()
    with pytest.raises(DataError, match="seed"):
        build_loader(three_sources, {"short": 1, "mid": 1}, seed=1).load_state_dict(state)
    with pytest.raises(DataError, match="sources"):
        build_loader(three_sources, {"short": 1}, seed=0).load_state_dict(state)
    with pytest.raises(DataError, match="split"):
        build_loader(three_sources, {"short": 1, "mid": 1}, split="validation").load_state_dict(state)


# -- command line ----------------------------------------------------------------------------
def test_cli_tokenize(tmp_path: Path, capsys) -> None:
    from herd.cli import main

    src = write_jsonl(tmp_path / "in.jsonl", [{"body": t} for t in TEXTS])
    assert main(["tokenize", str(src), "--out", str(tmp_path / "out"), "--source-name", "general",
                 "--text-field", "body", "--workers", "1", "--validation-fraction", "0.2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents"] == len(TEXTS) and summary["validation_documents"] == 1
    assert main(["tokenize", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x"),
                 "--source-name", "g"]) == 2
    assert "input not found" in capsys.readouterr().err
