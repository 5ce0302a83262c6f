"""`herd sft` and `herd dpo`: read and encode the data, then run the one training loop with the method's objective.

SFT is the language-modelling objective on packed dialogs whose targets are the loss mask's tokens;
DPO is herd.post.objectives.DPOObjective on preference groups. Both end by writing `<out_dir>/model`
(Hugging Face layout, tokenizer and chat template included), which `herd generate`, `herd serve`,
`herd eval` and the next post-training stage (`post.model = "<out_dir>"`) read directly.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from herd.post.config import PostConfig
from herd.post.data import PreferenceLoader, SFTLoader
from herd.post.encoding import EncodedPreference, EncodedSFT, encode_preference, encode_sft
from herd.train.init import ModelInit
from herd.train.trainer import Trainer, TrainResult

METHODS = ("sft", "dpo", "rm")


@dataclass
class PreparedData:
    train: list[Any]
    validation: list[Any]
    notes: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


def _read(config: PostConfig, method: str, files: list[str]) -> tuple[list[Any], Counter[str], str]:
    from herd.post.records import read_dialogs, read_preferences

    reader = read_dialogs if method == "sft" else read_preferences  # dpo and rm: ranked responses
    report = reader(files, format=config.post.format, limit=config.post.limit or None)
    return list(report.records), Counter(report.skipped), report.summary()


def prepare_data(config: PostConfig, method: str) -> PreparedData:
    """Read, encode and length-check the train (and validation) files for `method`."""
    chat_format = config.starting_model.chat_format
    seq_len = max(s.seq_len for s in config.schedule.stages)
    out = PreparedData([], [])
    for split, files in (("train", config.post.train_files), ("validation", config.post.validation_files)):
        if not files:
            continue
        records, skipped, summary = _read(config, method, files)
        out.notes.append(f"{split}: {summary}")
        out.skipped.update({f"{split}: {k}": v for k, v in skipped.items()})
        encoded: list[Any] = []
        too_long = 0
        for record in records:
            try:
                if method == "sft":
                    example: EncodedSFT | EncodedPreference = encode_sft(chat_format, record.messages, config.sft.mask)
                else:
                    if method == "rm" and not strong_enough(record.strength, config.rm.min_strength):
                        out.skipped[f"{split}: weaker than rm.min_strength {config.rm.min_strength}"] += 1
                        continue
                    mask = config.dpo.mask if method == "dpo" else "completion"
                    example = encode_preference(chat_format, record.prompt, record.responses, mask, record.strength)
            except ValueError as exc:
                out.skipped[f"{split}: {exc}"] += 1
                continue
            if method != "sft" and example.length > seq_len:  # type: ignore[union-attr]
                too_long += 1
                continue
            encoded.append(example)
        if too_long:
            out.skipped[f"{split}: longer than the recipe's seq_len {seq_len}"] += too_long
            out.notes.append(f"{split}: skipped {too_long} preference(s) longer than seq_len {seq_len}")
        getattr(out, split).extend(encoded)
    if not out.train:
        raise ValueError(f"no usable training examples in {config.post.train_files}: " + "; ".join(out.notes))
    return out


def strong_enough(strength: str | None, minimum: str) -> bool:
    """Whether a preference of `strength` passes `minimum` (no strength recorded: kept)."""
    from herd.post.config import STRENGTHS

    return strength is None or STRENGTHS.index(strength) <= STRENGTHS.index(minimum)


def _rows_per_epoch(examples: list[EncodedSFT], seq_len: int, pack: bool) -> int:
    loader = SFTLoader(examples, seed=0, pack=pack, shuffle=False)
    rows = 0
    while loader.order.epoch == 0:
        loader._row(seq_len)
        rows += 1
    return rows


def build_trainer(config: PostConfig, method: str, *, resume: str | None = None,
                  data: PreparedData | None = None) -> tuple[Trainer, PreparedData]:
    if method not in METHODS:
        raise ValueError(f"unknown post-training method {method!r}; one of {METHODS}")
    data = data or prepare_data(config, method)
    stage = config.schedule.stages[0]
    if not (config.run.max_steps or config.run.max_tokens):
        units = (_rows_per_epoch(data.train, stage.seq_len, config.sft.pack) if method == "sft" else len(data.train))
        config.run.max_steps = max(1, math.ceil(config.post.epochs * units / stage.sequences))
        config.schedule.decay_steps = min(config.schedule.decay_steps, config.run.max_steps)
    if not data.validation and config.eval.interval:
        config.eval.interval = 0
        data.notes.append("no post.validation_files: validation is off")
    seed = config.data.seed
    model_options: dict[str, Any] = {}
    if method == "sft":
        loaders = {split: SFTLoader(getattr(data, split), seed=seed, pack=config.sft.pack, shuffle=split == "train")
                   for split in ("train", "validation") if getattr(data, split)}
        from herd.train.objective import LanguageModelObjective

        objective = LanguageModelObjective("sft")
    elif method == "rm":
        from herd.post.objectives import RewardObjective
        from herd.post.reward_model import RewardInit, RewardModel

        loaders = {split: PreferenceLoader(getattr(data, split), seed=seed, shuffle=split == "train")
                   for split in ("train", "validation") if getattr(data, split)}
        objective = RewardObjective(one_row=config.rm.one_row, center_coefficient=config.rm.center_coefficient)
        model_options = {"model_factory": RewardModel,
                         "model_init": RewardInit(config.run.seed, config.starting_model.init_from, config.model.init_std)}
    else:
        from herd.post.objectives import DPOObjective

        loaders = {split: PreferenceLoader(getattr(data, split), seed=seed, shuffle=split == "train")
                   for split in ("train", "validation") if getattr(data, split)}
        d = config.dpo
        starting = config.starting_model
        objective = DPOObjective(
            data.train, data.validation, model_config=starting.config,
            init=ModelInit(config.run.seed, config.model.init_std, starting.init_from),
            beta=d.beta, nll_weight=d.nll_weight, nll_mode=d.nll_mode, label_smoothing=d.label_smoothing,
            loss_type=d.loss_type, reference=d.reference, prefix_sharing=d.prefix_sharing,
            cache_dir=config.run.out_dir, mask=d.mask)
    config.run.init_from = config.starting_model.init_from

    def factory(sources: dict[str, str], mix: Any, seed: int, split: str) -> Any:
        return loaders[split]

    trainer = Trainer(config, resume=resume, loader_factory=factory, objective=objective,
                      model_config=config.starting_model.config, **model_options)
    return trainer, data


def export_model(trainer: Trainer, config: PostConfig) -> Path:
    """`<out_dir>/model`: the trained weights in Hugging Face layout with the starting model's tokenizer."""
    from herd.checkpoint import Checkpoint, write_checkpoint
    from herd.post.reward_model import RewardModel, export_reward_model

    if isinstance(trainer.model, RewardModel):
        return export_reward_model(trainer.model, config.starting_model.tokenizer, Path(config.run.out_dir) / "model")
    state = {k: v.detach().to("cpu", torch.float32) for k, v in trainer.model.state_dict().items()}
    starting = config.starting_model
    if starting.config.tie_embeddings:
        state.pop("output.weight", None)
    checkpoint = Checkpoint(starting.config, state, starting.tokenizer, "train", Path(config.run.out_dir))
    return write_checkpoint(checkpoint, Path(config.run.out_dir) / "model", "hf")


def run_post(config: PostConfig, method: str, *, resume: str | None = None) -> tuple[TrainResult, Path | None]:
    """Train `method` as `config` says; returns the training result and the exported model (None if stopped)."""
    trainer, data = build_trainer(config, method, resume=resume)
    out = Path(config.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for note in data.notes:
        print(f"herd {method}: {note}", flush=True)
    (out / "data.json").write_text(json.dumps({
        "method": method, "train_examples": len(data.train), "validation_examples": len(data.validation),
        "skipped": dict(data.skipped), "notes": data.notes, "max_steps": config.run.max_steps}, indent=2) + "\n")
    result = trainer.run()
    exported = export_model(trainer, config) if result.stopped == "done" else None
    return result, exported
