"""The pretraining recipe (`herd pretrain CONFIG.toml`): its sections and its consistency checks.

The loading, `--set` overrides, type checks and error messages are herd.config's, shared with every
other recipe kind; the sections that other training-like recipes reuse (run, model, optim, schedule,
checkpoint, log, parallel) live there too. What is pretraining's own is here: the annealing phase,
the data sources and mix (or a mix file written by `herd curate`), evaluation, and the cross-field
checks (`validate`), all reported together before any model or data is touched.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herd.config import (
    CheckpointSection,
    ConfigError,
    LogSection,
    ModelSection,
    OptimSection,
    ParallelSection,
    RunSection,
    ScheduleSection,
    StageConfig,
    apply_override,
    load_recipe,
    recipe_from_dict,
)

__all__ = [
    "AnnealSection", "CheckpointSection", "ConfigError", "DataSection", "EvalSection", "LogSection", "ModelSection",
    "OptimSection", "ParallelSection", "RunSection", "ScheduleSection", "StageConfig", "TrainConfig",
    "apply_override", "config_from_dict", "load_config", "validate",
]


@dataclass
class AnnealSection:
    """Final phase: LR linearly from its current value to 0 over `tokens`, on the `mix` data mix."""

    tokens: int = 0  # 0 = no annealing phase
    start_tokens: int = -1  # tokens consumed when it starts; < 0 = run.max_tokens - tokens
    mix: str | dict[str, float] = ""  # "" = keep data.mix
    from_lr: float = 0.0  # > 0: start the linear decay from this LR instead of the schedule's current one


@dataclass
class DataSection:
    """Where the tokens come from. `mix_file` (a `mix.toml` from `herd curate`) supplies sources and
    weights; sources given here are added to its own, and a mix given here replaces its weights."""

    sources: dict[str, str] = field(default_factory=dict)  # name -> directory of herd.data shards
    mix: str | dict[str, float] = ""  # a NAMED_MIXES name or weights; "" = the mix file's, else "llama3"
    mix_file: str = ""  # "" = none; else a mix file (herd.data.mixture.MixFile), relative to the working dir
    seed: int = 0


@dataclass
class EvalSection:
    interval: int = 0  # validation every N steps (and at the end); 0 = never
    batches: int = 2
    batch_size: int = 0  # 0 = the current stage's micro-batch size
    seq_len: int = 0  # 0 = the current stage's sequence length


@dataclass
class TrainConfig:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    anneal: AnnealSection = field(default_factory=AnnealSection)
    data: DataSection = field(default_factory=DataSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    log: LogSection = field(default_factory=LogSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)

    @property
    def min_lr(self) -> float:
        return self.optim.min_lr if self.optim.min_lr >= 0 else self.optim.lr / 100

    @property
    def anneal_start(self) -> int:
        """Tokens consumed when annealing begins (-1 when there is no annealing phase)."""
        if self.anneal.tokens <= 0:
            return -1
        if self.anneal.start_tokens >= 0:
            return self.anneal.start_tokens
        return self.run.max_tokens - self.anneal.tokens

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir) if self.checkpoint.dir else Path(self.run.out_dir) / "checkpoints"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self):  # type: ignore[no-untyped-def]
        """The herd.model.ModelConfig this config describes (named size + explicit overrides)."""
        return self.model.model_config()

    def validate(self) -> None:
        """Fill the data sources and mixes from `data.mix_file`, then every cross-field check (the loader
        calls this; a config built by hand can call it too)."""
        _apply_mix_file(self)
        validate(self)


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Build and validate a TrainConfig from a TOML-shaped dictionary plus `--set` overrides."""
    return recipe_from_dict(TrainConfig, data, overrides)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a TOML recipe, apply overrides, and check it; every problem is a ConfigError naming the file and key."""
    return load_recipe(TrainConfig, path, overrides)


def _apply_mix_file(config: TrainConfig) -> None:
    """Merge `data.mix_file` into [data] (and an unset anneal.mix), so the rest of herd sees plain sources."""
    data = config.data
    if data.mix_file:
        from herd.data.mixture import load_mix_file

        try:
            mix = load_mix_file(data.mix_file)
        except ConfigError as exc:
            raise ConfigError(f"data.mix_file: {exc}") from None
        where = f"data.mix_file {data.mix_file}"
        if not mix.tokenized:
            raise ConfigError(f"{where}: its sources are curated JSONL, not token shards; rerun `herd curate` "
                              "with --set mix.tokenize=true (or `herd tokenize` each source)")
        clash = sorted(n for n, p in data.sources.items() if n in mix.data.sources and p != mix.data.sources[n])
        if clash:
            raise ConfigError(f"data.sources {clash} are also sources of {where}, with other directories; "
                              "rename them, or drop data.sources (--set data.sources={})")
        data.sources = {**mix.data.sources, **data.sources}
        if not data.mix:
            data.mix = dict(mix.data.mix)
        if not config.anneal.mix and mix.anneal.mix:
            config.anneal.mix = dict(mix.anneal.mix)
    if not data.mix:
        data.mix = "llama3"


def _choice(value: str, key: str, options: tuple[str, ...]) -> list[str]:
    return [] if value in options else [f"{key} = {value!r}; choose one of {', '.join(options)}"]


def validate(config: TrainConfig, *, token_data: bool = True) -> None:
    """Cross-field checks; all problems are reported together. `token_data=False` skips the token-shard
    sources and mixes (post-training recipes read their own data files)."""
    problems: list[str] = []
    run, opt, sch, ann = config.run, config.optim, config.schedule, config.anneal
    problems += _choice(run.device, "run.device", ("auto", "cpu", "cuda"))
    problems += _choice(run.dtype, "run.dtype", ("auto", "bfloat16", "float32"))
    problems += _choice(run.nan_policy, "run.nan_policy", ("stop", "skip"))
    problems += _choice(opt.impl, "optim.impl", ("auto", "fused", "foreach", "loop"))
    if run.cpu_threads < 0:
        problems.append(f"run.cpu_threads must be >= 0, got {run.cpu_threads}")
    if run.max_steps < 0 or run.max_tokens < 0:
        problems.append("run.max_steps and run.max_tokens must be >= 0")
    if run.max_steps == 0 and run.max_tokens == 0 and ann.tokens == 0:
        problems.append("set run.max_steps or run.max_tokens (or an [anneal] phase): the run needs an end")
    if opt.lr <= 0:
        problems.append(f"optim.lr must be positive, got {opt.lr}")
    if config.min_lr > opt.lr:
        problems.append(f"optim.min_lr {config.min_lr} exceeds the peak optim.lr {opt.lr}")
    if len(opt.betas) != 2 or not all(0 <= b < 1 for b in opt.betas):
        problems.append(f"optim.betas must be two numbers in [0, 1), got {opt.betas}")
    if opt.weight_decay < 0 or opt.grad_clip < 0 or opt.eps <= 0:
        problems.append("optim.weight_decay and optim.grad_clip must be >= 0, optim.eps > 0")
    if sch.warmup_steps < 0 or sch.decay_steps <= 0:
        problems.append("schedule.warmup_steps must be >= 0 and schedule.decay_steps > 0")
    elif sch.warmup_steps > sch.decay_steps:
        problems.append(
            f"schedule.warmup_steps {sch.warmup_steps} exceeds schedule.decay_steps {sch.decay_steps} "
            "(the warmup must end before the cosine decay does)"
        )
    problems += _stage_problems(config)
    if ann.tokens < 0:
        problems.append(f"anneal.tokens must be >= 0, got {ann.tokens}")
    elif ann.tokens > 0:
        if ann.start_tokens < 0 and run.max_tokens == 0:
            problems.append("anneal.tokens needs anneal.start_tokens or run.max_tokens to place the phase")
        elif config.anneal_start < 0:
            problems.append(f"anneal.tokens {ann.tokens} exceeds run.max_tokens {run.max_tokens}")
        elif run.max_tokens and config.anneal_start + ann.tokens > run.max_tokens:
            problems.append(
                f"the annealing phase ends at {config.anneal_start + ann.tokens} tokens, after run.max_tokens "
                f"{run.max_tokens}"
            )
    if token_data:
        problems += _mix_problems(config.data.mix, config.data.sources, "data.mix")
        if ann.mix:
            problems += _mix_problems(ann.mix, config.data.sources, "anneal.mix")
        if not config.data.sources:
            problems.append("data.sources is empty: name at least one directory of token shards")
    if config.checkpoint.keep_last < 1 or config.checkpoint.interval < 0:
        problems.append("checkpoint.keep_last must be >= 1 and checkpoint.interval >= 0")
    if config.log.interval < 1:
        problems.append("log.interval must be >= 1")
    if config.eval.interval < 0 or config.eval.batches < 1:
        problems.append("eval.interval must be >= 0 and eval.batches >= 1")
    try:
        model = config.model_config()  # a post-training recipe reads it from its starting checkpoint
    except ConfigError as exc:
        problems.append(str(exc))
    else:
        longest = max([s.seq_len for s in sch.stages] + [config.eval.seq_len])
        if longest > model.max_seq_len:
            problems.append(f"a sequence length of {longest} exceeds the model's max_seq_len {model.max_seq_len}")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def _stage_problems(config: TrainConfig) -> list[str]:
    stages = config.schedule.stages
    if not stages:
        return ["schedule.stages is empty: give at least one {after_tokens = 0, batch_size, seq_len}"]
    problems = []
    if stages[0].after_tokens != 0:
        problems.append(f"schedule.stages[0].after_tokens must be 0, got {stages[0].after_tokens}")
    for i, stage in enumerate(stages):
        key = f"schedule.stages[{i}]"
        if stage.seq_len <= 0:
            problems.append(f"{key}.seq_len must be positive, got {stage.seq_len}")
            continue
        if bool(stage.batch_size) == bool(stage.batch_tokens):
            problems.append(f"{key}: give exactly one of batch_size (sequences) or batch_tokens")
            continue
        if stage.batch_size < 0 or stage.batch_tokens < 0 or stage.micro_batch_size < 0:
            problems.append(f"{key}: sizes must be positive")
            continue
        if stage.batch_tokens and stage.batch_tokens % stage.seq_len:
            problems.append(
                f"{key}.batch_tokens {stage.batch_tokens} is not divisible by seq_len {stage.seq_len}"
            )
            continue
        if stage.sequences % stage.micro:
            problems.append(
                f"{key}: batch of {stage.sequences} sequences is not divisible by micro_batch_size {stage.micro}"
            )
        if i and stage.after_tokens <= stages[i - 1].after_tokens:
            problems.append(
                f"{key}.after_tokens {stage.after_tokens} is not after the previous stage's "
                f"{stages[i - 1].after_tokens} (stages must be in increasing token order)"
            )
    return problems


def _mix_problems(mix: str | dict[str, float], sources: dict[str, str], key: str) -> list[str]:
    if isinstance(mix, dict):
        unknown = sorted(set(mix) - set(sources))
        problems = [f"{key} names unknown sources {unknown}; data.sources has {sorted(sources)}"] if unknown else []
        if any(w < 0 for w in mix.values()) or not any(w > 0 for w in mix.values()):
            problems.append(f"{key} weights must be >= 0 with at least one positive, got {mix}")
        return problems
    if not mix:
        return [f"{key} is empty"]
    return []
