"""Staged long-context pretraining with the paper's gate: a stage ends when the model has adapted.

The paper (section 3.4.2) grows the context in six stages from 8K to 128K and moves on "when (1) the
model performance on short-context evaluations has recovered completely and (2) the model perfectly
solves needle-in-a-haystack tasks up to that length". Here a stage is trained in rounds of
`tokens_per_round`; after each round the gate measures

1. held-out loss at the *short* (pre-stage) sequence length on the pretraining validation split,
   which must be within `loss_tolerance` (relative) of its value before the stage, and
2. needle-in-a-haystack retrieval accuracy at the stage's new length (herd.eval.niah, greedy,
   through the inference engine), which must reach `niah_threshold`.

Rounds are exact resumes of one run (`train(..., resume="auto")` with a larger token budget), so a
stage that passes after k rounds is the same as a run planned for k rounds. A stage that exhausts
`max_rounds` without passing is reported as not passed (never silently), and the next stage starts
from it anyway only if `continue_on_fail`.

Each stage mixes long documents (`niah_fraction` of the tokens) into the pretraining mix: by default
synthetic NIAH documents of its length, or the token shards named by `long_data` (e.g. the demo's
synthetic retrieval documents, herd.data.synthetic_retrieval). Small models learn long-range retrieval
from such data, as the paper's synthetic long-context data teaches it.

A stop request (SIGTERM/SIGINT, caught by the trainer, which saves a checkpoint) ends the stage at once
with `StageResult.stopped`; `run_long_context(..., resume=True)` continues it: the gate history and the
pre-stage baseline are kept in the stage directory, a finished round is not trained again, and the
interrupted round resumes from its last checkpoint.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from herd.train.checkpointing import latest_checkpoint, load_model_weights
from herd.train.config import ConfigError, config_from_dict
from herd.train.trainer import TrainHooks, train


@dataclass
class LongContextStage:
    seq_len: int
    tokens_per_round: int
    max_rounds: int = 4
    batch_size: int = 4
    lr: float = 3e-4
    niah_fraction: float = 0.3
    niah_documents: int = 400
    niah_threshold: float = 0.8
    niah_depths: tuple[float, ...] = (0.1, 0.5, 0.9)
    niah_cases: int = 4                  # cases per depth at each gate check
    loss_tolerance: float = 0.05         # relative increase of short-context loss allowed
    long_data: str | None = None         # token shards mixed in at niah_fraction (None: synthetic NIAH docs)


@dataclass
class GateCheck:
    round: int
    tokens: int
    short_loss: float
    baseline_loss: float
    niah_accuracy: float
    passed: bool


@dataclass
class StageResult:
    seq_len: int
    checkpoint: str
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)
    niah_table: str = ""
    out_dir: str = ""
    stopped: bool = False                # a stop request ended the stage; resume=True continues it


def _model_from_weights(base_config: dict[str, Any], weights_path: str | Path):  # type: ignore[no-untyped-def]
    from herd.checkpoint import load_state_dict_checked
    from herd.model import Transformer

    model_config = config_from_dict(base_config).model_config()
    with torch.device("meta"):
        model = Transformer(model_config)
    model.to_empty(device="cpu")
    load_state_dict_checked(model, load_model_weights(weights_path), str(weights_path))
    return model.eval()


@torch.no_grad()
def heldout_loss(model, sources: Mapping[str, str], mix: Any, seq_len: int, batches: int = 4,
                 batch_size: int = 4, seed: int = 0) -> float:  # type: ignore[no-untyped-def]
    """Mean next-token loss on the first `batches` validation batches (document-masked, float32)."""
    from herd.data import build_loader
    from herd.model import DocumentMask

    loader = build_loader(sources, mix, seed=seed, split="validation")
    total, count = 0.0, 0
    for _ in range(batches):
        batch = loader.next_batch(batch_size, seq_len)
        documents = DocumentMask(batch.doc_ids)
        logits = model(batch.inputs, documents.positions, documents).float()
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100, reduction="sum"
        )
        total += float(loss)
        count += int((batch.targets != -100).sum())
    return total / max(count, 1)


def niah_report(model, length: int, depths, cases: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """NIAH at `length` for a bare herd Transformer with the Llama 3 tokenizer."""
    from herd.eval.niah import evaluate_niah
    from herd.infer.engine import EngineConfig, LLMEngine
    from herd.loading import LoadedModel
    from herd.tokenizer import Llama3Tokenizer, chat_format_for

    tok = Llama3Tokenizer()
    loaded = LoadedModel(model, tok, chat_format_for(tok), model.config, "<training checkpoint>")
    blocks = (len(depths) * cases * (length + 16)) // 16 + 64
    engine = LLMEngine(loaded, EngineConfig(num_blocks=blocks, max_num_seqs=16))
    return evaluate_niah(engine, tok, [length], depths, cases_per_cell=cases, seed=seed)


def niah_length(seq_len: int) -> int:
    """The NIAH prompt length checked for a context of seq_len: room is left for the answer tokens."""
    return seq_len - 16


def niah_source(out_dir: Path, length: int, documents: int, seed: int = 0) -> Path:
    """Token shards of synthetic NIAH training documents of about `length` tokens."""
    from herd.data import tokenize_files
    from herd.eval.niah import training_documents
    from herd.tokenizer import Llama3Tokenizer

    target = out_dir / f"niah-{length}"
    if (target / "manifest.json").exists():
        return target
    jsonl = out_dir / f"niah-{length}.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    tok = Llama3Tokenizer()
    with jsonl.open("w") as f:
        for n, doc in enumerate(training_documents(tok, documents, length - 2, num_needles=1, seed=seed)):
            f.write(json.dumps({"text": doc, "id": n}) + "\n")
    tokenize_files([jsonl], target, "niah", workers=1, validation_fraction=0.05, progress=False)
    return target


def _stage_mix(base_mix: Any, sources: Mapping[str, str], niah_fraction: float) -> dict[str, float]:
    from herd.data import resolve_weights

    weights = resolve_weights(base_mix, list(sources), missing="renormalize")
    total = sum(weights.values())
    mix = {k: (1.0 - niah_fraction) * v / total for k, v in weights.items()}
    mix["niah"] = niah_fraction
    return mix


def _load_state(stage_dir: Path) -> tuple[float | None, list[GateCheck]]:
    """The pre-stage baseline and the gate checks of an earlier (interrupted) run of a stage."""
    path = stage_dir / "stage.json"
    if not path.is_file():
        return None, []
    state = json.loads(path.read_text())
    return state["baseline"], [GateCheck(**c) for c in state["checks"]]


def _save_state(stage_dir: Path, baseline: float, checks: list[GateCheck]) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    tmp = stage_dir / "stage.json.tmp"
    tmp.write_text(json.dumps({"baseline": baseline, "checks": [asdict(c) for c in checks]}, indent=1))
    tmp.replace(stage_dir / "stage.json")
    (stage_dir / "gate.json").write_text(json.dumps([asdict(c) for c in checks], indent=1))


def run_long_context(
    base_config: dict[str, Any],
    init_from: str | Path,
    stages: list[LongContextStage],
    out_dir: str | Path,
    *,
    short_seq_len: int,
    continue_on_fail: bool = True,
    progress: bool = True,
    resume: bool = False,
    hooks: TrainHooks | None = None,
) -> list[StageResult]:
    """Run the stages in order from `init_from`; returns each stage's gate history.

    With `resume`, a stage's earlier gate checks are kept and its interrupted round continues from its
    last checkpoint. A stop request ends the run after the current stage's checkpoint is saved: the
    last result has `stopped` set and later stages are not started. `hooks` go to every `train` call.
    """
    out = Path(out_dir)
    results: list[StageResult] = []
    current = Path(init_from)
    sources = dict(base_config["data"]["sources"])
    base_mix = base_config["data"].get("mix", "llama3")
    previous_len = short_seq_len
    for stage in stages:
        if stage.seq_len <= previous_len:
            raise ConfigError(f"long-context stages must grow: {stage.seq_len} after {previous_len}")
        stage_dir = out / f"stage-{stage.seq_len}"
        long_dir = Path(stage.long_data) if stage.long_data else niah_source(out / "data", stage.seq_len,
                                                                               stage.niah_documents)
        baseline, checks = _load_state(stage_dir) if resume else (None, [])
        if baseline is None:
            baseline = heldout_loss(_model_from_weights(base_config, current), sources, base_mix, short_seq_len)
            _save_state(stage_dir, baseline, [])
        steps_per_round = max(1, stage.tokens_per_round // (stage.batch_size * stage.seq_len))
        cfg = copy.deepcopy(base_config)
        cfg["run"].update(out_dir=str(stage_dir), init_from=str(current), max_steps=0)
        cfg["model"]["max_seq_len"] = max(stage.seq_len, cfg["model"].get("max_seq_len", 0) or 0)
        cfg["optim"].update(lr=stage.lr, min_lr=stage.lr / 10)
        cfg["schedule"] = {
            "warmup_steps": max(1, steps_per_round // 10),
            "decay_steps": steps_per_round * stage.max_rounds,
            "stages": [{"after_tokens": 0, "batch_size": stage.batch_size, "seq_len": stage.seq_len}],
        }
        cfg["data"] = {**cfg["data"], "sources": {**sources, "niah": str(long_dir)},
                       "mix": _stage_mix(base_mix, sources, stage.niah_fraction)}
        cfg["eval"] = {"interval": 0}
        cfg["anneal"] = {"tokens": 0}
        cfg.setdefault("log", {})["progress"] = progress
        result = StageResult(stage.seq_len, "", False, checks=checks, out_dir=str(stage_dir))
        if checks:
            result.checkpoint = str(latest_checkpoint(stage_dir / "checkpoints") or "")
            result.passed = checks[-1].passed
        for round_ in range(len(checks) + 1, stage.max_rounds + 1):
            if result.passed:
                break
            cfg["run"]["max_tokens"] = round_ * steps_per_round * stage.batch_size * stage.seq_len
            # round 1 starts from init_from; later rounds, and any resumed round, continue the run
            run = train(config_from_dict(cfg), resume="auto" if resume or round_ > 1 else None, hooks=hooks)
            ckpt = run.checkpoint or latest_checkpoint(Path(stage_dir) / "checkpoints")
            result.checkpoint = str(ckpt)
            if run.stopped != "done":
                result.stopped = True
                break
            model = _model_from_weights(cfg, ckpt)
            short = heldout_loss(model, sources, base_mix, short_seq_len)
            report = niah_report(model, niah_length(stage.seq_len), stage.niah_depths, stage.niah_cases, seed=round_)
            passed = short <= baseline * (1 + stage.loss_tolerance) and report.accuracy >= stage.niah_threshold
            result.checks.append(GateCheck(round_, run.tokens, short, baseline, report.accuracy, passed))
            result.niah_table = report.table()
            _save_state(stage_dir, baseline, result.checks)
            result.passed = passed
        results.append(result)
        if result.stopped:
            break
        current = Path(result.checkpoint)
        previous_len = stage.seq_len
        if not result.passed and not continue_on_fail:
            break
    return results
