"""Per-token loss masks in token shards: written and read back exactly, turned into -100 targets by the
loader (also across row boundaries and resumes), and the synthetic retrieval shards mask all but the
answers. Sources without a mask behave as before (tests/test_data_tokenized.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from herd.data import DataError, build_loader
from herd.data.loader import IGNORE_INDEX
from herd.data.shards import ShardWriter, TokenShards, read_manifest
from herd.data.synthetic_retrieval import TEMPLATES, retrieval_example, word_keys, write_retrieval_shards
from herd.eval.niah import _KEYS

VOCAB = 128_256
INFO = {"name": "llama3", "vocab_size": VOCAB}


def masked_source(directory: Path, name: str, lengths: list[int], *, seed: int = 0,
                  max_shard_tokens: int = 1 << 20) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random documents with random 0/1 masks (ids < 1000), split over shards when they are small."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 1000, n).astype(np.uint32) for n in lengths]
    masks = [rng.integers(0, 2, n).astype(np.uint8) for n in lengths]
    with ShardWriter(directory / name, name, tokenizer=INFO, validation_fraction=0.1, split_seed=seed,
                     max_shard_tokens=max_shard_tokens, loss_mask=True) as writer:
        for doc, mask in zip(docs, masks):
            writer.add(doc, mask)
        writer.close()
    return docs, masks


def plain_source(directory: Path, name: str, lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 1000, n).astype(np.uint32) for n in lengths]
    with ShardWriter(directory / name, name, tokenizer=INFO, validation_fraction=0.1, split_seed=seed) as writer:
        writer.add_many(docs)
        writer.close()
    return docs


def test_mask_round_trip_and_manifest(tmp_path: Path) -> None:
    docs, masks = masked_source(tmp_path, "m", [5, 40, 17, 3, 60, 9], max_shard_tokens=64)
    manifest = read_manifest(tmp_path / "m")
    assert manifest["loss_mask"] is True and len(manifest["shards"]) > 1
    assert all(s["mask"].endswith(".mask") and "mask" in s["sha256"] for s in manifest["shards"])
    shards = TokenShards(tmp_path / "m", verify=True)
    for i, (doc, mask) in enumerate(zip(docs, masks)):
        assert shards.document(i).tolist() == doc.tolist()
        assert shards.document_mask(i).tolist() == mask.tolist()
    # a source written without a mask has none, and its manifest has no mask keys
    plain_source(tmp_path, "p", [4, 5])
    assert TokenShards(tmp_path / "p").document_mask(0) is None
    assert "loss_mask" not in read_manifest(tmp_path / "p")


def test_bad_masks_and_damaged_mask_files_are_data_errors(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "a", "a", tokenizer=INFO, loss_mask=True) as writer:
        with pytest.raises(DataError, match="loss mask shape"):
            writer.add([1, 2, 3], [1, 0])
        with pytest.raises(DataError, match="0 or 1"):
            writer.add([1, 2, 3], [1, 2, 0])
    with ShardWriter(tmp_path / "b", "b", tokenizer=INFO) as writer, pytest.raises(DataError, match="loss_mask=False"):
        writer.add([1, 2, 3], [1, 1, 1])
    masked_source(tmp_path, "m", [10, 20])
    mask_file = tmp_path / "m" / "shard-00000.mask"
    mask_file.write_bytes(mask_file.read_bytes()[:-1])
    with pytest.raises(DataError, match="truncated"):
        TokenShards(tmp_path / "m")
    mask_file.write_bytes(mask_file.read_bytes()[:-1] + b"\x00\x00")
    with pytest.raises(DataError, match="sha256"):
        TokenShards(tmp_path / "m", verify=True)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    del manifest["shards"][0]["mask"]
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="no mask file"):
        TokenShards(tmp_path / "m")


def expected_targets(docs: list[np.ndarray], masks: list[np.ndarray] | None, order: list[int]) -> list[int]:
    """The stream's targets computed by hand: next token of the document where its mask is 1, else -100."""
    out: list[int] = []
    for i in order:
        doc = docs[i].tolist()
        for j in range(len(doc)):
            keep = j + 1 < len(doc) and (masks is None or masks[i][j + 1] == 1)
            out.append(doc[j + 1] if keep else IGNORE_INDEX)
    return out


