"""The pretraining loop in-process: learning real text, accumulation, NaN policy, annealing, signals,
warm starts, interrupted saves, and bad data caught before compute."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from train_helpers import VOCAB, tiny_overrides, write_byte_shards

from herd.checkpoint.errors import CheckpointError
from herd.data import DataError
from herd.train import Trainer, TrainHooks, TrainingError, load_config, train
from herd.train import checkpointing as ck
from herd.train.metrics import read_records

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "pretrain" / "tiny.toml"


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    return write_byte_shards(tmp_path_factory.mktemp("bytes"))


def config(sources, out_dir, *sets: str, **extra):
    return load_config(TINY, tiny_overrides(sources, out_dir, **extra) + list(sets))


def train_losses(path: Path) -> list[float]:
    return [r["loss"] for r in read_records(path / "metrics.jsonl") if r["kind"] == "train"]


def test_loss_goes_down_on_real_text_and_everything_is_reported(sources, tmp_path):
    cfg = config(sources, tmp_path / "run", "log.tensorboard=true", "log.plot=true", "run.max_steps=24",
                 "schedule.warmup_steps=4", "schedule.decay_steps=24", "eval.interval=12", "checkpoint.interval=12")
    result = train(cfg)
    records = read_records(result.metrics_path)
    steps = [r for r in records if r["kind"] == "train"]
    vals = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in steps] == list(range(1, 25))
    assert steps[0]["loss"] == pytest.approx(torch.log(torch.tensor(float(VOCAB))).item(), abs=1.0)  # ~uniform
    assert [v["step"] for v in vals] == [12, 24]
    assert vals[-1]["val_loss"] < steps[0]["loss"] - 1.5  # bytes of Python source: far below uniform
    assert sum(r["loss"] for r in steps[-4:]) / 4 < steps[0]["loss"] - 1.5
    for r in steps:
        assert r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["memory_mb"] > 0
    tokens = 0
    for r in steps:  # the batch ramp of tiny.toml: 4 x 64 until 4,096 tokens, then 4 x 128
        assert (r["batch_size"], r["seq_len"]) == ((4, 64) if tokens < 4096 else (4, 128))
        tokens += r["batch_size"] * r["seq_len"]
        assert r["tokens"] == tokens
    assert steps[0]["lr"] == pytest.approx(3e-3 / 4) and steps[3]["lr"] == 3e-3
    assert result.loss_curve.stat().st_size > 1000 and result.loss_curve.read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert [p.name for p in ck.list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step_00000012", "step_00000024"]
    assert result.checkpoint.name == "step_00000024" and result.stopped == "done"


def test_gradient_accumulation_matches_one_big_batch(sources, tmp_path):
    losses = {}
    for micro in (4, 2, 1):
        cfg = config(sources, tmp_path / f"m{micro}", "run.max_steps=3", "run.dtype=float32", "eval.interval=0",
                     *(f"schedule.stages.{i}.micro_batch_size={micro}" for i in range(3)))
        train(cfg)
        losses[micro] = train_losses(tmp_path / f"m{micro}")
    assert losses[4][0] == pytest.approx(losses[2][0], rel=1e-6) == pytest.approx(losses[1][0], rel=1e-6)
    assert losses[4] == pytest.approx(losses[1], rel=1e-4)


class Poison(TrainHooks):
    """Sets the final norm's gain to NaN before step `at` (and restores it after, if asked)."""

    def __init__(self, at: int, restore: bool) -> None:
        self.at, self.restore, self.saved = at, restore, None

    def on_step_start(self, trainer, step):
        if step == self.at:
            self.saved = trainer.model.norm.weight.detach().clone()
            with torch.no_grad():
                trainer.model.norm.weight[0] = float("nan")

    def on_step_end(self, trainer, step, record):
        if self.restore and self.saved is not None:
            with torch.no_grad():
                trainer.model.norm.weight.copy_(self.saved)
            self.saved = None


