"""Llama3Tokenizer against the llama-models reference: same ids, lossless decode, exact special ids."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from herd.tokenizer.base import IncrementalDecoder, TokenizerError
from herd.tokenizer.llama3 import Llama3Tokenizer

DIVERSE = {
    "english": "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we'll see what they've done!",
    "code": "def f(x: int) -> int:\n    return 12345 + x ** 2  # 3.14159\n\n\tif a != b: print(f'{a}')\n",
    "cjk": "日本語のテキストです。中文文本，还有한국어 문장도 있어요。",
    "emoji": "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 ✨",
    "rare_chars": "龘靐齉麤 𠀋𡈽𢌞 ঋষি ৎ ഞ്ഞ ᠮᠣᠩᠭᠣᠯ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "arabic_hindi": "مرحبا بالعالم، كيف حالك؟ नमस्ते दुनिया, आप कैसे हैं?",
    "whitespace": "   lots    of\t\tspaces\n\n\n   and\r\n\r\n  lines \u00a0\u3000 " + " " * 200 + "end",
    "contractions": "I'M YOU'RE they'Ve it'd I'll",
    "numbers": "1 12 123 1234 12345 1,000,000.50 0x1F 1e-9",
    "special_text": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "empty": "",
}
SPECIAL_IDS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|finetune_right_pad_id|>": 128004,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eom_id|>": 128008,
    "<|eot_id|>": 128009,
    "<|python_tag|>": 128010,
}


def random_vocab_text(tokenizer: Llama3Tokenizer, count: int, seed: int) -> str:
    """Text made of random vocabulary entries: touches every part of the vocabulary and merges."""
    rng = random.Random(seed)
    return "".join(tokenizer.decode([rng.randrange(128_000)]) for _ in range(count))


@pytest.fixture(scope="module")
def big_mixed(llama3_tokenizer: Llama3Tokenizer) -> str:
    """A 500K-character input mixing every DIVERSE text, random vocabulary and long runs."""
    parts = [*DIVERSE.values(), random_vocab_text(llama3_tokenizer, 20_000, seed=1), "z" * 26_000, " " * 27_000]
    text = "".join(parts)
    while len(text) < 500_000:
        text += "".join(parts)
    return text[:500_000]


@pytest.mark.parametrize("name", DIVERSE)
def test_ids_equal_reference(llama3_tokenizer, reference_llama3_tokenizer, name: str) -> None:
    text = DIVERSE[name]
    ids = llama3_tokenizer.encode(text)
    assert ids == reference_llama3_tokenizer.encode(text, bos=False, eos=False)
    assert llama3_tokenizer.decode(ids) == text


@pytest.mark.parametrize(
    "text",
    ["a" * 30_000, " " * 30_000, "b" * 25_001 + " " + "c" * 60_000, "\n" * 30_000 + "x"],
    ids=["letter", "space", "two_runs", "newlines"],
)
def test_long_runs_equal_reference(llama3_tokenizer, reference_llama3_tokenizer, text: str) -> None:
    ids = llama3_tokenizer.encode(text)
    assert ids == reference_llama3_tokenizer.encode(text, bos=False, eos=False)
    assert llama3_tokenizer.decode(ids) == text


def test_half_million_characters(llama3_tokenizer, reference_llama3_tokenizer, big_mixed: str) -> None:
    assert len(big_mixed) == 500_000
    ids = llama3_tokenizer.encode(big_mixed)
    assert ids == reference_llama3_tokenizer.encode(big_mixed, bos=False, eos=False)
    assert llama3_tokenizer.decode(ids) == big_mixed


def test_random_vocabulary_text(llama3_tokenizer, reference_llama3_tokenizer) -> None:
    text = random_vocab_text(llama3_tokenizer, 5_000, seed=2)
    assert llama3_tokenizer.encode(text) == reference_llama3_tokenizer.encode(text, bos=False, eos=False)


def test_special_tokens_at_exact_ids(llama3_tokenizer, reference_llama3_tokenizer) -> None:
    assert llama3_tokenizer.vocab_size == 128_256
    for text, token_id in SPECIAL_IDS.items():
        assert llama3_tokenizer.special_tokens[text] == token_id
        assert llama3_tokenizer.special_id(text) == token_id
        assert llama3_tokenizer.token_bytes(token_id) == text.encode()
    assert len(llama3_tokenizer.special_tokens) == 256
    assert llama3_tokenizer.special_tokens == reference_llama3_tokenizer.special_tokens
    assert llama3_tokenizer.special_tokens["<|reserved_special_token_245|>"] == 128_255
    assert (llama3_tokenizer.bos_id, llama3_tokenizer.eos_id, llama3_tokenizer.pad_id) == (128000, 128001, 128004)
    assert llama3_tokenizer.stop_ids == {128001, 128008, 128009}
    with pytest.raises(TokenizerError, match="no special token"):
        llama3_tokenizer.special_id("<|im_start|>")


def test_special_text_plain_unless_allowed(llama3_tokenizer, reference_llama3_tokenizer) -> None:
    for text, token_id in SPECIAL_IDS.items():
        plain = llama3_tokenizer.encode(text)
        assert token_id not in plain and len(plain) > 1
        assert llama3_tokenizer.decode(plain) == text
        assert llama3_tokenizer.encode(text, allow_special=True) == [token_id]
    chat = DIVERSE["special_text"]
    allowed = llama3_tokenizer.encode(chat, allow_special=True)
    assert allowed == reference_llama3_tokenizer.encode(chat, bos=False, eos=False, allowed_special="all")
    assert allowed[:3] == [128000, 128006, 882] and allowed[-1] == 128009


def test_bos_eos_flags(llama3_tokenizer) -> None:
    ids = llama3_tokenizer.encode("hello", bos=True, eos=True)
    assert ids[0] == 128000 and ids[-1] == 128001
    assert ids[1:-1] == llama3_tokenizer.encode("hello")


@pytest.mark.parametrize("name", ["emoji", "rare_chars", "cjk", "arabic_hindi"])
def test_incremental_decoder_never_splits_characters(llama3_tokenizer, name: str) -> None:
    text = DIVERSE[name]
    ids = llama3_tokenizer.encode(text)
    if name in ("emoji", "rare_chars"):  # these must exercise characters cut across tokens
        assert any(not _is_utf8(llama3_tokenizer.token_bytes(i)) for i in ids)
    decoder = IncrementalDecoder(llama3_tokenizer)
    pieces = [decoder.add(i) for i in ids]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) + decoder.flush() == text


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tokenizer.model"
    with pytest.raises(TokenizerError, match=str(missing).replace("\\", "\\\\")):
        Llama3Tokenizer(missing)


def test_malformed_file(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"IQ== 0\nthis is not base64! 1\n")
    with pytest.raises(TokenizerError, match="tiktoken"):
        Llama3Tokenizer(bad)
    bad.write_bytes(b"\x0a\x08\x00\xff protobuf")
    with pytest.raises(TokenizerError):
        Llama3Tokenizer(bad)


def test_check_fits(llama3_tokenizer) -> None:
    llama3_tokenizer.check_fits(128_256)
    llama3_tokenizer.check_fits(130_000)
    with pytest.raises(TokenizerError, match="128256 tokens"):
        llama3_tokenizer.check_fits(32_000)
