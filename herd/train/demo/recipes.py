"""The demo's recipes: token budgets and shapes, the curation recipe, curation's mix read back, and
the pretraining, long-context and annealing configs (plus the synthetic retrieval data the
long-context stage mixes in). Plain data in, plain configs out: nothing here trains."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.train.demo.state import DemoError, DemoSettings

SHORT_SEQ = 256
LONG_SEQ = 1024
MODEL = {"size": "llama3-tiny", "n_layers": 4}   # dim 64, 4 heads: the 128K-vocab head is most of the cost
PRETRAIN_TOKENS = 200_000
LONG_TOKENS_PER_ROUND = 80_000       # the gate is checked after each round
LONG_ROUNDS = 4
ANNEAL_TOKENS = 30_000
RETRIEVAL_FACTS = 14                 # facts (and questions) per synthetic retrieval document
NIAH_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
NIAH_LENGTHS = (256, 512, LONG_SEQ - 16)


def curate_recipe(out: Path, raw: dict[str, Path]) -> dict[str, Any]:
    """A fast `herd curate` recipe over the raw local corpus (configs/curate/smoke.toml's choices:
    the heuristic quality annotator instead of an LLM, one task), tokenizing the curated output."""
    given = {"code": ("code", ["filters", "pii", "line_dedup"]), "math": ("math", ["filters", "line_dedup"])}
    inputs = []
    for name, path in sorted(raw.items()):
        domain, skip = given.get(name, (None, []))
        inputs.append({"name": name, "path": str(path), "kind": "jsonl", **({"domain": domain} if domain else {}),
                       "skip": skip})
    return {
        "output_dir": str(out / "curate"), "tasks": 1, "workers": 1, "inputs": inputs,
        "quality": {"annotator": "heuristic", "sample": 40},
        "mix": {"tokenize": True, "validation_fraction": 0.05},
    }


@dataclass
class CuratedData:
    sources: dict[str, str]          # source name -> token shard directory
    pretrain_mix: dict[str, float]   # weights over the pretraining sources
    anneal_mix: dict[str, float]     # weights over the high-quality annealing sources


def curated_data(curate_dir: Path) -> CuratedData:
    """Token shards and mixes from curation's output (`mix.json`, written with `mix.toml`).

    The one place that reads curation's mix: when `herd pretrain` consumes mix.toml itself
    (`data.mix_file`), this becomes that setting."""
    mix = json.loads((curate_dir / "mix.json").read_text())
    if not mix.get("tokenized"):
        raise DemoError(f"{curate_dir}/mix.json: curation did not tokenize its output (mix.tokenize = false)")
    pretrain = {k: float(v) for k, v in mix["pretrain"]["weights"].items()}
    anneal = {f"{k}_hq": float(v) for k, v in mix["anneal"]["weights"].items()}
    if not pretrain:
        raise DemoError(f"{curate_dir}: curation kept no documents; see {curate_dir}/report.md")
    return CuratedData(dict(mix["sources"]), pretrain, anneal)


def base_config(out: Path, data: CuratedData, tokens: int) -> dict[str, Any]:
    """The pretraining recipe, scaled down: a llama3-tiny shape, real vocabulary, a 2-stage ramp."""
    batch = 8
    steps = max(10, tokens // (batch * SHORT_SEQ))
    return {
        "run": {"out_dir": str(out / "pretrain"), "seed": 0, "device": "cpu", "dtype": "float32",
                "max_tokens": tokens, "cpu_threads": 0},
        "model": {**MODEL, "max_seq_len": LONG_SEQ},
        "optim": {"lr": 4e-3, "min_lr": 4e-4, "weight_decay": 0.1, "grad_clip": 1.0},
        "schedule": {
            "warmup_steps": max(2, steps // 20),
            "decay_steps": int(steps * 1.2),
            # the paper's ramp in miniature: short sequences first
            "stages": [
                {"after_tokens": 0, "batch_size": batch, "seq_len": SHORT_SEQ // 2},
                {"after_tokens": tokens // 4, "batch_size": batch, "seq_len": SHORT_SEQ},
            ],
        },
        "data": {"sources": {k: data.sources[k] for k in data.pretrain_mix}, "mix": data.pretrain_mix, "seed": 0},
        "eval": {"interval": max(5, steps // 6), "batches": 4, "batch_size": 4, "seq_len": SHORT_SEQ},
        "checkpoint": {"interval": max(5, steps // 6), "keep_last": 2},
        "log": {"interval": 1, "tensorboard": False, "progress": False, "plot": True},
    }


def retrieval_data(out: Path, data: CuratedData, documents: int, seed: int) -> Path:
    """Token shards of synthetic retrieval documents (herd.data.synthetic_retrieval) whose haystacks
    are cut from the curated general text (all curated text when there is no general category)."""
    from herd.data import tokenize_files
    from herd.data.synthetic_retrieval import write_retrieval_jsonl
    from herd.tokenizer import Llama3Tokenizer

    target = out / "long_context" / "data" / "retrieval"
    if (target / "manifest.json").is_file():
        return target
    curated = out / "curate" / "curated"
    files = sorted((curated / "general").glob("*.jsonl")) or sorted(curated.glob("*/*.jsonl"))
    texts = [json.loads(line)["text"] for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    jsonl = write_retrieval_jsonl(target.with_suffix(".jsonl"), Llama3Tokenizer(), texts, documents,
                                  LONG_SEQ - 24, facts=RETRIEVAL_FACTS, seed=seed)
    shutil.rmtree(target, ignore_errors=True)
    tokenize_files([jsonl], target, "retrieval", workers=1, validation_fraction=0.05, progress=False)
    return target


def long_context_stage(settings: DemoSettings) -> Any:
    from herd.train.long_context import LongContextStage

    return LongContextStage(seq_len=LONG_SEQ, tokens_per_round=settings.tokens(LONG_TOKENS_PER_ROUND),
                            max_rounds=LONG_ROUNDS, batch_size=2, lr=2e-3, niah_fraction=0.5,
                            niah_threshold=0.8, niah_depths=NIAH_DEPTHS, niah_cases=settings.niah_cases,
                            loss_tolerance=0.05)


def anneal_config(base: dict[str, Any], out: Path, data: CuratedData, init_from: str, tokens: int,
                  keep: int = 4) -> dict[str, Any]:
    """LR linearly to 0 over `tokens` on curation's high-quality mix (math and code upsampled)."""
    batch = 8
    steps = max(keep, tokens // (batch * SHORT_SEQ))
    cfg = json.loads(json.dumps(base))
    mix = data.anneal_mix or data.pretrain_mix
    cfg["run"].update(out_dir=str(out / "anneal"), init_from=init_from, max_tokens=steps * batch * SHORT_SEQ)
    cfg["schedule"] = {"warmup_steps": 0, "decay_steps": steps,
                       "stages": [{"after_tokens": 0, "batch_size": batch, "seq_len": SHORT_SEQ}]}
    cfg["data"]["sources"] = {**cfg["data"]["sources"], **{k: data.sources[k] for k in mix}}
    cfg["anneal"] = {"tokens": steps * batch * SHORT_SEQ, "start_tokens": 0, "mix": mix,
                     "from_lr": base["optim"]["min_lr"] * 2}
    cfg["eval"] = {"interval": 0}
    cfg["checkpoint"] = {"interval": max(1, steps // keep), "keep_last": keep}
    return cfg
