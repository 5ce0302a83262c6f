"""run.dtype = "auto": bfloat16 autocast only where this device runs bfloat16 matmuls fast."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_overrides, write_byte_shards

from herd.train import Trainer, load_config
from herd.train import precision
from herd.train.config import ConfigError

TINY = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "tiny.toml"
CPU = torch.device("cpu")


@pytest.fixture()
def slowdown(monkeypatch: pytest.MonkeyPatch):
    def set_ratio(ratio: float) -> None:
        monkeypatch.setattr(precision, "cpu_bf16_slowdown", lambda: ratio)
    return set_ratio


def test_auto_trains_in_float32_where_bf16_is_slow_and_in_bf16_where_it_is_fast(slowdown) -> None:
    slowdown(40.0)   # an AVX2 CPU: emulated bf16
    dtype, note = precision.resolve_dtype("auto", CPU)
    assert dtype == "float32" and "40.0x" in note
    slowdown(0.6)    # native bf16 (AVX512-BF16 / AMX)
    assert precision.resolve_dtype("auto", CPU)[0] == "bfloat16"
    assert precision.resolve_dtype("float32", CPU) == ("float32", "float32")


def test_explicit_bf16_is_kept_with_a_one_line_warning_when_slow(slowdown, caplog) -> None:
    slowdown(40.0)
    with caplog.at_level(logging.WARNING, logger="herd.train.precision"):
        assert precision.resolve_dtype("bfloat16", CPU)[0] == "bfloat16"
    assert any("slow here" in r.message and "auto" in r.message for r in caplog.records)
    caplog.clear()
    slowdown(0.9)
    with caplog.at_level(logging.WARNING, logger="herd.train.precision"):
        precision.resolve_dtype("bfloat16", CPU)
    assert not caplog.records


def test_the_measurement_is_real_and_bad_values_are_rejected() -> None:
    ratio = precision.cpu_bf16_slowdown()
    assert ratio > 0
    with pytest.raises(ValueError, match="auto, bfloat16, float32"):
        precision.resolve_dtype("fp8", CPU)
    with pytest.raises(ConfigError, match="run.dtype"):
        load_config(TINY, ["run.dtype=half"])


def test_the_recipes_default_to_auto_and_the_trainer_settles_it(slowdown, tmp_path) -> None:
    assert load_config(TINY).run.dtype == "auto"
    sources = write_byte_shards(tmp_path / "bytes")
    slowdown(40.0)
    trainer = Trainer(load_config(TINY, tiny_overrides(sources, tmp_path / "run") + ["run.max_steps=1"]))
    assert trainer.config.run.dtype == "float32" and trainer.autocast_dtype is None
    slowdown(0.5)
    trainer = Trainer(load_config(TINY, tiny_overrides(sources, tmp_path / "run2") + ["run.max_steps=1"]))
    assert trainer.config.run.dtype == "bfloat16" and trainer.autocast_dtype == torch.bfloat16
