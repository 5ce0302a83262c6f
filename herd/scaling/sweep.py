"""Run an IsoFLOP sweep: every (budget, size) grid point is an ordinary pretraining run.

Layout of a sweep directory:
    recipe.toml             the recipe as run
    data/corpus/            herd's local corpus (JSONL per source)
    data/tokenizer/         the small BPE (when data.vocab_size > 0)
    data/tokens/<source>/   token shards with a validation split
    runs/<run>/             each run's pretraining output (metrics.jsonl, checkpoints/) and eval/
    runs.jsonl              one line per finished run: N, non-embedding N, D, C, validation loss, per-task
                            gold NLL per character and accuracy

Tokens per run = C / (training FLOPs per token from herd.model.flops), rounded to whole optimizer steps
of the budget's batch. A killed sweep relaunched on the same directory skips every run already in
runs.jsonl and resumes an unfinished one from its newest checkpoint (`herd pretrain --resume auto`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from herd.scaling.recipe import ScalingRecipe, SizeSpec

RUNS_FILE = "runs.jsonl"


@dataclass(frozen=True)
class GridPoint:
    budget: float
    budget_index: int
    size: SizeSpec

    @property
    def name(self) -> str:
        return f"C{self.budget:.0e}".replace("+", "") + f"_{self.size.label()}"


def read_runs(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / RUNS_FILE
    if not path.is_file():
        return []
    runs = []
    for line in path.read_text().splitlines():
        try:
            runs.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return runs


def _append_run(out: Path, record: dict[str, Any]) -> None:
    with open(out / RUNS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


# ---------------------------------------------------------------------------------------------------
# Data: the local corpus, a small BPE, token shards


def _tokenizer(recipe: ScalingRecipe, out: Path, texts: Callable[[], Any]):  # type: ignore[no-untyped-def]
    if recipe.data.vocab_size == 0:
        from herd.tokenizer.llama3 import Llama3Tokenizer

        return Llama3Tokenizer()
    from herd.tokenizer.bpe import BPETokenizer

    directory = out / "data" / "tokenizer"
    if (directory / "tokenizer.json").is_file():
        tokenizer = BPETokenizer.from_tokenizer_json(directory)
        if tokenizer.vocab_size == recipe.data.vocab_size:
            return tokenizer
    from herd.scaling.vocab import train_small_bpe

    return train_small_bpe(texts(), recipe.data.vocab_size, directory)


def prepare_data(recipe: ScalingRecipe, out: str | Path, log: Callable[[str], None] = print) -> tuple[Any, dict[str, str]]:
    """(tokenizer, source -> token-shard directory), building what is missing (idempotent)."""
    from herd.data.local_corpus import build_local_corpus
    from herd.data.shards import ShardWriter

    out = Path(out)
    corpus_dir = out / "data" / "corpus"
    names = sorted(recipe.data.mix)
    if not all((corpus_dir / f"{n}.jsonl").is_file() for n in names):
        t0 = time.perf_counter()
        build_local_corpus(corpus_dir, max_docs_per_source=recipe.data.corpus_docs, seed=recipe.data.seed)
        log(f"local corpus: {time.perf_counter() - t0:.1f} s")
    missing = [n for n in names if not (corpus_dir / f"{n}.jsonl").is_file()]
    if missing:
        raise ValueError(f"data.mix names {missing}, which the local corpus does not have on this machine "
                         f"(see {corpus_dir / 'corpus.json'})")

    def documents(name: str) -> Any:
        with open(corpus_dir / f"{name}.jsonl", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]

    def all_texts() -> Any:
        for n in names:
            yield from documents(n)

    t0 = time.perf_counter()
    tokenizer = _tokenizer(recipe, out, all_texts)
    info = {"name": getattr(tokenizer, "name", "llama3") if recipe.data.vocab_size else "llama3",
            "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id}
    sources = {}
    for name in names:
        directory = out / "data" / "tokens" / name
        sources[name] = str(directory)
        if (directory / "manifest.json").is_file():
            continue
        with ShardWriter(directory, name, tokenizer=info, validation_fraction=recipe.data.validation_fraction,
                         split_seed=recipe.data.seed) as writer:
            for text in documents(name):
                ids = tokenizer.encode(text)
                if ids:
                    writer.add(np.asarray([tokenizer.bos_id, *ids, tokenizer.eos_id], dtype=np.int64))
            writer.close({"scaling": {"vocab_size": recipe.data.vocab_size}})
    log(f"tokenizer ({tokenizer.vocab_size:,} tokens) and token shards: {time.perf_counter() - t0:.1f} s")
    return tokenizer, sources


# ---------------------------------------------------------------------------------------------------
# One run's pretraining recipe


def model_overrides(size: SizeSpec, vocab_size: int, seq_len: int) -> dict[str, Any]:
    section: dict[str, Any] = {"size": size.size, "max_seq_len": seq_len, "tie_embeddings": False}
    if size.dim:
        section["dim"] = size.dim
        section["ffn_dim"] = size.ffn_dim or max(8, round(size.dim * 8 / 3 / 8) * 8)
    if size.n_layers:
        section["n_layers"] = size.n_layers
    if size.n_heads:
        section["n_heads"] = size.n_heads
        section["n_kv_heads"] = size.n_kv_heads or size.n_heads
    if vocab_size:
        section["vocab_size"] = vocab_size
    return section


def size_config(size: SizeSpec, vocab_size: int, seq_len: int):  # type: ignore[no-untyped-def]
    from herd.config import ModelSection
    from herd.config.loader import build

    return build(ModelSection, model_overrides(size, vocab_size, seq_len), "model").model_config()


def non_embedding_params(config: Any) -> int:
    from herd.model.flops import param_counts

    counts = param_counts(config)
    return counts["total"] - counts["embedding"]


def peak_lr(recipe: ScalingRecipe, params: float, smallest: float, largest: float) -> float:
    """The peak LR for a model of `params` non-embedding parameters: log-linear in log N between the
    recipe's LR at the smallest and at the largest size (the paper: 4e-4 down to 2e-4 by size)."""
    lo_lr, hi_lr = recipe.sweep.lr[1], recipe.sweep.lr[0]
    if largest <= smallest:
        return hi_lr
    t = (math.log(params) - math.log(smallest)) / (math.log(largest) - math.log(smallest))  # < 0 or > 1 extrapolates
    return float(math.exp(math.log(hi_lr) + t * (math.log(lo_lr) - math.log(hi_lr))))


