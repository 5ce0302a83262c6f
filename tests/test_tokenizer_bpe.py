"""BPETokenizer against transformers, and exports (GGUF metadata, tokenizer.json) that round-trip exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import tokenizers

from herd.checkpoint.gguf_metadata import read_gguf_metadata
from herd.tokenizer.base import IncrementalDecoder, TokenizerError
from herd.tokenizer.bpe import BPETokenizer
from herd.tokenizer.export import as_bpe_tokenizer, save_hf_tokenizer, to_gguf_metadata
from herd.tokenizer.files import save_tokenizer, tokenizer_from_directory
from herd.tokenizer.llama3 import Llama3Tokenizer

DIVERSE = {
    "english": "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we'll see what they've done!",
    "code": "def f(x: int) -> int:\n    return 12345 + x ** 2  # 3.14159\n\n\tif a != b: print(f'{a}')\n",
    "digits": "a1b22c333 4444 55555 x٣٤٥ x①② x²³ 1,000,000.50 0x1F",
    "cjk": "日本語のテキストです。中文文本，还有한국어 문장도 있어요。龘靐齉麤 𠀋𡈽",
    "emoji": "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flags 🇫🇷🇯🇵 ✨",
    "arabic_hindi": "مرحبا بالعالم، كيف حالك؟ नमस्ते दुनिया, आप कैसे हैं?",
    "whitespace": "   lots    of\t\tspaces\n\n\n   and\r\n\r\n  lines \u00a0\u3000 " + " " * 300 + "end\n\n",
    "contractions": "I'M YOU'RE they'Ve it'd I'll",
    "chatml": "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n<|endoftext|>",
    "llama_chat": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|eom_id|>",
}


def vocab_text(tokenizer, count: int, seed: int, low: int, high: int) -> str:
    """Random vocabulary entries glued together: exercises merges no hand-written text reaches."""
    rng = random.Random(seed)
    return "".join(tokenizer.decode([rng.randrange(low, high)]) for _ in range(count))


@pytest.fixture(scope="module")
def smollm2_meta(smollm2_path: Path) -> dict:
    return read_gguf_metadata(smollm2_path)


@pytest.fixture(scope="module")
def smollm2(smollm2_meta: dict) -> BPETokenizer:
    return BPETokenizer.from_gguf_metadata(smollm2_meta, name="SmolLM2")


@pytest.fixture(scope="module")
def hf_gguf(smollm2_path: Path):
    """transformers' own tokenizer for the GGUF file: the reference for from_gguf_metadata."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)


@pytest.fixture(scope="module")
def smollm2_texts(smollm2: BPETokenizer) -> dict[str, str]:
    return {**DIVERSE, "vocab": vocab_text(smollm2, 4000, seed=3, low=17, high=smollm2.vocab_size)}


@pytest.fixture(scope="module")
def llama3_texts(llama3_tokenizer: Llama3Tokenizer) -> dict[str, str]:
    return {**DIVERSE, "vocab": vocab_text(llama3_tokenizer, 20_000, seed=4, low=0, high=128_000)}


@pytest.fixture(scope="module")
def llama3_hf_dir(tmp_path_factory, llama3_tokenizer: Llama3Tokenizer) -> Path:
    directory = tmp_path_factory.mktemp("llama3_hf")
    save_hf_tokenizer(llama3_tokenizer, directory, chat_template="{{ messages }}")
    return directory


@pytest.fixture(scope="module")
def smollm2_hf_dir(tmp_path_factory, smollm2: BPETokenizer) -> Path:
    directory = tmp_path_factory.mktemp("smollm2_hf")
    save_hf_tokenizer(smollm2, directory)
    return directory


def hf_ids(hf_tokenizer, text: str, allow_special: bool) -> list[int]:
    return hf_tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not allow_special)


# ---- SmolLM2 from GGUF metadata vs transformers ---------------------------------------------------


def test_smollm2_equals_transformers_gguf(smollm2, hf_gguf, smollm2_texts) -> None:
    for name, text in smollm2_texts.items():
        for allow_special in (False, True):
            ids = smollm2.encode(text, allow_special=allow_special)
            assert ids == hf_ids(hf_gguf, text, allow_special), (name, allow_special)
            assert smollm2.decode(ids) == text, name


def test_smollm2_unicode_numerals_split_like_llama_cpp(smollm2, hf_gguf) -> None:
    r"""A known, deliberate difference from transformers' GGUF loader.

    llama.cpp's "smollm" pre-tokenizer (and SmolLM2's own tokenizer.json, Digits(individual_digits))
    splits every \p{N} character off on its own, so " ٣" is "Ġ" + "٣". transformers ignores
    `tokenizer.ggml.pre` for this vocabulary and uses the bare GPT-2 regex, which glues them.
    ASCII digits never differ: the vocabulary has no token holding a digit and anything else.
    """
    space = smollm2.encode(" ")
    for text in (" ٣٤٥", " ①②", " ½"):
        ours = smollm2.encode(text)
        assert ours[:1] == space and ours[1:] == smollm2.encode(text[1:]), text
        assert hf_ids(hf_gguf, text, allow_special=False)[:1] != space, "transformers changed; re-check"
    assert smollm2.encode(" 4444") == hf_ids(hf_gguf, " 4444", allow_special=False)


