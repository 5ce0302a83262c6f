"""`herd demo`: the command for herd.train.demo."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole pretraining story on this CPU: corpus, pretrain, long context, anneal, average, report",
        description="Build a local corpus, tokenize it with the Llama 3 tokenizer, pretrain a small Llama 3, run a "
        "gated long-context stage, anneal and average checkpoints, then write report.md with plots (~10 min on "
        "2 cores at --scale 1).",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every token budget (0.2: a quick smoke run)")
    p.add_argument("--max-docs", type=int, default=1500, help="documents per corpus source (0: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from herd.train.demo import run_demo

    if args.scale <= 0:
        raise ValueError(f"--scale must be > 0, got {args.scale}")
    run_demo(args.out, scale=args.scale, max_docs=args.max_docs or None)
    return 0
