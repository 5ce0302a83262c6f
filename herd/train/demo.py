"""`herd demo`: the whole Llama 3 pretraining story, end to end, on a laptop CPU in about 10 minutes.

1. a real local corpus (stdlib docs and code, translated man pages, synthetic arithmetic word
   problems) tokenized with the real 128K Llama 3 tokenizer into shards;
2. pretraining a small Llama 3 (same architecture and tokenizer as 8B/70B/405B) on the paper's
   50/25/17/8 mix with warmup + cosine and a batch/sequence ramp, document-masked packing;
3. a long-context stage (4x the pretraining context) gated on short-context loss recovery and
   needle-in-a-haystack retrieval;
4. annealing (LR linearly to 0 on a mix that upsamples math and code) with checkpoints along the
   way, then Polyak averaging of those checkpoints into the final model (saved in Hugging Face
   format, loadable with `herd generate --model DIR`);
5. a report: held-out losses of each phase against the corpus's unigram entropy, plots, the NIAH
   grid and sampled continuations.

`--scale` multiplies every token budget (0.2 for a one-minute smoke run, 3 for a longer one).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

SHORT_SEQ = 256
LONG_SEQ = 1024
PROMPTS = [
    "def fibonacci(n):",
    "Tom has 12 apples and buys 7 more. How many apples does Tom have?",
    "The import statement",
]


@dataclass
class DemoResult:
    out_dir: str
    unigram_entropy: float
    losses: dict[str, float]
    long_context_passed: bool
    report: str
    final_model: str
    seconds: float


def _say(msg: str) -> None:
    print(f"[herd demo] {msg}", flush=True)


def build_data(out: Path, max_docs: int | None) -> dict[str, str]:
    """Local corpus -> token shards per source (5% of documents held out for validation)."""
    from herd.data import build_local_corpus, tokenize_files

    corpus = out / "corpus"
    paths = build_local_corpus(corpus, max_docs_per_source=max_docs, seed=0)
    sources = {}
    for name, path in sorted(paths.items()):
        target = corpus / "tokens" / name
        if not (target / "manifest.json").exists():
            tokenize_files([path], target, name, workers=None, validation_fraction=0.05, progress=False)
        sources[name] = str(target)
    return sources


def base_config(out: Path, sources: dict[str, str], tokens: int) -> dict[str, Any]:
    """The pretraining recipe, scaled down: llama3-tiny shape, real vocabulary, a 2-stage ramp."""
    batch, steps = 8, max(10, tokens // (8 * SHORT_SEQ))
    return {
        "run": {"out_dir": str(out / "pretrain"), "seed": 0, "dtype": "bfloat16", "max_tokens": tokens},
        "model": {"size": "llama3-tiny", "max_seq_len": LONG_SEQ},
        "optim": {"lr": 4e-3, "min_lr": 4e-4, "weight_decay": 0.1, "grad_clip": 1.0},
        "schedule": {
            "warmup_steps": max(2, steps // 20),
            "decay_steps": int(steps * 1.2),
            # the paper's ramp in miniature: short sequences and small batches first
            "stages": [
                {"after_tokens": 0, "batch_size": batch, "seq_len": SHORT_SEQ // 2},
                {"after_tokens": tokens // 4, "batch_size": batch, "seq_len": SHORT_SEQ},
            ],
        },
        "data": {"sources": sources, "mix": "llama3", "seed": 0},
        "eval": {"interval": max(5, steps // 8), "batches": 4, "batch_size": 4, "seq_len": SHORT_SEQ},
        "checkpoint": {"interval": max(5, steps // 4), "keep_last": 2},
        "log": {"interval": 1, "tensorboard": True, "progress": True, "plot": True},
    }


def anneal(base: dict[str, Any], out: Path, init_from: str, tokens: int, keep: int = 4) -> list[Path]:
    """LR linearly to 0 over `tokens` on the annealing mix; returns the checkpoints to average."""
    from herd.train import config_from_dict, list_checkpoints, train

    steps = max(keep, tokens // (8 * SHORT_SEQ))
    cfg = json.loads(json.dumps(base))
    cfg["run"].update(out_dir=str(out / "anneal"), init_from=init_from, max_tokens=steps * 8 * SHORT_SEQ)
    cfg["schedule"] = {"warmup_steps": 0, "decay_steps": steps,
                       "stages": [{"after_tokens": 0, "batch_size": 8, "seq_len": SHORT_SEQ}]}
    cfg["anneal"] = {"tokens": steps * 8 * SHORT_SEQ, "start_tokens": 0, "mix": "llama3-anneal",
                     "from_lr": base["optim"]["min_lr"] * 2}
    cfg["checkpoint"] = {"interval": max(1, steps // keep), "keep_last": keep}
    train(config_from_dict(cfg))
    return list_checkpoints(out / "anneal" / "checkpoints")[-keep:]


def save_average(base: dict[str, Any], checkpoints: list[Path], destination: Path) -> dict[str, torch.Tensor]:
    """Uniform Polyak average of the annealing checkpoints, also written as a Hugging Face checkpoint."""
    from herd.checkpoint import Checkpoint, write_checkpoint
    from herd.checkpoint.averaging import average_state_dicts
    from herd.tokenizer import Llama3Tokenizer
    from herd.train import config_from_dict

    state = average_state_dicts(torch.load(c / "model.pt", map_location="cpu", weights_only=True) for c in checkpoints)
    config = config_from_dict(base).model_config()
    write_checkpoint(Checkpoint(config, state, Llama3Tokenizer(), "meta", destination), destination, "hf")
    return state


def samples(model_dir: Path, max_tokens: int = 40) -> list[tuple[str, str]]:
    import herd
    from herd.infer import EngineConfig, LLMEngine, SamplingParams

    loaded = herd.load_model(str(model_dir))
    engine = LLMEngine(loaded, EngineConfig(num_blocks=64))
    outs = engine.generate(PROMPTS, SamplingParams(max_tokens=max_tokens, temperature=0.0, repetition_penalty=1.1))
    return [(p, o.outputs[0].text) for p, o in zip(PROMPTS, outs)]


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
        for line in metrics.read_text().splitlines():
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


def run_demo(out_dir: str | Path = "runs/demo", scale: float = 1.0, max_docs: int | None = 1500) -> DemoResult:
    from herd.data import unigram_entropy
    from herd.train.long_context import LongContextStage, _model_from_weights, heldout_loss, niah_length, \
        niah_report, run_long_context

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A rerun starts the training phases afresh (stale checkpoints of an earlier run would be mixed
    # into this one's keep-last-N rotation); the tokenized corpus is reused.
    import shutil

    for phase in ("pretrain", "long_context", "anneal", "final"):
        shutil.rmtree(out / phase, ignore_errors=True)
    _say(f"1/5 building and tokenizing the local corpus in {out / 'corpus'}")
    sources = build_data(out, max_docs)
    entropy = unigram_entropy(sources, "llama3")
    _say(f"    sources: {', '.join(sources)}; unigram entropy of the mix {entropy:.3f} nats/token")

    pretrain_tokens = int(220_000 * scale)
    base = base_config(out, sources, pretrain_tokens)
    from herd.train import config_from_dict, train

    _say(f"2/5 pretraining llama3-tiny (128,256-token vocabulary) on {pretrain_tokens:,} tokens")
    pre = train(config_from_dict(base))
    pre_ckpt = str(pre.checkpoint)

    _say(f"3/5 long-context stage {SHORT_SEQ} -> {LONG_SEQ} tokens, gated on short-context loss and NIAH")
    stage = LongContextStage(seq_len=LONG_SEQ, tokens_per_round=int(40_000 * scale), max_rounds=3, batch_size=2,
                             lr=base["optim"]["min_lr"] * 2, niah_fraction=0.5, niah_documents=300,
                             niah_threshold=0.6, loss_tolerance=0.05)
    lc = run_long_context(base, pre_ckpt, [stage], out / "long_context", short_seq_len=SHORT_SEQ)[0]

    _say("4/5 annealing (LR -> 0, math/code upsampled) and Polyak averaging")
    to_average = anneal(base, out, lc.checkpoint, int(50_000 * scale))
    final = out / "final"
    averaged_state = save_average(base, to_average, final)

    _say("5/5 evaluating and writing the report")
    sources_loss = {}
    for name, path in [("pretrained", pre_ckpt), ("long context", lc.checkpoint),
                       ("annealed (last)", str(to_average[-1]))]:
        sources_loss[name] = heldout_loss(_model_from_weights(base, path), sources, "llama3", SHORT_SEQ, batches=8)
    averaged = _model_from_weights(base, to_average[-1])
    averaged.load_state_dict(averaged_state)
    sources_loss["averaged (final)"] = heldout_loss(averaged, sources, "llama3", SHORT_SEQ, batches=8)
    niah = niah_report(averaged, niah_length(LONG_SEQ), (0.1, 0.3, 0.5, 0.7, 0.9), 4, seed=99)
    niah.plot(out / "niah.png")
    curve = plot_losses({"pretrain": out / "pretrain" / "metrics.jsonl",
                         "long context": Path(lc.out_dir) / "metrics.jsonl",
                         "anneal": out / "anneal" / "metrics.jsonl"}, entropy, out / "loss.png")
    texts = samples(final)
    seconds = time.perf_counter() - start
    report = write_report(out, entropy, sources_loss, lc, niah, texts, curve, seconds, sources, to_average)
    _say(f"done in {seconds / 60:.1f} min: {report}")
    result = DemoResult(str(out), entropy, sources_loss, lc.passed, str(report), str(final), seconds)
    (out / "result.json").write_text(json.dumps(asdict(result), indent=1))
    return result


def write_report(out: Path, entropy: float, losses: dict[str, float], lc, niah, texts, curve: Path,  # type: ignore[no-untyped-def]
                 seconds: float, sources: dict[str, str], averaged: list[Path]) -> Path:
    from herd.data import read_manifest
    from herd.train.long_context import niah_length

    lines = ["# herd demo report", "",
             f"Wall time {seconds / 60:.1f} min on {torch.get_num_threads()} CPU threads, torch {torch.__version__}.", "",
             "## Data", "", "| source | documents | tokens |", "|---|---:|---:|"]
    for name, path in sources.items():
        m = read_manifest(path)
        lines.append(f"| {name} | {m['documents']:,} | {m['tokens']:,} |")
    lines += ["", f"Unigram entropy of the training mix (llama3: 50/25/17/8): **{entropy:.3f} nats/token** "
              "(the loss of the best model that ignores context).", "",
              "## Held-out loss (pretraining validation split, sequences of "
              f"{SHORT_SEQ})", "", "| model | loss | vs unigram |", "|---|---:|---:|"]
    for name, value in losses.items():
        lines.append(f"| {name} | {value:.3f} | {value - entropy:+.3f} |")
    lines += ["", f"![losses]({curve.name})", "", f"## Long-context stage ({SHORT_SEQ} -> {lc.seq_len})", "",
              f"Gate: short-context loss within 5% of its pre-stage value and NIAH accuracy at {lc.seq_len} "
              f"tokens >= threshold. **{'passed' if lc.passed else 'NOT passed within its token budget'}**.", "",
              "| round | tokens | short-context loss | before stage | NIAH accuracy | passed |",
              "|---:|---:|---:|---:|---:|---|"]
    for c in lc.checks:
        lines.append(f"| {c.round} | {c.tokens:,} | {c.short_loss:.3f} | {c.baseline_loss:.3f} | "
                     f"{c.niah_accuracy:.2f} | {c.passed} |")
    lines += ["", f"## Needle in a haystack, final model, {niah_length(lc.seq_len)}-token prompts", "", niah.table(), "",
              "![niah](niah.png)", "", "## Annealing and averaging", "",
              f"Uniform Polyak average of {len(averaged)} annealing checkpoints: "
              + ", ".join(p.name for p in averaged) + f"; saved to `{out / 'final'}` (Hugging Face format).", "",
              "## Samples (final model, greedy, repetition penalty 1.1)", ""]
    for prompt, text in texts:
        lines += [f"**{prompt}**", "", "```", prompt + text, "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
