"""`herd demo`: the whole Llama 3 pretraining story, end to end, on a laptop CPU in under 20 minutes.

Seven stages, each recorded in `<out>/state.json` when it finishes:

1. corpus: raw local documents (stdlib docs and code, translated man pages, synthetic arithmetic);
2. curate: `herd curate`'s pipeline on them (extraction, filters, PII, language ID, URL/MinHash/line
   dedup, quality and domain classifiers) with a fast recipe; its mix gives the token shards and the
   pretraining and annealing mixes;
3. pretrain: a small Llama 3 (the real 128K tokenizer and architecture) with warmup + cosine and a
   batch/sequence ramp, document-masked packing;
4. long context: 4x the pretraining context with synthetic retrieval documents mixed in, gated on
   short-context loss recovery and needle-in-a-haystack retrieval (herd.train.long_context);
5. anneal: LR linearly to 0 on curation's high-quality annealing mix;
6. average: Polyak average of the annealing checkpoints, saved in Hugging Face format;
7. report: held-out losses, the NIAH grid (depth x length), plots, samples, each stage's cost.

A stop request (SIGTERM or Ctrl-C) ends the whole command after the running stage has saved what it
can (training stages save a checkpoint); `herd demo --resume` skips finished stages and continues the
interrupted one. `--scale` multiplies every token budget (0.2: a ~2-minute smoke run whose gates are
not expected to pass, and are labelled so).

Training runs in float32 on CPU: bf16 autocast is fast only on CPUs with native bf16 arithmetic, and
~50x slower than float32 on the common AVX2 ones, so the demo never depends on it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from herd.train.trainer import TrainHooks

SHORT_SEQ = 256
LONG_SEQ = 1024
STAGES = ("corpus", "curate", "pretrain", "long context", "anneal", "average", "report")
MODEL = {"size": "llama3-tiny", "n_layers": 4}   # dim 64, 4 heads: the 128K-vocab head is most of the cost
PRETRAIN_TOKENS = 200_000
LONG_TOKENS_PER_ROUND = 80_000       # the gate is checked after each round
LONG_ROUNDS = 4
ANNEAL_TOKENS = 30_000
RETRIEVAL_FACTS = 14                 # facts (and questions) per synthetic retrieval document
NIAH_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
NIAH_LENGTHS = (256, 512, LONG_SEQ - 16)
SMOKE_BELOW = 0.5   # scales under this are smoke runs: the gates are reported, not expected to pass
PROMPTS = [
    "def fibonacci(n):",
    "Tom has 12 apples and buys 7 more. How many apples does Tom have?",
    "The import statement",
]


class DemoError(ValueError):
    """Bad demo input (e.g. --resume with different settings): one line for the user."""


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived: the demo stops after the running stage saved its state."""

    def __init__(self, signum: int | None) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name if signum else "a stop request")


@dataclass
class DemoSettings:
    """What a run was started with; `--resume` continues only a run with the same settings."""

    scale: float = 1.0
    max_docs: int | None = 150
    seed: int = 0

    @property
    def smoke(self) -> bool:
        return self.scale < SMOKE_BELOW

    def tokens(self, base: int) -> int:
        return max(1, int(base * self.scale))

    @property
    def niah_cases(self) -> int:
        """NIAH cases per (length, depth) cell: 4 (1 at smoke scale, where evaluation would dominate)."""
        return 1 if self.smoke else 4


@dataclass
class DemoResult:
    out_dir: str
    unigram_entropy: float
    losses: dict[str, float]
    long_context_passed: bool
    report: str
    final_model: str
    seconds: float
    smoke: bool


