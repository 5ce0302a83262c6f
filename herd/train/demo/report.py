"""The demo's outputs after training: the averaged model, samples, the loss plot and `report.md`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from herd.train.demo.progress import _clock
from herd.train.demo.recipes import LONG_SEQ, SHORT_SEQ, curated_data
from herd.train.demo.state import SMOKE_BELOW, STAGES, DemoState

PROMPTS = [
    "def fibonacci(n):",
    "Tom has 12 apples and buys 7 more. How many apples does Tom have?",
    "The import statement",
]


def save_average(base: dict[str, Any], checkpoints: list[Path], destination: Path) -> dict[str, torch.Tensor]:
    """Uniform Polyak average of the annealing checkpoints, also written as a Hugging Face checkpoint."""
    from herd.checkpoint import Checkpoint, write_checkpoint
    from herd.checkpoint.averaging import average_state_dicts
    from herd.tokenizer import Llama3Tokenizer
    from herd.train import config_from_dict, load_model_weights

    state = average_state_dicts(load_model_weights(c) for c in checkpoints)
    config = config_from_dict(base).model_config()
    shutil.rmtree(destination, ignore_errors=True)
    write_checkpoint(Checkpoint(config, state, Llama3Tokenizer(), "meta", destination), destination, "hf")
    return state


def samples(model_dir: Path, max_tokens: int = 40) -> list[tuple[str, str]]:
    import herd
    from herd.infer import EngineConfig, LLMEngine, SamplingParams

    loaded = herd.load_model(str(model_dir))
    engine = LLMEngine(loaded, EngineConfig(num_blocks=64))
    outs = engine.generate(PROMPTS, SamplingParams(max_tokens=max_tokens, temperature=0.0, repetition_penalty=1.1))
    return [(p, o.outputs[0].text) for p, o in zip(PROMPTS, outs)]


REPORT_CARD_TASKS = ("hellaswag", "truthfulqa_mc1", "synthetic_math", "pydoc_lm")
REPORT_CARD_ITEMS = 20


def report_card(model_dir: Path, out: Path) -> tuple[dict[str, Any], list[str]]:
    """The final model on a fast subset of the evaluation harness's tasks (0-shot, first 20 items each).

    Returns herd eval's results summary (also written under `out`) and the tasks skipped because their
    data package is not installed.
    """
    import herd
    from herd.eval.harness import run_evaluation
    from herd.eval.tasks import TaskDataMissing, get_task
    from herd.infer import EngineConfig, LLMEngine

    tasks, skipped = [], []
    for name in REPORT_CARD_TASKS:
        task = get_task(name)
        try:
            task.load()
        except TaskDataMissing:
            skipped.append(name)
            continue
        tasks.append(task)
    loaded = herd.load_model(str(model_dir))
    engine = LLMEngine(loaded, EngineConfig(kv_cache_bytes=64 << 20))
    summary = run_evaluation(engine, loaded, tasks, out, limit=REPORT_CARD_ITEMS, progress=False, max_tokens=48)
    return summary, skipped


def report_card_lines(summary: dict[str, Any], skipped: list[str], out: Path) -> list[str]:
    lines = ["", f"## Report card (final model, herd eval, 0-shot, first {REPORT_CARD_ITEMS} items per task)", "",
             "| task | metric | value | 95% CI | N |", "|---|---|---:|---|---:|"]
    for name, t in summary["tasks"].items():
        for metric, m in t["metrics"].items():
            lines.append(f"| {name} | {metric} | {m['value']:.3f} | [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}] | {m['n']} |")
    lines += ["", "Chance is 0.25 on HellaSwag and about 0.2 on TruthfulQA-MC1; a model this small and this "
              f"briefly trained sits near chance. Per-item records: `{out.name}/samples.jsonl`."]
    if skipped:
        lines.append(f"Skipped (data package not installed): {', '.join(skipped)}.")
    return lines


def plot_losses(runs: dict[str, Path], entropy: float, path: Path) -> Path:
    """Training loss of every phase on one token axis, with the unigram-entropy baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    offset = 0
    for name, metrics in runs.items():
        xs, ys, vx, vy = [], [], [], []
        last = 0
        for line in metrics.read_text().splitlines() if metrics.is_file() else []:
            rec = json.loads(line)
            if rec.get("kind") == "val":
                vx.append(offset + rec["tokens"])
                vy.append(rec["val_loss"])
            elif "loss" in rec and rec.get("loss") is not None:
                xs.append(offset + rec["tokens"])
                ys.append(rec["loss"])
                last = rec["tokens"]
        ax.plot(xs, ys, label=f"{name} (train)", linewidth=1)
        if vx:
            ax.plot(vx, vy, "o--", label=f"{name} (held out)", markersize=3)
        offset += last
    ax.axhline(entropy, color="gray", linestyle=":", label=f"unigram entropy {entropy:.2f}")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_ylim(0, min(13, max(entropy + 4, 8)))
    ax.legend(fontsize=8)
    ax.set_title("herd demo: pretraining -> long context -> annealing")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out: Path, state: DemoState, entropy: float, losses: dict[str, float], grids: dict[str, Any],
                 texts: list[tuple[str, str]], curve: Path, card: list[str] | None = None) -> Path:
    from herd.data import read_manifest

    settings = state.settings
    lc = state.finished("long context")
    data = curated_data(out / "curate")
    smoke = (" **Smoke scale** (--scale below "
             f"{SMOKE_BELOW}): budgets are too small for the gates to pass; a gate reported as not passed here "
             "says nothing about the full demo." if settings.smoke else "")
    lines = ["# herd demo report", "",
             f"--scale {settings.scale}, --max-docs {settings.max_docs or 'all'}; {torch.get_num_threads()} CPU "
             f"threads, torch {torch.__version__}, float32.{smoke}", "",
             "## Stages", "", "| stage | result | cost | wall time |", "|---|---|---|---:|"]
    for i, name in enumerate(STAGES[:-1], 1):
        info = state.finished(name)
        lines.append(f"| {i}. {name} | {info['result']} | {info['cost']} | {_clock(info['seconds'])} |")
    lines.append(f"| {len(STAGES)}. report | this file | evaluation below | (this stage) |")
    lines += ["", "## Data (curated, tokenized with the Llama 3 tokenizer)", "",
              "| source | documents | tokens | pretraining weight |", "|---|---:|---:|---:|"]
    for name, path in data.sources.items():
        m = read_manifest(path)
        lines.append(f"| {name} | {m['documents']:,} | {m['tokens']:,} | {data.pretrain_mix.get(name, 0):.2f} |")
    lines += ["", f"Unigram entropy of the pretraining mix: **{entropy:.3f} nats/token** "
              "(the loss of the best model that ignores context). Sources `<category>_hq` are curation's "
              "high-quality subsets, used by the annealing mix.", "",
              f"## Held-out loss (pretraining validation split, sequences of {SHORT_SEQ})", "",
              "| model | loss | vs unigram |", "|---|---:|---:|"]
    for name, value in losses.items():
        lines.append(f"| {name} | {value:.3f} | {value - entropy:+.3f} |")
    lines += ["", f"![losses]({curve.name})", "", f"## Long-context stage ({SHORT_SEQ} -> {LONG_SEQ})", "",
              "Mix: the pretraining mix and 50% synthetic retrieval documents (herd.data.synthetic_retrieval: "
              "made-up keys, never a NIAH key, in curated text). Gate after each round: short-context loss "
              f"within 5% of its pre-stage value and NIAH accuracy at {LONG_SEQ - 16} tokens >= 0.8. "
              f"**{'passed' if lc['passed'] else 'NOT passed within its token budget'}**"
              + (" (smoke scale)" if settings.smoke and not lc["passed"] else "") + ".", "",
              "| round | tokens | short-context loss | before stage | NIAH accuracy | passed |",
              "|---:|---:|---:|---:|---:|---|"]
    for c in lc["checks"]:
        lines.append(f"| {c['round']} | {c['tokens']:,} | {c['short_loss']:.3f} | {c['baseline_loss']:.3f} | "
                     f"{c['niah_accuracy']:.2f} | {c['passed']} |")
    for name, grid in grids.items():
        lines += ["", f"## Needle in a haystack: {name} model (rows: prompt tokens, columns: needle depth, "
                      f"{settings.niah_cases} case(s) per cell, greedy)", "", grid.table()]
    lines += ["", "![niah](niah.png)", "", "## Annealing and averaging", "",
              f"{state.finished('anneal')['result']}. {state.finished('average')['result']} (Hugging Face format).",
              "", "## Samples (final model, greedy, repetition penalty 1.1)", ""]
    for prompt, text in texts:
        lines += [f"**{prompt}**", "", "```", prompt + text, "```", ""]
    lines += card or []
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
