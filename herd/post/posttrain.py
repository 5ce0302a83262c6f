"""`herd posttrain RECIPE.toml`: the paper's post-training rounds (section 4.1, figure 7).

Each round: reward model -> rejection sampling -> SFT -> DPO -> average.

- RM: from the pre-trained model (`posttrain.model`), on the human preference files.
- RS: the previous round's final model (round 1: the pre-trained one) samples K responses per
  prompt; this round's RM and the verifiers pick; out come SFT dialogs and best-vs-worst pairs.
- SFT: from the pre-trained model, on every round's rejection-sampled dialogs so far plus
  `posttrain.sft_files`.
- DPO: from this round's SFT model, on the preference files plus this round's RS pairs, once per
  `[average] variants` entry (data or hyperparameter variants, e.g. two betas).
- average: the DPO variants' models averaged (`herd average`); with one variant, its model.

Every finished stage is recorded in `<out_dir>/manifest.json` with its output and the sha256 of its
weights. A rerun skips each recorded stage whose output still has that checksum and continues the
interrupted one from its own checkpoints (`--resume auto` of its training loop), so a killed run
loses at most the steps since a stage's last checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herd.config import ConfigError, load_recipe, recipe_from_dict
from herd.post.rejection import RejectionSamplingConfig, run_rejection_sampling

STAGES = ("rm", "rs", "sft", "dpo", "average")


@dataclass
class PosttrainSection:
    model: str = "smollm2-135m-instruct"  # the pre-trained model every round's RM and SFT start from
    out_dir: str = "runs/posttrain"
    rounds: int = 1
    prompts: list[str] = field(default_factory=list)  # rejection-sampling prompt files
    preference_files: list[str] = field(default_factory=list)  # human preferences (RM, DPO)
    sft_files: list[str] = field(default_factory=list)  # SFT dialogs added to the rejection-sampled ones


@dataclass
class AverageSection:
    variants: list[dict[str, Any]] = field(default_factory=lambda: [{}])  # DPO recipe overrides per variant
    weights: list[float] = field(default_factory=list)  # [] = uniform


@dataclass
class PosttrainConfig:
    posttrain: PosttrainSection = field(default_factory=PosttrainSection)
    rs: RejectionSamplingConfig = field(default_factory=RejectionSamplingConfig)
    rm: dict[str, Any] = field(default_factory=dict)  # tables of a `herd rm train` recipe (run, optim, schedule, rm)
    sft: dict[str, Any] = field(default_factory=dict)  # ... of a `herd sft` recipe
    dpo: dict[str, Any] = field(default_factory=dict)  # ... of a `herd dpo` recipe
    average: AverageSection = field(default_factory=AverageSection)

    def validate(self) -> None:
        p = self.posttrain
        problems = []
        if p.rounds < 1:
            problems.append(f"posttrain.rounds must be >= 1, got {p.rounds}")
        if not p.prompts:
            problems.append("posttrain.prompts is empty: rejection sampling needs prompt files")
        if not p.preference_files:
            problems.append("posttrain.preference_files is empty: the reward model needs preferences")
        if not self.average.variants:
            problems.append("average.variants is empty: give at least one DPO variant ({} = the recipe as is)")
        if self.average.weights and len(self.average.weights) != len(self.average.variants):
            problems.append("average.weights must have one weight per variant")
        if problems:
            raise ConfigError("invalid config: " + "; ".join(problems))
        for name in ("rm", "sft", "dpo"):  # each stage's recipe must load on its own
            stage_config(self, name, p.model, ["placeholder.jsonl"], Path(p.out_dir) / "check")
        for i, variant in enumerate(self.average.variants):
            stage_config(self, "dpo", p.model, ["placeholder.jsonl"], Path(p.out_dir) / "check", variant,
                         where=f"average.variants[{i}]")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def stage_config(config: PosttrainConfig, stage: str, model: str, train_files: list[str], out_dir: Path,
                 variant: dict[str, Any] | None = None, where: str = "") -> Any:
    """The PostConfig of one stage: the recipe's [stage] tables, the variant, and what the round decides."""
    from herd.post.config import PostConfig

    data = _merge(getattr(config, stage), variant or {})
    data = _merge(data, {"post": {"model": model, "train_files": list(train_files)},
                         "run": {"out_dir": str(out_dir)}})
    try:
        return recipe_from_dict(PostConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"[{where or stage}] {exc}") from None