# -- one status line for every stage -------------------------------------------------------------
class Progress:
    """`stage 3/7 pretrain  tokens 120,000/300,000  loss 3.21  1:05 eta 1:40`, rewritten in place.

    On a terminal the line is redrawn (at most 4 times a second); elsewhere (a log, CI) a line is
    printed at each stage's start and end and at every 10% in between, so logs stay short."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.index, self.name, self.start = 0, "", time.perf_counter()
        self._drawn, self._tenth = 0.0, -1

    def stage(self, index: int, name: str, *, quiet: bool = False) -> None:
        self.index, self.name, self.start, self._tenth = index, name, time.perf_counter(), -1
        if not quiet:
            self._emit(f"stage {index}/{len(STAGES)} {name}", force=True)

    def update(self, done: int, total: int, unit: str, **info: float) -> None:
        elapsed = time.perf_counter() - self.start
        frac = min(done / total, 1.0) if total else 0.0
        eta = f" eta {_clock(elapsed / frac - elapsed)}" if frac > 0.02 else ""
        extra = "".join(f"  {k} {v:.3g}" for k, v in info.items())
        text = (f"stage {self.index}/{len(STAGES)} {self.name}  {unit} {done:,}/{total:,}{extra}  "
                f"{_clock(elapsed)}{eta}")
        tenth = int(frac * 10)
        if self.tty or tenth > self._tenth:
            self._tenth = tenth
            self._emit(text)

    def note(self, text: str) -> None:
        self._emit(f"stage {self.index}/{len(STAGES)} {self.name}  {text}", force=True)

    def finish(self, summary: str) -> None:
        self._line(f"stage {self.index}/{len(STAGES)} {self.name}  done in {_clock(time.perf_counter() - self.start)}: "
                   f"{summary}")

    def skip(self, summary: str) -> None:
        self._line(f"stage {self.index}/{len(STAGES)} {self.name}  finished earlier: {summary}")

    def _line(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def _emit(self, text: str, force: bool = False) -> None:
        now = time.perf_counter()
        if self.tty:
            if force or now - self._drawn > 0.25:
                self.stream.write("\r\033[K" + text[: shutil.get_terminal_size().columns - 1])
                self.stream.flush()
                self._drawn = now
        else:
            self.stream.write(text + "\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class _TrainProgress(TrainHooks):
    """Feeds the trainer's step records to the status line (the trainer's own display is off)."""

    def __init__(self, progress: Progress, total_tokens: int, offset: int = 0) -> None:
        self.progress, self.total, self.offset = progress, total_tokens, offset

    def on_step_end(self, trainer: Any, step: int, record: dict[str, Any]) -> None:
        info = {"step": step} if record.get("loss") is None else {"step": step, "loss": record["loss"]}
        self.progress.update(min(self.offset + int(record["tokens"]), self.total), self.total, "tokens", **info)


# -- stop requests and quiet stages ----------------------------------------------------------------
_wakeup_read: int | None = None  # the read end of the signal wakeup pipe while the demo runs


def _signal_received() -> int | None:
    """The last SIGTERM/SIGINT that arrived, also when the trainer's handler took it: Python's C-level
    handler writes every signal's number to the wakeup fd whichever Python handler runs."""
    if _wakeup_read is None:
        return None
    try:
        data = os.read(_wakeup_read, 512)
    except BlockingIOError:
        return None
    stops = [b for b in data if b in (signal.SIGTERM, signal.SIGINT)]
    return stops[-1] if stops else None


@contextmanager
def _stop_requests() -> Iterator[None]:
    """SIGTERM/SIGINT raise StopRequested between training runs.

    During `train` the trainer installs its own handlers (it finishes the step and saves a checkpoint)
    and puts these back afterwards; the demo then sees `stopped == "signal"` and raises StopRequested
    itself. Outside training, stopping at once is safe: every other stage writes its outputs atomically
    or is redone from the start by --resume."""
    global _wakeup_read
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise StopRequested(signum)

    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    _wakeup_read = read
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(previous_fd)
        _wakeup_read = None
        os.close(read)
        os.close(write)


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 (trainer messages, datatrove logs, tqdm bars) to `log`, so the
    terminal shows only the demo's status line; restored even when a stage fails or is stopped."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log, "ab") as fh:
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
            try:
                yield
            finally:
                # a stop request must not land between the two restores (it would leave fd 2 in the log)
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os.dup2(saved[0], 1)
                    os.dup2(saved[1], 2)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    finally:
        os.close(saved[0])
        os.close(saved[1])