@dataclass
class RunPlan:
    point: GridPoint
    config: dict[str, Any]  # the pretraining recipe as a TOML-shaped dict
    steps: int
    tokens: int
    flops_per_token: float
    params: int  # non-embedding
    params_total: int

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens


def plan_runs(recipe: ScalingRecipe, out: str | Path, sources: dict[str, str], vocab_size: int,
              peak_flops: float = 0.0) -> tuple[list[RunPlan], list[str]]:
    """Every grid point's pretraining recipe, and why any point is left out."""
    from herd.model.flops import flops_per_token, param_counts

    s = recipe.sweep
    configs = {z.label(): size_config(z, vocab_size, s.seq_len) for z in s.sizes}
    sizes_n = {k: non_embedding_params(c) for k, c in configs.items()}
    smallest, largest = min(sizes_n.values()), max(sizes_n.values())
    plans, skipped = [], []
    for bi, budget in enumerate(s.budgets):
        batch = recipe.batch_for(bi)
        for size in s.sizes:
            point = GridPoint(budget, bi, size)
            cfg = configs[size.label()]
            fpt = flops_per_token(cfg, s.seq_len)
            steps = round(budget / fpt / batch)
            if steps < s.min_steps:
                skipped.append(f"{point.name}: {steps} steps of {batch} tokens (< sweep.min_steps {s.min_steps})")
                continue
            lr = peak_lr(recipe, sizes_n[size.label()], smallest, largest)
            warmup = min(s.warmup_max_steps, max(1, round(s.warmup_fraction * steps)))
            run_dir = Path(out) / "runs" / point.name
            config: dict[str, Any] = {
                "run": {"out_dir": str(run_dir), "seed": s.seed, "device": s.device, "dtype": "float32",
                        "max_steps": steps, "cpu_threads": s.cpu_threads},
                "model": model_overrides(size, vocab_size, s.seq_len),
                "optim": {"lr": lr, "min_lr": lr * s.final_lr_ratio, "weight_decay": s.weight_decay},
                "schedule": {"warmup_steps": warmup, "decay_steps": steps,
                             "stages": [{"after_tokens": 0, "batch_tokens": batch, "seq_len": s.seq_len}]},
                "data": {"sources": dict(sources), "mix": dict(recipe.data.mix), "seed": recipe.data.seed},
                "eval": {"interval": steps, "batches": s.validation_batches, "batch_size": s.validation_batch_size,
                         "seq_len": s.seq_len},
                "checkpoint": {"interval": max(1, steps // 4), "keep_last": 1},
                "log": {"interval": max(1, steps // 50), "tensorboard": False, "progress": False, "plot": False,
                        "peak_flops": peak_flops},
            }
            config = _merge(config, recipe.pretrain)
            plans.append(RunPlan(point, config, steps, steps * batch, fpt, sizes_n[size.label()],
                                 param_counts(cfg)["total"]))
    return plans, skipped


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


# ---------------------------------------------------------------------------------------------------
# Downstream scores of a trained model


def task_scores(model: Any, tokenizer: Any, model_config: Any, task_names: Sequence[str], out: Path,
                limit: int) -> dict[str, dict[str, float]]:
    """Per task: mean gold-answer NLL per character (the forecast's step-1 quantity), accuracy, chance."""
    from herd.eval.harness import run_evaluation
    from herd.eval.tasks import get_task
    from herd.infer.engine import EngineConfig, LLMEngine
    from herd.loading import LoadedModel

    loaded = LoadedModel(model.eval(), tokenizer, None, model_config, f"scaling:{out.parent.name}")  # type: ignore[arg-type]
    engine = LLMEngine(loaded, EngineConfig(kv_cache_bytes=64 << 20))
    tasks = [get_task(n) for n in task_names]
    run_evaluation(engine, loaded, tasks, out, limit=limit, progress=False)
    records: dict[str, list[dict[str, Any]]] = {}
    for line in (out / "samples.jsonl").read_text().splitlines():
        r = json.loads(line)
        records.setdefault(r["task"], []).append(r)
    scores = {}
    for task in tasks:
        items = {i.id: i for i in task.load()}
        nll, correct, chance = [], [], []
        for r in records.get(task.name, []):
            item = items[r["id"]]
            gold_text = item.choices[item.gold]
            nll.append(-r["loglikelihoods"][item.gold] / max(len(gold_text), 1))
            correct.append(bool(r["correct"]))
            chance.append(1 / len(item.choices))
        scores[task.name] = {"gold_nll_per_char": float(np.mean(nll)), "accuracy": float(np.mean(correct)),
                             "chance": float(np.mean(chance)), "n": len(nll)}
    return scores


# ---------------------------------------------------------------------------------------------------
# The sweep


def run_plan(plan: RunPlan, tokenizer: Any, recipe: ScalingRecipe, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one grid point (resuming its checkpoint if there is one), score it, return its record."""
    from herd.train.config import config_from_dict
    from herd.train.trainer import Trainer

    config = config_from_dict(plan.config)
    run_dir = Path(config.run.out_dir)
    t0 = time.perf_counter()
    trainer = Trainer(config, resume="auto")
    result = trainer.run()
    if result.stopped != "done":
        raise KeyboardInterrupt(f"{plan.point.name} stopped by a signal at step {result.steps}; "
                                "relaunch the sweep to resume it")
    val_loss = result.val_loss if result.val_loss is not None else trainer.validate()  # resumed at its last step
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = task_scores(trainer.model, tokenizer, trainer.model_config, recipe.sweep.tasks, run_dir / "eval",
                         recipe.sweep.task_limit) if recipe.sweep.tasks else {}
    return {
        "run": plan.point.name, "size": plan.point.size.label(), "C": plan.point.budget, "C_actual": plan.flops,
        "N": plan.params, "N_total": plan.params_total, "D": plan.tokens, "steps": plan.steps,
        "flops_per_token": plan.flops_per_token, "lr": plan.config["optim"]["lr"],
        "batch_tokens": plan.config["schedule"]["stages"][0]["batch_tokens"],
        "val_loss": val_loss, "train_loss": result.final_loss, "tasks": scores,
        "vocab_size": tokenizer.vocab_size, "train_s": round(train_s, 2), "eval_s": round(time.perf_counter() - t1, 2),
        "peak_flops": plan.config["log"]["peak_flops"],
    }


def check_same_data(recipe: ScalingRecipe, out: Path) -> None:
    """A relaunch may add budgets or sizes, but its runs must share the data and vocabulary of the runs
    already in `out`: a changed [data] section (or sequence length) would mix incomparable losses."""
    from dataclasses import asdict

    from herd.config.loader import read_toml

    previous = out / "recipe.toml"
    if not previous.is_file():
        return
    old = read_toml(previous)
    new = {"data": asdict(recipe.data), "seq_len": recipe.sweep.seq_len}
    before = {"data": {**asdict(type(recipe.data)()), **old.get("data", {})},
              "seq_len": old.get("sweep", {}).get("seq_len", recipe.sweep.seq_len)}
    if before != new:
        changed = sorted(k for k in new["data"] if new["data"][k] != before["data"].get(k))
        changed += ["sweep.seq_len"] if new["seq_len"] != before["seq_len"] else []
        raise ValueError(f"{out} holds a sweep with other data settings ({', '.join(changed)} differ from "
                         f"{previous}); use a new --out for them, or the recipe it was started with")


def run_sweep(recipe: ScalingRecipe, out: str | Path, *, log: Callable[[str], None] = print,
              only: Callable[[RunPlan], bool] | None = None) -> list[dict[str, Any]]:
    """Run every grid point not yet in runs.jsonl; returns all records (old and new)."""
    from herd.config.loader import write_toml
    from herd.train.metrics import measure_matmul_flops

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_same_data(recipe, out)
    write_toml(out / "recipe.toml", recipe, "# the scaling recipe this sweep ran (herd scaling sweep)\n")
    tokenizer, sources = prepare_data(recipe, out, log)
    import torch

    peak = measure_matmul_flops(torch.device("cpu"), torch.float32) if recipe.sweep.device != "cuda" else 0.0
    plans, skipped = plan_runs(recipe, out, sources, tokenizer.vocab_size, peak_flops=peak)
    for note in skipped:
        log(f"left out: {note}")
    done = {r["run"] for r in read_runs(out)}
    todo = [p for p in plans if p.point.name not in done and (only is None or only(p))]
    log(f"{len(plans)} runs in the grid, {len(plans) - len(todo)} already finished, {len(todo)} to run")
    for i, plan in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {plan.point.name}: N {plan.params:,} (non-embedding), D {plan.tokens:,} tokens, "
            f"{plan.steps} steps, lr {plan.config['optim']['lr']:.2e}")
        record = run_plan(plan, tokenizer, recipe, log)
        _append_run(out, record)
        tasks = ", ".join(f"{k} nll {v['gold_nll_per_char']:.3f} acc {v['accuracy']:.2f}" for k, v in record["tasks"].items())
        log(f"    val loss {record['val_loss']:.4f}; {tasks}; {record['train_s']:.0f} s train, {record['eval_s']:.0f} s eval")
    return read_runs(out)
