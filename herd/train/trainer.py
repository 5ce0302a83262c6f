"""The single-process pretraining loop (parallelism plugs in through herd.train.parallel).

One optimizer step: take the global batch for the current ramp stage from the loader, split it into
micro-batches, run forward/backward under bf16 autocast (float32 master weights and loss), normalise
by the number of trained target tokens of the whole batch (so accumulation equals one big batch),
clip, step AdamW with the scheduled LR, log, and now and then validate and checkpoint.

Everything that can be wrong with the inputs (config, checkpoint paths, data directories, model
shape of a resumed checkpoint) is checked in `Trainer.__init__`, before any compute.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from herd.checkpoint.errors import CheckpointError
from herd.model import ModelConfig, Transformer
from herd.model.flops import param_counts
from herd.train import checkpointing
from herd.train.config import ConfigError, TrainConfig
from herd.train.init import ModelInit
from herd.train.metrics import MetricsLogger, memory_mb, peak_flops, plot_loss_curve
from herd.train.mfu import mfu as model_flops_utilization
from herd.train.objective import LanguageModelObjective, Objective
from herd.train.parallel import SingleProcessPlan
from herd.train.parallel.distributed import make_plan
from herd.train.parallel.single import LocalBatch
from herd.train.precision import resolve_dtype
from herd.train.schedule import Schedule

MAX_CONSECUTIVE_SKIPS = 10  # with nan_policy = "skip", this many bad batches in a row still stop the run


class TrainingError(RuntimeError):
    """The run cannot continue (non-finite loss, token ids outside the vocabulary)."""


class TrainLoader(Protocol):
    """The herd.data loader protocol (see herd/data/loader.py)."""

    def next_batch(self, batch_size: int, seq_len: int) -> Any: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


# (sources, mix, seed, split) -> loader; the default is herd.data.build_loader
LoaderFactory = Callable[[dict[str, str], "str | dict[str, float]", int, str], TrainLoader]


def default_loader_factory(sources: dict[str, str], mix: str | dict[str, float], seed: int, split: str) -> TrainLoader:
    from herd.data import build_loader

    return build_loader(sources, mix, seed=seed, split=split)


class TrainHooks:
    """Callbacks for tests and tools; the default does nothing."""

    def on_step_start(self, trainer: Trainer, step: int) -> None: ...
    def on_step_end(self, trainer: Trainer, step: int, record: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    steps: int  # optimizer steps completed (including skipped ones)
    tokens: int  # tokens consumed
    final_loss: float | None
    val_loss: float | None
    checkpoint: Path | None  # the last checkpoint written (or resumed from)
    stopped: str  # "done" | "signal"
    out_dir: Path
    metrics_path: Path
    loss_curve: Path | None
    skipped_steps: int


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device = 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(name)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: str | Path | None = None,
        loader_factory: LoaderFactory | None = None,
        hooks: TrainHooks | None = None,
        plan: SingleProcessPlan | None = None,
        objective: Objective | None = None,
        model_config: ModelConfig | None = None,
        model_factory: Callable[[ModelConfig], torch.nn.Module] | None = None,
        model_init: Any = None,
    ) -> None:
        # run.dtype "auto" (and a slow explicit "bfloat16") is settled here, before the plan reads it
        dtype, self.dtype_note = resolve_dtype(config.run.dtype, _device(config.run.device))
        if dtype != config.run.dtype:
            config = dataclasses.replace(config, run=dataclasses.replace(config.run, dtype=dtype))
        self.config = config
        self.hooks = hooks or TrainHooks()
        self.plan = plan or make_plan(config)
        self.schedule = Schedule(config)
        self.out_dir = Path(config.run.out_dir)
        self.ckpt_dir = config.checkpoint_dir
        self.device = getattr(self.plan, "device", None) or _device(config.run.device)
        self.autocast_dtype = torch.bfloat16 if config.run.dtype == "bfloat16" else None
        self.model_config = model_config or config.model_config()
        self.objective: Objective = objective or LanguageModelObjective()

        # -- checks before compute: checkpoints to resume / initialise from, data directories
        self.resume_path = checkpointing.resolve_resume(resume, self.ckpt_dir)
        self.resume_meta: dict[str, Any] | None = None
        if self.resume_path is not None:
            self.resume_meta = checkpointing.read_meta(self.resume_path)
            saved = self.resume_meta.get("model_config")
            if saved != self.model_config.to_meta_params():
                raise CheckpointError(
                    f"{self.resume_path}: checkpoint model shape {saved} differs from the config's "
                    f"{self.model_config.to_meta_params()}; use run.init_from to start a differently shaped run"
                )
        if config.run.init_from and not Path(config.run.init_from).exists():
            raise CheckpointError(f"run.init_from {config.run.init_from}: no such file or directory")
        factory = loader_factory or default_loader_factory
        data = config.data
        self.loader = factory(data.sources, data.mix, data.seed, "train")
        self.anneal_loader = (
            factory(data.sources, config.anneal.mix, data.seed, "train")
            if config.anneal.tokens and config.anneal.mix and config.anneal.mix != data.mix else None
        )
        self.val_loader = factory(data.sources, data.mix, data.seed, "validation") if config.eval.interval else None
        self.val_start = self.val_loader.state_dict() if self.val_loader is not None else None

        # -- model and optimizer
        torch.manual_seed(config.run.seed)
        # model_factory/model_init: a model with another head (the reward model's scalar score),
        # built and initialised by its own rules; the default is the language model
        with torch.device("meta"):
            model = (model_factory or Transformer)(self.model_config)
        # the model checkpoints, hooks and the optimizer see (under pipeline parallelism: this
        # rank's stages; under FSDP/TP: modules holding sharded DTensor parameters)
        init = model_init or ModelInit(config.run.seed, config.model.init_std, config.run.init_from)
        self.model = self.plan.build_model(
            model, init, self.device, checkpoint_activations=config.run.activation_checkpointing
        )
        self.forward_model = self.plan.compile(self.model) if config.run.compile else self.model
        self.optimizer, self.optim_impl = self.plan.build_optimizer(self.model, config.optim, self.device)

        self.step = 0
        self.tokens = 0
        self.skipped_steps = 0
        self.last_checkpoint: Path | None = None
        if self.resume_path is not None:
            self._restore(self.resume_path)
        self._stop_signal: int | None = None

    # ------------------------------------------------------------------ state
    def _active_loader(self) -> TrainLoader:
        if self.anneal_loader is not None and self.schedule.in_anneal(self.tokens):
            return self.anneal_loader
        return self.loader

    def _meta(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "skipped_steps": self.skipped_steps,
            "phase": "anneal" if self.schedule.in_anneal(self.tokens) else "main",
            "lr_next": self.schedule.lr(self.step, self.tokens),
            "loader": self.loader.state_dict(),
            "anneal_loader": self.anneal_loader.state_dict() if self.anneal_loader is not None else None,
            "rng": checkpointing.rng_state(),
            "model_config": self.model_config.to_meta_params(),
            "config": self.config.to_dict(),
        }

    def save(self) -> Path:
        self.last_checkpoint = self.plan.save(
            self.ckpt_dir, self.step, self.model, self.optimizer, self._meta(), self.config.checkpoint.keep_last
        )
        return self.last_checkpoint

    def _restore(self, path: Path) -> None:
        meta = self.plan.load(path, self.model, self.optimizer)
        self.step = int(meta["step"])
        self.tokens = int(meta["tokens"])
        self.skipped_steps = int(meta.get("skipped_steps", 0))
        self.loader.load_state_dict(meta["loader"])
        if self.anneal_loader is not None and meta.get("anneal_loader") is not None:
            self.anneal_loader.load_state_dict(meta["anneal_loader"])
        checkpointing.set_rng_state(meta["rng"])
        self.last_checkpoint = path

    # ------------------------------------------------------------------ compute
    def _local_batch(self, batch: Any) -> LocalBatch:
        doc_ids = batch[2] if self.config.run.document_mask else None
        return self.plan.shard_batch(batch[0], batch[1], doc_ids, self.device)

    def _check_tokens(self, inputs: torch.Tensor) -> None:
        top = int(inputs.max())
        if top >= self.model_config.vocab_size or int(inputs.min()) < 0:
            raise TrainingError(
                f"token id {top} is outside the model vocabulary (vocab_size {self.model_config.vocab_size}); "
                "the data was tokenized for a different vocabulary than [model] describes"
            )

    def _train_step(self) -> dict[str, Any]:
        shape = self.schedule.shape_at(self.tokens)
        lr = self.schedule.lr(self.step, self.tokens)
        phase = "anneal" if self.schedule.in_anneal(self.tokens) else "main"
        batch = self._active_loader().next_batch(shape.batch_size, shape.seq_len)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        stats = self.objective.forward_backward(self, batch, shape)
        loss_value = float(stats.pop("loss"))
        computed_tokens = int(stats.pop("tokens", shape.tokens))
        grad_norm = float(self.plan.clip_grad_norm(self.model, self.config.optim.grad_clip))
        skipped = not (math.isfinite(loss_value) and math.isfinite(grad_norm))
        if skipped:
            self._handle_non_finite(loss_value, grad_norm, lr)
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        self.step += 1
        self.tokens += shape.tokens
        tokens_per_s = computed_tokens / elapsed if elapsed > 0 else 0.0
        # per device: the step's tokens were shared by all ranks
        mfu = model_flops_utilization(tokens_per_s, self.model_config, shape.seq_len,
                                      self.peak_flops * self.plan.world_size)
        return {
            "kind": "train", "step": self.step, "tokens": self.tokens, "loss": loss_value, "grad_norm": grad_norm,
            "lr": lr, "tokens_per_s": tokens_per_s, "mfu": mfu, "memory_mb": memory_mb(self.device),
            "batch_size": shape.batch_size, "seq_len": shape.seq_len, "stage": shape.stage, "phase": phase,
            "skipped": skipped, **stats,
        }

    def _handle_non_finite(self, loss: float, grad_norm: float, lr: float) -> None:
        where = (f"step {self.step + 1} (tokens {self.tokens}, lr {lr:.3g}): loss {loss}, grad norm {grad_norm}")
        last = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
        if self.config.run.nan_policy == "stop":
            raise TrainingError(
                f"non-finite loss or gradient at {where}; stopping ({last}). Lower optim.lr, check the data, "
                'or set run.nan_policy = "skip" to skip such batches'
            )
        self.skipped_steps += 1
        self._consecutive_skips += 1
        self.logger.message(f"skipping batch: non-finite loss or gradient at {where}")
        if self._consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
            raise TrainingError(
                f"{MAX_CONSECUTIVE_SKIPS} non-finite batches in a row, last at {where}; stopping ({last})"
            )

    @torch.no_grad()
    def validate(self) -> float | None:
        """The objective's held-out loss over the same batches every time (None without validation data)."""
        if self.val_loader is None:
            return None
        self.val_loader.load_state_dict(self.val_start)  # type: ignore[arg-type]
        was_training = self.model.training
        self.model.eval()
        try:
            return self.objective.validate(self, self.val_loader)
        finally:
            self.model.train(was_training)

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop_signal = signum

    def run(self) -> TrainResult:
        cfg = self.config
        self._threads_before = torch.get_num_threads()
        if cfg.run.cpu_threads:
            torch.set_num_threads(cfg.run.cpu_threads)
        self.peak_flops, peak_source = peak_flops(
            self.device, self.autocast_dtype or torch.float32, cfg.log.peak_flops
        )
        total_steps = cfg.run.max_steps or None
        self.logger = MetricsLogger(
            self.out_dir if self.plan.is_main else self.out_dir / "ranks" / str(self.plan.rank),
            start_step=self.step, total_steps=total_steps, quiet=not self.plan.is_main,
            tensorboard=cfg.log.tensorboard and self.plan.is_main, progress=cfg.log.progress and self.plan.is_main,
        )
        self._consecutive_skips = 0
        if self.logger.tb_note:
            self.logger.message(self.logger.tb_note)
        self.logger.message(
            f"{getattr(self.objective, 'name', 'pretrain')}: {param_counts(self.model_config)['total']:,} parameters on {self.device} ({self.plan.description}), "
            f"AdamW ({self.optim_impl}), autocast {self.dtype_note}, MFU peak {self.peak_flops:.3g} FLOP/s "
            f"({peak_source})" + (f", resumed from {self.resume_path} at step {self.step}" if self.resume_path else "")
        )
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._on_signal)
        self.model.train()
        last_loss: float | None = None
        val_loss: float | None = None
        stopped = "done"
        try:
            while not self.schedule.done(self.step, self.tokens):
                self.hooks.on_step_start(self, self.step)
                record = self._train_step()
                if not record["skipped"]:
                    self._consecutive_skips = 0
                    last_loss = record["loss"]
                if self.step % cfg.log.interval == 0 or record["skipped"]:
                    self.logger.log(record)
                self.logger.progress(self.step, record["loss"], record["lr"], record["tokens_per_s"])
                self.hooks.on_step_end(self, self.step, record)
                if cfg.eval.interval and self.step % cfg.eval.interval == 0:
                    val_loss = self._log_validation()
                if self.plan.any_rank(self._stop_signal is not None):  # every rank stops at the same step
                    path = self.save()
                    name = signal.Signals(self._stop_signal).name if self._stop_signal else "a stop signal on another rank"
                    self.logger.message(
                        f"received {name}: saved {path}; "
                        "continue with --resume auto"
                    )
                    stopped = "signal"
                    break
                if cfg.checkpoint.interval and self.step % cfg.checkpoint.interval == 0:
                    self.save()
            if stopped == "done":
                if cfg.eval.interval and self.step % cfg.eval.interval:
                    val_loss = self._log_validation()
                final_name = checkpointing.checkpoint_name(self.step)
                if self.last_checkpoint is None or self.last_checkpoint.name != final_name:
                    self.save()
        finally:
            self.logger.close()
            for sig, previous in handlers.items():
                signal.signal(sig, previous)
            torch.set_num_threads(self._threads_before)
        curve = None
        if cfg.log.plot and self.plan.is_main:
            curve = plot_loss_curve(self.logger.path, self.out_dir / "loss.png")
        return TrainResult(
            steps=self.step, tokens=self.tokens, final_loss=last_loss, val_loss=val_loss,
            checkpoint=self.last_checkpoint, stopped=stopped, out_dir=self.out_dir,
            metrics_path=self.logger.path, loss_curve=curve, skipped_steps=self.skipped_steps,
        )

    def _log_validation(self) -> float | None:
        val = self.validate()
        if val is not None:
            self.logger.log({"kind": "val", "step": self.step, "tokens": self.tokens, "val_loss": val})
        return val


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    loader_factory: LoaderFactory | None = None,
    hooks: TrainHooks | None = None,
    plan: SingleProcessPlan | None = None,
    objective: Objective | None = None,
    model_config: ModelConfig | None = None,
) -> TrainResult:
    """Pretrain (or resume, or continue from `run.init_from`) as `config` says; see `Trainer`.

    Under torchrun the plan defaults to herd.train.parallel's DistributedPlan for `config.parallel`.
    """
    return Trainer(config, resume=resume, loader_factory=loader_factory, hooks=hooks, plan=plan, objective=objective,
                   model_config=model_config).run()
