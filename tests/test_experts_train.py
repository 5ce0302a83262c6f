"""Stitch training through herd's training loop: a tiny seed pretrained on byte shards, two experts
continued from it on their own domains, then stitches trained on the mix with everything else frozen."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_overrides, write_byte_shards

from herd.experts.train import train_stitches
from herd.train import checkpointing as ck
from herd.train import load_config, train
from herd.train.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "pretrain" / "tiny.toml"


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    return write_byte_shards(tmp_path_factory.mktemp("bytes"))


def config(sources, out_dir, *sets: str):
    return load_config(TINY, tiny_overrides(sources, out_dir) + list(sets))


def weights(run: Path) -> dict[str, torch.Tensor]:
    return ck.load_model_weights(run / "checkpoints")


def test_stitch_training_changes_only_the_stitches_and_lowers_the_loss(sources, tmp_path):
    seed_run = tmp_path / "seed"
    train(config(sources, seed_run, "run.max_steps=6", "data.mix={general = 1}", "checkpoint.interval=6"))
    experts = []
    for domain in ("code", "math"):
        run = tmp_path / domain
        train(config(sources, run, "run.max_steps=4", f"data.mix={{{domain} = 1}}", "checkpoint.interval=4",
                     f"run.init_from={seed_run / 'checkpoints'}"))
        experts.append(run / "checkpoints")
    result = train_stitches(
        config(sources, tmp_path / "stitched", "run.max_steps=6", "checkpoint.interval=6", "optim.lr=1e-2",
               "data.mix={general = 55, code = 15, math = 15}"),
        seed_run / "checkpoints", experts, n_stitches=2,
    )
    assert result.steps == 6
    stitched = weights(tmp_path / "stitched")
    for prefix, source in (("hub.", seed_run), ("experts.0.", tmp_path / "code"), ("experts.1.", tmp_path / "math")):
        original = weights(source)
        for key, value in original.items():
            assert torch.equal(stitched[prefix + key], value), prefix + key
    stitch_keys = [k for k in stitched if k.startswith("stitches.")]
    assert len(stitch_keys) == 2 * (1 + 2)  # per stitch: the gate and two projections
    assert any(not torch.equal(stitched[k], torch.eye(stitched[k].shape[0]))
               for k in stitch_keys if ".proj." in k)
    losses = [r["loss"] for r in read_records(result.metrics_path) if r["kind"] == "train"]
    assert len(losses) == 6 and all(math.isfinite(loss) for loss in losses)


def test_stitch_training_refuses_missing_checkpoints_and_torchrun(sources, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        train_stitches(config(sources, tmp_path / "s"), tmp_path / "nope", [tmp_path / "nope2"], n_stitches=1)
    with pytest.raises(ValueError, match="at least one expert"):
        train_stitches(config(sources, tmp_path / "s"), tmp_path, [], n_stitches=1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="one process"):
        train_stitches(config(sources, tmp_path / "s"), tmp_path, [tmp_path], n_stitches=1)
