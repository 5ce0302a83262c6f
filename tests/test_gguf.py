"""GGUF read/write: the real SmolLM2 Q4_1 file against transformers, herd's own writer, and
hand-built synthetic files for every supported block format and every error path."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from herd.checkpoint.errors import CheckpointError
from herd.checkpoint.gguf_io import (
    expected_shapes,
    herd_to_gguf_name,
    llama3_rope_factors,
    read_gguf,
    write_gguf,
)
from herd.checkpoint.gguf_metadata import open_gguf
from herd.checkpoint.validate import load_state_dict_checked
from herd.model.config import ModelConfig, RopeScaling
from herd.model.transformer import Transformer

Q = gguf.GGMLQuantizationType
V = gguf.GGUFValueType
PROMPTS = [
    "The llama is a domesticated South American camelid, widely used as a meat and pack animal "
    "by Andean cultures since the pre-Columbian era.",
    "<|im_start|>user\nWrite a haiku about a herd of llamas crossing a mountain pass at dawn, and "
    "then explain which words carry the imagery.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
]
LOGIT_TOL = 1e-4


# --------------------------------------------------------------------------------------------
# Real SmolLM2 (loaded once per module)


@pytest.fixture(scope="module")
def source(smollm2_path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    return read_gguf(smollm2_path)


@pytest.fixture(scope="module")
def herd_model(source) -> Transformer:  # type: ignore[no-untyped-def]
    config, state, _ = source
    model = Transformer(config)
    load_state_dict_checked(model, state, "SmolLM2 GGUF")
    return model.eval()


@pytest.fixture(scope="module")
def prompt_ids(smollm2_path: Path) -> list[torch.Tensor]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    ids = [tok(p, return_tensors="pt").input_ids for p in PROMPTS]
    assert all(15 <= x.shape[1] <= 64 for x in ids), [x.shape for x in ids]
    return ids


@pytest.fixture(scope="module")
def written(source, tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    config, state, metadata = source
    out = tmp_path_factory.mktemp("gguf_written")
    paths = {"f16": out / "smollm2.f16.gguf", "q8_0": out / "smollm2.q8_0.gguf"}
    for qtype, path in paths.items():
        write_gguf(path, config, state, metadata, qtype=qtype)
    return paths


def _logits(model: torch.nn.Module, ids: torch.Tensor, hf: bool) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits if hf else model(ids)


def _max_diff_vs_transformers(path: Path, model: Transformer, prompt_ids: list[torch.Tensor]) -> float:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
    hf.eval()
    return max((_logits(hf, ids, True) - _logits(model, ids, False)).abs().max().item() for ids in prompt_ids)


def test_smollm2_config_and_names(source) -> None:  # type: ignore[no-untyped-def]
    config, state, metadata = source
    assert (config.n_layers, config.dim, config.n_heads, config.n_kv_heads) == (30, 576, 9, 3)
    assert (config.ffn_dim, config.vocab_size, config.head_dim) == (1536, 49152, 64)
    assert config.rope_theta == 100_000.0 and config.norm_eps == 1e-5 and config.rope_scaling is None
    assert config.tie_embeddings and "output.weight" not in state
    assert set(state) == set(expected_shapes(config))
    assert state["tok_embeddings.weight"].shape == (49152, 576)
    assert state["layers.0.feed_forward.w2.weight"].shape == (576, 1536)
    assert all(t.dtype == torch.float32 for t in state.values())
    assert metadata["general.architecture"] == "llama" and "tokenizer.chat_template" in metadata


def test_smollm2_logits_match_transformers(smollm2_path, herd_model, prompt_ids):  # type: ignore[no-untyped-def]
    """GGUF q/k rows are Meta-layout: no permutation, and herd matches transformers' own GGUF loader."""
    diff = _max_diff_vs_transformers(smollm2_path, herd_model, prompt_ids)
    print(f"\nSmolLM2 Q4_1: max |logit diff| herd vs transformers = {diff:.3g}")
    assert diff <= LOGIT_TOL


@pytest.fixture(scope="module")
def f16_read(written):  # type: ignore[no-untyped-def]
    return read_gguf(written["f16"])


