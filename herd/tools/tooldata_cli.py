"""`herd tooldata`: verified tool-use trajectories as SFT data (herd JSONL), for `herd sft` / `herd posttrain`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from herd.cli_args import add_device_arg, add_dtype_arg, add_out_arg

EXAMPLE = "herd tooldata --out /tmp/tooldata --n 60"


def register(subparsers: argparse._SubParsersAction) -> None:
    from herd.tools.tool_tasks import CATEGORIES

    p = subparsers.add_parser(
        "tooldata", help="tool-use SFT data: agent-loop trajectories with real tools, verified, message-level masks",
        description="Generate tool-use tasks with known answers (categories: " + ", ".join(CATEGORIES) + "), run "
                    "each through the agent loop with the real tools (sandboxed code interpreter and math engine, "
                    "offline search; injected outages for failing tools), keep the trajectories whose answer "
                    "verifies, and write them as herd SFT JSONL in --model's chat format (tools placed as the model "
                    "is prompted). An assistant call whose own result was an error is kept with weight 0 (context, "
                    "not a target). Teacher 'oracle' follows each task's plan (calls built from the results so far); "
                    "'model' samples --model itself --attempts times per task. Example: " + EXAMPLE)
    add_out_arg(p, None, "output directory: tools.jsonl (the SFT dialogs) and report.json")
    p.add_argument("--n", type=int, default=60, help="number of tasks (default 60)")
    p.add_argument("--categories", default=",".join(CATEGORIES), help="comma-separated subset of " + ",".join(CATEGORIES))
    p.add_argument("--teacher", default="oracle", choices=["oracle", "model"])
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="the chat format the data is written in, and the teacher with --teacher model")
    p.add_argument("--attempts", type=int, default=1, help="trajectories per task with --teacher model (default 1)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of a model teacher")
    p.add_argument("--max-steps", type=int, default=8, help="most model turns per trajectory")
    p.add_argument("--max-tokens", type=int, default=256, help="most new tokens per model turn")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per tool call")
    p.add_argument("--seed", type=int, default=0)
    add_dtype_arg(p, allow_auto=True)
    add_device_arg(p)
    p.set_defaults(func=run_tooldata)


def run_tooldata(args: argparse.Namespace) -> int:
    from herd.cli_args import resolve_device
    from herd.infer.auto_dtype import load_for_inference
    from herd.post.chatdata.rows import progress
    from herd.tools.tool_tasks import generate_tasks
    from herd.tools.tooldata import OracleTeacher, make_tool_data, write_tool_data

    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    tasks = generate_tasks(args.n, categories, seed=args.seed)
    if args.attempts < 1:
        raise ValueError(f"--attempts must be >= 1, got {args.attempts}")
    loaded = load_for_inference(args.model, args.dtype, resolve_device(args.device))[0]
    if args.teacher == "oracle":
        def teacher(task, attempt):  # type: ignore[no-untyped-def]
            return OracleTeacher(task)
        attempts = 1
    else:
        from herd.infer.engine import LLMEngine
        from herd.tools.agent import EngineAgentModel, Toolbox

        engine = LLMEngine(loaded)

        def teacher(task, attempt):  # type: ignore[no-untyped-def]
            model = EngineAgentModel(loaded, Toolbox(task.tools), max_tokens=args.max_tokens,
                                     temperature=args.temperature if attempt or args.attempts > 1 else 0.0,
                                     engine=engine, seed=args.seed * 1000 + attempt)
            return model
        attempts = args.attempts
    records, report = make_tool_data(progress(tasks, len(tasks), "tooldata"), teacher, loaded.chat_format,
                                     attempts=attempts, max_steps=args.max_steps, timeout_s=args.timeout)
    out = Path(args.out)
    write_tool_data(str(out / "tools.jsonl"), records)
    report_path = out / "report.json"
    report_path.write_text(json.dumps({"teacher": args.teacher, "model": args.model, "seed": args.seed,
                                       **report.to_json()}, indent=2) + "\n")
    print(report.summary(), file=sys.stderr)
    print(f"wrote {len(records)} dialogs to {out / 'tools.jsonl'} (report: {report_path})", file=sys.stderr)
    return 0