def test_loader_targets_follow_the_mask_across_rows_and_resumes(tmp_path: Path) -> None:
    docs, masks = masked_source(tmp_path, "m", [int(n) for n in np.random.default_rng(0).integers(3, 50, 80)])
    loader = build_loader({"m": tmp_path / "m"}, {"m": 1.0}, seed=5)
    shapes = [(2, 16), (1, 37), (3, 9), (2, 50)]
    batches = [loader.next_batch(*s) for s in shapes]
    tokens = torch.cat([b.inputs.flatten() for b in batches]).tolist()
    targets = torch.cat([b.targets.flatten() for b in batches]).tolist()
    # rebuild the document order from the stream, then every target by hand
    order, starts, pos = [], [], 0
    train_docs = TokenShards(tmp_path / "m").split_documents("train").tolist()
    while pos < len(tokens):
        match = next(i for i in train_docs if tokens[pos:pos + len(docs[i])] == docs[i].tolist()[:len(tokens) - pos])
        order.append(match)
        starts.append(pos)
        pos += len(docs[match])
    want = expected_targets(docs, masks, order)[:len(targets)]
    # a masked document cut by a row boundary is not trained after the cut (its facts are out of sight)
    row_starts = [sum(b * t for b, t in shapes[:k]) + r * shapes[k][1] for k in range(len(shapes))
                  for r in range(shapes[k][0])]
    ends = starts[1:] + [len(tokens)]
    for row_start in row_starts:
        for start, end in zip(starts, ends):
            if start < row_start < end:
                want[row_start:end] = [IGNORE_INDEX] * (end - row_start)
    assert targets[:-1] == want[:-1]
    assert sum(t != IGNORE_INDEX for t in targets) > 20 and IGNORE_INDEX in targets
    # resuming from a saved state gives the same masked targets
    state = json.loads(json.dumps(loader.state_dict()))
    after = [loader.next_batch(2, 23) for _ in range(3)]
    resumed = build_loader({"m": tmp_path / "m"}, {"m": 1.0}, seed=5)
    resumed.load_state_dict(state)
    for a, b in zip(after, [resumed.next_batch(2, 23) for _ in range(3)], strict=True):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets) and torch.equal(a.doc_ids, b.doc_ids)


def test_mixing_masked_and_plain_sources_keeps_plain_targets_whole(tmp_path: Path) -> None:
    masked_source(tmp_path, "m", [30] * 20)
    plain = plain_source(tmp_path, "p", [30] * 20, seed=3)
    batch = build_loader({"m": tmp_path / "m", "p": tmp_path / "p"}, {"m": 1.0, "p": 1.0}, seed=0).next_batch(4, 150)
    plain_rows = {tuple(d.tolist()) for d in plain}
    seen_plain = 0
    for row_in, row_t in zip(batch.inputs.flatten().split(30), batch.targets.flatten().split(30)):
        if tuple(row_in.tolist()) in plain_rows:  # a whole plain document: every target but the last trained
            seen_plain += 1
            assert row_t[:-1].tolist() == row_in[1:].tolist() and int(row_t[-1]) == IGNORE_INDEX
    assert seen_plain > 0


def test_retrieval_example_masks_exactly_the_answers(llama3_tokenizer) -> None:
    tok = llama3_tokenizer
    filler = tok.encode("The quick brown fox jumps over the lazy dog. " * 60)
    keys = word_keys(tok)
    assert len(keys) > 1000 and not set(keys) & set(_KEYS)
    rng = random.Random(0)
    ids, mask = retrieval_example(tok, filler, 300, 5, rng, keys=keys, templates=TEMPLATES[:1])
    assert len(ids) == len(mask) and abs(len(ids) - 300) <= 2
    answers = tok.decode([t for t, m in zip(ids, mask) if m]).split()
    assert len(answers) == 5
    text = tok.decode(ids)
    for value in answers:  # each trained answer is the value planted earlier for the asked key
        assert text.count(f" is {value}.") == 2
    # every trained token is a digit group or the space before it, and it is one of the facts' values
    assert all(tok.decode([t]).strip().isdigit() or tok.decode([t]) == " " for t, m in zip(ids, mask) if m)


def test_retrieval_shards_train_only_answers_and_cost_little_in_the_head(tmp_path: Path, llama3_tokenizer) -> None:
    manifest = write_retrieval_shards(tmp_path / "r", llama3_tokenizer, ["Some filler text here. " * 200], 6, 256,
                                      facts=4, seed=1, key_style="word", validation_fraction=0.2)
    assert manifest["loss_mask"] and manifest["synthetic"]["key_style"] == "word"
    batch = build_loader({"r": tmp_path / "r"}, {"r": 1.0}, seed=0).next_batch(2, 256)
    trained = int((batch.targets != IGNORE_INDEX).sum())
    assert 8 <= trained <= 0.15 * batch.targets.numel()  # 2-3 answer tokens per fact, nothing else
    with pytest.raises(DataError, match="key_style"):
        write_retrieval_shards(tmp_path / "x", llama3_tokenizer, ["text " * 100], 1, 256, 2, key_style="names")