def test_smollm2_special_ids(smollm2: BPETokenizer) -> None:
    assert smollm2.vocab_size == 49152
    assert smollm2.special_id("<|im_start|>") == 1 and smollm2.special_id("<|im_end|>") == 2
    assert (smollm2.bos_id, smollm2.eos_id, smollm2.pad_id) == (1, 2, 2)
    assert {0, 2} <= smollm2.stop_ids and 1 not in smollm2.stop_ids
    assert smollm2.pre == "smollm" and smollm2.add_bos is False
    assert smollm2.chat_template is not None and "<|im_start|>" in smollm2.chat_template
    assert smollm2.encode("<|im_start|>user", allow_special=True) == [1, smollm2.encode("user")[0]]
    assert 1 not in smollm2.encode("<|im_start|>user")
    assert smollm2.token_bytes(1) == b"<|im_start|>"
    assert smollm2.token_bytes(smollm2.encode(" ")[0]) == b" "
    assert smollm2.encode("hi", bos=True, eos=True) == [1, *smollm2.encode("hi"), 2]


def test_smollm2_incremental_decoder(smollm2: BPETokenizer) -> None:
    text = DIVERSE["emoji"] + DIVERSE["cjk"]
    ids = smollm2.encode(text)
    decoder = IncrementalDecoder(smollm2)
    pieces = [decoder.add(i) for i in ids]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "".join(pieces) + decoder.flush() == text


def test_gpt2_pre_tokenizer(smollm2_meta, hf_gguf) -> None:
    """SmolLM2's vocabulary has no multi-digit tokens, so the plain GPT-2 split gives the same ids."""
    plain = BPETokenizer.from_gguf_metadata({**smollm2_meta, "tokenizer.ggml.pre": "gpt2"})
    for text in DIVERSE.values():
        assert plain.encode(text) == hf_ids(hf_gguf, text, allow_special=False)


def test_smollm2_gguf_metadata_round_trip(smollm2, smollm2_meta) -> None:
    meta = to_gguf_metadata(smollm2)
    for key in ("model", "pre", "tokens", "token_type", "merges", "bos_token_id", "eos_token_id"):
        assert meta[f"tokenizer.ggml.{key}"] == smollm2_meta[f"tokenizer.ggml.{key}"], key
    assert meta["tokenizer.ggml.padding_token_id"] == 2
    assert meta["tokenizer.chat_template"] == smollm2_meta["tokenizer.chat_template"]


def test_smollm2_hf_round_trip(smollm2, smollm2_hf_dir, smollm2_texts) -> None:
    from transformers import AutoTokenizer

    reloaded = BPETokenizer.from_tokenizer_json(smollm2_hf_dir)
    hf = AutoTokenizer.from_pretrained(str(smollm2_hf_dir))
    assert (reloaded.bos_id, reloaded.eos_id, reloaded.pad_id) == (1, 2, 2)
    assert reloaded.special_tokens == smollm2.special_tokens and reloaded.stop_ids == smollm2.stop_ids
    assert reloaded.chat_template == smollm2.chat_template and reloaded.pre == "smollm"
    for name, text in smollm2_texts.items():
        for allow_special in (False, True):
            ids = smollm2.encode(text, allow_special=allow_special)
            assert reloaded.encode(text, allow_special=allow_special) == ids, name
            assert hf_ids(hf, text, allow_special) == ids, name


# ---- Llama 3 exports -----------------------------------------------------------------------------


def test_llama3_gguf_metadata(llama3_tokenizer: Llama3Tokenizer) -> None:
    meta = to_gguf_metadata(llama3_tokenizer, chat_template="T")
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "llama-bpe"
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 128_256
    assert tokens[128_000] == "<|begin_of_text|>" and types[128_000] == 3 and types[0] == 1
    assert tokens[220] == "Ġ" and "Ġ t" in meta["tokenizer.ggml.merges"][:10]
    assert len(meta["tokenizer.ggml.merges"]) > 127_000
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (128_000, 128_001)
    assert meta["tokenizer.ggml.eot_token_id"] == 128_009 and meta["tokenizer.ggml.add_bos_token"] is True
    assert meta["tokenizer.chat_template"] == "T"
    assert to_gguf_metadata(llama3_tokenizer)["tokenizer.ggml.merges"] is not meta["tokenizer.ggml.merges"]


