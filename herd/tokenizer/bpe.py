"""Byte-level BPE tokenizers (GPT-2 style: SmolLM2, Llama 3 as exported, ...) on the `tokenizers` library.

Two sources: a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`), or the `tokenizer.ggml.*`
metadata of a GGUF file. For GGUF the pre-tokenizer is chosen from `tokenizer.ggml.pre` the way
llama.cpp does, since the file stores only vocabulary and merges, not how text is split.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from herd.tokenizer.base import Tokenizer, TokenizerError
from herd.tokenizer.llama3 import PATTERN as LLAMA3_PATTERN

# Texts of tokens that end a turn or the text in the chat formats herd knows; stop ids when present.
STOP_TOKEN_TEXTS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>")
TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNUSED, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 1, 5, 3, 4


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table: how byte-level BPE spells raw bytes as text."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


@lru_cache(maxsize=1)
def _unspell_table() -> dict[int, str]:
    """str.translate table: byte-level character -> chr(byte); any other character below 256 -> a
    character latin-1 cannot encode, so `unspell` rejects it (a raw space is not byte-level)."""
    table = {ord(char): chr(byte) for byte, char in bytes_to_unicode().items()}
    for code in range(256):
        table.setdefault(code, "\uffff")
    return table


def spell_bytes(raw: bytes) -> str:
    """Raw bytes -> their byte-level BPE spelling (the vocabulary string)."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in raw)


def unspell(token: str) -> bytes | None:
    """A byte-level vocabulary string -> its raw bytes; None when it is not byte-level spelled."""
    try:
        return token.translate(_unspell_table()).encode("latin-1")
    except UnicodeEncodeError:
        return None


def _byte_level(use_regex: bool) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)


def _llama3_pre() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"), _byte_level(use_regex=False)]
    )


def _smollm_pre() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _byte_level(use_regex=True)])


# llama.cpp's `tokenizer.ggml.pre` names -> the pre-tokenizer that splits text the same way.
PRE_TOKENIZERS: dict[str, Callable[[], pre_tokenizers.PreTokenizer]] = {
    "smollm": _smollm_pre,
    "llama-bpe": _llama3_pre,
    "llama3": _llama3_pre,
    "llama-v3": _llama3_pre,
    "gpt2": lambda: _byte_level(use_regex=True),
    "default": lambda: _byte_level(use_regex=True),
}
# llama.cpp looks a whole Llama 3 pre-token up in the vocabulary before merging (as tiktoken does);
# some Llama 3 tokens are reachable only that way.
IGNORE_MERGES_PRE = frozenset({"llama-bpe", "llama3", "llama-v3"})


def _canonical(obj: Any) -> Any:
    """Pre-tokenizer JSON without fields that do not change the ids (for recognising known ones)."""
    if isinstance(obj, dict):
        return {k: _canonical(v) for k, v in obj.items() if k != "trim_offsets"}
    if isinstance(obj, list):
        return [_canonical(v) for v in obj]
    return obj


def _pre_json(pre: pre_tokenizers.PreTokenizer) -> Any:
    return _canonical(json.loads(pre.__getstate__()))


def detect_pre(pre_tokenizer_json: Any) -> str | None:
    """The llama.cpp `tokenizer.ggml.pre` name for a tokenizer.json pre-tokenizer, None if unknown."""
    wanted = _canonical(pre_tokenizer_json)
    for name in ("smollm", "llama-bpe", "gpt2"):
        if _pre_json(PRE_TOKENIZERS[name]()) == wanted:
            return name
    return None