def test_nan_loss_stops_with_a_clear_message(sources, tmp_path):
    cfg = config(sources, tmp_path / "run", "run.max_steps=6", "checkpoint.interval=2", "eval.interval=0")
    with pytest.raises(TrainingError) as err:
        train(cfg, hooks=Poison(at=3, restore=False))
    message = str(err.value)
    assert "non-finite loss or gradient at step 4" in message and "loss nan" in message
    assert "step_00000002" in message and 'nan_policy = "skip"' in message
    assert [r["step"] for r in read_records(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]
    assert ck.latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step_00000002"


def test_nan_loss_skips_the_batch_when_configured(sources, tmp_path):
    cfg = config(sources, tmp_path / "run", "run.max_steps=6", "run.nan_policy=skip", "eval.interval=0")
    result = train(cfg, hooks=Poison(at=3, restore=True))
    records = [r for r in read_records(result.metrics_path) if r["kind"] == "train"]
    assert [r["skipped"] for r in records] == [False, False, False, True, False, False]
    assert result.skipped_steps == 1 and result.steps == 6
    assert all(torch.isfinite(p).all() for p in ck.load_checkpoint(result.checkpoint).model.values())


def test_interrupted_save_then_resume_is_exact(sources, tmp_path, monkeypatch):
    """A crash in the middle of the step-4 save: the step-2 checkpoint stays good, resume ignores the
    partial step-4 directory and reproduces the uninterrupted run's losses exactly."""
    sets = ("run.max_steps=6", "checkpoint.interval=2", "eval.interval=0")
    train(config(sources, tmp_path / "ref", *sets))
    real_write = ck.write_torch

    def crash_in_step4(path, obj):
        if path.parent.name == "step_00000004.tmp" and path.name == "optim.pt":
            path.write_bytes(b"partial")
            raise OSError("killed during save (simulated)")
        real_write(path, obj)

    monkeypatch.setattr(ck, "write_torch", crash_in_step4)
    with pytest.raises(OSError, match="simulated"):
        train(config(sources, tmp_path / "run", *sets))
    monkeypatch.undo()
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "step_00000004.tmp").is_dir() and ck.latest_checkpoint(ckpts).name == "step_00000002"
    result = train(config(sources, tmp_path / "run", *sets), resume="auto")
    assert result.steps == 6
    assert train_losses(tmp_path / "run") == train_losses(tmp_path / "ref")  # identical floats


def test_activation_checkpointing_changes_nothing_but_memory(sources, tmp_path):
    sets = ("run.max_steps=3", "run.dtype=float32", "eval.interval=0")
    train(config(sources, tmp_path / "plain", *sets))
    train(config(sources, tmp_path / "ckpt", *sets, "run.activation_checkpointing=true"))
    assert train_losses(tmp_path / "ckpt") == train_losses(tmp_path / "plain")


@pytest.mark.slow
def test_torch_compile_gives_the_same_losses(sources, tmp_path):
    sets = ("run.max_steps=3", "run.dtype=float32", "eval.interval=0")
    train(config(sources, tmp_path / "plain", *sets))
    train(config(sources, tmp_path / "compiled", *sets, "run.compile=true"))
    assert train_losses(tmp_path / "compiled") == pytest.approx(train_losses(tmp_path / "plain"), rel=1e-4)


def test_sigterm_saves_and_stops(sources, tmp_path):
    class Term(TrainHooks):
        def on_step_end(self, trainer, step, record):
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    result = train(config(sources, tmp_path / "run", "run.max_steps=10", "eval.interval=0"), hooks=Term())
    assert result.stopped == "signal" and result.steps == 3 and result.checkpoint.name == "step_00000003"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


def test_annealing_switches_mix_and_decays_lr_to_zero(sources, tmp_path):
    made = []

    def factory(srcs, mix, seed, split):
        from herd.data import build_loader

        made.append((mix, split))
        loader = build_loader(srcs, mix, seed=seed, split=split)
        real = loader.next_batch

        def next_batch(b, t):
            calls.append(mix if not isinstance(mix, dict) else json.dumps(mix, sort_keys=True))
            return real(b, t)

        loader.next_batch = next_batch
        return loader

    calls: list[str] = []
    cfg = config(sources, tmp_path / "run", "run.max_steps=0", "run.max_tokens=8192", "anneal.tokens=4096",
                 "anneal.mix={code=1}", "eval.interval=0", "schedule.warmup_steps=2")
    result = train(cfg, loader_factory=factory)
    assert result.tokens == 8192 and result.steps == 24  # 16 steps of 4 x 64, then 8 of 4 x 128
    records = [r for r in read_records(result.metrics_path) if r["kind"] == "train"]
    assert [r["phase"] for r in records] == ["main"] * 16 + ["anneal"] * 8
    anneal_lrs = [r["lr"] for r in records[16:]]
    start = records[16]["lr"]
    assert anneal_lrs == pytest.approx([start * (1 - i / 8) for i in range(8)])  # linear, reaching 0 at the end
    assert start == pytest.approx(Trainer(cfg, loader_factory=factory).schedule.base_lr(16))
    assert calls[:16] == [json.dumps(cfg.data.mix, sort_keys=True)] * 16
    assert calls[16:24] == ['{"code": 1.0}'] * 8


