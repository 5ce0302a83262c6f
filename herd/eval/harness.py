"""Running tasks through the engine: per-item records that survive a crash, and the scores.

Every sampling job goes through `LLMEngine` (one engine for chat, serving and evaluation):
- `mc` items: `LLMEngine.score_many`, each context computed once and its choices reusing its KV blocks
  through the prefix cache (a long few-shot prefix that all items share: computed once);
- `generate` items: `LLMEngine.generate` with continuous batching (greedy unless the caller asks);
- `lm` items: `score_many` over the text, windowed when it is longer than the model's context;
- `tool_call` items: greedy `generate` from the chat format's tool prompt; the calls are parsed with the
  chat format's own parser and matched against BFCL's possible answers (herd.eval.bfcl_ast).

Runs resume and reproduce: each item's record is appended (and flushed) to `samples.partial.jsonl` as
its batch finishes, keyed by a hash of the model's fingerprint, the task's name and version and the
exact request (token ids, sampling settings). A rerun into the same directory recomputes only what is
missing. `samples.jsonl` and `results.json` are written at the end, atomically and in item order, with
log-likelihoods rounded to 1e-6, so a resumed run writes the same bytes as an uninterrupted one (timings
live in `timing.json`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herd.eval.answers import extract, matches
from herd.eval.metrics import Metric, argmax, mean, proportion
from herd.eval.prompting import PromptBuilder, PromptSettings
from herd.eval.tasks.base import CodeItem, GenerateItem, LMItem, MCItem, NIAHItem, Task, ToolCallItem

if TYPE_CHECKING:
    from herd.infer.engine import LLMEngine
    from herd.loading import LoadedModel

BATCH_ITEMS = 32          # items per engine batch between two appends of the partial file
DIGITS = 6                # log-likelihoods in records are rounded to 1e-6 (see the module docstring)


def model_fingerprint(loaded: LoadedModel) -> str:
    """A cheap, stable hash of what the model computes: config, and a strided sample of every tensor.

    Hashing every byte of an 8B model takes a minute; a few thousand values per tensor changes whenever
    training or conversion changes the weights, which is what results are keyed on.
    """
    import torch

    h = hashlib.sha256(json.dumps(loaded.config.__dict__, sort_keys=True, default=str).encode())
    for name, tensor in sorted(loaded.model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step][:4096].to(device="cpu", dtype=torch.float32).contiguous()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class SampleStore:
    """Per-item records appended as they finish; what a killed run already did is read back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.exists():
            with path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        break           # a line cut by the crash: everything after it is recomputed
                    self.records[record["key"]] = record
        self._file = path.open("a", encoding="utf-8")

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        for record in records:
            self.records[record["key"]] = record
            self._file.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


@dataclass
class TaskResult:
    task: Task
    records: list[dict[str, Any]]
    metrics: dict[str, Metric]
    computed: int          # items computed in this run (the rest came from the partial file)


def _chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def _fit(context: list[int], longest: int, max_len: int) -> list[int]:
    """Left-truncate a context so context + the longest continuation fits (as lm-eval does)."""
    room = max_len - longest
    if room < 1:
        raise ValueError(f"a continuation of {longest} tokens does not fit the model's context of {max_len}")
    return context[-room:] if len(context) > room else context


