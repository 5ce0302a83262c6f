"""Recipe sections that every training-like recipe shares, and the one mesh-size type.

`run`, `model`, `optim`, `schedule`, `checkpoint`, `log` and `parallel` mean the same thing in a
pretraining recipe and in the post-training, evaluation and scaling-law recipes that follow, so they
are defined here once; a recipe kind composes them with its own sections (herd.train.config.TrainConfig).

`MeshSizes` is the set of parallel sizes: what `[parallel]` resolves to against a world size, what
the runtime builds its device mesh from (herd.train.parallel.layout), and the base of the planner's
`Layout` (herd.train.parallel.planner). One type, so the three can never disagree on a dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from herd.config.loader import ConfigError

# mesh dims, outermost first: the paper's order [TP, CP, PP, DP] from innermost (fastest links,
# adjacent ranks) to outermost, with DP split into replicate (HSDP's outer groups) and shard (FSDP)
MESH_DIMS = ("dp_replicate", "dp_shard", "pp", "cp", "tp")


@dataclass(frozen=True, kw_only=True)
class MeshSizes:
    """Ranks along each parallel dimension; their product is the world size."""

    dp_replicate: int = 1
    dp_shard: int = 1
    pp: int = 1
    cp: int = 1
    tp: int = 1

    @classmethod
    def resolve(cls, world_size: int, *, dp_replicate: int = 1, dp_shard: int = -1, pp: int = 1, cp: int = 1,
                tp: int = 1) -> MeshSizes:
        """The sizes for `world_size` ranks, dp_shard = -1 taking whatever the others leave; a size < 1,
        a world size the others do not divide, or a product != world size is a ConfigError."""
        fixed = {"dp_replicate": dp_replicate, "pp": pp, "cp": cp, "tp": tp}
        bad = [f"parallel.{k} = {v}" for k, v in fixed.items() if v < 1]
        if bad or dp_shard == 0 or dp_shard < -1:
            raise ConfigError(f"parallel sizes must be >= 1 (dp_shard may be -1 for 'the rest'): {bad or dp_shard}")
        others = dp_replicate * pp * cp * tp
        if dp_shard == -1:
            if world_size % others:
                raise ConfigError(
                    f"world size {world_size} is not divisible by dp_replicate*pp*cp*tp = {others} "
                    "(launch a multiple of it with torchrun --nproc-per-node)"
                )
            dp_shard = world_size // others
        sizes = cls(dp_replicate=dp_replicate, dp_shard=dp_shard, pp=pp, cp=cp, tp=tp)
        if sizes.world_size != world_size:
            raise ConfigError(
                f"parallel sizes {sizes.describe()} multiply to {sizes.world_size}, but {world_size} processes "
                "were launched: the product dp_replicate*dp_shard*pp*cp*tp must equal the world size"
            )
        return sizes

    @property
    def world_size(self) -> int:
        return self.dp_replicate * self.dp_shard * self.pp * self.cp * self.tp

    @property
    def dp(self) -> int:
        """Ranks that see different rows of the batch."""
        return self.dp_replicate * self.dp_shard

    @property
    def shape(self) -> tuple[int, ...]:
        """Sizes in MESH_DIMS order (the device mesh's shape)."""
        return tuple(getattr(self, name) for name in MESH_DIMS)

    def sizes(self) -> MeshSizes:
        """Just the sizes (a subclass such as the planner's Layout carries more)."""
        return MeshSizes(**{name: getattr(self, name) for name in MESH_DIMS})

    def describe(self) -> str:
        parts = [f"{name}={getattr(self, name)}" for name in MESH_DIMS if getattr(self, name) > 1]
        return " x ".join(parts) if parts else "one rank"


@dataclass
class RunSection:
    out_dir: str = "runs/pretrain"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # autocast dtype: auto | bfloat16 | float32 (master weights are always float32); auto = bfloat16
    # only where this device runs it fast (herd.train.precision), float32 elsewhere (most CPUs)
    dtype: str = "auto"
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
    tie_embeddings: bool | None = None  # None = the size's value; true shares the embedding with the head

    def model_config(self):  # type: ignore[no-untyped-def]
        """The herd.model.ModelConfig this section describes (named size + explicit overrides)."""
        from herd.model import get_config

        overrides = {
            k: getattr(self, k)
            for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "vocab_size", "max_seq_len", "rope_theta")
            if getattr(self, k)
        }
        if self.tie_embeddings is not None:
            overrides["tie_embeddings"] = self.tie_embeddings
        try:
            return get_config(self.size, **overrides)
        except KeyError as exc:
            raise ConfigError(f"model.size: {exc.args[0]}") from None
        except ValueError as exc:
            raise ConfigError(f"[model]: {exc}") from None


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

    def mesh_sizes(self, world_size: int) -> MeshSizes:
        """These sizes resolved against `world_size` processes (dp_shard = -1 filled in)."""
        return MeshSizes.resolve(world_size, dp_replicate=self.dp_replicate, dp_shard=self.dp_shard, pp=self.pp,
                                 cp=self.cp, tp=self.tp)