def test_init_from_loads_weights_only(sources, tmp_path):
    first = train(config(sources, tmp_path / "a", "run.max_steps=12", "eval.interval=0"))
    seen = {}

    class Check(TrainHooks):
        def on_step_start(self, trainer, step):
            if step == 0:
                seen["equal"] = torch.equal(trainer.model.output.weight.detach(),
                                            ck.load_checkpoint(first.checkpoint).model["output.weight"])

    second = train(config(sources, tmp_path / "b", "run.max_steps=2", "eval.interval=0",
                          f"run.init_from={first.checkpoint}", "schedule.stages.0.seq_len=32"), hooks=Check())
    assert seen["equal"] and second.steps == 2  # a new run (step 0) starting from the trained weights
    assert train_losses(tmp_path / "b")[0] < train_losses(tmp_path / "a")[0] - 1.0
    with pytest.raises(CheckpointError, match="no such file"):
        Trainer(config(sources, tmp_path / "c", f"run.init_from={tmp_path / 'missing'}"))


def test_bad_data_is_caught_before_compute(sources, tmp_path):
    broken = {name: str(tmp_path / name) for name in sources}
    for name, path in sources.items():
        shutil.copytree(path, broken[name])
    shard = sorted(Path(broken["code"]).glob("*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-40])  # truncated shard
    with pytest.raises(DataError, match="shard-00000.bin"):
        train(config(broken, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    with pytest.raises(TrainingError, match="token id 25[67] is outside the model vocabulary"):
        train(config(sources, tmp_path / "run2", "model.vocab_size=200"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(config(sources, tmp_path / "run3"), resume=tmp_path / "nope")


def test_resume_with_a_different_model_shape_is_refused(sources, tmp_path):
    train(config(sources, tmp_path / "run", "run.max_steps=1", "eval.interval=0"))
    with pytest.raises(CheckpointError, match="differs from the config's"):
        Trainer(config(sources, tmp_path / "run", "run.max_steps=2", "model.dim=128"), resume="auto")


def test_exact_resume_inside_the_annealing_phase(sources, tmp_path):
    """Stopped during annealing (on the annealing mix's loader), resumed: identical losses and LRs."""
    sets = ("run.max_tokens=8192", "anneal.tokens=4096", "anneal.mix={code=1, math=1}", "eval.interval=0",
            "checkpoint.interval=0")
    ref = train(config(sources, tmp_path / "ref", "run.max_steps=0", *sets))
    part = train(config(sources, tmp_path / "run", "run.max_steps=20", *sets))
    assert part.steps == 20 and ck.load_checkpoint(part.checkpoint).meta["phase"] == "anneal"
    full = train(config(sources, tmp_path / "run", "run.max_steps=0", *sets), resume="auto")
    assert full.steps == ref.steps == 24
    records = {name: [(r["loss"], r["lr"], r["phase"]) for r in read_records(tmp_path / name / "metrics.jsonl")]
               for name in ("ref", "run")}
    assert records["run"] == records["ref"]


def test_weight_decay_applies_to_matrices_only(sources, tmp_path):
    trainer = Trainer(config(sources, tmp_path / "run"))
    decayed, plain = trainer.optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert {names[id(p)] for p in plain["params"]} == {"norm.weight"} | {
        f"layers.{i}.{n}.weight" for i in range(2) for n in ("attention_norm", "ffn_norm")}
    assert len(decayed["params"]) + len(plain["params"]) == len(list(trainer.model.parameters()))
    assert trainer.optimizer.defaults["betas"] == (0.9, 0.95)


@pytest.mark.slow
def test_tiny_recipe_learns_real_llama3_tokens(tmp_path):
    """configs/pretrain/tiny.toml as shipped (128,256 vocabulary, the llama3 mix) on the local corpus."""
    from herd.data.local_corpus import build_local_corpus
    from herd.data.tokenize_sources import tokenize_files

    paths = build_local_corpus(tmp_path / "corpus", max_docs_per_source=300)
    sets = [f"run.out_dir={tmp_path / 'run'}", "log.progress=false", "log.tensorboard=false"]
    for name, path in paths.items():
        tokenize_files([path], tmp_path / "tokens" / name, name, workers=1, validation_fraction=0.02)
        sets.append(f"data.sources.{name}={tmp_path / 'tokens' / name}")
    result = train(load_config(TINY, sets))
    records = read_records(result.metrics_path)
    vals = [r["val_loss"] for r in records if r["kind"] == "val"]
    first = [r["loss"] for r in records if r["kind"] == "train"][0]
    assert first == pytest.approx(torch.log(torch.tensor(128256.0)).item(), abs=1.0)
    assert vals[-1] < vals[0] < first and vals[-1] < first - 2.0
