"""`herd eval list | run | report`: the evaluation harness on the command line."""

from __future__ import annotations

import argparse
import sys

from herd.cli_args import add_device_arg, add_dtype_arg, add_model_arg, add_out_arg


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The model a subcommand runs: --model, --device, --dtype (auto allowed)."""
    add_model_arg(parser)
    add_device_arg(parser)
    add_dtype_arg(parser, allow_auto=True)


def eval_subcommands(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `herd eval` subcommand group, for a stage above the harness to add its own evaluation to
    (`herd eval safety` is registered by herd.safety.cli): the harness never imports the stages it serves."""
    return subparsers.choices["eval"].herd_subcommands


def register(subparsers: argparse._SubParsersAction) -> None:
    e = subparsers.add_parser("eval", help="evaluate a model on benchmark tasks",
                              description="Evaluation harness: tasks scored through the engine.")
    sub = e.add_subparsers(dest="eval_command", required=True, metavar="SUBCOMMAND")
    e.herd_subcommands = sub  # type: ignore[attr-defined]  # stages above the harness add theirs (eval_subcommands)

    lst = sub.add_parser("list", help="the registered tasks", description="List the registered tasks.")
    lst.set_defaults(func=run_list)

    r = sub.add_parser("run", help="score a model on tasks",
                       description="Score a model on tasks; results.json + samples.jsonl go to --out. "
                                   "A rerun into the same --out recomputes only missing items.")
    add_model_args(r)
    r.add_argument("--task", action="append", default=[], metavar="NAME", help="a registered task (repeatable)")
    r.add_argument("--task-file", action="append", default=[], metavar="FILE.jsonl",
                   help="an ad-hoc task: {query, choices, gold} or {prompt, answer} lines (repeatable)")
    r.add_argument("--shots", type=int, default=0, help="few-shot examples per item (from the task's other items)")
    r.add_argument("--fixed-fewshot", action="store_true",
                   help="the same few-shot examples for every item (their shared prefix is computed once)")
    r.add_argument("--limit", type=int, default=None, help="only the first N items of each task")
    r.add_argument("--chat", action="store_true",
                   help="prompt through the model's chat format (few-shot as turns; implied for tool_call tasks)")
    r.add_argument("--system", default=None, help="system prompt (with --chat)")
    r.add_argument("--tool-choice", default="auto", choices=["auto", "required"],
                   help="tool_call tasks: auto (the model decides whether to call: BFCL's setting) or required "
                        "(the answer starts with the format's call prefix, as herd serve does for "
                        "tool_choice=required; the model still picks the function and arguments)")
    r.add_argument("--no-bos", action="store_true", help="no BOS token before the context (lm-eval's HF default)")
    r.add_argument("--seed", type=int, default=1234, help="seed of the few-shot draw")
    r.add_argument("--max-tokens", type=int, default=None, help="generation budget (default: the task's)")
    r.add_argument("--samples", type=int, default=1, help="samples per code problem (pass@k for k <= samples)")
    r.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature for code (default: 0 with one sample, 0.8 with more)")
    r.add_argument("--quantization", default=None, choices=["int8", "fp8", "int4"], help="quantize for inference")
    r.add_argument("--kv-cache-mb", type=int, default=None, help="KV cache size (default 1 GiB on CPU)")
    add_out_arg(r, None, "directory for results.json, samples.jsonl and timing.json")
    r.set_defaults(func=run_run)

    rob = sub.add_parser("robustness", help="the paper's multiple-choice robustness study",
                         description="Accuracy under label variants, answer orders, prompt formats and few-shot "
                                     "label bias (paper section 5.1.2); writes robustness.{json,md,png} to --out.")
    add_model_args(rob)
    rob.add_argument("--task", required=True, help="a multiple-choice task (see `herd eval list`)")
    rob.add_argument("--limit", type=int, default=None, help="only the first N items")
    rob.add_argument("--shots", type=int, default=0, help="few-shot examples (> 0 adds the label-bias study)")
    rob.add_argument("--no-bos", action="store_true", help="no BOS token before the context")
    add_out_arg(rob, None, "directory for robustness.json, robustness.md and robustness.png")
    rob.set_defaults(func=run_robustness_cmd)

    con = sub.add_parser("contamination", help="8-gram overlap of task items with token shards",
                         description="The paper's contamination analysis (section 5.1.4): the share of each task's "
                                     "items covered by 8-grams of the pretraining shards, and (with --results) "
                                     "accuracy on clean vs all items. Writes contamination.{json,md} to --out.")
    con.add_argument("--shards", required=True, action="append", metavar="DIR",
                     help="token shards: a source directory or a folder of them (repeatable)")
    con.add_argument("--task", action="append", default=[], metavar="NAME", help="a registered task (repeatable)")
    con.add_argument("--task-file", action="append", default=[], metavar="FILE.jsonl", help="an ad-hoc task file")
    con.add_argument("--results", default=None, metavar="DIR",
                     help="a `herd eval run` directory: its per-item correctness fills the accuracy columns")
    con.add_argument("--n", type=int, default=8, help="n-gram length (default 8, as the paper)")
    add_out_arg(con, None, "directory for contamination.json and contamination.md")
    con.set_defaults(func=run_contamination)

    rep = sub.add_parser("report", help="write report.md with plots from a results directory",
                         description="Write DIR/report.md (scores with 95%% intervals) and its PNG plots.")
    rep.add_argument("dir", metavar="DIR", help="a directory written by `herd eval run`")
    rep.set_defaults(func=run_report)


