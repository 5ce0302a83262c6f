"""The pretraining config: TOML tables -> typed dataclasses, `--set a.b=c` overrides, consistency checks.

Why a hand-rolled loader instead of a config library: the schema is small, and every error must name
the offending key and the valid alternatives *before* any model or data is touched (a typo in a
week-long run's config should cost a second, not a GPU-hour). Values from `--set` arrive as text and
are coerced to the declared field type (int, float, bool, str, or a TOML literal for lists/tables).
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or override is malformed, names an unknown key, or is inconsistent."""


@dataclass
class RunSection:
    out_dir: str = "runs/pretrain"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "bfloat16"  # autocast dtype: bfloat16 | float32 (master weights are always float32)
    compile: bool = False
    activation_checkpointing: bool = False
    cpu_threads: int = 0  # torch intra-op threads for this run; 0 = torch's default
    document_mask: bool = True  # block-causal attention within packed documents (the paper's choice)
    nan_policy: str = "stop"  # stop | skip
    max_steps: int = 0  # 0 = no step limit (then max_tokens must be set)
    max_tokens: int = 0  # 0 = no token limit
    init_from: str = ""  # model weights only (training checkpoint dir, Meta/HF dir or .gguf); "" = random init


@dataclass
class ModelSection:
    """A named size from herd.model.MODEL_SIZES, optionally with explicit dimensions overriding it."""

    size: str = "llama3-tiny"
    dim: int = 0  # 0 = keep the size's value (same for every int below)
    n_layers: int = 0
    n_heads: int = 0
    n_kv_heads: int = 0
    ffn_dim: int = 0
    vocab_size: int = 0
    max_seq_len: int = 0
    rope_theta: float = 0.0
    init_std: float = 0.02


@dataclass
class OptimSection:
    lr: float = 3e-4  # peak learning rate
    min_lr: float = -1.0  # cosine floor; < 0 = lr / 100 (the paper: 8e-5 -> 8e-7)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 = no clipping (the norm is still measured and logged)
    impl: str = "auto"  # auto | fused | foreach | loop


@dataclass
class StageConfig:
    """One step of the batch ramp: from `after_tokens` consumed on, batches have this shape."""

    after_tokens: int = 0
    seq_len: int = 0
    batch_size: int = 0  # sequences per optimizer step (give this or batch_tokens)
    batch_tokens: int = 0  # tokens per optimizer step; must be a multiple of seq_len
    micro_batch_size: int = 0  # sequences per forward/backward (gradient accumulation); 0 = batch_size

    @property
    def sequences(self) -> int:
        return self.batch_size or self.batch_tokens // self.seq_len

    @property
    def micro(self) -> int:
        return self.micro_batch_size or self.sequences

    @property
    def step_tokens(self) -> int:
        return self.sequences * self.seq_len


@dataclass
class ScheduleSection:
    warmup_steps: int = 0
    decay_steps: int = 1000  # the cosine reaches min_lr at this step and stays there
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(0, 128, 8)])


@dataclass
class AnnealSection:
    """Final phase: LR linearly from its current value to 0 over `tokens`, on the `mix` data mix."""

    tokens: int = 0  # 0 = no annealing phase
    start_tokens: int = -1  # tokens consumed when it starts; < 0 = run.max_tokens - tokens
    mix: str | dict[str, float] = ""  # "" = keep data.mix
    from_lr: float = 0.0  # > 0: start the linear decay from this LR instead of the schedule's current one


@dataclass
class DataSection:
    sources: dict[str, str] = field(default_factory=dict)  # name -> directory of herd.data shards
    mix: str | dict[str, float] = "llama3"
    seed: int = 0


@dataclass
class EvalSection:
    interval: int = 0  # validation every N steps (and at the end); 0 = never
    batches: int = 2
    batch_size: int = 0  # 0 = the current stage's micro-batch size
    seq_len: int = 0  # 0 = the current stage's sequence length


@dataclass
class CheckpointSection:
    dir: str = ""  # "" = <out_dir>/checkpoints
    interval: int = 100  # steps; 0 = only at the end (and on SIGTERM)
    keep_last: int = 3


@dataclass
class LogSection:
    interval: int = 1  # steps between JSONL/TensorBoard records
    tensorboard: bool = True
    progress: bool = True
    plot: bool = True
    peak_flops: float = 0.0  # for MFU; 0 = H100 bf16 peak on CUDA, a measured matmul peak on CPU


