"""The tokenizer interface every herd tokenizer implements, and a UTF-8-safe incremental decoder."""

from __future__ import annotations

import codecs
from abc import ABC, abstractmethod
from collections.abc import Sequence


class TokenizerError(ValueError):
    """A tokenizer file is missing or malformed, or does not fit the model it is paired with."""


class Tokenizer(ABC):
    """Text <-> token ids.

    Attributes every implementation sets:
      vocab_size      number of ids, special tokens included (the model's embedding rows)
      bos_id/eos_id   begin/end of text ids (None when the vocabulary has none)
      pad_id          padding id (None when there is none)
      special_tokens  special token text -> id
      stop_ids        ids that end generation (end of text, end of turn, end of message)
      add_bos         whether plain-text prompts start with bos_id (Llama 3 yes; SmolLM2's GGUF says no)
    """

    add_bos: bool = True

    name: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    special_tokens: dict[str, int]
    stop_ids: frozenset[int]

    @abstractmethod
    def encode(self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False) -> list[int]:
        """Token ids for `text`. Special-token text is encoded as plain text unless `allow_special`."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text for `ids` (special tokens rendered as their text; broken UTF-8 replaced)."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (a special token: its text in UTF-8)."""

    def special_id(self, text: str) -> int:
        """Id of a special token, with an error naming the tokenizer when it has no such token."""
        try:
            return self.special_tokens[text]
        except KeyError:
            raise TokenizerError(f"tokenizer {self.name!r} has no special token {text!r}") from None

    def check_fits(self, model_vocab_size: int) -> None:
        """Raise when this tokenizer emits ids the model has no embedding for."""
        if self.vocab_size > model_vocab_size:
            raise TokenizerError(
                f"tokenizer {self.name!r} has {self.vocab_size} tokens but the model's vocabulary has only "
                f"{model_vocab_size} rows; they do not belong together"
            )


class IncrementalDecoder:
    """Turns a stream of token ids into text pieces that never split a UTF-8 character.

    Bytes of a character cut across tokens (emoji, CJK in byte-level BPE) are held back until the
    character completes; `flush()` returns whatever remains (invalid bytes become U+FFFD).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        return self._decoder.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
