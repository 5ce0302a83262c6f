"""Annealing to judge a dataset: two anneals from one checkpoint, compared on held-out loss."""

from __future__ import annotations

import json
import math

import pytest
from train_helpers import BOS, EOS, VOCAB, tiny_overrides, write_byte_shards

from herd.cli import main
from herd.train import load_config, train
from herd.train.config import ConfigError
from herd.train.judge import judge_dataset

CONFIG = "configs/pretrain/tiny.toml"


def test_judge_reports_both_anneals_and_the_candidate_helps_on_itself(tmp_path) -> None:
    from herd.data import ShardWriter

    sources = write_byte_shards(tmp_path / "shards")
    overrides = tiny_overrides(sources, tmp_path / "base", run__max_steps=12, eval__interval=0)
    train(load_config(CONFIG, overrides))
    # a candidate source unlike the default mix: one repeated short phrase family
    candidate = tmp_path / "candidate"
    docs = [[BOS, *f"candidate record {i}: the value is {i * 7}.".encode(), EOS] * 20 for i in range(200)]
    with ShardWriter(candidate, "candidate", tokenizer={"name": "bytes", "vocab_size": VOCAB},
                     validation_fraction=0.1) as writer:
        writer.add_many(docs)
        writer.close()
    result = judge_dataset(CONFIG, tmp_path / "base" / "checkpoints", candidate, tmp_path / "judge",
                           tokens=4096, overrides=overrides)
    values = [result.default_loss, result.with_new_default_loss, result.default_new_loss, result.with_new_new_loss]
    assert all(math.isfinite(v) for v in values)
    assert result.with_new_new_loss < result.default_new_loss  # training on the candidate helps on it
    saved = json.loads((tmp_path / "judge" / "judge.json").read_text())
    assert saved["new_share"] == 0.3 and "candidate held-out loss" in saved["summary"]
    with pytest.raises(ConfigError, match="manifest"):
        judge_dataset(CONFIG, tmp_path / "base" / "checkpoints", tmp_path, tmp_path / "j2", tokens=10,
                      overrides=overrides)
    assert main(["judge-data", CONFIG, str(tmp_path / "nope"), str(candidate), "--tokens", "10"]) == 2