@dataclass
class ParallelSection:
    """4D parallelism sizes, ordered as in the paper [TP, CP, PP, DP] from innermost to outermost.

    Their product must equal the number of processes (`torchrun --nproc-per-node N`). dp_shard = -1
    takes whatever the other sizes leave, so a plain `torchrun` launch defaults to FSDP.
    """

    dp_replicate: int = 1  # data-parallel replicas (HSDP: replicate across, shard within)
    dp_shard: int = -1  # FSDP shard group size; -1 = world size / (dp_replicate * cp * pp * tp)
    cp: int = 1  # context parallel: the sequence split into 2*cp load-balanced chunks
    pp: int = 1  # pipeline stages (ranks)
    tp: int = 1  # tensor parallel (with sequence parallel norms and loss parallel)
    pp_schedule: str = "1F1B"  # GPipe | 1F1B | Interleaved1F1B
    pp_stages_per_rank: int = 1  # virtual stages per rank (Interleaved1F1B needs >= 2)
    pp_microbatches: int = 0  # micro-batches per step through the pipeline; 0 = pp * stages per rank
    pp_layers: list[int] = field(default_factory=list)  # layers per stage; [] = balanced, first/last 1 fewer
    reshard_after_forward: str = "auto"  # FSDP: auto (not with pp) | always | never
    loss_parallel: bool = True  # with tp: cross-entropy on vocabulary-sharded logits
    timeout_s: float = 300.0  # a collective waiting longer than this fails the job instead of hanging
    backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | gloo | nccl


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
        from herd.model import get_config

        m = self.model
        overrides = {
            k: getattr(m, k)
            for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len", "rope_theta")
            if getattr(m, k)
        }
        try:
            return get_config(m.size, **overrides)
        except KeyError as exc:
            raise ConfigError(f"model.size: {exc.args[0]}") from None
        except ValueError as exc:
            raise ConfigError(f"[model]: {exc}") from None


# ---------------------------------------------------------------------------------------------------
# Building dataclasses from dictionaries with type checks


class _Raw(str):
    """An override value still in text form; coerced once its target type is known."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, _Raw):
            value = _parse_toml_literal(value, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return _build(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if isinstance(value, _Raw):
            parsed = _try_toml_literal(value)
            value = parsed if isinstance(parsed, dict) else str(value)
        for option in options:
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, _Raw):
            value = _parse_toml_literal(value, key)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if isinstance(value, _Raw):
            value = _parse_toml_literal(value, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, _Raw):
            low = value.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, _Raw):
            try:
                return int(str(value).replace("_", ""))
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    as_float = float("nan")
                if as_float.is_integer():  # 4e6 is a fine way to write a token count
                    return int(as_float)
                raise ConfigError(f"{key}: expected an integer, got {str(value)!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()
        ):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, _Raw):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {str(value)!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, _Raw):
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # a programming error in the schema


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in hints:
            where = f"[{prefix}]" if prefix else "the top level"
            raise ConfigError(f"unknown config key {full!r}; valid keys in {where}: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], full)
    return cls(**kwargs)


def _try_toml_literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return None


def _parse_toml_literal(text: str, key: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{key}: cannot parse {text!r} as a TOML value ({exc})") from None


# ---------------------------------------------------------------------------------------------------
# Overrides, loading, validation


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` to the raw config dictionary (list items by index: `schedule.stages.1.seq_len=64`)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    path, value = assignment.split("=", 1)
    parts = path.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: empty key component")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = _list_item(node, part, ".".join(parts[: i + 1]))
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"--set {assignment!r}: {'.'.join(parts[: i + 1])} is a value, not a table")
        node = child
    last = parts[-1]
    if isinstance(node, list):
        index = int(last) if last.isdigit() else -1
        if not 0 <= index < len(node):
            raise ConfigError(f"--set {assignment!r}: index {last} out of range (list has {len(node)} items)")
        node[index] = _Raw(value.strip())
    else:
        node[last] = _Raw(value.strip())


def _list_item(node: list, part: str, where: str) -> Any:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"--set: {where}: index {part!r} out of range (list has {len(node)} items)")
    return node[int(part)]


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Build and validate a TrainConfig from a TOML-shaped dictionary plus `--set` overrides."""
    import copy

    data = copy.deepcopy(data)
    for assignment in overrides:
        apply_override(data, assignment)
    config = _build(TrainConfig, data, "")
    validate(config)
    return config


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a TOML recipe, apply overrides, and check it; every problem is a ConfigError naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    try:
        return config_from_dict(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _choice(value: str, key: str, options: tuple[str, ...]) -> list[str]:
    return [] if value in options else [f"{key} = {value!r}; choose one of {', '.join(options)}"]


def validate(config: TrainConfig) -> None:
    """Cross-field checks; all problems are reported together."""
    problems: list[str] = []
    run, opt, sch, ann = config.run, config.optim, config.schedule, config.anneal
    problems += _choice(run.device, "run.device", ("auto", "cpu", "cuda"))
    problems += _choice(run.dtype, "run.dtype", ("bfloat16", "float32"))
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
        model = config.model_config()
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
