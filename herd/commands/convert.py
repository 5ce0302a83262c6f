"""`herd convert SRC DST --to hf|meta|gguf|herd-vlm`: any checkpoint herd reads, written in any format it writes.

A Hugging Face mllama (Llama 3.2 Vision) directory converts to herd's vision-language format
(`--to herd-vlm`) or gives its text model to any text format.

SRC is a Meta or Hugging Face directory, a .gguf file, a built-in model name, or a training checkpoint
(`step_XXXXXXXX`, or a checkpoints directory: its newest), single-process or distributed (a DCP
checkpoint from any layout is consolidated in this one process, no GPU or process group needed).
The command lives in the command-line layer, not in herd.checkpoint: it reads specs through the
facade (herd.loading) and training checkpoints through herd.train, both above the core.
`herd export` is the old spelling of the training-checkpoint case, kept as a deprecated alias.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from herd.cli_args import UsageError, add_dtype_arg

FORMATS = ("hf", "meta", "gguf", "herd-vlm")
GGUF_TYPES = ("f16", "q8_0")


def _add_convert_args(p: argparse.ArgumentParser, src_help: str) -> None:
    p.add_argument("src", help=src_help)
    p.add_argument("dst", help="destination directory (meta/hf) or .gguf file / directory (gguf)")
    p.add_argument("--to", required=True, choices=FORMATS, help="output format")
    add_dtype_arg(p, default=None, help="cast the weights for meta/hf (float32|bfloat16|float16, aliases "
                                        "fp32|bf16|fp16); default keeps them")
    p.add_argument("--gguf-type", default="f16", choices=GGUF_TYPES, help="GGUF tensor type (default f16)")
    p.add_argument("--shards", type=_positive, default=1, help="model-parallel shards for --to meta (default 1)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid shard count {text!r} (a whole number >= 1)")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a checkpoint (Meta, Hugging Face, GGUF, built-in, or a training checkpoint) to hf|meta|gguf",
        description="Read SRC (Meta dir, Hugging Face dir, .gguf file, built-in model name, or a training "
        "checkpoint: step_XXXXXXXX or a directory of them, single-process or distributed) and write DST.",
    )
    _add_convert_args(p, "source: checkpoint directory, .gguf file, built-in name, or training checkpoint(s)")
    p.set_defaults(func=run_convert)

    e = subparsers.add_parser(
        "export", help="deprecated: the same as `herd convert` (a training checkpoint is a convert source)",
        description="Deprecated alias of `herd convert`, kept so old scripts run.",
    )
    _add_convert_args(e, "training checkpoint: step_XXXXXXXX directory or a checkpoints directory (its newest)")
    e.set_defaults(func=run_export)


def is_training_checkpoint(path: Path) -> bool:
    """A `step_XXXXXXXX` directory with state.json, or a directory holding such directories.

    Checked by file names only, so that Meta/HF/GGUF sources never import the training stack.
    """
    if not path.is_dir() or (path / "params.json").is_file() or (path / "config.json").is_file():
        return False
    if path.name.startswith("step_") and (path / "state.json").is_file():
        return True
    return any(child.name.startswith("step_") and (child / "state.json").is_file() for child in path.iterdir())


def read_source(spec: str):  # type: ignore[no-untyped-def]  # -> herd.checkpoint.Checkpoint
    from herd.checkpoint.formats import read_checkpoint
    from herd.loading import resolve_spec

    if spec.startswith("random:"):
        raise UsageError(f"{spec!r} is not a checkpoint; convert reads a Meta/Hugging Face directory, a .gguf "
                         "file, a built-in name or a training checkpoint")
    path = Path(spec).expanduser()
    if is_training_checkpoint(path):
        from herd.train.export import read_training_checkpoint

        return read_training_checkpoint(path)
    return read_checkpoint(resolve_spec(spec))


def is_mllama(path: Path) -> bool:
    """A Hugging Face Llama 3.2 Vision (`mllama`) directory."""
    import json

    config = path / "config.json"
    return path.is_dir() and config.is_file() and json.loads(config.read_text()).get("model_type") == "mllama"


def _convert_mllama(path: Path, args: argparse.Namespace) -> int:
    """`--to herd-vlm`: the whole vision model in herd's format; `--to hf|meta|gguf`: its frozen text model
    (Llama 3.2 11B Vision holds Llama 3.1 8B unchanged), without the 8 new token rows."""
    from herd.checkpoint.formats import Checkpoint, directory_tokenizer, write_checkpoint
    from herd.cli_args import torch_dtype
    from herd.multimodal.hf_mllama import read_hf_mllama

    dtype = torch_dtype(args.dtype) if args.dtype else None
    config, state = read_hf_mllama(path)
    if args.to == "herd-vlm":
        from herd.multimodal.io import save_vision_language

        out = save_vision_language(args.dst, config, state, dtype)
        print(f"wrote herd-vlm checkpoint to {out} ({config.text.n_layers} text layers + cross-attention before "
              f"{list(config.cross_attention_before)}, vision {config.vision.layers}+{config.vision.global_layers} "
              f"layers, from mllama {path})")
        return 0
    text = {k.removeprefix("language_model."): v for k, v in state.items() if k.startswith("language_model.")}
    try:
        tokenizer = directory_tokenizer(path, config.text)
        if tokenizer is not None:
            tokenizer.check_fits(config.text.vocab_size)
    except Exception:  # noqa: BLE001 - mllama's tokenizer counts the image token past the text vocabulary
        tokenizer = None
    checkpoint = Checkpoint(config.text, text, tokenizer, "hf-mllama", path)
    out = write_checkpoint(checkpoint, args.dst, args.to, dtype=dtype, gguf_type=args.gguf_type, num_shards=args.shards)
    print(f"wrote {args.to} checkpoint of the text model to {out} ({config.text.n_layers} layers, dim "
          f"{config.text.dim}, from mllama {path})")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from herd.checkpoint.formats import write_checkpoint
    from herd.cli_args import torch_dtype

    if is_mllama(Path(args.src).expanduser()):
        return _convert_mllama(Path(args.src).expanduser(), args)
    if args.to == "herd-vlm":
        raise UsageError("--to herd-vlm needs a vision-language source (a Hugging Face mllama directory)")
    checkpoint = read_source(args.src)
    if "score.weight" in checkpoint.state:  # a reward model's training checkpoint (herd rm train)
        return _convert_reward_model(checkpoint, args)
    dtype = torch_dtype(args.dtype) if args.dtype else None
    out = write_checkpoint(checkpoint, args.dst, args.to, dtype=dtype, gguf_type=args.gguf_type,
                           num_shards=args.shards)
    c = checkpoint.config
    print(f"wrote {args.to} checkpoint to {out} ({c.n_layers} layers, dim {c.dim}, vocab {c.vocab_size}, "
          f"from {checkpoint.format} {checkpoint.path})")
    return 0


def _convert_reward_model(checkpoint, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    """A reward model's training checkpoint as Hugging Face `LlamaForSequenceClassification`."""
    from herd.checkpoint.hf import write_hf_sequence_classification

    if args.to != "hf":
        raise UsageError(f"a reward model converts to --to hf (LlamaForSequenceClassification) only, not {args.to}")
    tokenizer = checkpoint.tokenizer
    if tokenizer is None:  # the run's exported model directory carries the starting model's tokenizer
        from herd.tokenizer.files import tokenizer_from_directory

        run_dir = next((d for d in (checkpoint.path.parent.parent, checkpoint.path.parent)
                        if (d / "model" / "config.json").is_file()), None)
        if run_dir is None:
            raise UsageError(f"{args.src}: no tokenizer known for this reward model (expected <out_dir>/model)")
        tokenizer = tokenizer_from_directory(run_dir / "model")
    out = write_hf_sequence_classification(args.dst, checkpoint.config, checkpoint.state,
                                           checkpoint.state["score.weight"], tokenizer)
    print(f"wrote a reward model (LlamaForSequenceClassification) to {out} from {checkpoint.path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    print("herd export is deprecated: use `herd convert SRC DST --to ...` (same arguments)", file=sys.stderr)
    return run_convert(args)
