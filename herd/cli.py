"""The `herd` command. Each stage registers its own subcommands through a `register(subparsers)` hook."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands; each exposes `register(subparsers)`.
COMMAND_MODULES = ("herd.checkpoint.cli", "herd.infer.cli", "herd.serve.cli", "herd.train.cli", "herd.train.demo_cli",
                   "herd.data.cli", "herd.data.curation.cli", "herd.train.plan_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herd", description="The Llama 3 herd: models, data, training, inference in one package."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from herd.checkpoint.errors import CheckpointError
    from herd.tokenizer.base import TokenizerError

    try:
        return int(args.func(args) or 0)
    except (CheckpointError, TokenizerError, FileNotFoundError, ValueError) as exc:
        print(f"herd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