def load_posttrain_config(path: str, overrides: list[str] | tuple[str, ...] = ()) -> PosttrainConfig:
    return load_recipe(PosttrainConfig, path, overrides)


def weights_sha256(model_dir: Path) -> str:
    """sha256 over a model directory's weight files (name and bytes, in name order)."""
    h = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".pth", ".gguf"))
    if not files:
        raise FileNotFoundError(f"{model_dir} holds no weight files")
    for path in files:
        h.update(path.name.encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


class Manifest:
    """`<out_dir>/manifest.json`: the finished stages of each round, their outputs and checksums."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "manifest.json"
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {"stages": {}}

    def done(self, key: str) -> dict[str, Any] | None:
        entry = self.data["stages"].get(key)
        if entry is None:
            return None
        model = entry.get("model")
        if model and (not Path(model).is_dir() or weights_sha256(Path(model)) != entry.get("sha256")):
            return None  # its output changed or is gone: run the stage again
        return entry

    def record(self, key: str, entry: dict[str, Any]) -> None:
        if entry.get("model"):
            entry["sha256"] = weights_sha256(Path(entry["model"]))
        self.data["stages"][key] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        tmp.replace(self.path)


def _train(config: Any, method: str, log: Any) -> str:
    from herd.post.run import run_post

    result, exported = run_post(config, method, resume="auto")
    if exported is None:
        raise KeyboardInterrupt(f"{method} stopped by a signal at step {result.steps}; rerun to continue")
    print(f"posttrain: {method} done: step {result.steps}, loss {result.final_loss}", file=log)
    return str(exported)


def run_posttrain(config: PosttrainConfig, log: Any = None) -> dict[str, Any]:
    """Run (or continue) every round; returns the manifest."""
    log = log if log is not None else sys.stderr
    p = config.posttrain
    manifest = Manifest(Path(p.out_dir))
    policy = p.model
    rs_dialogs: list[str] = []
    for round_index in range(1, p.rounds + 1):
        policy = _run_round(config, manifest, round_index, policy, rs_dialogs, log)
    manifest.data["final_model"] = policy
    manifest.record("final", {"model": policy})
    return manifest.data


def _run_round(config: PosttrainConfig, manifest: Manifest, round_index: int, policy: str, rs_dialogs: list[str],
               log: Any) -> str:
    """One round's stages (each skipped when the manifest has it); returns the round's final model."""
    p = config.posttrain
    root = Path(p.out_dir) / f"round_{round_index}"

    def stage(name: str, run: Any) -> dict[str, Any]:
        key = f"round_{round_index}/{name}"
        entry = manifest.done(key)
        if entry is not None:
            print(f"posttrain: {key} already done ({entry.get('model') or entry.get('out')})", file=log)
            return entry
        print(f"posttrain: {key} ...", file=log)
        entry = run()
        manifest.record(key, entry)
        return entry

    rm = stage("rm", lambda: {"model": _train(
        stage_config(config, "rm", p.model, p.preference_files, root / "rm"), "rm", log)})
    rs_out = root / "rs"
    rs_config = dataclasses.replace(config.rs, seed=config.rs.seed + round_index)
    stage("rs", lambda: {"out": str(rs_out), "summary": run_rejection_sampling(
        policy, config.posttrain.prompts, rs_config, rs_out, rm["model"], log)})
    rs_dialogs.append(str(rs_out / "sft.jsonl"))
    sft = stage("sft", lambda: {"model": _train(
        stage_config(config, "sft", p.model, p.sft_files + rs_dialogs, root / "sft"), "sft", log)})
    dpo_files = p.preference_files + [str(rs_out / "preferences.jsonl")]

    def dpo(i: int, variant: dict[str, Any]) -> dict[str, Any]:
        return {"model": _train(stage_config(config, "dpo", sft["model"], dpo_files, root / f"dpo_{i}", variant),
                                "dpo", log)}

    variants = [stage(f"dpo_{i}", lambda i=i, v=v: dpo(i, v))["model"] for i, v in enumerate(config.average.variants)]
    if len(variants) == 1:
        return stage("average", lambda: {"model": variants[0], "note": "one variant: its model"})["model"]

    def average() -> dict[str, Any]:
        import shutil

        from herd.post.average_cli import average_models

        target = root / "average"
        if target.exists():
            shutil.rmtree(target)  # a half-written average from a killed run
        average_models(variants, target, config.average.weights or None, log=log)
        return {"model": str(target), "inputs": variants}

    return stage("average", average)["model"]
