"""`herd demo`: the command for herd.train.demo."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from herd.cli_args import add_out_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole pretraining story on this CPU: corpus, curate, pretrain, long context, anneal, average, report",
        description="Build a local corpus, curate it (herd curate), pretrain a small Llama 3 on the curated mix, run "
        "a gated long-context stage, anneal, average checkpoints and write report.md (under 20 min on 2 cores at "
        "--scale 1). SIGTERM or Ctrl-C stops after saving; --resume continues.",
    )
    add_out_arg(p, "runs/demo", "output directory")
    p.add_argument("--scale", type=float, default=None,
                   help="multiply every token budget (default 1; 0.2: a ~3-minute smoke run whose gates may not pass)")
    p.add_argument("--max-docs", type=int, default=None, help="raw documents per corpus source (default 150; 0: all)")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped run in --out: finished stages are skipped, the stopped one resumes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from herd.train.demo import DemoError, DemoState, StopRequested, run_demo

    scale, max_docs = args.scale, args.max_docs
    if args.resume:  # the run's own settings, unless given (then they must match; run_demo checks)
        try:
            saved = DemoState.load(Path(args.out)).settings
        except DemoError as exc:
            print(f"herd demo: {exc}", file=sys.stderr)
            return 2
        scale = saved.scale if scale is None else scale
        max_docs = saved.max_docs if max_docs is None else (max_docs or None)
    else:
        scale = 1.0 if scale is None else scale
        max_docs = 150 if max_docs is None else (max_docs or None)
    try:
        run_demo(args.out, scale=scale, max_docs=max_docs, resume=args.resume)
    except DemoError as exc:
        print(f"\nherd demo: {exc}", file=sys.stderr)
        return 2
    except StopRequested as exc:
        print(f"\nherd demo: stopped by {exc} (the interrupted stage saved its progress); continue with: "
              f"herd demo --out {shlex.quote(args.out)} --resume", file=sys.stderr)
        return 128 + exc.signum if exc.signum else 1
    return 0
