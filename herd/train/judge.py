"""Annealing to judge a dataset (the paper, section 3.1.3): is a new data source worth adding?

From a partially trained checkpoint, anneal twice with the same recipe (LR linearly to 0 over N
tokens): once on the default mix, once on `new_share` (30%) of the candidate data and the rest the
default mix. The difference in held-out loss (on the default mix's validation split, and on the
candidate's own) says what the candidate buys. The paper judges by downstream evaluations after a 40B
token anneal of a 50%-trained 8B model; here the judge is held-out loss, which any run has.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from herd.train.config import ConfigError, config_from_dict, load_config


@dataclass
class JudgeResult:
    default_loss: float            # default-mix validation loss after the default-only anneal
    with_new_default_loss: float   # ... after the anneal with the candidate mixed in
    default_new_loss: float        # candidate validation loss after the default-only anneal
    with_new_new_loss: float       # ... after the anneal with the candidate
    new_share: float
    tokens: int

    @property
    def delta_default(self) -> float:
        return self.with_new_default_loss - self.default_loss

    @property
    def delta_new(self) -> float:
        return self.with_new_new_loss - self.default_new_loss

    def summary(self) -> str:
        return (f"anneal over {self.tokens:,} tokens, candidate share {self.new_share:.0%}: default-mix held-out "
                f"loss {self.default_loss:.4f} -> {self.with_new_default_loss:.4f} ({self.delta_default:+.4f}); "
                f"candidate held-out loss {self.default_new_loss:.4f} -> {self.with_new_new_loss:.4f} "
                f"({self.delta_new:+.4f})")


def judge_dataset(
    config_path: str | Path, checkpoint: str | Path, new_data: str | Path, out_dir: str | Path, *,
    tokens: int, new_share: float = 0.3, overrides: list[str] | tuple[str, ...] = (), eval_batches: int = 4,
) -> JudgeResult:
    """Run both anneals from `checkpoint` with `config_path`'s model/optimizer/data; compare held-out losses."""
    from herd.data import resolve_weights
    from herd.train.long_context import _model_from_weights, heldout_loss
    from herd.train.trainer import train

    if not 0.0 < new_share < 1.0:
        raise ConfigError(f"new_share must be in (0, 1), got {new_share}")
    if tokens <= 0:
        raise ConfigError(f"tokens must be > 0, got {tokens}")
    if not Path(checkpoint).exists():
        raise ConfigError(f"checkpoint {checkpoint}: no such file or directory")
    if not (Path(new_data) / "manifest.json").is_file():
        raise ConfigError(f"{new_data}: not a herd token-shard directory (no manifest.json); use `herd tokenize`")
    base = load_config(config_path, overrides)
    data: dict[str, Any] = base.to_dict()
    sources = dict(data["data"]["sources"])
    default_mix = resolve_weights(data["data"]["mix"], list(sources), missing="renormalize")
    if "candidate" in sources:
        raise ConfigError("the config already has a source named 'candidate'")
    shape = data["schedule"]["stages"][-1]
    seq_len = shape["seq_len"]
    results: dict[str, tuple[float, float]] = {}
    for name, share in (("default", 0.0), ("with_new", new_share)):
        cfg = copy.deepcopy(data)
        cfg["run"].update(out_dir=str(Path(out_dir) / name), init_from=str(checkpoint), max_steps=0, max_tokens=tokens)
        cfg["schedule"].update(warmup_steps=0, stages=[{**shape, "after_tokens": 0}])
        cfg["schedule"]["decay_steps"] = max(1, tokens // (shape.get("batch_size") or 1) // seq_len)
        cfg["anneal"] = {"tokens": tokens, "start_tokens": 0, "mix": "", "from_lr": data["optim"]["lr"] / 10}
        cfg["data"]["mix_file"] = ""  # sources and mix are resolved already; the file's anneal mix must not return
        cfg["eval"] = {"interval": 0}
        mix = {k: (1 - share) * v for k, v in default_mix.items()}
        if share:
            cfg["data"]["sources"] = {**sources, "candidate": str(new_data)}
            mix["candidate"] = share
        cfg["data"]["mix"] = mix
        run = train(config_from_dict(cfg))
        model = _model_from_weights(cfg, run.checkpoint)
        results[name] = (
            heldout_loss(model, sources, default_mix, seq_len, batches=eval_batches),
            heldout_loss(model, {"candidate": str(new_data)}, {"candidate": 1.0}, seq_len, batches=eval_batches),
        )
    result = JudgeResult(results["default"][0], results["with_new"][0], results["default"][1],
                         results["with_new"][1], new_share, tokens)
    Path(out_dir, "judge.json").write_text(json.dumps({**asdict(result), "summary": result.summary()}, indent=1))
    return result
