"""The curation pipeline: datatrove stages run by datatrove's executors, then the mix and the report.

Stages (each a datatrove executor with its own `logs/<stage>/completions/`, so a relaunch skips every
task that finished; a stage whose tasks all finished does nothing):

1. `filter` (tasks): read -> extract HTML -> empty check -> blocklist -> langid -> PII -> empty check
   -> `work/filtered/<rank>.jsonl` (datatrove JsonlWriter) -> URL records
2. `url` (1 task): resolve URL duplicates, keeping the most recent copy
3. `minhash-sig` (tasks): re-read, drop URL losers, MinHash signatures
4. `minhash-buckets` (one task per band, datatrove's), 5. `minhash-cluster` (1 task, herd's: see minhash.py)
6. `line-sig` (tasks): re-read, drop URL losers and near-duplicates, line hashes per document
7. `line-merge` (1 task): count lines per bucket over all tasks (see line_dedup.py)
8. `train` (1 task): quality / domain / knowledge classifiers on a sample
9. `final` (tasks): re-read, drop URL losers and near-duplicates, drop frequent lines, heuristic quality
   filters (after dedup, the paper's order), classify + downsample,
   record statistics, write `curated/<category>/<rank>.jsonl` (datatrove JsonlWriter)
10. mix file (`mix.toml`, read by a pretrain recipe's `data.mix_file`; `mix.json`) and report (`report.md`, PNGs), in this process.

Stages 3, 6 and 9 read the same per-rank files in the same order, which is what lets MinHash's
per-task document indices line up (datatrove's own contract for its MinHash stages). Every decision that
spans documents (the copy of a URL or of a near-duplicate cluster that survives, line counts, the
classifiers' sample) is a function of the set of documents, never of how they were split over tasks, so
`tasks` changes speed, not the curated output.

Scale-out: `[executor] kind = "slurm" | "ray"` runs the same stage pipelines on datatrove's
`SlurmPipelineExecutor` / `RayPipelineExecutor` (`[executor] options` go to its constructor).
* Slurm: the stages are chained with `depends=`, submitted, and `herd curate` returns; run it again once
  the jobs are done (finished tasks are skipped) to write the mix and the report.
* Ray: the stages run one after another from this process, as with the local executor, each stage's tasks
  as Ray tasks (`workers` at a time). It joins the cluster named by `RAY_ADDRESS` or one this process
  already joined (`ray.init`), else starts a local Ray instance with `workers` CPUs and stops it at the
  end. Every stage reads and writes `output_dir`, so on a cluster it must be a shared filesystem.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets
from datatrove.pipeline.writers import JsonlWriter

from herd.data.curation.classify import ClassifyStep, RecordStep, TrainModelsStep, clean_metadata
from herd.data.curation.config import CurateConfig
from herd.data.curation.dedup_url import UrlFilterStep, UrlRecordStep, resolve_url_duplicates
from herd.data.curation.line_dedup import LineDedupStep, LineMergeStep, LineSignatureStep
from herd.data.curation.minhash import HerdMinhashCluster, HerdMinhashSignature, MinhashRemoveStep, datatrove_config
from herd.data.curation.readers import SourceReader
from herd.data.curation.steps import (
    BlocklistStep, EmptyCheckStep, ExtractStep, FiltersStep, LangIdStep, PiiStep,
)
from herd.data.errors import DataError

os.environ.setdefault("DATATROVE_COLORIZE_LOGS", "0")


class RankFileReader(PipelineStep):
    """Reads `<folder>/<rank>.jsonl` written by a JsonlWriter in an earlier stage (missing file: no docs)."""

    name = "read stage output"
    type = "herd"

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        import orjson

        path = Path(self.folder) / f"{rank:05d}.jsonl"
        if not path.is_file():
            return
        with open(path, "rb") as fh:
            for line in fh:
                rec = orjson.loads(line)
                self.stat_update("documents")
                yield Document(text=rec["text"], id=rec["id"], metadata=rec.get("metadata", {}))


class UrlResolveStep(PipelineStep):
    name = "resolve URL duplicates"
    type = "herd"

    def __init__(self, url_dir: str, world_size: int) -> None:
        super().__init__()
        self.url_dir, self.tasks = url_dir, world_size

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        counts = resolve_url_duplicates(self.url_dir, self.tasks)
        (Path(self.url_dir) / "summary.json").write_text(json.dumps(counts))
        return iter(())


def _writer_adapter(self, document: Document) -> dict:
    return {"id": document.id, "text": document.text, "metadata": clean_metadata(document.metadata)}


def _filtered_adapter(self, document: Document) -> dict:
    meta = {k: v for k, v in document.metadata.items() if k != "_html_bytes"}
    return {"id": document.id, "text": document.text, "metadata": meta}


def build_stages(cfg: CurateConfig) -> list[tuple[str, list[Any], int]]:
    """(stage name, pipeline, tasks) in order; a pure function of the config (tests inspect it)."""
    out = Path(cfg.output_dir)
    kw = {"examples_per_step": cfg.examples_per_step}
    filtered, models = str(out / "work" / "filtered"), str(out / "models")
    s = cfg.steps
    first: list[Any] = [SourceReader(out, cfg.inputs, stage="filter", **kw)]
    if s.extract:
        first.append(ExtractStep(out, stage="filter", **kw))
    first.append(EmptyCheckStep(out, min_chars=s.min_chars, stage="filter", **kw))
    if s.blocklist:
        first.append(BlocklistStep(out, stage="filter", **kw))
    if s.langid:
        first.append(LangIdStep(out, stage="filter", **kw))
    if s.pii:
        first.append(PiiStep(out, stage="filter", **kw))
    first.append(EmptyCheckStep(out, min_chars=s.min_chars, step_name="empty_final", stage="filter", **kw))
    first.append(JsonlWriter(filtered, output_filename="${rank}.jsonl", compression=None, adapter=_filtered_adapter))
    stages: list[tuple[str, list[Any], int]] = []
    if cfg.url_dedup:
        first.append(UrlRecordStep(out, stage="filter", **kw))
    stages.append(("1-filter", first, cfg.tasks))
    if cfg.url_dedup:
        stages.append(("2-url", [UrlResolveStep(str(out / "url"), cfg.tasks)], 1))
    mh = cfg.minhash
    sigs, buckets, remove, keys = (str(out / "work" / "minhash" / d) for d in ("sigs", "buckets", "remove", "keys"))
    if mh.enabled:
        sig_pipe: list[Any] = [RankFileReader(filtered)]
        if cfg.url_dedup:
            sig_pipe.append(UrlFilterStep(out, stage="dedup", **kw))
        sig_pipe.append(HerdMinhashSignature(sigs, mh.bands, mh.rows, mh.ngram, mh.seed, mh.per_language, keys))
        dt_cfg = datatrove_config(mh.bands, mh.rows, mh.ngram, mh.seed)
        stages.append(("3-minhash-sig", sig_pipe, cfg.tasks))
        stages.append(("4-minhash-buckets", [MinhashDedupBuckets(sigs, buckets, config=dt_cfg)], mh.bands))
        stages.append(("5-minhash-cluster", [HerdMinhashCluster(buckets, remove, keys)], 1))

    def deduplicated(stage: str) -> list[Any]:
        """The filtered documents less URL losers and near-duplicates; the same documents in every stage,
        which MinHash's per-task indices and line dedup's signature/filter pair rely on."""
        steps: list[Any] = [RankFileReader(filtered)]
        if cfg.url_dedup:
            steps.append(UrlFilterStep(out, stage=stage, **kw))
        if mh.enabled:
            steps.append(MinhashRemoveStep(out, remove, stage=stage, **kw))
        return steps

    ld = cfg.line_dedup
    line_sigs, frequent = str(out / "work" / "lines" / "sigs"), str(out / "work" / "lines" / "frequent")
    if ld.enabled:
        stages.append(("6-line-sig", deduplicated("lines") + [
            LineSignatureStep(out, line_sigs, ld.per_language, stage="lines", **kw)], cfg.tasks))
        stages.append(("7-line-merge", [LineMergeStep(line_sigs, frequent, cfg.tasks, ld.bucket_docs, ld.max_count)],
                       1))
    stages.append(("8-train", [TrainModelsStep(cfg, filtered, models)], 1))
    final = deduplicated("final")
    if ld.enabled:
        final.append(LineDedupStep(out, frequent, ld.per_language, stage="final", **kw))
    if s.filters:  # the paper filters after dedup: boilerplate lines are gone before repetition is judged
        final.append(FiltersStep(out, s.filters, models, stage="final", **kw))
    final.append(ClassifyStep(out, models, cfg.quality.threshold if cfg.quality.enabled else 0.0,
                              downsample=cfg.domain.enabled, quality_applies_to=tuple(cfg.quality.apply_to),
                              stage="final", **kw))
    final.append(RecordStep(out, cfg.mix.tokenizer, cfg.quality.anneal_threshold, stage="final", **kw))
    final.append(JsonlWriter(str(out / "curated"), output_filename="${category}/${rank}.jsonl", compression=None,
                             adapter=_writer_adapter))
    stages.append(("9-final", final, cfg.tasks))
    return stages


def build_executors(cfg: CurateConfig) -> list[tuple[str, Any, int]]:
    """(stage, datatrove executor, tasks) for every stage; Slurm executors are chained with depends."""
    out = Path(cfg.output_dir)
    kind, options = cfg.executor.kind, dict(cfg.executor.options)
    executors: list[tuple[str, Any, int]] = []
    previous = None
    for name, pipeline, tasks in build_stages(cfg):
        logdir = str(out / "logs" / name)
        if kind == "local":
            ex = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(cfg.workers, tasks),
                                       logging_dir=logdir, skip_completed=True)
        elif kind == "slurm":
            from datatrove.executor import SlurmPipelineExecutor

            ex = SlurmPipelineExecutor(pipeline=pipeline, tasks=tasks, logging_dir=logdir, depends=previous,
                                       job_name=f"herd-curate-{name}", **options)
        else:  # ray: no depends chain; run_curation runs the stages in order and checks each one
            from datatrove.executor import RayPipelineExecutor

            ex = RayPipelineExecutor(pipeline=pipeline, tasks=tasks, logging_dir=logdir,
                                     **({"workers": min(cfg.workers, tasks)} | options))
        executors.append((name, ex, tasks))
        previous = ex
    return executors


@contextlib.contextmanager
def ray_session(workers: int) -> Iterator[None]:
    """Joins Ray if this process has not: the cluster at `RAY_ADDRESS`, else a new local instance with
    `workers` CPUs (stopped on exit). Workers inherit this process's environment, PYTHONPATH included."""
    try:
        import ray
    except ImportError:
        raise DataError("executor.kind = 'ray' needs the ray package: pip install ray") from None
    started = False
    # ray.init installs its own SIGTERM/SIGINT handlers in this process and shutdown leaves them there:
    # a later stage of the same process (the demo's pretraining) would lose its save-and-stop handler.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, logging_level=logging.WARNING,
                     object_store_memory=256 * 1024 * 1024)
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def run_curation(cfg: CurateConfig, *, report: bool = True) -> dict[str, Any]:
    """Run (or resume) every stage, then write the mix config and the report; returns a summary."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, Any] = {}
    if cfg.generate.enabled:
        from herd.data.curation.corpus import build_local_corpus

        generated, corpus = build_local_corpus(cfg.generate)
        known = {i.name for i in cfg.inputs}
        cfg.inputs = cfg.inputs + [i for i in generated if i.name not in known]
    timings: dict[str, float] = {}
    ran: dict[str, bool] = {}
    executors = build_executors(cfg)
    if cfg.executor.kind == "slurm":  # the last executor submits its dependencies first
        executors[-1][1].run()
        incomplete = {n: ex.get_incomplete_ranks(range(t)) for n, ex, t in executors}
        if any(incomplete.values()):
            print(f"[herd curate] submitted/ran on {cfg.executor.kind}; incomplete tasks: "
                  f"{ {n: len(r) for n, r in incomplete.items() if r} }. Run `herd curate` again when they finish "
                  "to write the mix and the report.", flush=True)
            return {"stages_run": {n: bool(r) for n, r in incomplete.items()}, "pending": True}
    with ray_session(cfg.workers) if cfg.executor.kind == "ray" else contextlib.nullcontext():
        for name, executor, tasks in executors:
            pending = executor.get_incomplete_ranks(range(tasks))
            ran[name] = bool(pending)
            start = time.perf_counter()
            print(f"[herd curate] stage {name}: {len(pending)}/{tasks} tasks to run", flush=True)
            if pending:
                executor.run()
            timings[name] = round(time.perf_counter() - start, 2)
            missing = executor.get_incomplete_ranks(range(tasks))
            if missing:
                raise RuntimeError(f"stage {name}: tasks {missing} did not complete; see {out / 'logs' / name}")
    from herd.data.curation.mix import write_mix

    mix = write_mix(cfg, out)
    summary = {"stages_run": ran, "seconds": timings, "mix": mix, "corpus_absent": corpus.get("absent", {})}
    (out / "run.json").write_text(json.dumps(summary, indent=1))
    if report:
        from herd.data.curation.report import write_report

        write_report(cfg, out, summary)
    return summary
