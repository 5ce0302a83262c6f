"""The seven stages, in order; each returns the info recorded in state.json (result, cost, outputs)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from herd.train.demo.progress import Progress, _TrainProgress
from herd.train.demo.recipes import (
    ANNEAL_TOKENS,
    LONG_SEQ,
    NIAH_DEPTHS,
    NIAH_LENGTHS,
    PRETRAIN_TOKENS,
    SHORT_SEQ,
    CuratedData,
    anneal_config,
    base_config,
    curate_recipe,
    curated_data,
    long_context_stage,
    retrieval_data,
)
from herd.train.demo.report import plot_losses, report_card, report_card_lines, samples, save_average, write_report
from herd.train.demo.state import DemoState
from herd.train.demo.stopping import StopRequested, _signal_received
from herd.train.trainer import TrainHooks


def _train(cfg: dict[str, Any], hooks: TrainHooks) -> Any:
    """One training run, resumed from its newest checkpoint if an earlier run was stopped."""
    from herd.train import config_from_dict, train

    result = train(config_from_dict(cfg), resume="auto", hooks=hooks)
    if result.stopped != "done":
        raise StopRequested(_signal_received())
    return result


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
        self.progress.note("report card")
        summary, skipped = report_card(self.out / "final", self.out / "eval")
        card = report_card_lines(summary, skipped, self.out / "eval")
        path = write_report(self.out, self.state, entropy, losses, grids, texts, curve, card)
        return {"report": str(path), "losses": losses, "unigram_entropy": entropy, "report_card": summary["tasks"],
                "niah": {k: g.accuracy_at(LONG_SEQ - 16) for k, g in grids.items()},
                "result": f"{path}", "cost": "-"}
