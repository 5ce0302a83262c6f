"""The Llama 3 tokenizer: 128,000 tiktoken BPE ranks plus 256 special tokens.

Reads the real `tokenizer.model` shipped inside the `llama-models` package and reproduces the
reference's input chunking (tiktoken panics on very long runs), so ids equal the reference's.
"""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path

import tiktoken

from herd.tokenizer.base import Tokenizer, TokenizerError

PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
NUM_RESERVED_SPECIAL_TOKENS = 256
NAMED_SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
MAX_ENCODE_CHARS = 400_000  # tiktoken handles at most this many characters per call
MAX_RUN_CHARS = 25_000  # ... and at most this many consecutive (non-)whitespace characters


def default_tokenizer_path() -> Path:
    """`llama_models/llama3/tokenizer.model` from the installed llama-models package."""
    spec = importlib.util.find_spec("llama_models")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("the llama-models package is not installed; `pip install llama-models`")
    return Path(spec.submodule_search_locations[0]) / "llama3" / "tokenizer.model"


def load_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse a tiktoken BPE file: one `base64(token) rank` pair per line."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"tokenizer model file not found: {path}")
    ranks: dict[bytes, int] = {}
    for line_no, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as exc:
            raise TokenizerError(f"{path}:{line_no} is not a tiktoken 'base64 rank' line: {exc}") from None
    return ranks


def special_token_names() -> list[str]:
    reserved = [
        f"<|reserved_special_token_{2 + i}|>" for i in range(NUM_RESERVED_SPECIAL_TOKENS - len(NAMED_SPECIAL_TOKENS))
    ]
    return NAMED_SPECIAL_TOKENS + reserved


def split_long_runs(text: str, max_run: int = MAX_RUN_CHARS) -> Iterator[str]:
    """Cut `text` so no piece holds more than `max_run` consecutive whitespace or non-whitespace chars.

    Same cut points as the reference's `_split_whitespaces_or_nonwhitespaces`.
    """
    run_len = 0
    run_is_space = text[0].isspace() if text else False
    start = 0
    for i, char in enumerate(text):
        is_space = char.isspace()
        if run_is_space ^ is_space:
            run_len = 1
            run_is_space = is_space
        else:
            run_len += 1
            if run_len > max_run:
                yield text[start:i]
                start = i
                run_len = 1
    yield text[start:]


class Llama3Tokenizer(Tokenizer):
    def __init__(self, model_path: str | Path | None = None) -> None:
        path = Path(model_path) if model_path is not None else default_tokenizer_path()
        ranks = load_tiktoken_ranks(path)
        num_base = len(ranks)
        self.special_tokens = {tok: num_base + i for i, tok in enumerate(special_token_names())}
        self.model = tiktoken.Encoding(
            name=path.name, pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )
        self.name = f"llama3:{path}"
        self.path = path
        self.vocab_size = num_base + len(self.special_tokens)
        self.bos_id = self.special_tokens["<|begin_of_text|>"]
        self.eos_id = self.special_tokens["<|end_of_text|>"]
        self.pad_id = self.special_tokens["<|finetune_right_pad_id|>"]
        self.eot_id = self.special_tokens["<|eot_id|>"]
        self.eom_id = self.special_tokens["<|eom_id|>"]
        self.python_tag_id = self.special_tokens["<|python_tag|>"]
        self.stop_ids = frozenset({self.eos_id, self.eom_id, self.eot_id})
        self._id_to_special = {i: tok.encode() for tok, i in self.special_tokens.items()}

    def encode(self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode() takes str, got {type(text).__name__}")
        allowed: set[str] | str = "all" if allow_special else set()
        ids: list[int] = [self.bos_id] if bos else []
        for i in range(0, len(text), MAX_ENCODE_CHARS):
            for piece in split_long_runs(text[i : i + MAX_ENCODE_CHARS]):
                ids.extend(self.model.encode(piece, allowed_special=allowed, disallowed_special=()))
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.model.decode(list(ids))

    def token_bytes(self, token_id: int) -> bytes:
        special = self._id_to_special.get(token_id)
        if special is not None:
            return special
        return self.model.decode_single_token_bytes(token_id)

    def mergeable_ranks(self) -> dict[bytes, int]:
        """The BPE ranks (for exporting to tokenizer.json / GGUF)."""
        return self.model._mergeable_ranks  # noqa: SLF001 - tiktoken keeps them only here