# -- the state file ------------------------------------------------------------------------------
class DemoState:
    """`<out>/state.json`: the settings and each finished stage's outputs and cost, written atomically."""

    def __init__(self, out: Path, settings: DemoSettings) -> None:
        self.path = out / "state.json"
        self.data: dict[str, Any] = {"settings": asdict(settings), "stages": {}}

    @classmethod
    def load(cls, out: Path) -> DemoState:
        path = out / "state.json"
        if not path.is_file():
            raise DemoError(f"--resume: {out} holds no demo run to continue (no state.json); run without --resume")
        data = json.loads(path.read_text())
        state = cls(out, DemoSettings(**data["settings"]))
        state.data = data
        return state

    @property
    def settings(self) -> DemoSettings:
        return DemoSettings(**self.data["settings"])

    def finished(self, stage: str) -> dict[str, Any] | None:
        return self.data["stages"].get(stage)

    def finish(self, stage: str, info: dict[str, Any]) -> None:
        self.data["stages"][stage] = info
        self.data.pop("interrupted", None)
        self._write()

    def interrupted(self, stage: str) -> None:
        self.data["interrupted"] = stage
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_name("state.json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


# -- the stages ----------------------------------------------------------------------------------
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


def _train(cfg: dict[str, Any], hooks: TrainHooks) -> Any:
    """One training run, resumed from its newest checkpoint if an earlier run was stopped."""
    from herd.train import config_from_dict, train

    result = train(config_from_dict(cfg), resume="auto", hooks=hooks)
    if result.stopped != "done":
        raise StopRequested(_signal_received())
    return result


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


# -- the run -------------------------------------------------------------------------------------
class _Demo:
    """The stages in order; each returns the info recorded in state.json (result, seconds, tokens)."""

    def __init__(self, out: Path, state: DemoState, progress: Progress) -> None:
        self.out, self.state, self.progress = out, state, progress
        self.settings = state.settings

    # shared, recomputed cheaply from finished stages' outputs
    @property
    def data(self) -> CuratedData:
        return curated_data(self.out / "curate")

    @property
    def base(self) -> dict[str, Any]:
        return base_config(self.out, self.data, self.settings.tokens(PRETRAIN_TOKENS))

    def corpus(self) -> dict[str, Any]:
        from herd.data import build_local_corpus

        raw = build_local_corpus(self.out / "corpus", max_docs_per_source=self.settings.max_docs,
                                 seed=self.settings.seed)
        summary = json.loads((self.out / "corpus" / "corpus.json").read_text())["sources"]
        docs = sum(s["documents"] for s in summary.values())
        return {"paths": {k: str(v) for k, v in raw.items()}, "documents": docs,
                "result": f"{docs:,} raw documents from {len(raw)} sources",
                "cost": f"{sum(s['characters'] for s in summary.values()):,} characters"}

    def curate(self) -> dict[str, Any]:
        from herd.data.curation import config_from_dict, run_curation

        raw = {k: Path(v) for k, v in self.state.finished("corpus")["paths"].items()}
        summary = run_curation(config_from_dict(curate_recipe(self.out, raw), "herd demo recipe"))
        data = self.data
        tokens = summary["mix"]["pretrain"]["sources"]
        total = sum(s["tokens"] for s in tokens.values())
        kept = sum(s["documents"] for s in tokens.values())
        return {"tokens": total, "result": f"{kept:,} documents kept, {total:,} tokens; mix "
                + ", ".join(f"{k} {v:.2f}" for k, v in data.pretrain_mix.items()),
                "cost": f"{total:,} tokens tokenized"}

    def pretrain(self) -> dict[str, Any]:
        base = self.base
        total = base["run"]["max_tokens"]
        run = _train(base, _TrainProgress(self.progress, total))
        return {"checkpoint": str(run.checkpoint), "tokens": run.tokens,
                "result": f"{run.steps} steps, train loss {run.final_loss:.3f}, held-out loss "
                          + (f"{run.val_loss:.3f}" if run.val_loss is not None else "-"),
                "cost": f"{run.tokens:,} tokens"}

    def long_context(self) -> dict[str, Any]:
        from herd.train.long_context import run_long_context

        stage = long_context_stage(self.settings)
        steps_per_round = max(1, stage.tokens_per_round // (stage.batch_size * stage.seq_len))
        per_doc = LONG_SEQ - 24
        docs = max(64, int(stage.niah_fraction * steps_per_round * stage.batch_size * stage.seq_len
                           * stage.max_rounds / per_doc) + 32)
        self.progress.note(f"writing {docs} synthetic retrieval documents")
        stage.long_data = str(retrieval_data(self.out, self.data, docs, self.settings.seed))
        total = steps_per_round * stage.batch_size * stage.seq_len * stage.max_rounds
        result = run_long_context(self.base, self.state.finished("pretrain")["checkpoint"], [stage],
                                  self.out / "long_context", short_seq_len=SHORT_SEQ, progress=False,
                                  resume=True, hooks=_TrainProgress(self.progress, total))[0]
        if result.stopped:
            raise StopRequested(_signal_received())
        last = result.checks[-1]
        verdict = "passed" if result.passed else "NOT passed" + (" (smoke scale)" if self.settings.smoke else "")
        return {"checkpoint": result.checkpoint, "passed": result.passed, "tokens": last.tokens,
                "checks": [asdict(c) for c in result.checks], "out_dir": result.out_dir,
                "result": f"gate {verdict} after {len(result.checks)} round(s): NIAH {last.niah_accuracy:.2f} at "
                          f"{LONG_SEQ - 16} tokens, short-context loss {last.short_loss:.3f} (before {last.baseline_loss:.3f})",
                "cost": f"{last.tokens:,} tokens"}

    def anneal(self) -> dict[str, Any]:
        from herd.train import list_checkpoints

        cfg = anneal_config(self.base, self.out, self.data, self.state.finished("long context")["checkpoint"],
                            self.settings.tokens(ANNEAL_TOKENS))
        run = _train(cfg, _TrainProgress(self.progress, cfg["run"]["max_tokens"]))
        keep = cfg["checkpoint"]["keep_last"]
        checkpoints = [str(p) for p in list_checkpoints(self.out / "anneal" / "checkpoints")[-keep:]]
        return {"checkpoints": checkpoints, "tokens": run.tokens,
                "result": f"{run.steps} steps to LR 0, train loss {run.final_loss:.3f}; mix "
                          + ", ".join(f"{k} {v:.2f}" for k, v in cfg["anneal"]["mix"].items()),
                "cost": f"{run.tokens:,} tokens"}

    def average(self) -> dict[str, Any]:
        checkpoints = [Path(p) for p in self.state.finished("anneal")["checkpoints"]]
        save_average(self.base, checkpoints, self.out / "final")
        return {"model": str(self.out / "final"),
                "result": f"uniform average of {len(checkpoints)} checkpoints -> {self.out / 'final'}",
                "cost": "-"}

    def report(self) -> dict[str, Any]:
        from herd.data import unigram_entropy
        from herd.train.long_context import _model_from_weights, heldout_loss, niah_report

        data, base = self.data, self.base
        sources = base["data"]["sources"]
        self.progress.note("held-out losses")
        entropy = unigram_entropy(sources, data.pretrain_mix)
        losses: dict[str, float] = {}
        models = [("pretrained", self.state.finished("pretrain")["checkpoint"]),
                  ("long context", self.state.finished("long context")["checkpoint"]),
                  ("annealed (last)", self.state.finished("anneal")["checkpoints"][-1])]
        for name, path in models:
            losses[name] = heldout_loss(_model_from_weights(base, path), sources, data.pretrain_mix, SHORT_SEQ,
                                        batches=8)
        final = _model_from_weights(base, self.out / "final")
        losses["averaged (final)"] = heldout_loss(final, sources, data.pretrain_mix, SHORT_SEQ, batches=8)
        self.progress.note("needle-in-a-haystack grid")
        grids = {}
        for name, model in (("long context", _model_from_weights(base, models[1][1])), ("final", final)):
            report = None
            for length in NIAH_LENGTHS:
                r = niah_report(model, length, NIAH_DEPTHS, self.settings.niah_cases, seed=99)
                if report is None:
                    report = r
                else:
                    report.cells.update(r.cells)
            grids[name] = report
        grids["final"].plot(self.out / "niah.png")
        lc_dir = Path(self.state.finished("long context")["out_dir"])
        curve = plot_losses({"pretrain": self.out / "pretrain" / "metrics.jsonl",
                             "long context": lc_dir / "metrics.jsonl",
                             "anneal": self.out / "anneal" / "metrics.jsonl"}, entropy, self.out / "loss.png")
        self.progress.note("samples")
        texts = samples(self.out / "final")
        path = write_report(self.out, self.state, entropy, losses, grids, texts, curve)
        return {"report": str(path), "losses": losses, "unigram_entropy": entropy,
                "niah": {k: g.accuracy_at(LONG_SEQ - 16) for k, g in grids.items()},
                "result": f"{path}", "cost": "-"}


def run_demo(out_dir: str | Path = "runs/demo", scale: float = 1.0, max_docs: int | None = 150, *,
             resume: bool = False, stream: TextIO | None = None) -> DemoResult:
    """Run (or with `resume`, continue) the demo; raises StopRequested when a stop request ended it."""
    out = Path(out_dir)
    if resume:
        state = DemoState.load(out)
        if (state.settings.scale, state.settings.max_docs) != (scale, max_docs):
            s = state.settings
            raise DemoError(f"--resume: {out} was started with --scale {s.scale} --max-docs {s.max_docs or 0}; "
                            "resume with those, or start afresh without --resume")
    else:
        if scale <= 0:
            raise DemoError(f"--scale must be > 0, got {scale}")
        # a fresh run: nothing of an earlier run may leak into this one's checkpoints or mixes
        for name in ("state.json", "corpus", "curate", "pretrain", "long_context", "anneal", "final", "demo.log"):
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        state = DemoState(out, DemoSettings(scale, max_docs))
        state._write()
    own_stream = stream is None
    progress = Progress(stream or _terminal())
    demo = _Demo(out, state, progress)
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "corpus": demo.corpus, "curate": demo.curate, "pretrain": demo.pretrain, "long context": demo.long_context,
        "anneal": demo.anneal, "average": demo.average, "report": demo.report,
    }
    start = time.perf_counter()
    try:
        with _stop_requests():
            _run_stages(out, state, progress, steps)
    finally:
        if own_stream:
            progress.stream.flush()
            progress.stream.close()
    report = state.finished("report")
    seconds = sum(state.finished(n)["seconds"] for n in STAGES)
    result = DemoResult(str(out), report["unigram_entropy"], report["losses"], state.finished("long context")["passed"],
                        report["report"], str(out / "final"), seconds, state.settings.smoke)
    (out / "result.json").write_text(json.dumps(asdict(result), indent=1))
    print(f"herd demo: done in {_clock(time.perf_counter() - start)} ({_clock(seconds)} of stage time in all): "
          f"{report['report']}", file=sys.stderr, flush=True)
    return result


def _terminal() -> TextIO:
    """Where the status line goes: the process's stderr as it is now, before stages redirect fd 2."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # a stderr without a file descriptor (e.g. captured)
        return open(os.devnull, "w") if sys.stderr is None else _Unclosable(sys.stderr)


class _Unclosable:
    """A borrowed stream that `close()` leaves open."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def close(self) -> None:
        self._stream.flush()


def _run_stages(out: Path, state: DemoState, progress: Progress, steps: dict[str, Callable[[], dict[str, Any]]]) -> None:
    for index, name in enumerate(STAGES, 1):
        done = state.finished(name)
        progress.stage(index, name, quiet=done is not None)
        if done is not None:
            progress.skip(done["result"])
            continue
        t0 = time.perf_counter()
        try:
            with _output_to(out / "demo.log"):
                info = steps[name]()
        except StopRequested:
            state.interrupted(name)
            raise
        info["seconds"] = round(time.perf_counter() - t0, 1)
        state.finish(name, info)
        progress.finish(info["result"])


def write_report(out: Path, state: DemoState, entropy: float, losses: dict[str, float], grids: dict[str, Any],
                 texts: list[tuple[str, str]], curve: Path) -> Path:
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
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
