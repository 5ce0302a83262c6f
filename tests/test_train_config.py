"""herd.train.config: TOML + --set overrides, typed coercion, and clear errors before any compute."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from herd.train.config import ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "pretrain" / "tiny.toml"
LLAMA3_8B = ROOT / "configs" / "pretrain" / "llama3-8b.toml"


def test_tiny_config_loads_with_typed_overrides():
    cfg = load_config(TINY, ["optim.lr=1e-3", "run.max_steps=7", "run.compile=true", "data.mix=llama3",
                             "schedule.stages.1.seq_len=96", "data.sources.extra=/tmp/x", "optim.betas=[0.8, 0.9]",
                             "run.max_tokens=4e6"])
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.run.max_steps == 7 and cfg.run.compile is True
    assert cfg.run.max_tokens == 4_000_000 and isinstance(cfg.run.max_tokens, int)
    assert cfg.data.mix == "llama3"
    assert cfg.schedule.stages[1].seq_len == 96
    assert cfg.data.sources["extra"] == "/tmp/x"
    assert cfg.optim.betas == [0.8, 0.9]
    assert cfg.model_config().dim == 64  # llama3-tiny


def test_paper_recipe_config_numbers():
    cfg = load_config(LLAMA3_8B)
    assert cfg.optim.lr == 3e-4 and cfg.min_lr == pytest.approx(3e-6)
    assert cfg.optim.betas == [0.9, 0.95] and cfg.optim.weight_decay == 0.1
    assert cfg.schedule.warmup_steps == 8000 and cfg.schedule.decay_steps == 1_200_000
    stages = [(s.after_tokens, s.step_tokens, s.seq_len) for s in cfg.schedule.stages]
    assert stages == [(0, 4 * 2**20, 4096), (252_000_000, 8 * 2**20, 8192), (2_870_000_000_000, 16 * 2**20, 8192)]
    assert cfg.anneal.tokens == 40_000_000
    assert cfg.model_config().ffn_dim == 14336


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["optim.learning_rate=1"], "unknown config key 'optim.learning_rate'; valid keys in [optim]: lr, min_lr"),
        (["bogus.x=1"], "unknown config key 'bogus'; valid keys in the top level: run, model"),
        (["schedule.stages.0.batchsize=4"], "unknown config key 'schedule.stages[0].batchsize'"),
        (["run.max_steps=ten"], "run.max_steps: expected an integer, got 'ten'"),
        (["run.compile=maybe"], "run.compile: expected true or false"),
        (["run.nan_policy=ignore"], "run.nan_policy = 'ignore'; choose one of stop, skip"),
        (["schedule.warmup_steps=500"], "schedule.warmup_steps 500 exceeds schedule.decay_steps 30"),
        (["schedule.stages.2.after_tokens=100"], "not after the previous stage's 4096"),
        (["schedule.stages.0.after_tokens=5"], "schedule.stages[0].after_tokens must be 0"),
        (["schedule.stages.2.micro_batch_size=3"], "not divisible by micro_batch_size 3"),
        (["schedule.stages=[{after_tokens=0, batch_tokens=1000, seq_len=64}]"],
         "batch_tokens 1000 is not divisible by seq_len 64"),
        (["schedule.stages=[{after_tokens=0, batch_size=2, batch_tokens=128, seq_len=64}]"],
         "exactly one of batch_size"),
        (["schedule.stages.0.seq_len=4096"], "exceeds the model's max_seq_len 2048"),
        (["optim.min_lr=1"], "exceeds the peak optim.lr"),
        (["data.mix={general=1, nope=1}"], "data.mix names unknown sources ['nope']"),
        (["model.size=llama9"], "unknown model size 'llama9'"),
        (["model.n_kv_heads=3"], "not divisible by n_kv_heads 3"),
        (["anneal.tokens=1000"], "anneal.tokens needs anneal.start_tokens or run.max_tokens"),
        (["run.max_steps"], "expected KEY=VALUE"),
    ],
)
def test_bad_config_is_a_clear_error(overrides, needle):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, overrides)
    assert needle in str(err.value)
    assert str(TINY) in str(err.value)  # the file is named


def test_unknown_key_in_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(TINY.read_text().replace("[optim]\n", "[optim]\nmomentum = 0.9\n"))
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.momentum'; valid keys in \[optim\]"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_run_needs_an_end():
    with pytest.raises(ConfigError, match="the run needs an end"):
        config_from_dict({"data": {"sources": {"general": "x"}}})


def _cli(capsys, *args: str) -> tuple[int, str]:
    from herd.cli import main

    code = main(["pretrain", *args])
    return code, capsys.readouterr().err


def test_cli_rejects_bad_input_before_compute(tmp_path, capsys):
    """Unknown key, missing resume checkpoint, missing data: exit 2 with a message, no run directory."""
    out = tmp_path / "run"
    code, err = _cli(capsys, str(TINY), "--set", f"run.out_dir={out}", "--set", "optim.lr_peak=1")
    assert code == 2 and "herd pretrain: error:" in err and "unknown config key 'optim.lr_peak'" in err
    code, err = _cli(capsys, str(TINY), "--set", f"run.out_dir={out}", "--resume", str(tmp_path / "nope"))
    assert code == 2 and "no such checkpoint" in err, err
    code, err = _cli(capsys, str(TINY), "--set", f"run.out_dir={out}", "--set",
                     f"data.sources.general={tmp_path / 'void'}")
    assert code == 2 and "void" in err, err
    assert not out.exists()  # nothing was trained or written


def test_print_config(capsys):
    from herd.cli import main

    assert main(["pretrain", str(TINY), "--set", "optim.lr=0.01", "--print-config"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.01 and printed["schedule"]["stages"][1]["seq_len"] == 128


def test_tie_embeddings_key_and_tied_init_start_near_uniform_loss():
    """`model.tie_embeddings` shares the embedding with the head, and the shared matrix takes the head's
    init: N(0, 1) rows would start the logits at ~dim and the loss far above ln(vocab)."""
    import math

    import torch

    from herd.model import Transformer
    from herd.model.transformer import init_weights

    assert load_config(TINY).model_config().tie_embeddings is False
    config = load_config(TINY, ["model.tie_embeddings=true"]).model_config()
    assert config.tie_embeddings is True
    torch.manual_seed(0)
    model = Transformer(config)
    init_weights(model, generator=torch.Generator().manual_seed(0))
    assert model.output.weight is model.tok_embeddings.weight
    tokens = torch.randint(0, config.vocab_size, (2, 33))
    loss = torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    assert abs(loss.item() - math.log(config.vocab_size)) < 1.0, loss.item()
