"""The demo's recipes: token budgets and shapes, the curation recipe, curation's mix read back, and
the pretraining, long-context and annealing configs (plus the synthetic retrieval data they mix in).
Plain data in, plain configs out: nothing here trains.

Why the retrieval share: a model this small, pretrained on a few hundred thousand tokens of text,
never forms the induction circuit that needle-in-a-haystack retrieval needs (benchmarks/RESULTS.md,
"Demo NIAH gate"). So pretraining mixes in synthetic retrieval documents (key -> value facts in
curated text, asked about at the end; herd.data.synthetic_retrieval) whose loss mask trains only
the answers: they cost the model's body, not its 128K-vocabulary head, so they are most of the
pretraining tokens but a fraction of its time. The long-context stage mixes in longer ones, as the
paper mixes long data into its long-context stages.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.train.demo.state import DemoError, DemoSettings

SHORT_SEQ = 256
LONG_SEQ = 1024
MODEL = {"size": "llama3-demo"}      # dim 64, 2 layers, 4 heads of 64 dims, tied embedding (herd.model.config)
PRETRAIN_TOKENS = 4_000_000          # all pretraining tokens, retrieval documents included
RETRIEVAL_SHARE = 0.94               # of the pretraining tokens: ~190K tokens of curated text, the rest retrieval
RETRIEVAL_SHORT = 128                # pretraining retrieval documents: tokens each ...
RETRIEVAL_SHORT_FACTS = 3            # ... and facts (and questions) each
LONG_TOKENS_PER_ROUND = 200_000      # the gate is checked after each round
LONG_ROUNDS = 4
LONG_SHARE = 0.9                     # retrieval documents' share of the long-context stage's tokens
ANNEAL_TOKENS = 30_000               # curated high-quality tokens; retrieval documents come on top
ANNEAL_RETRIEVAL_SHARE = 0.5
RETRIEVAL_FACTS = 20                 # facts (and questions) per long-context retrieval document
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


def retrieval_dir(out: Path) -> Path:
    """Where the pretraining retrieval documents are (written by `retrieval_data` before pretraining)."""
    return out / "pretrain" / "data" / "retrieval"


def with_retrieval(mix: dict[str, float], share: float) -> dict[str, float]:
    """`mix` scaled to 1 - share, plus the retrieval documents at `share` of the tokens."""
    total = sum(mix.values())
    return {**{k: (1.0 - share) * v / total for k, v in mix.items()}, "retrieval": share}


def base_config(out: Path, data: CuratedData, tokens: int) -> dict[str, Any]:
    """The pretraining recipe, scaled down: the demo shape, real vocabulary, a 2-stage ramp, curation's mix
    with the retrieval documents at RETRIEVAL_SHARE of the tokens."""
    batch = 8
    steps = max(10, tokens // (batch * SHORT_SEQ))
    sources = {**{k: data.sources[k] for k in data.pretrain_mix}, "retrieval": str(retrieval_dir(out))}
    return {
        "run": {"out_dir": str(out / "pretrain"), "seed": 0, "device": "cpu", "dtype": "float32",
                "max_tokens": tokens, "cpu_threads": 0},
        "model": {**MODEL, "max_seq_len": LONG_SEQ},
        "optim": {"lr": 1e-2, "min_lr": 1e-3, "weight_decay": 0.1, "grad_clip": 1.0},
        "schedule": {
            "warmup_steps": max(2, min(20, steps // 20)),
            "decay_steps": steps,
            # the paper's ramp in miniature: short sequences first (rows of 256 hold two retrieval documents)
            "stages": [
                {"after_tokens": 0, "batch_size": batch, "seq_len": SHORT_SEQ},
                {"after_tokens": tokens // 4, "batch_size": batch // 2, "seq_len": 2 * SHORT_SEQ},
            ],
        },
        "data": {"sources": sources, "mix": with_retrieval(data.pretrain_mix, RETRIEVAL_SHARE), "seed": 0},
        "eval": {"interval": max(5, steps // 6), "batches": 4, "batch_size": 4, "seq_len": SHORT_SEQ},
        "checkpoint": {"interval": max(5, steps // 6), "keep_last": 2},
        "log": {"interval": 1, "tensorboard": False, "progress": False, "plot": True},
    }


def retrieval_data(out: Path, target: Path, documents: int, length: int, facts: int, seed: int) -> Path:
    """Token shards of synthetic retrieval documents (herd.data.synthetic_retrieval) whose haystacks are
    cut from the curated general text (all curated text when there is no general category): keys are
    single-token English words (never a NIAH key), and the loss mask trains only the answers."""
    from herd.data.synthetic_retrieval import write_retrieval_shards
    from herd.tokenizer import Llama3Tokenizer

    if (target / "manifest.json").is_file():
        return target
    curated = out / "curate" / "curated"
    files = sorted((curated / "general").glob("*.jsonl")) or sorted(curated.glob("*/*.jsonl"))
    texts = [json.loads(line)["text"] for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    shutil.rmtree(target, ignore_errors=True)
    write_retrieval_shards(target, Llama3Tokenizer(), texts, documents, length, facts, seed=seed, key_style="word",
                           validation_fraction=0.02)
    return target


def long_context_stage(settings: DemoSettings) -> Any:
    from herd.train.long_context import LongContextStage

    return LongContextStage(seq_len=LONG_SEQ, tokens_per_round=settings.tokens(LONG_TOKENS_PER_ROUND),
                            max_rounds=LONG_ROUNDS, batch_size=2, lr=3e-3, niah_fraction=LONG_SHARE,
                            niah_threshold=0.8, niah_depths=NIAH_DEPTHS, niah_cases=settings.niah_cases,
                            loss_tolerance=0.05)


def anneal_config(base: dict[str, Any], out: Path, data: CuratedData, init_from: str, tokens: int,
                  keep: int = 4) -> dict[str, Any]:
    """LR linearly to 0 over `tokens` of curation's high-quality mix (math and code upsampled), with the
    retrieval documents on top at ANNEAL_RETRIEVAL_SHARE of the tokens (so the skill is kept)."""
    batch = 8
    tokens = int(tokens / (1.0 - ANNEAL_RETRIEVAL_SHARE))
    steps = max(keep, tokens // (batch * SHORT_SEQ))
    cfg = json.loads(json.dumps(base))
    mix = with_retrieval(data.anneal_mix or data.pretrain_mix, ANNEAL_RETRIEVAL_SHARE)
    cfg["run"].update(out_dir=str(out / "anneal"), init_from=init_from, max_tokens=steps * batch * SHORT_SEQ)
    cfg["schedule"] = {"warmup_steps": 0, "decay_steps": steps,
                       "stages": [{"after_tokens": 0, "batch_size": batch, "seq_len": SHORT_SEQ}]}
    cfg["data"]["sources"] = {**cfg["data"]["sources"], **{k: data.sources[k] for k in mix if k != "retrieval"}}
    cfg["anneal"] = {"tokens": steps * batch * SHORT_SEQ, "start_tokens": 0, "mix": mix,
                     "from_lr": base["optim"]["min_lr"] * 2}
    cfg["eval"] = {"interval": 0}
    cfg["checkpoint"] = {"interval": max(1, steps // keep), "keep_last": keep}
    return cfg
