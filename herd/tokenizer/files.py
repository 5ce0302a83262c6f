"""Find the tokenizer in a checkpoint directory, and write one next to exported weights."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from herd.tokenizer.base import Tokenizer, TokenizerError
from herd.tokenizer.bpe import BPETokenizer
from herd.tokenizer.export import save_hf_tokenizer
from herd.tokenizer.llama3 import Llama3Tokenizer

# Meta's checkpoints keep tokenizer.model at the top; Hugging Face Llama 3 repos under original/.
TIKTOKEN_NAMES = ("tokenizer.model", "original/tokenizer.model")
HF_NAME = "tokenizer.json"
SAVE_FORMATS = ("meta", "hf")
_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/=]+ \d+\r?$")


def is_tiktoken_file(path: Path) -> bool:
    """Whether `path` starts like a tiktoken BPE file, not a sentencepiece protobuf of the same name."""
    try:
        with open(path, "rb") as f:
            first = f.readline(4096).rstrip(b"\n")
    except OSError:
        return False
    return bool(_TIKTOKEN_LINE.match(first))


def tokenizer_from_directory(directory: str | Path) -> Tokenizer:
    """The tokenizer stored in `directory`: tiktoken tokenizer.model first, else tokenizer.json."""
    directory = Path(directory)
    if not directory.is_dir():
        raise TokenizerError(f"tokenizer directory not found: {directory}")
    for name in TIKTOKEN_NAMES:
        if is_tiktoken_file(directory / name):
            return Llama3Tokenizer(directory / name)
    if (directory / HF_NAME).is_file():
        return BPETokenizer.from_tokenizer_json(directory)
    other = [name for name in TIKTOKEN_NAMES if (directory / name).is_file()]
    found = f" ({', '.join(other)} is not a tiktoken file)" if other else ""
    raise TokenizerError(
        f"no tokenizer in {directory}: looked for {', '.join(TIKTOKEN_NAMES)} (tiktoken) and {HF_NAME}{found}"
    )


def save_tokenizer(
    tokenizer: Tokenizer, directory: str | Path, format: str, chat_template: str | None = None
) -> list[Path]:
    """Write `tokenizer` into `directory` in `format` ("meta" or "hf"); returns the files written.

    "meta" is Meta's layout: the tiktoken tokenizer.model, copied byte for byte. A BPETokenizer has
    no tiktoken form, so it gets tokenizer.json there instead.
    """
    if format not in SAVE_FORMATS:
        raise TokenizerError(f"unknown tokenizer format {format!r}; expected one of {', '.join(SAVE_FORMATS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if format == "meta" and isinstance(tokenizer, Llama3Tokenizer):
        target = directory / "tokenizer.model"
        if not (target.exists() and target.samefile(tokenizer.path)):
            shutil.copyfile(tokenizer.path, target)
        return [target]
    return save_hf_tokenizer(tokenizer, directory, chat_template=chat_template)