class BPETokenizer(Tokenizer):
    """A byte-level BPE `tokenizers.Tokenizer` behind herd's `Tokenizer` interface.

    Keeps two copies of the backend: one that matches special-token text (allow_special=True) and
    one with `encode_special_tokens` set, which encodes it as plain text -- a per-call toggle on a
    shared backend would race between threads.
    """

    chat_template: str | None

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        name: str,
        bos_id: int | None,
        eos_id: int | None,
        pad_id: int | None = None,
        pre: str | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
        extra_stop_ids: Iterable[int] = (),
    ) -> None:
        pre_state = backend.pre_tokenizer.__getstate__() if backend.pre_tokenizer is not None else b""
        if not isinstance(backend.model, models.BPE) or b"ByteLevel" not in pre_state:
            raise TokenizerError(f"{name}: only byte-level BPE tokenizers are supported")
        self._backend = backend
        self._plain = tokenizers.Tokenizer.from_str(backend.to_str())
        self._plain.encode_special_tokens = True
        self.name, self.pre, self.add_bos, self.chat_template = name, pre, add_bos, chat_template
        added = backend.get_added_tokens_decoder()
        self.special_tokens = {tok.content: i for i, tok in added.items() if tok.special}
        self.added_tokens = {tok.content: i for i, tok in added.items() if not tok.special}
        vocab = backend.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        self._id_to_token: list[str | None] = [None] * self.vocab_size
        self._bytes: list[bytes | None] = [None] * self.vocab_size
        for text, i in vocab.items():
            self._id_to_token[i] = text
            raw = None if i in added else unspell(text)
            self._bytes[i] = raw if raw is not None else text.encode("utf-8")
        for i in (bos_id, eos_id, pad_id, *extra_stop_ids):
            if i is not None and not 0 <= i < self.vocab_size:
                raise TokenizerError(f"{name}: special id {i} is outside the vocabulary of {self.vocab_size}")
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        stops = {i for i in (eos_id, *extra_stop_ids) if i is not None}
        stops |= {vocab[t] for t in STOP_TOKEN_TEXTS if t in vocab}
        self.stop_ids = frozenset(stops)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_tokenizer_json(cls, path: str | Path) -> BPETokenizer:
        """Load `tokenizer.json` (a file, or a directory holding it and maybe tokenizer_config.json)."""
        path = Path(path)
        json_path = path / "tokenizer.json" if path.is_dir() else path
        if not json_path.is_file():
            raise TokenizerError(f"tokenizer.json not found: {json_path}")
        try:
            backend = tokenizers.Tokenizer.from_file(str(json_path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(f"{json_path} is not a valid tokenizer.json: {exc}") from None
        config = _read_json(json_path.parent / "tokenizer_config.json")
        generation = _read_json(json_path.parent / "generation_config.json")

        def token_id(key: str) -> int | None:
            value = config.get(key)
            if isinstance(value, dict):  # a serialised AddedToken
                value = value.get("content")
            if value is None:
                return None
            found = backend.token_to_id(str(value))
            if found is None:
                raise TokenizerError(f"{json_path.parent / 'tokenizer_config.json'}: {key} {value!r} is not a token")
            return found

        eos_id = token_id("eos_token")
        gen_eos = generation.get("eos_token_id")
        extra = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
        if eos_id is None and extra:
            eos_id = extra[0]
        bos_id = token_id("bos_token")
        add_bos = config.get("add_bos_token")
        if add_bos is None:  # Meta's Llama 3 tokenizer.json says it only in its post-processor
            add_bos = bos_id is not None and backend.encode("", add_special_tokens=True).ids[:1] == [bos_id]
        return cls(
            backend,
            name=f"bpe:{json_path}",
            bos_id=bos_id,
            eos_id=eos_id,
            pad_id=token_id("pad_token"),
            pre=detect_pre(json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer else None),
            add_bos=bool(add_bos),
            chat_template=_chat_template(config, json_path.parent),
            extra_stop_ids=extra,
        )

    @classmethod
    def from_gguf_metadata(cls, meta: dict[str, Any], name: str = "gguf") -> BPETokenizer:
        """Build from GGUF `tokenizer.ggml.*` metadata (only `gpt2`, i.e. byte-level BPE)."""
        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise TokenizerError(
                f"{name}: tokenizer.ggml.model {model!r} is not supported (only 'gpt2' byte-level BPE)"
            )
        pre = str(meta.get("tokenizer.ggml.pre", "default"))
        if pre not in PRE_TOKENIZERS:
            raise TokenizerError(
                f"{name}: tokenizer.ggml.pre {pre!r} is not supported (known: {', '.join(sorted(PRE_TOKENIZERS))})"
            )
        tokens = meta.get("tokenizer.ggml.tokens")
        merges = meta.get("tokenizer.ggml.merges")
        if not isinstance(tokens, list) or not isinstance(merges, list):
            raise TokenizerError(f"{name}: GGUF metadata lacks tokenizer.ggml.tokens or tokenizer.ggml.merges")
        types = list(meta.get("tokenizer.ggml.token_type") or [TOKEN_TYPE_NORMAL] * len(tokens))
        if len(types) != len(tokens):
            raise TokenizerError(f"{name}: {len(types)} token types for {len(tokens)} tokens")

        vocab: dict[str, int] = {}
        for i, (token, kind) in enumerate(zip(tokens, types)):
            if kind in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED) or unspell(token) is not None:
                vocab[token] = i
            else:  # llama.cpp may store plain text; the BPE model needs the byte-level spelling
                vocab[spell_bytes(token.encode("utf-8"))] = i
        pairs = [tuple(m.split(" ")) for m in merges]
        if any(len(p) != 2 for p in pairs):
            raise TokenizerError(f"{name}: tokenizer.ggml.merges has an entry that is not 'left right'")
        try:
            bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre in IGNORE_MERGES_PRE)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise TokenizerError(f"{name}: vocabulary and merges do not fit together: {exc}") from None
        backend = tokenizers.Tokenizer(bpe)
        backend.pre_tokenizer = PRE_TOKENIZERS[pre]()
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == TOKEN_TYPE_CONTROL]
        )
        backend.add_tokens(
            [
                AddedToken(t, special=False, normalized=False)
                for t, k in zip(tokens, types)
                if k == TOKEN_TYPE_USER_DEFINED
            ]
        )

        def token_id(key: str) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}")
            return int(value) if value is not None else None

        bos_id = token_id("bos_token_id")
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
        if add_bos and bos_id is not None:  # so a saved tokenizer.json adds BOS as the GGUF asks
            bos = tokens[bos_id]
            backend.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
            )
        extra = [i for i in (token_id("eot_token_id"), token_id("eom_token_id")) if i is not None]
        return cls(
            backend,
            name=f"bpe:{name}",
            bos_id=bos_id,
            eos_id=token_id("eos_token_id"),
            pad_id=token_id("padding_token_id"),
            pre=pre,
            add_bos=add_bos,
            chat_template=meta.get("tokenizer.chat_template"),
            extra_stop_ids=extra,
        )

    # ---- the Tokenizer interface --------------------------------------------------------------

    def encode(self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode() takes str, got {type(text).__name__}")
        backend = self._backend if allow_special else self._plain
        ids = backend.encode(text, add_special_tokens=False).ids
        if bos:
            if self.bos_id is None:
                raise TokenizerError(f"tokenizer {self.name!r} has no BOS token")
            ids.insert(0, self.bos_id)
        if eos:
            if self.eos_id is None:
                raise TokenizerError(f"tokenizer {self.name!r} has no EOS token")
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        raw = self._bytes[token_id] if 0 <= token_id < self.vocab_size else None
        if raw is None:
            raise TokenizerError(f"tokenizer {self.name!r} has no token id {token_id}")
        return raw

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary string of an id (byte-level spelled; added tokens as their text)."""
        return self._id_to_token[token_id] if 0 <= token_id < self.vocab_size else None

    @property
    def merges(self) -> list[tuple[str, str]]:
        """The BPE merges, best first, as vocabulary strings (read from the backend when asked)."""
        model = json.loads(self._backend.to_str())["model"]
        return [tuple(m.split(" ", 1)) if isinstance(m, str) else (m[0], m[1]) for m in model.get("merges", [])]

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The `tokenizers.Tokenizer` that matches special tokens (what a tokenizer.json holds)."""
        return self._backend


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} does not hold a JSON object")
    return data


def _chat_template(config: dict[str, Any], directory: Path) -> str | None:
    """The chat template from tokenizer_config.json, or chat_template.jinja beside it (newer transformers)."""
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if template is None and (directory / "chat_template.jinja").is_file():
        template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    return template if isinstance(template, str) else None
