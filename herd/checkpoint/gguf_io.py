"""GGUF (llama.cpp) weights: read any F32/F16/BF16/Q8_0/Q4_0/Q4_1 `llama` GGUF, write F16 or Q8_0.

Layout notes, because they are easy to get wrong:

- GGUF lists tensor dimensions innermost first (ggml `ne[0]` is the row length), the reverse of
  PyTorch; a `[576, 1536]` GGUF tensor is a `[1536, 576]` PyTorch weight.
- llama.cpp's `convert_hf_to_gguf.py` permutes Hugging Face q/k rows from "halves" back to the
  interleaved-pair RoPE layout (and transformers' GGUF loader undoes that again), so GGUF q/k rows are
  already in Meta's (= herd's) layout and are copied without any permutation. The logits test against
  transformers on the real SmolLM2 GGUF is the proof.
- llama.cpp stores Llama 3.1 RoPE scaling not as metadata but as a `rope_freqs.weight` tensor of
  per-pair frequency divisors; we map it back to `RopeScaling` (and write it the same way).
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from herd.checkpoint.errors import CheckpointError
from herd.checkpoint.gguf_metadata import gguf_metadata, open_gguf
from herd.checkpoint.validate import expected_shapes
from herd.model.config import ModelConfig, RopeScaling

log = logging.getLogger(__name__)

ARCH = "llama"
ROPE_FREQS = "rope_freqs.weight"
_LAYER_NAMES = {
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_gate": "feed_forward.w1",
    "ffn_up": "feed_forward.w3",
    "ffn_down": "feed_forward.w2",
    "attn_norm": "attention_norm",
    "ffn_norm": "ffn_norm",
}
_TOP_NAMES = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}
_HERD_LAYER = {v: k for k, v in _LAYER_NAMES.items()}
_HERD_TOP = {v: k for k, v in _TOP_NAMES.items()}
_GGUF_LAYER_KEY = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")
_HERD_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(.+)\.weight$")
_REQUIRED_KEYS = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
                  "context_length", "attention.layer_norm_rms_epsilon")
# Keys whose integer values llama.cpp reads with a specific GGUF type; everything else is inferred.
_INT_ARRAY_TYPE = {"tokenizer.ggml.token_type": "INT32"}
_WRITE_TYPES = ("f16", "q8_0")


def _supported_types() -> dict[Any, str]:
    from gguf import GGMLQuantizationType as Q

    return {Q.F32: "F32", Q.F16: "F16", Q.BF16: "BF16", Q.Q8_0: "Q8_0", Q.Q4_0: "Q4_0", Q.Q4_1: "Q4_1"}


def gguf_to_herd_name(name: str) -> str | None:
    """herd parameter name for a llama.cpp tensor name, or None for a tensor herd does not model."""
    match = _GGUF_LAYER_KEY.match(name)
    if match:
        layer, short = match.groups()
        return f"layers.{layer}.{_LAYER_NAMES[short]}.weight" if short in _LAYER_NAMES else None
    top = name.removesuffix(".weight")
    return f"{_TOP_NAMES[top]}.weight" if name.endswith(".weight") and top in _TOP_NAMES else None


def herd_to_gguf_name(name: str) -> str | None:
    match = _HERD_LAYER_KEY.match(name)
    if match:
        layer, short = match.groups()
        return f"blk.{layer}.{_HERD_LAYER[short]}.weight" if short in _HERD_LAYER else None
    top = name.removesuffix(".weight")
    return f"{_HERD_TOP[top]}.weight" if name.endswith(".weight") and top in _HERD_TOP else None


def _f32(value: Any) -> float:
    """A float32 metadata value as the short decimal it was written from (9.99999975e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


def llama3_rope_factors(head_dim: int, theta: float, scaling: RopeScaling) -> np.ndarray:
    """Per-pair frequency divisors exactly as llama.cpp's convert_hf_to_gguf.py computes them."""
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen = scaling.original_context / scaling.low_freq_factor
    high_wavelen = scaling.original_context / scaling.high_freq_factor
    factors = []
    for freq in freqs.astype(np.float64):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(scaling.factor)
        else:
            smooth = (scaling.original_context / wavelen - scaling.low_freq_factor) / (
                scaling.high_freq_factor - scaling.low_freq_factor)
            factors.append(1 / ((1 - smooth) / scaling.factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def rope_scaling_from_factors(
    factors: np.ndarray, head_dim: int, theta: float, original_context: int
) -> RopeScaling | None:
    """Recover `RopeScaling` from a `rope_freqs` tensor, or raise if it is not the Llama 3.1 formula.

    The factor is the largest divisor; the blend band is a straight line in 1/wavelength, so two or
    more in-band pairs determine low/high_freq_factor (relative to `original_context`, which only the
    ratio matters for). The result is checked by recomputing the tensor.
    """
    f = np.asarray(factors, dtype=np.float64).reshape(-1)
    if f.shape[0] != head_dim // 2:
        raise CheckpointError(f"{ROPE_FREQS} has {f.shape[0]} entries, expected head_dim/2 = {head_dim // 2}")
    if np.allclose(f, 1.0):
        return None
    factor = _f32(f.max())
    low, high = 1.0, 4.0
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    band = (f > 1 + 1e-6) & (f < factor * (1 - 1e-6))
    if band.sum() >= 2 and factor > 1:
        smooth = (1 / f[band] - 1 / factor) / (1 - 1 / factor)
        slope, intercept = np.polyfit(freqs[band] / (2 * math.pi), smooth, 1)
        low = round(-intercept * original_context / slope, 4)
        high = round(low + original_context / slope, 4)
    try:
        scaling = RopeScaling(factor=factor, low_freq_factor=low, high_freq_factor=high,
                              original_context=original_context)
        ok = np.allclose(llama3_rope_factors(head_dim, theta, scaling), f, rtol=1e-4, atol=1e-6)
    except (ZeroDivisionError, FloatingPointError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(
            f"{ROPE_FREQS} does not follow the Llama 3.1 RoPE scaling formula (factors {np.round(f, 4).tolist()}); "
            "herd cannot represent this frequency scaling")
    return scaling


def config_from_gguf(metadata: dict[str, Any], rope_freqs: np.ndarray | None = None,
                     tensor_names: set[str] | None = None, vocab_rows: int | None = None) -> ModelConfig:
    """A `ModelConfig` from `llama.*` metadata (plus the rope_freqs tensor and tensor list, if known)."""
    arch = metadata.get("general.architecture")
    if arch != ARCH:
        raise CheckpointError(f"GGUF architecture {arch!r} is not supported (herd reads only {ARCH!r})")
    missing = [f"{ARCH}.{k}" for k in _REQUIRED_KEYS if f"{ARCH}.{k}" not in metadata]
    if missing:
        raise CheckpointError(f"GGUF metadata lacks required keys: {', '.join(missing)}")
    m = {k.removeprefix(f"{ARCH}."): v for k, v in metadata.items() if k.startswith(f"{ARCH}.")}
    dim, n_heads = int(m["embedding_length"]), int(m["attention.head_count"])
    head_dim = int(m.get("attention.key_length") or m.get("rope.dimension_count") or dim // n_heads)
    for key in ("rope.dimension_count", "attention.value_length"):
        if key in m and int(m[key]) != head_dim:
            raise CheckpointError(f"GGUF {ARCH}.{key} = {m[key]} differs from head_dim {head_dim}; "
                                  "partial rotary / unequal key and value heads are not Llama 3")
    vocab = m.get("vocab_size") or len(metadata.get("tokenizer.ggml.tokens") or []) or vocab_rows
    if not vocab:
        raise CheckpointError(f"GGUF metadata lacks {ARCH}.vocab_size and tokenizer.ggml.tokens")
    # llama.cpp applies rope.scaling.factor (or the old rope.scale_linear) as linear scaling when no type
    # is given; herd's RoPE has only the Llama 3.1 form, which llama.cpp stores as the rope_freqs tensor.
    scaling_type = m.get("rope.scaling.type")
    linear = float(m.get("rope.scaling.factor") or m.get("rope.scale_linear") or 1.0)
    if scaling_type not in (None, "none", "") or (scaling_type is None and linear != 1.0):
        raise CheckpointError(f"unsupported GGUF RoPE scaling (type {scaling_type or 'linear'!r}, factor {linear}); "
                              f"herd supports none, or Llama 3.1 scaling stored as a {ROPE_FREQS} tensor")
    theta = _f32(m.get("rope.freq_base", 10_000.0))
    scaling = None
    if rope_freqs is not None:
        original = int(m.get("rope.scaling.original_context_length", 8192))
        scaling = rope_scaling_from_factors(rope_freqs, head_dim, theta, original)
    return ModelConfig(
        dim=dim,
        n_layers=int(m["block_count"]),
        n_heads=n_heads,
        n_kv_heads=int(m.get("attention.head_count_kv") or n_heads),
        vocab_size=int(vocab),
        ffn_dim=int(m["feed_forward_length"]),
        norm_eps=_f32(m["attention.layer_norm_rms_epsilon"]),
        rope_theta=theta,
        rope_scaling=scaling,
        tie_embeddings=tensor_names is not None and "output.weight" not in tensor_names,
        max_seq_len=int(m["context_length"]),
        head_dim_override=head_dim if head_dim != dim // n_heads else None,
    )


def _dequantize(tensor: Any, where: str) -> np.ndarray:
    """float32 numpy copy of a reader tensor in PyTorch dimension order (detached from the memmap)."""
    from gguf.quants import dequantize

    supported = _supported_types()
    if tensor.tensor_type not in supported:
        raise CheckpointError(f"{where}: tensor {tensor.name} has GGML type {tensor.tensor_type.name}, which herd "
                              f"does not dequantize (supported: {', '.join(supported.values())})")
    if tensor.data.nbytes != tensor.n_bytes:
        raise CheckpointError(f"{where} is truncated: tensor {tensor.name} has {tensor.data.nbytes} of "
                              f"{tensor.n_bytes} bytes")
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    return np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32).reshape(shape)


def read_gguf(path: str | Path, dtype: torch.dtype = torch.float32
              ) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, herd-named dequantized state dict, and all key/value metadata of a `llama` GGUF file."""
    reader = open_gguf(path)
    metadata = gguf_metadata(reader)
    by_name = {t.name: t for t in reader.tensors}
    rope_freqs = _dequantize(by_name[ROPE_FREQS], str(path)) if ROPE_FREQS in by_name else None
    embd = by_name.get("token_embd.weight")
    vocab_rows = int(embd.shape[-1]) if embd is not None and len(embd.shape) == 2 else None
    config = config_from_gguf(metadata, rope_freqs, set(by_name), vocab_rows)
    expected = expected_shapes(config)
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        if tensor.name == ROPE_FREQS:
            continue
        name = gguf_to_herd_name(tensor.name)
        if name is None or name not in expected:
            raise CheckpointError(f"{path}: unexpected tensor {tensor.name!r} for a {config.n_layers}-layer "
                                  "Llama model")
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        if shape != expected[name]:
            raise CheckpointError(f"{path}: tensor {tensor.name} ({name}) has shape {shape}, the GGUF metadata's "
                                  f"config expects {expected[name]}")
        state[name] = torch.from_numpy(_dequantize(tensor, str(path))).to(dtype)
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(herd_to_gguf_name(k) or k for k in missing[:6])
        more = f" (and {len(missing) - 6} more)" if len(missing) > 6 else ""
        raise CheckpointError(f"{path} lacks tensors: {shown}{more}")
    return config, state, metadata


def _add_metadata(writer: Any, key: str, value: Any) -> None:
    """Write one copied metadata value with the GGUF type llama.cpp expects for it.

    Python values lose the on-disk type, so: bool -> BOOL, int -> UINT32 (INT32/INT64 when it does not
    fit), float -> FLOAT32, str -> STRING; arrays of ints are INT32 (tokenizer.ggml.token_type).
    """
    from gguf import GGUFValueType as V

    def scalar_type(v: Any) -> Any:
        if isinstance(v, (bool, np.bool_)):
            return V.BOOL
        if isinstance(v, (int, np.integer)):
            return V.UINT32 if 0 <= v < 2**32 else V.INT32 if -(2**31) <= v < 2**31 else V.INT64
        if isinstance(v, (float, np.floating)):
            return V.FLOAT32
        if isinstance(v, str):
            return V.STRING
        raise ValueError(f"cannot write GGUF metadata {key!r} of type {type(v).__name__}")

    if isinstance(value, (list, tuple)):
        if not value:
            return
        types = {scalar_type(v) for v in value}
        if types <= {V.UINT32, V.INT32, V.INT64}:
            sub = V.INT64 if V.INT64 in types else getattr(V, _INT_ARRAY_TYPE.get(key, "INT32"))
            value = [int(v) for v in value]
        elif len(types) == 1:
            sub = types.pop()
            value = [float(v) if sub == V.FLOAT32 else v for v in value]
        else:
            raise ValueError(f"GGUF metadata array {key!r} mixes types")
        writer.add_key_value(key, list(value), V.ARRAY, sub_type=sub)
    else:
        vtype = scalar_type(value)
        py = bool(value) if vtype == V.BOOL else str(value) if vtype == V.STRING else value
        writer.add_key_value(key, int(py) if vtype in (V.UINT32, V.INT32, V.INT64) else
                             float(py) if vtype == V.FLOAT32 else py, vtype)


def write_gguf(path: str | Path, config: ModelConfig, state_dict: dict[str, torch.Tensor],
               metadata: dict[str, Any] | None = None, qtype: str = "f16") -> None:
    """Write a llama.cpp-loadable `llama` GGUF: matrices as F16 or Q8_0, norms F32, atomically.

    `general.*` and `tokenizer.*` keys of `metadata` are copied (architecture/file type are ours);
    the model keys come from `config`, so they always describe the tensors actually written.
    """
    import gguf
    from gguf.quants import quantize

    qtype = qtype.lower()
    if qtype not in _WRITE_TYPES:
        raise ValueError(f"unsupported GGUF write type {qtype!r}; choose one of {', '.join(_WRITE_TYPES)}")
    expected = expected_shapes(config)
    state = {k: v for k, v in state_dict.items() if not (k == "output.weight" and config.tie_embeddings)}
    problems = [f"unexpected tensor {k}" for k in state if k not in expected]
    problems += [f"missing tensor {k}" for k in expected if k not in state]
    problems += [f"tensor {k} has shape {tuple(v.shape)}, the config expects {expected[k]}"
                 for k, v in state.items() if k in expected and tuple(v.shape) != expected[k]]
    if problems:
        raise CheckpointError("cannot write GGUF: " + "; ".join(problems[:8]))
    Q, FT = gguf.GGMLQuantizationType, gguf.LlamaFileType
    matrix_type = Q.Q8_0 if qtype == "q8_0" else Q.F16
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    try:
        # Ours to set: the architecture, the file type, and the alignment the writer actually pads to.
        skip = {"general.architecture", "general.file_type", "general.quantization_version", "general.alignment"}
        for key, value in (metadata or {}).items():
            if key.startswith(("general.", "tokenizer.")) and key not in skip:
                _add_metadata(writer, key, value)
        writer.add_context_length(config.max_seq_len)
        writer.add_embedding_length(config.dim)
        writer.add_block_count(config.n_layers)
        writer.add_feed_forward_length(config.ffn_dim)
        writer.add_head_count(config.n_heads)
        writer.add_head_count_kv(config.n_kv_heads)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_layer_norm_rms_eps(config.norm_eps)
        writer.add_vocab_size(config.vocab_size)
        writer.add_rope_dimension_count(config.head_dim)
        if config.head_dim_override is not None:
            writer.add_key_length(config.head_dim)
            writer.add_value_length(config.head_dim)
        if config.rope_scaling is not None:
            writer.add_rope_scaling_orig_ctx_len(config.rope_scaling.original_context)
        writer.add_file_type(FT.MOSTLY_Q8_0 if qtype == "q8_0" else FT.MOSTLY_F16)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if config.rope_scaling is not None:
            writer.add_tensor(ROPE_FREQS, llama3_rope_factors(config.head_dim, config.rope_theta, config.rope_scaling))
        fallback = []
        for name in expected:  # token_embd, blk.N..., output_norm, output: llama.cpp's order
            array = state[name].detach().to("cpu", torch.float32).contiguous().numpy()
            gguf_name = herd_to_gguf_name(name)
            assert gguf_name is not None
            if array.ndim == 1:
                writer.add_tensor(gguf_name, array)
                continue
            target = matrix_type
            if target == Q.Q8_0 and array.shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0]:
                target = Q.F16
                fallback.append(f"{name} {tuple(array.shape)}")
            data = quantize(array, target)
            writer.add_tensor(gguf_name, data, raw_dtype=None if target == Q.F16 else target)
        if fallback:
            log.warning("GGUF Q8_0 needs rows divisible by 32; wrote these tensors as F16 instead: %s",
                        ", ".join(fallback))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
