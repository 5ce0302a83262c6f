"""`herd average A B [C...] [--weights ...] --out DIR`: the weighted mean of models, written as a model.

The paper averages the models of data/hyperparameter variants at each post-training stage (section
4.1.5). Averaging only makes sense between models of one shape that read the same token ids, so the
inputs are checked before anything is written: the same weight names and shapes (a mismatch is a
CheckpointError naming the key), the same architecture numbers, and the same tokenizer, compared by
content (every token's bytes, the special tokens and ids) rather than by file, so the Meta and the
Hugging Face forms of one model average together. Inputs stream through
`herd.checkpoint.averaging.average_state_dicts`: one input and one float32 accumulator in memory.

DIR is written by `herd.checkpoint.write_checkpoint` like `herd convert` (Hugging Face by default, or
Meta), tokenizer included, so `herd generate --model DIR` runs it; `average.json` beside it records the
inputs, their normalised weights and the sha256 of every weight file written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from herd.cli_args import UsageError, add_dtype_arg, add_out_arg

if TYPE_CHECKING:
    import torch

    from herd.checkpoint import Checkpoint
    from herd.tokenizer.base import Tokenizer

OUT_FORMATS = ("hf", "meta")
MANIFEST = "average.json"
WEIGHT_PATTERNS = ("*.safetensors", "consolidated.*.pth")
# The config numbers that change what the weights compute. Not max_seq_len, nor multiple_of and
# ffn_dim_multiplier (bookkeeping for params.json that a Hugging Face config.json does not keep).
ARCHITECTURE = ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size", "ffn_dim", "norm_eps",
                "rope_theta", "rope_scaling", "tie_embeddings")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "average",
        help="weighted mean of models of one shape and tokenizer (post-training model averaging)",
        description="Average the weights of two or more models (built-in names, Meta/Hugging Face directories, "
        ".gguf files or training checkpoints) that share shapes and tokenizer, and write the result as a model "
        "directory with average.json (inputs, weights, checksums).",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="two or more models to average")
    p.add_argument("--weights", nargs="+", default=None, metavar="W",
                   help="one weight per model (spaces or commas), normalised to sum 1; default uniform")
    add_out_arg(p, None, "directory for the averaged model and average.json")
    p.add_argument("--to", default="hf", choices=OUT_FORMATS, help="output format (default hf)")
    add_dtype_arg(p, default=None, help="cast the averaged weights (float32|bfloat16|float16, aliases "
                                        "fp32|bf16|fp16); default: the first model's dtypes")
    p.set_defaults(func=run_average)


def parse_weights(texts: Sequence[str] | None, n: int) -> list[float]:
    """`--weights` as floats normalised to sum 1 (uniform when not given); bad input is a UsageError."""
    if texts is None:
        return [1.0 / n] * n
    values: list[float] = []
    for text in texts:
        for part in text.split(","):
            if not part.strip():
                continue
            try:
                value = float(part)
            except ValueError:
                raise UsageError(f"invalid weight {part!r} (a number >= 0)") from None
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"invalid weight {part!r} (a number >= 0)")
            values.append(value)
    if len(values) != n:
        raise UsageError(f"{len(values)} weights for {n} models; give one weight per model")
    total = sum(values)
    if total <= 0:
        raise UsageError("the weights sum to 0; at least one must be > 0")
    return [v / total for v in values]


def tokenizer_fingerprint(tokenizer: Tokenizer | None) -> dict[str, Any]:
    """What makes two tokenizers interchangeable, each part hashed so a difference can be named.

    By content, not by file: the tiktoken tokenizer.model of a Meta directory and the tokenizer.json
    that `herd convert --to hf` writes for it have equal fingerprints.
    """
    if tokenizer is None:
        return {"tokenizer": None}
    tokens = hashlib.sha256()
    for i in range(tokenizer.vocab_size):
        piece = tokenizer.token_bytes(i)
        tokens.update(len(piece).to_bytes(4, "little"))
        tokens.update(piece)
    specials = json.dumps(sorted(tokenizer.special_tokens.items()), ensure_ascii=False)
    return {
        "vocab size": tokenizer.vocab_size,
        "token bytes": tokens.hexdigest(),
        "special tokens": hashlib.sha256(specials.encode()).hexdigest(),
        "bos/eos/pad ids": [tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id],
        "stop ids": sorted(tokenizer.stop_ids),
        "add_bos": tokenizer.add_bos,
    }


def _describe(tokenizer: Tokenizer | None) -> str:
    return "none" if tokenizer is None else f"{tokenizer.name}, {tokenizer.vocab_size} tokens"


def check_same_model(first: Checkpoint, other: Checkpoint, first_name: str, name: str,
                     first_print: dict[str, Any]) -> None:
    """Refuse (CheckpointError/TokenizerError, one line) an input that cannot be averaged with the first."""
    from herd.checkpoint.errors import CheckpointError
    from herd.tokenizer.base import TokenizerError

    a, b = first.state, other.state
    if set(a) != set(b):
        missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise CheckpointError(f"{name} does not match {first_name}: missing {missing[:3]}, extra {extra[:3]}")
    for key, tensor in a.items():
        if tuple(b[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{name} does not match {first_name}: {key} has shape {tuple(b[key].shape)} there, "
                                  f"{tuple(tensor.shape)} in {first_name}")
    differ = [k for k in ARCHITECTURE if getattr(first.config, k) != getattr(other.config, k)]
    if differ:
        detail = ", ".join(f"{k} {getattr(other.config, k)} vs {getattr(first.config, k)}" for k in differ[:3])
        raise CheckpointError(f"{name} and {first_name} are different architectures: {detail}")
    theirs = tokenizer_fingerprint(other.tokenizer)
    part = next((k for k in first_print if theirs.get(k) != first_print[k]), None)
    if part is None and first.chat_template and other.chat_template and first.chat_template != other.chat_template:
        part = "chat template"
    if part is not None:
        raise TokenizerError(f"{name} and {first_name} have different tokenizers ({_describe(other.tokenizer)} vs "
                             f"{_describe(first.tokenizer)}: the {part} differ); averaging needs one tokenizer")


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, dtypes, shapes, bytes), whatever file format held it."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().contiguous().cpu()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_out(out: Path, models: Sequence[str]) -> None:
    """Never write over one of the inputs, nor into a directory holding anything (a stale checkpoint of
    another format there would be read instead of the average)."""
    target = out.expanduser().resolve()
    for spec in models:
        source = Path(spec).expanduser()
        if source.exists():
            source = source.resolve()
            if target == source or target in source.parents or (source.is_dir() and source in target.parents):
                raise UsageError(f"--out {out} overlaps the input {spec}; write the average somewhere else")
    if target.exists() and not target.is_dir():
        raise UsageError(f"--out {out} is a file; give a new or empty directory")
    if target.is_dir() and any(target.iterdir()):
        raise UsageError(f"--out {out} is not empty; give a new or empty directory")


def average_models(models: Sequence[str], out: str | Path, weights: Sequence[float] | None = None, *,
                   fmt: str = "hf", dtype: torch.dtype | None = None, log: TextIO | None = None) -> dict[str, Any]:
    """Average `models` (specs or checkpoint paths) with `weights` (normalised; default uniform) into `out`.

    Returns the manifest also written to `out/average.json`. Inputs are read one at a time.
    """
    from herd.checkpoint import Checkpoint, write_checkpoint
    from herd.checkpoint.averaging import average_state_dicts
    from herd.commands.convert import read_source

    log = log if log is not None else sys.stderr
    if len(models) < 2:
        raise UsageError(f"averaging needs at least two models, got {len(models)}")
    if fmt not in OUT_FORMATS:
        raise UsageError(f"unknown output format {fmt!r}; choose one of {', '.join(OUT_FORMATS)}")
    norm = parse_weights(None if weights is None else [str(w) for w in weights], len(models))
    out = Path(out)
    _check_out(out, models)
    inputs: list[dict[str, Any]] = []
    first: list[Checkpoint] = []  # the first input, without its weights once they are in the accumulator
    first_print: dict[str, Any] = {}

    def stream() -> Iterator[dict[str, torch.Tensor]]:
        for index, spec in enumerate(models):
            print(f"average: reading {index + 1}/{len(models)} {spec} (weight {norm[index]:.4g})", file=log, flush=True)
            checkpoint = read_source(spec)
            if index == 0:
                first_print.update(tokenizer_fingerprint(checkpoint.tokenizer))
                if checkpoint.tokenizer is None:
                    print(f"average: warning: {spec} ships no tokenizer; {out} will need one beside it", file=log)
            else:
                check_same_model(first[0], checkpoint, models[0], spec, first_print)
            inputs.append({"model": spec, "path": str(checkpoint.path), "format": checkpoint.format,
                           "weight": norm[index], "state_sha256": state_sha256(checkpoint.state)})
            state = checkpoint.state
            if index == 0:  # keep shapes (as meta tensors) for the checks, not a second copy of the weights
                checkpoint.state = {k: v.to("meta") for k, v in state.items()}
                first.append(checkpoint)
            yield state
            del state, checkpoint  # the accumulator has it now: hold one input at a time, not two

    averaged = average_state_dicts(stream(), weights=norm)
    base = first[0]
    result = Checkpoint(base.config, averaged, base.tokenizer, "average", out)
    print(f"average: writing {fmt} to {out}", file=log, flush=True)
    # written beside DIR and renamed at the end: a killed run leaves no half-written model at DIR
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    written = write_checkpoint(result, partial, fmt, dtype=dtype)
    files = sorted({p for pattern in WEIGHT_PATTERNS for p in written.glob(pattern)})
    manifest = {
        "inputs": inputs,
        "weights": norm,
        "format": fmt,
        "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "config": base.config.to_meta_params(),
        "tokenizer": None if base.tokenizer is None else {"name": base.tokenizer.name, **first_print},
        "output_sha256": {p.name: file_sha256(p) for p in files},
    }
    (written / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if out.is_dir():
        out.rmdir()  # empty (checked before reading)
    os.replace(written, out)
    return manifest


def run_average(args: argparse.Namespace) -> int:
    from herd.cli_args import torch_dtype

    n = len(args.models)
    if n < 2:
        raise UsageError(f"averaging needs at least two models, got {n}")
    weights = parse_weights(args.weights, n)
    dtype = torch_dtype(args.dtype) if args.dtype else None
    average_models(args.models, args.out, weights, fmt=args.to, dtype=dtype)
    shown = ", ".join(f"{w:.3g}" for w in weights)
    print(f"wrote the average of {n} models (weights {shown}) to {args.out} as {args.to}; "
          f"{MANIFEST} lists inputs and checksums")
    return 0
