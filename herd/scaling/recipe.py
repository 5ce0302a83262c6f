"""The scaling-sweep recipe (`herd scaling sweep RECIPE.toml`): the grid, the schedule rules, the data.

It is a recipe of the one config system (herd.config): `--set sweep.budgets=[1e12,3e12]` works as for
every other recipe, and every problem is reported before any run starts. Each grid point becomes an
ordinary pretraining recipe (herd.train.config.TrainConfig) built by `herd.scaling.sweep.run_config`,
with the paper's rules per size: cosine schedule with warmup, peak LR falling with model size (the paper:
4e-4 for its smallest models to 2e-4 for its largest; tiny CPU models need larger ones, so the two ends
are recipe keys), decay to 0.1x the peak, weight decay 0.1, and a fixed batch per budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from herd.config import ConfigError, load_recipe, recipe_from_dict


@dataclass
class SizeSpec:
    """One model size: a named herd size, or width/depth (dims override the named size's)."""

    name: str = ""
    size: str = "llama3-tiny"
    dim: int = 0
    n_layers: int = 0
    n_heads: int = 0
    n_kv_heads: int = 0  # 0 = n_heads (no grouping at these sizes)
    ffn_dim: int = 0  # 0 = about 8/3 * dim rounded to 8 (SwiGLU's usual width)

    def label(self) -> str:
        return self.name or (f"d{self.dim}l{self.n_layers}" if self.dim else self.size)


@dataclass
class SweepSection:
    budgets: list[float] = field(default_factory=list)  # training FLOPs per run (C)
    sizes: list[SizeSpec] = field(default_factory=list)
    # more sizes the demo may pick for the run it forecasts (nearest to the extrapolated N*); not swept
    forecast_sizes: list[SizeSpec] = field(default_factory=list)
    seq_len: int = 128
    batch_tokens: list[int] = field(default_factory=list)  # one per budget; empty = 2,048 tokens for every budget
    lr: list[float] = field(default_factory=lambda: [3e-3, 1e-3])  # peak LR at the smallest / largest size
    final_lr_ratio: float = 0.1  # the cosine ends at this fraction of the peak (the paper: 0.1)
    weight_decay: float = 0.1
    warmup_fraction: float = 0.05  # of a run's steps, at most warmup_max_steps (the paper: 2,000 steps)
    warmup_max_steps: int = 2000
    min_steps: int = 10  # a grid point with fewer optimizer steps is left out (and listed)
    tasks: list[str] = field(default_factory=lambda: ["arith_mc", "stdlib_names"])  # per-task gold NLL + accuracy
    task_limit: int = 200
    validation_batches: int = 16
    validation_batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    cpu_threads: int = 0


@dataclass
class ScalingData:
    """The corpus every run trains on: herd's local corpus (`herd corpus`), tokenized once per sweep."""

    corpus_docs: int = 4000  # documents per local-corpus source
    vocab_size: int = 2048  # a BPE trained on the corpus; 0 = the Llama 3 128,256-token vocabulary
    mix: dict[str, float] = field(default_factory=lambda: {"general": 0.5, "code": 0.25, "math": 0.25})
    validation_fraction: float = 0.05
    seed: int = 0


@dataclass
class ScalingRecipe:
    sweep: SweepSection = field(default_factory=SweepSection)
    data: ScalingData = field(default_factory=ScalingData)
    pretrain: dict[str, Any] = field(default_factory=dict)  # extra pretraining keys for every run ([optim] ...)

    def validate(self) -> None:
        s, d = self.sweep, self.data
        problems = []
        if not s.budgets or any(c <= 0 for c in s.budgets):
            problems.append("sweep.budgets must list positive FLOP budgets")
        if len(s.sizes) < 3:
            problems.append(f"sweep.sizes needs at least 3 sizes for a quadratic per budget, got {len(s.sizes)}")
        labels = [z.label() for z in s.sizes + s.forecast_sizes]
        if len(set(labels)) != len(labels):
            problems.append(f"sweep.sizes have duplicate names {labels}")
        if s.batch_tokens and len(s.batch_tokens) != len(s.budgets):
            problems.append(f"sweep.batch_tokens has {len(s.batch_tokens)} entries for {len(s.budgets)} budgets")
        if any(b % s.seq_len for b in s.batch_tokens):
            problems.append(f"sweep.batch_tokens must be multiples of seq_len {s.seq_len}")
        if len(s.lr) != 2 or min(s.lr) <= 0:
            problems.append(f"sweep.lr must be [peak LR at the smallest size, at the largest], got {s.lr}")
        if not 0 < s.final_lr_ratio <= 1:
            problems.append(f"sweep.final_lr_ratio must be in (0, 1], got {s.final_lr_ratio}")
        if d.vocab_size and d.vocab_size < 300:
            problems.append(f"data.vocab_size {d.vocab_size} is too small for a byte-level BPE (>= 300, or 0)")
        if not d.mix or min(d.mix.values()) < 0:
            problems.append("data.mix must give non-negative weights to local-corpus sources")
        from herd.eval.tasks import REGISTRY
        from herd.model import MODEL_SIZES

        for name in s.tasks:
            task = REGISTRY.get(name)
            if task is None:
                problems.append(f"sweep.tasks: unknown task {name!r}; multiple-choice tasks: "
                                f"{', '.join(sorted(n for n, t in REGISTRY.items() if t.kind == 'mc'))}")
            elif task.kind != "mc":
                problems.append(f"sweep.tasks: {name} is a {task.kind} task; the forecast needs multiple-choice "
                                "tasks (gold-answer NLL and accuracy)")

        for z in s.sizes + s.forecast_sizes:
            if z.size not in MODEL_SIZES:
                problems.append(f"sweep.sizes {z.label()}: unknown size {z.size!r}")
            heads = z.n_heads
            if z.dim and heads and z.dim % heads:
                problems.append(f"sweep.sizes {z.label()}: dim {z.dim} is not divisible by n_heads {heads}")
        if problems:
            raise ConfigError("invalid scaling recipe: " + "; ".join(problems))

    def batch_for(self, budget_index: int) -> int:
        return self.sweep.batch_tokens[budget_index] if self.sweep.batch_tokens else 2048


def load_scaling_recipe(path: str, overrides: list[str] | tuple[str, ...] = ()) -> ScalingRecipe:
    return load_recipe(ScalingRecipe, path, overrides)


def scaling_recipe_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> ScalingRecipe:
    return recipe_from_dict(ScalingRecipe, data, overrides)
