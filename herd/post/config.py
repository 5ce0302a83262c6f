"""Post-training recipes (`herd sft CONFIG.toml`, `herd dpo CONFIG.toml`): pretraining's recipe plus
the starting model, the data files and each method's own section, with the paper's defaults.

The shared sections (run, optim, schedule, checkpoint, log, eval, ...) mean what they mean for
`herd pretrain`; the model's shape is not configured but read from `[post] model`, any herd model
spec (a built-in name, `random:<size>`, a Meta/Hugging Face directory, a .gguf file) or a herd
training checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from herd.config import ConfigError, RunSection, ScheduleSection, StageConfig, load_recipe, recipe_from_dict
from herd.config.sections import OptimSection
from herd.train.config import TrainConfig, validate

RECORD_FORMATS = ("auto", "herd", "trl", "sharegpt")


@dataclass
class PostSection:
    model: str = "smollm2-135m-instruct"  # the starting model (and the DPO reference)
    train_files: list[str] = field(default_factory=list)  # JSONL or JSON files
    validation_files: list[str] = field(default_factory=list)
    format: str = "auto"  # auto | herd | trl | sharegpt
    limit: int = 0  # read at most this many records per split; 0 = all
    epochs: float = 1.0  # used when run.max_steps and run.max_tokens are 0


@dataclass
class SFTSection:
    mask: str = "paper"  # paper: assistant bodies + closing tokens; completion: after the last generation prompt
    pack: bool = True  # several dialogs per row with document masks (exact); false: one per row, padded


@dataclass
class DPOSection:
    beta: float = 0.1
    nll_weight: float = 0.2  # the paper's NLL term on the chosen response
    nll_mode: str = "token"  # token: mean over chosen tokens (TRL); sequence: per-sequence mean (OpenRLHF)
    mask: str = "paper"  # paper: header and termination tokens out of both log-probs; completion: all
    reference: str = "precompute"  # precompute (cached) | live
    prefix_sharing: bool = True  # the prompt once per preference (one row, responses masked from each other)
    label_smoothing: float = 0.0
    loss_type: str = "sigmoid"  # sigmoid | ipo


STRENGTHS = ("significantly_better", "better", "slightly_better", "marginally_better")  # strongest first


@dataclass
class RMSection:
    margin: bool = False  # Llama 2's margin term; Llama 3 drops it (only false is implemented)
    one_row: bool = True  # the prompt once, its responses after it and masked from each other
    min_strength: str = "better"  # keep preferences at least this strong (records without a strength are kept)
    center_coefficient: float = 0.0  # reward centering (TRL's center_rewards_coefficient); 0 = off


@dataclass
class PostRunSection(RunSection):
    out_dir: str = "runs/post"
    dtype: str = "float32"  # the paper's recipes are bf16 on GPUs; float32 is the safe CPU default


@dataclass
class PostOptimSection(OptimSection):
    lr: float = 1e-5  # the paper's SFT and DPO learning rate
    weight_decay: float = 0.0


@dataclass
class PostScheduleSection(ScheduleSection):
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(0, 1024, 8)])


@dataclass
class PostConfig(TrainConfig):
    run: PostRunSection = field(default_factory=PostRunSection)
    optim: PostOptimSection = field(default_factory=PostOptimSection)
    schedule: PostScheduleSection = field(default_factory=PostScheduleSection)
    post: PostSection = field(default_factory=PostSection)
    sft: SFTSection = field(default_factory=SFTSection)
    dpo: DPOSection = field(default_factory=DPOSection)
    rm: RMSection = field(default_factory=RMSection)

    @cached_property
    def starting_model(self) -> Any:
        from herd.post.starting import StartingModel

        return StartingModel.resolve(self.post.model)

    def model_config(self):  # type: ignore[no-untyped-def]
        return self.starting_model.config

    def validate(self) -> None:
        problems = []
        if not self.post.train_files:
            problems.append("post.train_files is empty: name at least one JSONL/JSON file")
        if self.post.format not in RECORD_FORMATS:
            problems.append(f"post.format = {self.post.format!r}; choose one of {', '.join(RECORD_FORMATS)}")
        for key, value in (("sft.mask", self.sft.mask), ("dpo.mask", self.dpo.mask)):
            if value not in ("paper", "completion"):
                problems.append(f"{key} = {value!r}; choose paper or completion")
        if self.dpo.reference not in ("precompute", "live"):
            problems.append(f"dpo.reference = {self.dpo.reference!r}; choose precompute or live")
        if self.dpo.nll_mode not in ("token", "sequence"):
            problems.append(f"dpo.nll_mode = {self.dpo.nll_mode!r}; choose token or sequence")
        if self.dpo.loss_type not in ("sigmoid", "ipo"):
            problems.append(f"dpo.loss_type = {self.dpo.loss_type!r}; choose sigmoid or ipo")
        if self.dpo.beta <= 0 or self.dpo.nll_weight < 0 or not 0 <= self.dpo.label_smoothing < 0.5:
            problems.append("dpo.beta must be > 0, dpo.nll_weight >= 0, dpo.label_smoothing in [0, 0.5)")
        if self.rm.margin:
            problems.append("rm.margin = true (Llama 2's margin term) is not implemented: Llama 3 trains without it")
        if self.rm.min_strength not in STRENGTHS:
            problems.append(f"rm.min_strength = {self.rm.min_strength!r}; choose one of {', '.join(STRENGTHS)}")
        if self.post.epochs <= 0 and not (self.run.max_steps or self.run.max_tokens):
            problems.append("post.epochs must be > 0 (or set run.max_steps)")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))
        if not (self.run.max_steps or self.run.max_tokens):
            self.run.max_steps = 1  # placeholder so the shared checks pass; the command sets it from post.epochs
            try:
                validate(self, token_data=False)
            finally:
                self.run.max_steps = 0
        else:
            validate(self, token_data=False)


def load_post_config(path: str, overrides: list[str] | tuple[str, ...] = ()) -> PostConfig:
    return load_recipe(PostConfig, path, overrides)


def post_config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> PostConfig:
    return recipe_from_dict(PostConfig, data, overrides)
