"""`herd curate CONFIG.toml`: run (or resume) the curation pipeline of a recipe."""

from __future__ import annotations

import argparse
import json

from herd.config import add_recipe_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "curate", help="run the web-data curation pipeline of a TOML recipe (datatrove)",
        description="Read, extract, filter, dedup (URL, MinHash, lines), classify and mix documents as the "
                    "recipe says; writes curated/<category>/*.jsonl, token shards under tokens/, mix.toml (train on "
                    "it with a pretrain recipe's data.mix_file) and report.md in the output directory. A relaunch "
                    "skips every finished task.",
    )
    add_recipe_arguments(p, "tasks=4 --set quality.annotator=heuristic")
    p.add_argument("--no-report", action="store_true", help="skip report.md and the histograms")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from herd.data.curation.config import load_config
    from herd.data.curation.pipeline import run_curation

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        from herd.config import print_recipe

        print_recipe(cfg, args.config)
        return 0
    summary = run_curation(cfg, report=not args.no_report)
    if summary.get("pending"):
        return 0
    print(json.dumps({"output_dir": cfg.output_dir, "mix": summary["mix"]["pretrain"]["weights"],
                      "stages_run": summary["stages_run"]}))
    return 0
