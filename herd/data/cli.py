"""`herd tokenize` (files -> token shards) and `herd corpus` (the local corpus from the Python install)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from herd.cli_args import add_out_arg


def register(subparsers: argparse._SubParsersAction) -> None:
    t = subparsers.add_parser(
        "tokenize", help="tokenize JSONL/Parquet/text into token shards",
        description="Tokenize files (or directories) with the Llama 3 tokenizer into memory-mapped token shards "
                    "with a manifest. Malformed JSON lines are counted and skipped.",
    )
    t.add_argument("inputs", nargs="+", metavar="SRC", help="input files or directories")
    add_out_arg(t, None, "output directory (one per source)")
    t.add_argument("--source-name", required=True, help="name of the source (e.g. general, code, math)")
    t.add_argument("--format", choices=["jsonl", "parquet", "text"], default=None,
                   help="input format (default: by file suffix; .jsonl/.json/.ndjson, .parquet, else text)")
    t.add_argument("--text-field", default="text", help="JSON key / Parquet column holding the text")
    t.add_argument("--text-mode", choices=["file", "paragraphs"], default="file",
                   help="plain text: one document per file, or split on blank lines")
    t.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: CPU count)")
    t.add_argument("--validation-fraction", type=float, default=0.01, help="held-out share of documents")
    t.add_argument("--split-seed", type=int, default=0, help="seed of the held-out document choice")
    t.set_defaults(func=run_tokenize)

    c = subparsers.add_parser(
        "corpus", help="build the local corpus (stdlib docs/code, math problems, local translations)",
        description="Write general/code/math/multilingual JSONL files from what this Python install and "
                    "machine have; with --tokenize also token shards under OUT_DIR/tokens/<source>.",
    )
    c.add_argument("out_dir", metavar="OUT_DIR")
    c.add_argument("--max-docs", type=int, default=None, help="at most this many documents per source")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--tokenize", action="store_true", help="also tokenize every source")
    c.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: CPU count)")
    c.add_argument("--validation-fraction", type=float, default=0.01)
    c.set_defaults(func=run_corpus)


def run_tokenize(args: argparse.Namespace) -> int:
    from herd.data.tokenize_sources import tokenize_files

    manifest = tokenize_files(
        args.inputs, args.out, args.source_name, fmt=args.format, text_field=args.text_field,
        text_mode=args.text_mode, workers=args.workers, validation_fraction=args.validation_fraction,
        split_seed=args.split_seed,
    )
    print(json.dumps({k: manifest[k] for k in ("source", "documents", "tokens", "skipped")}
                     | {"validation_documents": manifest["split"]["validation_documents"], "out": str(args.out)}))
    return 0


def run_corpus(args: argparse.Namespace) -> int:
    from herd.data.local_corpus import build_local_corpus, unigram_entropy

    out = Path(args.out_dir)
    paths = build_local_corpus(out, max_docs_per_source=args.max_docs, seed=args.seed)
    summary = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    for name, info in summary["sources"].items():
        print(f"{name:13s} {info['documents']:7d} documents {info['characters']:11d} characters  {out / info['path']}")
    for name, why in summary["absent"].items():
        print(f"{name:13s} absent: {why}")
    if args.tokenize:
        from herd.data.mixture import NAMED_MIXES
        from herd.data.tokenize_sources import tokenize_files

        dirs = {}
        for name, path in paths.items():
            dirs[name] = out / "tokens" / name
            m = tokenize_files([path], dirs[name], name, workers=args.workers,
                               validation_fraction=args.validation_fraction)
            print(f"{name:13s} {m['documents']:7d} documents {m['tokens']:11d} tokens  {dirs[name]}")
        print(f"unigram entropy of the corpus: {unigram_entropy(dirs):.4f} nats/token")
        if set(NAMED_MIXES["llama3"]) <= set(dirs):
            print(f"unigram entropy under the llama3 mix: {unigram_entropy(dirs, 'llama3'):.4f} nats/token")
    return 0
