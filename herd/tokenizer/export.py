"""Write a herd tokenizer out as GGUF metadata or as a Hugging Face tokenizer.json.

Both formats describe byte-level BPE by vocabulary strings and an ordered merge list, while the
Llama 3 tokenizer is tiktoken ranks. The merges are recovered from the ranks: the last merge of
tiktoken's own BPE on a token's bytes is the one pair that forms that token.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

from herd.tokenizer.base import Tokenizer, TokenizerError
from herd.tokenizer.bpe import (
    TOKEN_TYPE_CONTROL,
    TOKEN_TYPE_NORMAL,
    TOKEN_TYPE_UNUSED,
    TOKEN_TYPE_USER_DEFINED,
    BPETokenizer,
    spell_bytes,
)
from herd.tokenizer.llama3 import Llama3Tokenizer

# Recovering 128K merges takes ~1.5 s, and a BPETokenizer twice that memory: do it once per tokenizer.
_LLAMA3_VOCAB: weakref.WeakKeyDictionary[Llama3Tokenizer, dict[str, Any]] = weakref.WeakKeyDictionary()
_AS_BPE: weakref.WeakKeyDictionary[Llama3Tokenizer, BPETokenizer] = weakref.WeakKeyDictionary()


def _last_merge(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes] | None:
    """The final merge tiktoken's BPE makes when encoding `token`'s own bytes; None if it never forms.

    BPE keeps merging the adjacent pair whose concatenation has the lowest rank. Whenever `token`
    appears in any longer text, the merges inside its span are exactly these, so this one pair, at
    priority rank(token), is all Hugging Face BPE needs to form it where tiktoken does.
    """
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_rank, best_at = -1, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_at < 0 or rank < best_rank):
                best_rank, best_at = rank, i
        if best_at < 0:
            return None
        parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def tiktoken_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list, best first, that makes Hugging Face BPE reproduce tiktoken on these ranks.

    Not "BPE with only the lower ranks": Llama 3's added tokens break rank order (" внутрен" ranks
    above its part " внут"), so the full BPE is run. The ~600 tokens BPE never forms get no merge;
    tiktoken emits them only when a whole pre-token equals one, which `ignore_merges` reproduces.
    """
    merges: list[tuple[int, bytes, bytes]] = []
    for token, rank in ranks.items():
        if len(token) >= 2 and (pair := _last_merge(ranks, token)) is not None:
            merges.append((rank, *pair))
    merges.sort()
    return [(left, right) for _, left, right in merges]


def _llama3_vocab(tokenizer: Llama3Tokenizer) -> dict[str, Any]:
    """tokens / token_type / merges in GGUF form for a Llama3Tokenizer (cached)."""
    cached = _LLAMA3_VOCAB.get(tokenizer)
    if cached is not None:
        return cached
    ranks = tokenizer.mergeable_ranks()
    tokens: list[str | None] = [None] * tokenizer.vocab_size
    types = [TOKEN_TYPE_NORMAL] * tokenizer.vocab_size
    for raw, rank in ranks.items():
        tokens[rank] = spell_bytes(raw)
    for text, i in tokenizer.special_tokens.items():
        tokens[i], types[i] = text, TOKEN_TYPE_CONTROL
    for i, token in enumerate(tokens):
        if token is None:  # a gap in the ranks: llama.cpp's placeholder
            tokens[i], types[i] = f"[PAD{i}]", TOKEN_TYPE_UNUSED
    merges = [f"{spell_bytes(a)} {spell_bytes(b)}" for a, b in tiktoken_merges(ranks)]
    cached = {"tokens": tokens, "token_type": types, "merges": merges}
    _LLAMA3_VOCAB[tokenizer] = cached
    return cached


def _bpe_vocab(tokenizer: BPETokenizer) -> dict[str, Any]:
    tokens: list[str] = []
    types: list[int] = []
    for i in range(tokenizer.vocab_size):
        token = tokenizer.id_to_token(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(TOKEN_TYPE_UNUSED)
        else:
            tokens.append(token)
            kind = TOKEN_TYPE_CONTROL if token in tokenizer.special_tokens else TOKEN_TYPE_NORMAL
            types.append(TOKEN_TYPE_USER_DEFINED if token in tokenizer.added_tokens else kind)
    merges = [f"{a} {b}" for a, b in tokenizer.merges]
    return {"tokens": tokens, "token_type": types, "merges": merges}


def to_gguf_metadata(tokenizer: Tokenizer, chat_template: str | None = None) -> dict[str, Any]:
    """The `tokenizer.ggml.*` (+ `tokenizer.chat_template`) GGUF keys describing `tokenizer`."""
    if isinstance(tokenizer, Llama3Tokenizer):
        vocab, pre, add_bos = _llama3_vocab(tokenizer), "llama-bpe", True
    elif isinstance(tokenizer, BPETokenizer):
        if tokenizer.pre is None:
            raise TokenizerError(
                f"tokenizer {tokenizer.name!r} has a pre-tokenizer llama.cpp has no `tokenizer.ggml.pre` name for"
            )
        vocab, pre, add_bos = _bpe_vocab(tokenizer), tokenizer.pre, tokenizer.add_bos
        chat_template = chat_template if chat_template is not None else tokenizer.chat_template
    else:
        raise TokenizerError(f"cannot export a {type(tokenizer).__name__} to GGUF")
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": list(vocab["tokens"]),
        "tokenizer.ggml.token_type": list(vocab["token_type"]),
        "tokenizer.ggml.merges": list(vocab["merges"]),
        "tokenizer.ggml.add_bos_token": add_bos,
        "tokenizer.ggml.add_eos_token": False,
    }
    ids = {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "padding_token_id": tokenizer.pad_id,
        "eot_token_id": tokenizer.special_tokens.get("<|eot_id|>"),
        "eom_token_id": tokenizer.special_tokens.get("<|eom_id|>"),
    }
    meta.update({f"tokenizer.ggml.{key}": value for key, value in ids.items() if value is not None})
    if chat_template is not None:
        meta["tokenizer.chat_template"] = chat_template
    return meta


def as_bpe_tokenizer(tokenizer: Tokenizer) -> BPETokenizer:
    """`tokenizer` as a BPETokenizer with the same ids (a Llama3Tokenizer is converted once, cached)."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer
    if isinstance(tokenizer, Llama3Tokenizer):
        cached = _AS_BPE.get(tokenizer)
        if cached is None:
            cached = BPETokenizer.from_gguf_metadata(to_gguf_metadata(tokenizer), name=tokenizer.name)
            _AS_BPE[tokenizer] = cached
        return cached
    raise TokenizerError(f"cannot convert a {type(tokenizer).__name__} to byte-level BPE")


def save_hf_tokenizer(tokenizer: Tokenizer, directory: str | Path, chat_template: str | None = None) -> list[Path]:
    """Write tokenizer.json + tokenizer_config.json that Hugging Face loads with our exact ids."""
    bpe = as_bpe_tokenizer(tokenizer)
    if chat_template is None:
        chat_template = bpe.chat_template
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "tokenizer.json"
    bpe.backend.save(str(json_path))

    def text(token_id: int | None) -> str | None:
        return bpe.id_to_token(token_id) if token_id is not None else None

    config: dict[str, Any] = {
        # The generic fast class loads tokenizer.json as written; model classes rebuild the pre-tokenizer.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": text(bpe.bos_id),
        "eos_token": text(bpe.eos_id),
        "pad_token": text(bpe.pad_id),
        "add_bos_token": bpe.add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    config_path = directory / "tokenizer_config.json"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [json_path, config_path]
