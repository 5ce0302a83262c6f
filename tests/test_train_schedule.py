"""herd.train.schedule: LR and batch ramp at the configured boundaries (warmup end, cosine end,
stage switches, annealing start and end)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from herd.train.config import load_config
from herd.train.schedule import Schedule

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "pretrain" / "tiny.toml"


def test_warmup_then_cosine_to_floor():
    cfg = load_config(TINY, ["optim.lr=1e-3", "optim.min_lr=1e-5", "schedule.warmup_steps=10",
                             "schedule.decay_steps=110"])
    s = Schedule(cfg)
    assert s.base_lr(0) == pytest.approx(1e-4)  # 1/10 of the peak
    assert s.base_lr(4) == pytest.approx(5e-4)
    assert s.base_lr(9) == 1e-3  # the last warmup step runs at the peak
    assert s.base_lr(10) == pytest.approx(1e-3)  # the cosine starts at the peak
    assert s.base_lr(60) == pytest.approx((1e-3 + 1e-5) / 2)  # halfway: the midpoint
    assert s.base_lr(35) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s.base_lr(110) == 1e-5 and s.base_lr(10_000) == 1e-5  # floor at and after decay_steps
    lrs = [s.base_lr(i) for i in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))  # monotone decay


def test_default_floor_is_one_percent_of_peak():
    cfg = load_config(ROOT / "configs" / "pretrain" / "llama3-8b.toml", ["optim.min_lr=-1"])
    assert Schedule(cfg).base_lr(2_000_000) == pytest.approx(3e-6)


def test_batch_ramp_switches_at_configured_tokens():
    s = Schedule(load_config(TINY))
    # tiny.toml: 4 x 64 from 0; 4 x 128 from 4,096 tokens (2 micro-batches); 8 x 128 from 8,192 (2 of 4)
    assert (s.shape_at(0).batch_size, s.shape_at(0).seq_len, s.shape_at(0).accumulation_steps) == (4, 64, 1)
    assert s.shape_at(4095).seq_len == 64
    assert (s.shape_at(4096).batch_size, s.shape_at(4096).seq_len, s.shape_at(4096).accumulation_steps) == (4, 128, 2)
    assert s.shape_at(8191).tokens == 512
    assert (s.shape_at(8192).batch_size, s.shape_at(8192).seq_len, s.shape_at(8192).micro_batch_size) == (8, 128, 4)
    assert s.shape_at(10**12).stage == 2


def test_paper_ramp_at_stage_boundaries():
    s = Schedule(load_config(ROOT / "configs" / "pretrain" / "llama3-8b.toml"))
    assert (s.shape_at(0).tokens, s.shape_at(0).seq_len) == (4 * 2**20, 4096)
    assert (s.shape_at(252_000_000 - 1).tokens, s.shape_at(252_000_000).tokens) == (4 * 2**20, 8 * 2**20)
    assert s.shape_at(252_000_000).seq_len == 8192
    assert s.shape_at(2_870_000_000_000).tokens == 16 * 2**20


def test_annealing_goes_linearly_to_zero_from_the_current_lr():
    cfg = load_config(TINY, ["run.max_steps=0", "run.max_tokens=100000", "anneal.tokens=20000",
                             "schedule.decay_steps=1000", "schedule.warmup_steps=10"])
    s = Schedule(cfg)
    assert cfg.anneal_start == 80_000
    # walk the ramp as the trainer does: 256-token steps until 4,096, 512 until 8,192, then 1,024
    step, tokens = 0, 0
    while tokens < 80_000:
        tokens += s.shape_at(tokens).tokens
        step += 1
    assert s.anneal_start_step() == step
    start_lr = s.base_lr(step)
    assert not s.in_anneal(79_999) and s.in_anneal(80_000)
    assert s.lr(step, tokens) == pytest.approx(start_lr * (1 - (tokens - 80_000) / 20_000))
    assert s.lr(step + 3, 90_000) == pytest.approx(start_lr * 0.5)
    assert s.lr(step + 10, 100_000) == 0.0  # the end of annealing: LR 0
    assert s.done(step + 10, 100_000) and not s.done(step, 99_999)


def test_anneal_from_explicit_lr_and_start():
    cfg = load_config(TINY, ["anneal.tokens=1000", "anneal.start_tokens=0", "anneal.from_lr=2e-3"])
    s = Schedule(cfg)
    assert s.lr(0, 0) == 2e-3 and s.lr(1, 500) == pytest.approx(1e-3) and s.lr(2, 1000) == 0.0
    assert s.done(3, 1000)
