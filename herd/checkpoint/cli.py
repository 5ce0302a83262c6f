"""`herd convert`: move a checkpoint between Meta, Hugging Face and GGUF formats."""

from __future__ import annotations

import argparse

DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between meta, hf and gguf formats",
        description="Read SRC (Meta dir, Hugging Face dir, .gguf file or built-in model name) and write DST.",
    )
    p.add_argument("src", help="source checkpoint: directory, .gguf file, or built-in name")
    p.add_argument("dst", help="destination directory (meta/hf) or .gguf file / directory (gguf)")
    p.add_argument("--to", required=True, choices=["hf", "meta", "gguf"], help="output format")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="cast weights (meta/hf); default keeps them")
    p.add_argument("--gguf-type", default="f16", choices=["f16", "q8_0"], help="GGUF tensor type")
    p.add_argument("--shards", type=int, default=1, help="model-parallel shards for --to meta")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    import torch

    from herd.checkpoint.formats import read_checkpoint, write_checkpoint
    from herd.loading import resolve_spec

    checkpoint = read_checkpoint(resolve_spec(args.src))
    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    out = write_checkpoint(
        checkpoint, args.dst, args.to, dtype=dtype, gguf_type=args.gguf_type, num_shards=args.shards
    )
    c = checkpoint.config
    print(
        f"wrote {args.to} checkpoint to {out} ({c.n_layers} layers, dim {c.dim}, vocab {c.vocab_size}, "
        f"from {checkpoint.format})"
    )
    return 0