class Evaluator:
    """Runs tasks on one loaded model through one engine."""

    def __init__(self, engine: LLMEngine, loaded: LoadedModel, settings: PromptSettings,
                 progress: bool = True, max_tokens: int | None = None, samples: int = 1,
                 temperature: float | None = None) -> None:
        self.engine, self.loaded, self.settings, self.progress = engine, loaded, settings, progress
        self.max_tokens = max_tokens
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.samples = samples
        # pass@1 from one greedy sample; pass@k from n samples at the Codex paper's temperature 0.8
        self.temperature = temperature if temperature is not None else (0.0 if samples == 1 else 0.8)
        self.fingerprint = model_fingerprint(loaded)
        self.max_len = engine.max_model_len

    # ----- kinds

    @staticmethod
    def _batched(requests: Sequence[tuple[Any, ...]], store: SampleStore, on_batch: Callable[[], None],
                 compute: Callable[[Sequence[Any]], list[dict[str, Any]]],
                 size: int = BATCH_ITEMS) -> tuple[list[dict[str, Any]], int]:
        """Every request's record in order (its key is the tuple's last element): those not stored yet
        are computed by `compute` in batches of `size`, each batch appended to the store as it ends."""
        todo = [r for r in requests if store.get(r[-1]) is None]
        for batch in _chunks(todo, size):
            store.add(compute(batch))
            on_batch()
        return [store.get(r[-1]) for r in requests], len(todo)  # type: ignore[misc]

    def _mc(self, task: Task, items: list[MCItem], builder: PromptBuilder, store: SampleStore,
            on_batch: Callable[[], None]) -> tuple[list[dict[str, Any]], int]:
        requests = []
        for item in items:
            ctx, conts = builder.choices(item)
            ctx = _fit(ctx, max(map(len, conts)), self.max_len)
            requests.append((item, ctx, conts, _key(self.fingerprint, task.name, task.version, ctx, conts)))

        def compute(batch: Sequence[Any]) -> list[dict[str, Any]]:
            scores = self.engine.score_many([(ctx, conts) for _, ctx, conts, _ in batch],
                                            progress=self.progress, desc=f"{task.name}")
            records = []
            for (item, _, _, key), per_choice in zip(batch, scores):
                lls = [round(s.logprob, DIGITS) for s in per_choice]
                norm = [ll / max(len(c), 1) for ll, c in zip(lls, item.choices)]
                pred, pred_norm = argmax(lls), argmax(norm)
                records.append({
                    "key": key, "task": task.name, "id": item.id, "gold": item.gold, "pred": pred,
                    "correct": pred == item.gold, "pred_norm": pred_norm, "correct_norm": pred_norm == item.gold,
                    "loglikelihoods": lls, "greedy": [s.greedy for s in per_choice],
                })
            return records

        return self._batched(requests, store, on_batch, compute)

    def _generate(self, task: Task, items: list[GenerateItem], builder: PromptBuilder, store: SampleStore,
                  on_batch: Callable[[], None]) -> tuple[list[dict[str, Any]], int]:
        from herd.infer.sampling import SamplingParams

        max_tokens = self.max_tokens or task.max_tokens
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=task.stop)
        requests = []
        for item in items:
            prompt = _fit(builder.prompt(item), max_tokens, self.max_len)
            key = _key(self.fingerprint, task.name, task.version, prompt, max_tokens, list(task.stop), task.extract)
            requests.append((item, prompt, key))

        def compute(batch: Sequence[Any]) -> list[dict[str, Any]]:
            outs = self.engine.generate([p for _, p, _ in batch], params, progress=self.progress)
            records = []
            for (item, _, key), out in zip(batch, outs):
                text = out.outputs[0].text
                pred = extract(text, task.extract)
                records.append({"key": key, "task": task.name, "id": item.id, "gold": item.answer, "pred": pred,
                                "correct": matches(pred, item.answer, task.extract), "response": text})
            return records

        return self._batched(requests, store, on_batch, compute)

    def _lm_windows(self, context: list[int], ids: list[int]) -> list[tuple[list[int], list[int]]]:
        """Disjoint windows of `ids`, each scored after as much preceding text as the context holds."""
        windows = []
        step = self.max_len - 1
        for start in range(0, len(ids), step):
            piece = ids[start:start + step]
            before = (context + ids[:start])[-(self.max_len - len(piece)):]
            windows.append((before, piece))
        return windows

    def _lm(self, task: Task, items: list[LMItem], builder: PromptBuilder, store: SampleStore,
            on_batch: Callable[[], None]) -> tuple[list[dict[str, Any]], int]:
        requests = []
        for item in items:
            ctx, ids = builder.text(item.text, item.prefix)
            scored_text = item.text[len(item.prefix):] if item.prefix and item.text.startswith(item.prefix) else item.text
            requests.append((item, self._lm_windows(ctx, ids), len(scored_text.encode("utf-8")),
                             _key(self.fingerprint, task.name, task.version, ctx, ids)))

        def compute(batch: Sequence[Any]) -> list[dict[str, Any]]:
            flat = [(ctx, [piece]) for _, windows, _, _ in batch for ctx, piece in windows]
            scores = iter(self.engine.score_many(flat, progress=self.progress, desc=task.name))
            records = []
            for item, windows, nbytes, key in batch:
                logprob = sum(next(scores)[0].logprob for _ in windows)
                tokens = sum(len(p) for _, p in windows)
                nll = round(-logprob, DIGITS - 2)
                records.append({"key": key, "task": task.name, "id": item.id, "nll": nll, "tokens": tokens,
                                "bytes": nbytes, "nll_per_token": round(nll / tokens, DIGITS),
                                "bits_per_byte": round(nll / (math.log(2) * max(nbytes, 1)), DIGITS)})
            return records

        return self._batched(requests, store, on_batch, compute)

    def _code(self, task: Task, items: list[CodeItem], builder: PromptBuilder, store: SampleStore,
              on_batch: Callable[[], None]) -> tuple[list[dict[str, Any]], int]:
        from herd.eval.passk import check_humaneval
        from herd.infer.sampling import SamplingParams
        from herd.sandbox import Sandbox

        if self.settings.chat or self.settings.shots:
            raise ValueError(f"{task.name} completes code as written: it takes neither --chat nor --shots")
        max_tokens = self.max_tokens or task.max_tokens
        requests = []
        for item in items:
            prompt = _fit(builder.prompt(item), max_tokens, self.max_len)
            seed = int(hashlib.sha256(item.id.encode()).hexdigest()[:8], 16)
            key = _key(self.fingerprint, task.name, task.version, prompt, max_tokens, list(task.stop),
                       self.samples, self.temperature, seed)
            requests.append((item, prompt, seed, key))

        def compute(batch: Sequence[Any]) -> list[dict[str, Any]]:
            params = [SamplingParams(temperature=self.temperature, max_tokens=max_tokens, stop=task.stop,
                                     n=self.samples, seed=seed) for _, _, seed, _ in batch]
            outs = self.engine.generate([p for _, p, _, _ in batch], params, progress=self.progress)
            sandbox = Sandbox()
            records = []
            for (item, _, _, key), out in zip(batch, outs):
                completions = [c.text for c in out.outputs]
                passed = [check_humaneval(item.problem, c, sandbox) for c in completions]
                records.append({"key": key, "task": task.name, "id": item.id, "gold": None, "pred": completions[0],
                                "correct": passed[0], "completions": completions, "passed": passed})
            return records

        return self._batched(requests, store, on_batch, compute, max(1, BATCH_ITEMS // self.samples))

    def _niah(self, task: Task, items: list[NIAHItem], builder: PromptBuilder, store: SampleStore,
              on_batch: Callable[[], None]) -> tuple[list[dict[str, Any]], int]:
        """Greedy retrieval of the needle asked about (the first of each case's queries)."""
        from herd.eval.niah import build_case, score_response
        from herd.infer.sampling import SamplingParams

        max_tokens = self.max_tokens or task.max_tokens
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        requests = []
        for item in items:
            others = [((k + 1) / item.needles + item.depth) % 1.0 for k in range(item.needles - 1)]
            case = build_case(self.loaded.tokenizer, item.length - max_tokens, [item.depth, *others], seed=item.seed,
                              bos=self.settings.bos)
            prompt, answer = case.queries[0], case.needles[0].value
            requests.append((item, prompt, answer, _key(self.fingerprint, task.name, task.version, prompt, max_tokens)))

        def compute(batch: Sequence[Any]) -> list[dict[str, Any]]:
            outs = self.engine.generate([p for _, p, _, _ in batch], params, progress=self.progress)
            records = []
            for (item, _, answer, key), out in zip(batch, outs):
                text = out.outputs[0].text
                hit = score_response(text, answer)
                records.append({"key": key, "task": task.name, "id": item.id, "gold": answer, "pred": text.strip(),
                                "correct": hit, "length": item.length, "depth": item.depth, "needles": item.needles})
            return records

        return self._batched(requests, store, on_batch, compute)

    def _tool_call(self, task: Task, items: list[ToolCallItem], builder: PromptBuilder, store: SampleStore,
                   on_batch: Callable[[], None]) -> tuple[list[dict[str, Any]], int]:
        from herd.eval.bfcl_ast import DECODER_FAILED, Check, attempted_call, check
        from herd.eval.tasks.bfcl import category_of
        from herd.infer.sampling import SamplingParams

        category = category_of(task.name)
        chat_format = self.loaded.chat_format
        if chat_format is None:
            raise ValueError(f"task {task.name} offers tools through the chat format; this model has none")
        max_tokens = self.max_tokens or task.max_tokens
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop_token_ids=tuple(sorted(chat_format.stop_ids)))
        requests = []
        for item in items:
            prompt = _fit(builder.tool_prompt(item), max_tokens, self.max_len)
            requests.append((item, prompt, _key(self.fingerprint, task.name, task.version, prompt, max_tokens)))

        def compute(batch: Sequence[Any]) -> list[dict[str, Any]]:
            outs = self.engine.generate([p for _, p, _ in batch], params, progress=self.progress)
            records = []
            for (item, _, key), out in zip(batch, outs):
                text = builder.tool_prefill() + out.outputs[0].text
                calls = [{c.name: c.arguments} for c in chat_format.parse_assistant(text).tool_calls]
                verdict = check(item.functions, calls, item.possible_answer, category)
                if not calls and category != "irrelevance" and attempted_call(chat_format.name, text):
                    # a call the format's parser cannot read is its own error class (BFCL's decoder failure),
                    # not a silent "no call"; irrelevance counts it as no call, as BFCL's relevance rule does
                    verdict = Check(False, "the answer starts a call that does not parse", DECODER_FAILED)
                # tuples (from a Python-list call) become lists, as the record reads back from JSON anyway
                pred = json.loads(json.dumps(calls, ensure_ascii=False, default=str))
                records.append({"key": key, "task": task.name, "id": item.id, "gold": list(item.possible_answer),
                                "pred": pred, "correct": verdict.valid, "error": verdict.error_type or None,
                                "response": text})
            return records

        return self._batched(requests, store, on_batch, compute)

    # ----- a task

    def run(self, task: Task, limit: int | None, store: SampleStore,
            on_batch: Callable[[], None] = lambda: None) -> TaskResult:
        pool = task.load()
        items = pool[:limit] if limit is not None else pool
        if not items:
            raise ValueError(f"task {task.name} has no items")
        if task.fewshot_pool is not None:
            pool = task.fewshot_pool()
        if task.kind == "niah":
            items = [i for i in items if isinstance(i, NIAHItem) and i.length <= self.max_len]
            if not items:
                raise ValueError(f"every {task.name} case is longer than the model's context ({self.max_len})")
        builder = PromptBuilder(task, pool, self.loaded.tokenizer, self.loaded.chat_format, self.settings)
        if task.kind == "mc":
            records, computed = self._mc(task, items, builder, store, on_batch)  # type: ignore[arg-type]
            metrics = {"acc": proportion([r["correct"] for r in records]),
                       "acc_norm": proportion([r["correct_norm"] for r in records])}
        elif task.kind == "generate":
            records, computed = self._generate(task, items, builder, store, on_batch)  # type: ignore[arg-type]
            metrics = {"exact_match": proportion([r["correct"] for r in records])}
        elif task.kind == "niah":
            records, computed = self._niah(task, items, builder, store, on_batch)  # type: ignore[arg-type]
            metrics = {"accuracy": proportion([r["correct"] for r in records])}
        elif task.kind == "tool_call":
            records, computed = self._tool_call(task, items, builder, store, on_batch)  # type: ignore[arg-type]
            metrics = {"accuracy": proportion([r["correct"] for r in records])}
        elif task.kind == "code":
            from herd.eval.passk import estimate_pass_at_k

            records, computed = self._code(task, items, builder, store, on_batch)  # type: ignore[arg-type]
            metrics = {}
            for k in (1, 10, 100):
                if k <= self.samples:
                    per_item = estimate_pass_at_k([len(r["passed"]) for r in records],
                                                  [sum(r["passed"]) for r in records], k)
                    metrics[f"pass@{k}"] = (proportion([bool(v) for v in per_item]) if self.samples == 1
                                            else mean([float(v) for v in per_item]))
        else:
            records, computed = self._lm(task, items, builder, store, on_batch)  # type: ignore[arg-type]
            metrics = {"nll_per_token": mean([r["nll_per_token"] for r in records]),
                       "bits_per_byte": mean([r["bits_per_byte"] for r in records])}
        return TaskResult(task, records, metrics, computed)


def run_evaluation(
    engine: LLMEngine,
    loaded: LoadedModel,
    tasks: Sequence[Task],
    out: str | Path,
    settings: PromptSettings | None = None,
    limit: int | None = None,
    progress: bool = True,
    max_tokens: int | None = None,
    samples: int = 1,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Evaluate `tasks`, writing `samples.jsonl`, `results.json` and `timing.json` under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or PromptSettings()
    evaluator = Evaluator(engine, loaded, settings, progress=progress, max_tokens=max_tokens, samples=samples,
                          temperature=temperature)
    store = SampleStore(out / "samples.partial.jsonl")
    started = time.perf_counter()
    results: list[TaskResult] = []
    timing: dict[str, Any] = {}
    try:
        for task in tasks:
            t0 = time.perf_counter()
            result = evaluator.run(task, limit, store)
            results.append(result)
            timing[task.name] = {"seconds": round(time.perf_counter() - t0, 3), "items_computed": result.computed,
                                 "items": len(result.records)}
    finally:
        store.close()
    summary = {
        "model": {"spec": loaded.source, "fingerprint": evaluator.fingerprint},
        "settings": {**settings.as_dict(), "limit": limit, "max_tokens": max_tokens, "samples": samples,
                     "temperature": evaluator.temperature},
        "tasks": {
            r.task.name: {
                "version": r.task.version, "kind": r.task.kind, "source": r.task.source, "licence": r.task.licence,
                "n": len(r.records), "metrics": {k: m.as_dict() for k, m in r.metrics.items()},
                # a tool_call task always prompts through the chat format (--chat implied)
                "chat": settings.chat or r.task.kind == "tool_call",
            }
            for r in results
        },
    }
    lines = [json.dumps(rec, ensure_ascii=False, sort_keys=True) for r in results for rec in r.records]
    _write_atomic(out / "samples.jsonl", "\n".join(lines) + "\n")
    _write_atomic(out / "results.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    timing["total_seconds"] = round(time.perf_counter() - started, 3)
    _write_atomic(out / "timing.json", json.dumps(timing, indent=2, sort_keys=True) + "\n")
    return summary


def load_tasks(names: Sequence[str], task_files: Sequence[str]) -> list[Task]:
    from herd.eval.tasks import get_task, load_task_file

    tasks = [get_task(n) for n in names] + [load_task_file(f) for f in task_files]
    if not tasks:
        raise ValueError("no task given: use --task NAME (see `herd eval list`) or --task-file FILE.jsonl")
    seen: set[str] = set()
    for t in tasks:
        if t.name in seen:
            raise ValueError(f"task {t.name} given twice")
        seen.add(t.name)
    return tasks