def run_list(args: argparse.Namespace) -> int:
    from herd.eval.tasks import REGISTRY

    width = max(map(len, REGISTRY))
    for name in sorted(REGISTRY):
        t = REGISTRY[name]
        print(f"{name:<{width}}  {t.kind:<8} v{t.version}  {t.description}  [{t.licence}; {t.source}]")
    return 0


def run_run(args: argparse.Namespace) -> int:
    from herd.cli_args import UsageError
    from herd.eval.harness import load_tasks, run_evaluation
    from herd.eval.prompting import PromptSettings

    if args.shots < 0:
        raise UsageError(f"--shots must be >= 0, got {args.shots}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    try:
        tasks = load_tasks(args.task, args.task_file)
        for t in tasks:       # data problems (a missing package, a bad file) before the model loads
            t.load()
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    settings = PromptSettings(shots=args.shots, seed=args.seed, bos=not args.no_bos, chat=args.chat,
                              system=args.system, fixed_fewshot=args.fixed_fewshot, tool_choice=args.tool_choice)
    loaded, engine = engine_for(args, args.quantization, args.kv_cache_mb)
    summary = run_evaluation(engine, loaded, tasks, args.out, settings, limit=args.limit,
                             progress=sys.stderr.isatty(), max_tokens=args.max_tokens, samples=args.samples,
                             temperature=args.temperature)
    for name, task in summary["tasks"].items():
        scores = ", ".join(f"{k} {m['value']:.4f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"
                           for k, m in task["metrics"].items())
        print(f"{name} (n={task['n']}): {scores}")
    print(f"wrote {args.out}/results.json and samples.jsonl")
    return 0


def engine_for(args: argparse.Namespace, quantization: str | None = None, kv_cache_mb: int | None = None):  # type: ignore[no-untyped-def]
    """(loaded model, LLMEngine) for a subcommand's --model/--device/--dtype."""
    from herd.cli_args import resolve_device, warn_if_slow_dtype
    from herd.infer.auto_dtype import load_for_inference
    from herd.infer.engine import EngineConfig, LLMEngine

    device = resolve_device(args.device)
    warn_if_slow_dtype(args.dtype, device)
    loaded = load_for_inference(args.model, args.dtype, device)[0]
    config = EngineConfig(quantization=quantization, kv_cache_bytes=None if kv_cache_mb is None else kv_cache_mb << 20)
    return loaded, LLMEngine(loaded, config)


def run_robustness_cmd(args: argparse.Namespace) -> int:
    from herd.cli_args import UsageError
    from herd.eval.robustness import run_robustness
    from herd.eval.tasks import get_task

    try:
        task = get_task(args.task)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    if task.kind != "mc":
        raise UsageError(f"--task {task.name} is a {task.kind} task; the robustness study needs a multiple-choice task")
    task.load()
    loaded, engine = engine_for(args)
    summary = run_robustness(engine, loaded, task, args.out, limit=args.limit, shots=args.shots, bos=not args.no_bos,
                             progress=sys.stderr.isatty())
    for r in summary["variants"]:
        print(f"{r['study']:<20} {r['variant']:<26} acc {r['value']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
    print(f"wrote {args.out}/robustness.md and robustness.png")
    return 0


def run_contamination(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from herd.cli_args import UsageError
    from herd.eval.contamination import contamination_report, write_report
    from herd.eval.harness import load_tasks
    from herd.eval.tasks.base import CodeItem, GenerateItem, LMItem, MCItem, ToolCallItem
    from herd.tokenizer.llama3 import Llama3Tokenizer

    try:
        tasks = load_tasks(args.task, args.task_file)
    except KeyError as exc:
        raise UsageError(str(exc.args[0])) from None
    for d in args.shards:
        if not Path(d).is_dir():
            raise UsageError(f"--shards {d}: no such directory")
    tok = Llama3Tokenizer()   # the tokenizer `herd tokenize` writes shards with

    def text(item) -> str:  # type: ignore[no-untyped-def]
        if isinstance(item, MCItem):
            return item.query + item.choices[item.gold]
        if isinstance(item, GenerateItem):
            return item.prompt + " " + item.answer
        if isinstance(item, CodeItem):
            return item.prompt + item.problem.get("canonical_solution", "")
        if isinstance(item, ToolCallItem):   # the question a model could have memorised the calls of
            return "\n".join(m["content"] for m in item.messages)
        assert isinstance(item, LMItem)
        return item.text

    items = {t.name: [tok.encode(text(i), bos=False) for i in t.load()] for t in tasks}
    correct = None
    if args.results:
        samples = Path(args.results) / "samples.jsonl"
        if not samples.is_file():
            raise UsageError(f"--results {args.results}: no samples.jsonl there")
        by_task: dict[str, dict[str, bool]] = {}
        for line in samples.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if "correct" in rec:
                by_task.setdefault(rec["task"], {})[rec["id"]] = bool(rec["correct"])
        correct = {}
        for t in tasks:
            got = by_task.get(t.name)
            if got is None:
                continue
            ids = [i.id for i in t.load()]
            if any(i not in got for i in ids):   # a --limit run: scan only the evaluated items
                kept = [n for n, i in enumerate(ids) if i in got]
                items[t.name] = [items[t.name][n] for n in kept]
                ids = [ids[n] for n in kept]
            correct[t.name] = [got[i] for i in ids]
    report = contamination_report(args.shards, items, correct, n=args.n)
    json_path, md_path = write_report(report, args.out)
    for name, t in report["tasks"].items():
        shares = ", ".join(f">={r['threshold']:.1f}: {r['contaminated_share'] * 100:.1f}%" for r in t["table"])
        print(f"{name} ({t['items']} items): contaminated {shares}")
    print(f"wrote {json_path} and {md_path}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from herd.eval.report import write_report

    path = write_report(args.dir)
    print(f"wrote {path}")
    return 0
