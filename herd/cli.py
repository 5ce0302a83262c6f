"""The `herd` command. Each stage registers its own subcommands through a `register(subparsers)` hook.

Errors a user can fix (a bad model spec, size, path or flag; a missing optional extra) are printed as
one line naming the problem and the valid choices, with exit code 2; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from herd.cli_args import HerdArgumentParser, UsageError, extra_for, fail, missing_extra_message

# Modules that add subcommands; each exposes `register(subparsers)` and imports nothing heavy at import
# time, so `herd --help` works without torch's start-up cost and without any optional extra installed.
COMMAND_MODULES = ("herd.infer.cli", "herd.serve.cli", "herd.commands.convert", "herd.data.cli",
                   "herd.data.curation.cli", "herd.train.cli", "herd.train.demo_cli", "herd.train.plan_cli",
                   "herd.eval.cli", "herd.post.cli", "herd.post.average_cli",
                   "herd.post.chatdata.cli", "herd.tools.cli", "herd.tools.tooldata_cli", "herd.safety.cli",
                   "herd.scaling.cli", "herd.multimodal.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = HerdArgumentParser(
        prog="herd", description="The Llama 3 herd: models, data, training, inference in one package.",
        epilog="`herd COMMAND --help` shows a command's options.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"herd {args.command}"
    from herd.checkpoint.errors import CheckpointError
    from herd.tokenizer.base import TokenizerError

    try:
        return int(args.func(args) or 0)
    except (UsageError, CheckpointError, TokenizerError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        return fail(prog, str(exc))
    except ModuleNotFoundError as exc:
        extra = extra_for(exc, args.command)
        if extra is None:
            raise
        return fail(prog, missing_extra_message(extra, exc.name or "?"))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