def test_llama3_gguf_round_trip(llama3_tokenizer, llama3_texts) -> None:
    bpe = as_bpe_tokenizer(llama3_tokenizer)  # BPETokenizer.from_gguf_metadata(to_gguf_metadata(...)), cached
    assert bpe.vocab_size == 128_256 and bpe.special_tokens == llama3_tokenizer.special_tokens
    assert bpe.stop_ids == llama3_tokenizer.stop_ids and bpe.pad_id == llama3_tokenizer.pad_id
    for name, text in llama3_texts.items():
        for allow_special in (False, True):
            ids = llama3_tokenizer.encode(text, allow_special=allow_special)
            assert bpe.encode(text, allow_special=allow_special) == ids, (name, allow_special)
        assert bpe.decode(ids) == llama3_tokenizer.decode(ids)
    assert as_bpe_tokenizer(llama3_tokenizer) is bpe


def test_llama3_hf_round_trip(llama3_tokenizer, llama3_hf_dir, llama3_texts) -> None:
    from transformers import AutoTokenizer

    reloaded = BPETokenizer.from_tokenizer_json(llama3_hf_dir / "tokenizer.json")
    hf = AutoTokenizer.from_pretrained(str(llama3_hf_dir))
    raw = tokenizers.Tokenizer.from_file(str(llama3_hf_dir / "tokenizer.json"))
    assert (reloaded.bos_id, reloaded.eos_id, reloaded.pad_id) == (128_000, 128_001, 128_004)
    assert reloaded.stop_ids == llama3_tokenizer.stop_ids and reloaded.pre == "llama-bpe"
    assert reloaded.chat_template == "{{ messages }}" and reloaded.add_bos
    for name, text in llama3_texts.items():
        for allow_special in (False, True):
            ids = llama3_tokenizer.encode(text, allow_special=allow_special)
            assert reloaded.encode(text, allow_special=allow_special) == ids, (name, allow_special)
            assert hf_ids(hf, text, allow_special) == ids, (name, allow_special)
        assert raw.encode(text, add_special_tokens=False).ids == llama3_tokenizer.encode(text, allow_special=True)
    assert hf.encode("hi") == [128_000, *llama3_tokenizer.encode("hi")]
    config = json.loads((llama3_hf_dir / "tokenizer_config.json").read_text())
    assert config["bos_token"] == "<|begin_of_text|>" and config["eos_token"] == "<|end_of_text|>"


# ---- directories, saving, errors -----------------------------------------------------------------


def test_tokenizer_from_directory(tmp_path, llama3_tokenizer, smollm2, smollm2_hf_dir) -> None:
    meta_dir = tmp_path / "meta"
    assert save_tokenizer(llama3_tokenizer, meta_dir, "meta") == [meta_dir / "tokenizer.model"]
    loaded = tokenizer_from_directory(meta_dir)
    assert isinstance(loaded, Llama3Tokenizer) and loaded.encode("héllo 123") == llama3_tokenizer.encode("héllo 123")
    assert isinstance(tokenizer_from_directory(smollm2_hf_dir), BPETokenizer)

    bpe_dir = tmp_path / "bpe"
    save_tokenizer(smollm2, bpe_dir, "meta")  # no tiktoken form: tokenizer.json instead
    (bpe_dir / "tokenizer.model").write_bytes(b"\x0a\x0b\x00sentencepiece protobuf")
    loaded = tokenizer_from_directory(bpe_dir)
    assert isinstance(loaded, BPETokenizer) and loaded.encode("x 12") == smollm2.encode("x 12")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TokenizerError, match=r"tokenizer\.model.*tokenizer\.json"):
        tokenizer_from_directory(empty)
    with pytest.raises(TokenizerError, match="format"):
        save_tokenizer(smollm2, tmp_path / "x", "sentencepiece")


def test_gguf_errors(smollm2_meta) -> None:
    with pytest.raises(TokenizerError, match="'qwen2'"):
        BPETokenizer.from_gguf_metadata({**smollm2_meta, "tokenizer.ggml.pre": "qwen2"})
    with pytest.raises(TokenizerError, match="'llama'"):
        BPETokenizer.from_gguf_metadata({**smollm2_meta, "tokenizer.ggml.model": "llama"})
    with pytest.raises(TokenizerError, match="merges"):
        BPETokenizer.from_gguf_metadata({**smollm2_meta, "tokenizer.ggml.merges": None})


def test_tokenizer_json_errors(tmp_path, smollm2_hf_dir) -> None:
    with pytest.raises(TokenizerError, match="tokenizer.json not found"):
        BPETokenizer.from_tokenizer_json(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match=str(bad)):
        BPETokenizer.from_tokenizer_json(bad)

    spec = json.loads((smollm2_hf_dir / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "tokenizer.json").write_text(json.dumps(spec))
    unusual = BPETokenizer.from_tokenizer_json(custom)
    assert unusual.pre is None and unusual.bos_id is None
    with pytest.raises(TokenizerError, match="pre-tokenizer"):
        to_gguf_metadata(unusual)
    (custom / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<nope>"}))
    with pytest.raises(TokenizerError, match="<nope>"):
        BPETokenizer.from_tokenizer_json(custom)