# The GGUF value types llama.cpp's converter used in the source file (Python values lose them).
SOURCE_TYPES = {
    "general.name": [V.STRING], "general.languages": [V.ARRAY, V.STRING],
    "tokenizer.ggml.tokens": [V.ARRAY, V.STRING], "tokenizer.ggml.merges": [V.ARRAY, V.STRING],
    "tokenizer.ggml.token_type": [V.ARRAY, V.INT32], "tokenizer.ggml.bos_token_id": [V.UINT32],
    "tokenizer.ggml.padding_token_id": [V.UINT32], "tokenizer.ggml.add_bos_token": [V.BOOL],
    "tokenizer.chat_template": [V.STRING],
}


def test_f16_round_trip(source, written, f16_read) -> None:  # type: ignore[no-untyped-def]
    config, state, metadata = source
    config2, state2, metadata2 = f16_read
    assert config2 == config
    assert state2.keys() == state.keys()
    for key, tensor in state.items():  # matrices F16, norms kept F32
        assert torch.equal(state2[key], tensor.half().float() if tensor.dim() == 2 else tensor), key
    copied = [k for k in metadata if k.startswith(("tokenizer.", "general.")) and k != "general.file_type"]
    assert len(copied) > 15 and {k: metadata2[k] for k in copied} == {k: metadata[k] for k in copied}
    assert metadata2["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    reader = open_gguf(written["f16"])
    assert {k: reader.fields[k].types for k in SOURCE_TYPES} == SOURCE_TYPES
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert "output.weight" not in types and types["output_norm.weight"] == Q.F32
    assert types["blk.0.attn_norm.weight"] == Q.F32 and types["blk.3.ffn_down.weight"] == Q.F16


def test_q8_0_round_trip_is_idempotent(source, written, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config, state, metadata = source
    config_a, state_a, metadata_a = read_gguf(written["q8_0"])
    assert config_a == config and metadata_a["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert metadata_a["tokenizer.ggml.tokens"] == metadata["tokenizer.ggml.tokens"]
    for key, tensor in state.items():
        # half a step of the block scale d = max|block| / 127, plus d's own fp16 rounding (2^-11 relative)
        bound = 0.0 if tensor.dim() == 1 else tensor.abs().max().item() / 127 * (0.5 + 127 * 2**-11) + 1e-7
        assert (state_a[key] - tensor).abs().max().item() <= bound, key
    again = tmp_path / "again.gguf"
    write_gguf(again, config_a, state_a, metadata_a, qtype="q8_0")
    # Byte-identical files: re-quantizing Q8_0 values is a no-op, so reading back gives bitwise the same
    # tensors (and re-reading a second 135M-parameter file would only cost test time).
    assert again.read_bytes() == written["q8_0"].read_bytes()


def test_transformers_loads_herd_written_f16(written, f16_read, prompt_ids) -> None:  # type: ignore[no-untyped-def]
    config, state, _ = f16_read
    model = Transformer(config)
    load_state_dict_checked(model, state, "herd F16 GGUF")
    diff = _max_diff_vs_transformers(written["f16"], model.eval(), prompt_ids)
    print(f"\nherd-written F16: max |logit diff| herd vs transformers = {diff:.3g}")
    assert diff <= LOGIT_TOL


# --------------------------------------------------------------------------------------------
# Synthetic GGUFs, blocks built by the format spec (independent of gguf.quants)

TINY = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96, ffn_dim=96, norm_eps=1e-6,
                   rope_theta=10_000.0, max_seq_len=256)


def _fp16_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.001, 0.05, size=(n, 1)).astype(np.float16)


def encode_blocks(values_shape: tuple[int, int], qtype: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random raw bytes of `qtype` for a [rows, cols] matrix and the float32 values they encode."""
    rows, cols = values_shape
    n = rows * cols // 32
    if qtype == Q.BF16:
        bits = (rng.normal(size=values_shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return bits.view(np.uint8).reshape(rows, -1), (bits.astype(np.uint32) << 16).view(np.float32)
    d = _fp16_scales(rng, n)
    if qtype == Q.Q8_0:
        q = rng.integers(-127, 128, size=(n, 32)).astype(np.int8)
        raw = np.concatenate([d.view(np.uint8), q.view(np.uint8)], axis=1)
        values = q.astype(np.float32) * d.astype(np.float32)
    else:
        q = rng.integers(0, 16, size=(n, 32)).astype(np.uint8)  # element j in low nibble, j+16 in high
        packed = q[:, :16] | (q[:, 16:] << 4)
        if qtype == Q.Q4_0:
            raw = np.concatenate([d.view(np.uint8), packed], axis=1)
            values = (q.astype(np.float32) - 8) * d.astype(np.float32)
        else:
            m = rng.uniform(-0.1, 0.1, size=(n, 1)).astype(np.float16)
            raw = np.concatenate([d.view(np.uint8), m.view(np.uint8), packed], axis=1)
            values = d.astype(np.float32) * q.astype(np.float32) + m.astype(np.float32)
    return raw.reshape(rows, -1), values.reshape(values_shape)


def write_raw_gguf(path: Path, config: ModelConfig, tensors: dict[str, tuple[np.ndarray, Any]],
                   drop_keys: tuple[str, ...] = (), extra: dict[str, Any] | None = None, arch: str = "llama") -> None:
    """A GGUF written directly with gguf.GGUFWriter: `tensors` maps GGUF name -> (data, raw type or None)."""
    writer = gguf.GGUFWriter(str(path), arch)
    keys = {"context_length": config.max_seq_len, "embedding_length": config.dim, "block_count": config.n_layers,
            "feed_forward_length": config.ffn_dim, "attention.head_count": config.n_heads,
            "attention.head_count_kv": config.n_kv_heads, "vocab_size": config.vocab_size,
            "rope.dimension_count": config.head_dim}
    for key, value in keys.items():
        if key not in drop_keys:
            writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.rope.freq_base", config.rope_theta)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", config.norm_eps)
    for key, value in (extra or {}).items():
        writer.add_float32(key, value) if isinstance(value, float) else writer.add_string(key, value)
    for name, (data, raw) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def synthetic(
    config: ModelConfig = TINY, seed: int = 0
) -> tuple[dict[str, tuple[np.ndarray, Any]], dict[str, np.ndarray]]:
    """Every tensor of `config`, matrices cycling through Q4_0/Q4_1/BF16/Q8_0/F16, norms F32."""
    rng = np.random.default_rng(seed)
    cycle = [Q.Q4_0, Q.Q4_1, Q.BF16, Q.Q8_0, None]
    raw: dict[str, tuple[np.ndarray, Any]] = {}
    expected: dict[str, np.ndarray] = {}
    for i, (name, shape) in enumerate(expected_shapes(config).items()):
        gname = herd_to_gguf_name(name)
        assert gname is not None
        if len(shape) == 1:
            values = rng.normal(size=shape).astype(np.float32)
            raw[gname] = (values, None)
        elif cycle[i % len(cycle)] is None:
            half = rng.normal(size=shape).astype(np.float16)
            raw[gname], values = (half, None), half.astype(np.float32)
        else:
            data, values = encode_blocks(shape, cycle[i % len(cycle)], rng)  # type: ignore[arg-type]
            raw[gname] = (data, cycle[i % len(cycle)])
        expected[name] = values
    return raw, expected


def test_synthetic_block_formats_dequantize_exactly(tmp_path: Path) -> None:
    raw, expected = synthetic()
    types = {t for _, t in raw.values()}
    assert {Q.Q4_0, Q.Q4_1, Q.BF16, Q.Q8_0}.issubset(types)
    write_raw_gguf(tmp_path / "tiny.gguf", TINY, raw)
    config, state, _ = read_gguf(tmp_path / "tiny.gguf")
    assert config == TINY.replace(tie_embeddings=False)
    for name, values in expected.items():
        assert np.array_equal(state[name].numpy(), values), name
    _, state16, _ = read_gguf(tmp_path / "tiny.gguf", dtype=torch.bfloat16)
    assert all(t.dtype == torch.bfloat16 for t in state16.values())


@pytest.mark.parametrize("qtype", ["IQ4_NL", "Q5_0"])
def test_unsupported_type_names_it(tmp_path: Path, qtype: str) -> None:
    raw, _ = synthetic()
    block, size = gguf.GGML_QUANT_SIZES[Q[qtype]]
    raw["blk.1.attn_k.weight"] = (np.zeros((32, 64 // block * size), dtype=np.uint8), Q[qtype])
    write_raw_gguf(tmp_path / "bad.gguf", TINY, raw)
    with pytest.raises(CheckpointError, match=rf"blk\.1\.attn_k\.weight.*{qtype}.*Q4_1"):
        read_gguf(tmp_path / "bad.gguf")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_gguf(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"PK\x03\x04 not a gguf at all")
    with pytest.raises(CheckpointError, match="bad magic"):
        read_gguf(tmp_path / "junk.gguf")
    write_raw_gguf(tmp_path / "ok.gguf", TINY, synthetic()[0])
    data = (tmp_path / "ok.gguf").read_bytes()
    for cut in (40, len(data) // 3, len(data) - 100):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="damaged|truncated"):
            read_gguf(tmp_path / "cut.gguf")


def test_wrong_shape_missing_and_unexpected_tensors(tmp_path: Path) -> None:
    raw, _ = synthetic()
    bad = dict(raw, **{"blk.0.attn_q.weight": (np.zeros((32, 64), np.float32), None)})
    write_raw_gguf(tmp_path / "shape.gguf", TINY, bad)
    with pytest.raises(CheckpointError, match=r"blk\.0\.attn_q\.weight.*\(32, 64\).*\(64, 64\)"):
        read_gguf(tmp_path / "shape.gguf")
    missing = {k: v for k, v in raw.items() if k != "blk.1.ffn_norm.weight"}
    write_raw_gguf(tmp_path / "missing.gguf", TINY, missing)
    with pytest.raises(CheckpointError, match=r"lacks tensors: blk\.1\.ffn_norm\.weight"):
        read_gguf(tmp_path / "missing.gguf")
    extra = dict(raw, **{"blk.0.attn_q.bias": (np.zeros(64, np.float32), None)})
    write_raw_gguf(tmp_path / "extra.gguf", TINY, extra)
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'blk\.0\.attn_q\.bias'"):
        read_gguf(tmp_path / "extra.gguf")


def test_bad_metadata(tmp_path: Path) -> None:
    raw, _ = synthetic()
    write_raw_gguf(tmp_path / "nokey.gguf", TINY, raw, drop_keys=("embedding_length",))
    with pytest.raises(CheckpointError, match=r"llama\.embedding_length"):
        read_gguf(tmp_path / "nokey.gguf")
    write_raw_gguf(tmp_path / "qwen.gguf", TINY, raw, arch="qwen2")
    with pytest.raises(CheckpointError, match="qwen2"):
        read_gguf(tmp_path / "qwen.gguf")
    write_raw_gguf(tmp_path / "yarn.gguf", TINY, raw, extra={"llama.rope.scaling.type": "yarn"})
    with pytest.raises(CheckpointError, match="yarn"):
        read_gguf(tmp_path / "yarn.gguf")
    write_raw_gguf(tmp_path / "linear.gguf", TINY, raw, extra={"llama.rope.scaling.factor": 4.0})
    with pytest.raises(CheckpointError, match="'linear', factor 4.0"):
        read_gguf(tmp_path / "linear.gguf")


# --------------------------------------------------------------------------------------------
# herd's writer on small configs


def _random_state(config: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in expected_shapes(config).items()}


@pytest.mark.parametrize("scaling", [RopeScaling(factor=8.0), RopeScaling(32.0, 1.0, 4.0, 8192),
                                     RopeScaling(16.0, 2.0, 8.0, 4096)])
def test_llama31_rope_scaling_round_trips_via_rope_freqs(tmp_path: Path, scaling: RopeScaling) -> None:
    config = ModelConfig(dim=128, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=64, ffn_dim=64,
                         rope_theta=500_000.0, rope_scaling=scaling, tie_embeddings=True, max_seq_len=131_072)
    write_gguf(tmp_path / "l31.gguf", config, _random_state(config))
    names = [t.name for t in open_gguf(tmp_path / "l31.gguf").tensors]
    assert "rope_freqs.weight" in names and "output.weight" not in names
    assert read_gguf(tmp_path / "l31.gguf")[0] == config


def test_rope_freqs_that_are_not_llama31_are_rejected(tmp_path: Path) -> None:
    raw, _ = synthetic()
    factors = llama3_rope_factors(TINY.head_dim, TINY.rope_theta, RopeScaling(factor=8.0, original_context=64))
    raw["rope_freqs.weight"] = (factors[::-1].copy(), None)
    write_raw_gguf(tmp_path / "freqs.gguf", TINY, raw)
    with pytest.raises(CheckpointError, match="rope_freqs"):
        read_gguf(tmp_path / "freqs.gguf")


def test_head_dim_override_and_untied_round_trip(tmp_path: Path) -> None:
    config = TINY.replace(head_dim_override=32)
    state = _random_state(config)
    write_gguf(tmp_path / "hd.gguf", config, state, {"general.name": "tiny"})
    config2, state2, metadata = read_gguf(tmp_path / "hd.gguf")
    assert config2 == config and metadata["general.name"] == "tiny" and "output.weight" in state2
    assert all(torch.equal(state2[k], v.half().float() if v.dim() == 2 else v) for k, v in state.items())


def test_metadata_types_and_filtering(tmp_path: Path) -> None:
    metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"],
                "tokenizer.ggml.scores": [0.0, -1.5], "tokenizer.ggml.token_type": [1, 3],
                "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.bos_token_id": 5,
                "general.alignment": 64, "general.file_type": 99, "llama.block_count": 7, "other.key": 1}
    write_gguf(tmp_path / "meta.gguf", TINY, _random_state(TINY), metadata)
    fields = open_gguf(tmp_path / "meta.gguf").fields
    assert fields["tokenizer.ggml.scores"].types == [V.ARRAY, V.FLOAT32]
    assert fields["tokenizer.ggml.token_type"].types == [V.ARRAY, V.INT32]
    assert fields["tokenizer.ggml.add_bos_token"].types == [V.BOOL]
    assert fields["tokenizer.ggml.bos_token_id"].types == [V.UINT32]
    config, _, read_back = read_gguf(tmp_path / "meta.gguf")
    assert config.n_layers == TINY.n_layers and "other.key" not in read_back and "general.alignment" not in read_back
    assert {k: read_back[k] for k in metadata if k.startswith("tokenizer.")} == {
        k: v for k, v in metadata.items() if k.startswith("tokenizer.")}
    assert read_back["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16


def test_q8_0_falls_back_to_f16_for_odd_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = ModelConfig(dim=40, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=64, ffn_dim=64)
    state = _random_state(config)
    with caplog.at_level(logging.WARNING, logger="herd.checkpoint.gguf_io"):
        write_gguf(tmp_path / "odd.gguf", config, state, qtype="Q8_0")
    assert "F16" in caplog.text and "attention.wq" in caplog.text
    types = {t.name: t.tensor_type for t in open_gguf(tmp_path / "odd.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == Q.F16 and types["blk.0.ffn_down.weight"] == Q.Q8_0
    _, state2, _ = read_gguf(tmp_path / "odd.gguf")
    assert torch.equal(state2["layers.0.attention.wq.weight"], state["layers.0.attention.wq.weight"].half().float())


def test_write_errors_and_atomicity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _random_state(TINY)
    target = tmp_path / "model.gguf"
    with pytest.raises(ValueError, match="q4_k"):
        write_gguf(target, TINY, state, qtype="q4_k")
    bad = dict(state, **{"layers.1.attention.wv.weight": torch.zeros(64, 64)})
    with pytest.raises(CheckpointError, match=r"layers\.1\.attention\.wv\.weight.*\(64, 64\).*\(32, 64\)"):
        write_gguf(target, TINY, bad)
    write_gguf(target, TINY, state)
    before = target.read_bytes()

    def boom(*_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf.quants, "quantize", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_gguf(target, TINY, _random_state(TINY, seed=1))
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_the_tokenizer_alone_is_read_from_a_gguf(smollm2_path: Path) -> None:
    """herd.checkpoint reads a GGUF's tokenizer without its tensors; it equals the one read_checkpoint gives."""
    from herd.checkpoint import read_checkpoint
    from herd.checkpoint.gguf_metadata import read_gguf_tokenizer

    alone, full = read_gguf_tokenizer(smollm2_path), read_checkpoint(smollm2_path).tokenizer
    text = "Hello, llamas! 2+2=4 <|im_start|>"
    assert full is not None and alone.vocab_size == full.vocab_size == 49152
    assert alone.encode(text, allow_special=True) == full.encode(text, allow_special=True)
    assert alone.bos_id == full.bos_id and alone.eos_id == full.eos_id
