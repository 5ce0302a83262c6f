"""Hugging Face Llama format: `config.json` + safetensors (single file or sharded with an index).

Hugging Face rotates the two halves of each head for RoPE while Meta (and herd) rotate interleaved
pairs, so wq/wk are permuted per head on the way in and out.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from herd.checkpoint.errors import CheckpointError
from herd.model.config import ModelConfig, RopeScaling

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

_LAYER_NAMES = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
_HF_TO_HERD_LAYER = {v: k for k, v in _LAYER_NAMES.items()}
_HF_TO_HERD_TOP = {v: k for k, v in _TOP_NAMES.items()}
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(.+)\.weight$")
_HF_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)\.weight$")


def interleaved_to_halves(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta q/k rows (pairs interleaved per head) -> Hugging Face rows (halves per head)."""
    out_dim, in_dim = w.shape
    head_dim = out_dim // n_heads
    return w.view(n_heads, head_dim // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def halves_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Hugging Face q/k rows -> Meta rows; the inverse of `interleaved_to_halves`."""
    out_dim, in_dim = w.shape
    head_dim = out_dim // n_heads
    return w.view(n_heads, 2, head_dim // 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def herd_to_hf_state_dict(config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = _LAYER_KEY.match(key)
        if match:
            layer, name = match.groups()
            if name == "attention.wq":
                tensor = interleaved_to_halves(tensor, config.n_heads)
            elif name == "attention.wk":
                tensor = interleaved_to_halves(tensor, config.n_kv_heads)
            out[f"model.layers.{layer}.{_LAYER_NAMES[name]}.weight"] = tensor
        else:
            name = key.removesuffix(".weight")
            if name == "output" and config.tie_embeddings:
                continue
            out[f"{_TOP_NAMES[name]}.weight"] = tensor
    return out


def hf_to_herd_state_dict(config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue  # a buffer some old exports saved; recomputed from the config
        match = _HF_LAYER_KEY.match(key)
        if match:
            layer, name = match.groups()
            if name not in _HF_TO_HERD_LAYER:
                raise CheckpointError(f"unexpected tensor {key!r} in Hugging Face checkpoint")
            herd_name = _HF_TO_HERD_LAYER[name]
            if herd_name == "attention.wq":
                tensor = halves_to_interleaved(tensor, config.n_heads)
            elif herd_name == "attention.wk":
                tensor = halves_to_interleaved(tensor, config.n_kv_heads)
            out[f"layers.{layer}.{herd_name}.weight"] = tensor
        else:
            name = key.removesuffix(".weight")
            if name not in _HF_TO_HERD_TOP:
                raise CheckpointError(f"unexpected tensor {key!r} in Hugging Face checkpoint")
            out[f"{_HF_TO_HERD_TOP[name]}.weight"] = tensor
    if config.tie_embeddings:
        out.pop("output.weight", None)
    return out


def config_to_hf(config: ModelConfig, torch_dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """A `config.json` that transformers' LlamaForCausalLM loads (the widely used v4 key layout)."""
    hf: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.dim,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "max_position_embeddings": config.max_seq_len,
        "tie_word_embeddings": config.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": str(torch_dtype).removeprefix("torch."),
    }
    if config.rope_scaling is not None:
        hf["rope_scaling"] = {
            "rope_type": "llama3",
            "factor": config.rope_scaling.factor,
            "low_freq_factor": config.rope_scaling.low_freq_factor,
            "high_freq_factor": config.rope_scaling.high_freq_factor,
            "original_max_position_embeddings": config.rope_scaling.original_context,
        }
    return hf


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Read a Llama `config.json` (transformers v4 `rope_scaling` or v5 `rope_parameters`)."""
    if hf.get("model_type", "llama") not in ("llama", "mistral") and "LlamaForCausalLM" not in hf.get(
        "architectures", []
    ):
        raise CheckpointError(f"config.json describes model_type {hf.get('model_type')!r}, not a Llama model")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise CheckpointError("config.json asks for attention/MLP biases, which Llama 3 does not have")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                           "vocab_size") if k not in hf]
    if missing:
        raise CheckpointError(f"config.json lacks required keys: {', '.join(missing)}")
    rope = dict(hf.get("rope_parameters") or {})
    rope.update(hf.get("rope_scaling") or {})
    theta = float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    scaling = None
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "llama3":
        scaling = RopeScaling(
            factor=float(rope["factor"]),
            low_freq_factor=float(rope["low_freq_factor"]),
            high_freq_factor=float(rope["high_freq_factor"]),
            original_context=int(rope["original_max_position_embeddings"]),
        )
    elif rope_type not in ("default", None):
        raise CheckpointError(f"unsupported RoPE scaling type {rope_type!r} (supported: default, llama3)")
    n_heads = int(hf["num_attention_heads"])
    dim = int(hf["hidden_size"])
    head_dim = hf.get("head_dim")
    return ModelConfig(
        dim=dim,
        n_layers=int(hf["num_hidden_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        vocab_size=int(hf["vocab_size"]),
        ffn_dim=int(hf["intermediate_size"]),
        norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        rope_theta=theta,
        rope_scaling=scaling,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_seq_len=int(hf.get("max_position_embeddings", 8192)),
        head_dim_override=int(head_dim) if head_dim and int(head_dim) != dim // n_heads else None,
    )


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    """A Hugging Face model directory's `config.json` as a dict."""
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no config.json (not a Hugging Face model directory)")
    return json.loads(config_path.read_text())


def read_hf_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face directory under its own name (single file or sharded)."""
    directory = Path(directory)
    if (directory / INDEX_FILE).is_file():
        weight_map = json.loads((directory / INDEX_FILE).read_text()).get("weight_map", {})
        files = sorted(set(weight_map.values()))
    elif (directory / SINGLE_FILE).is_file():
        files = [SINGLE_FILE]
    else:
        raise CheckpointError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"shard {name} listed in {INDEX_FILE} is missing from {directory}")
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                state[key] = f.get_tensor(key)
    return state


def read_hf(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and herd-named state dict from a Hugging Face model directory."""
    config = config_from_hf(read_hf_config(directory))
    return config, hf_to_herd_state_dict(config, read_hf_tensors(directory))


def write_hf(
    directory: str | Path,
    config: ModelConfig,
    state: dict[str, torch.Tensor],
    max_shard_bytes: int = 5 * 1024**3,
) -> None:
    """Write config.json and safetensors, split into shards of at most `max_shard_bytes` with an index."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hf_state = {k: v.contiguous() for k, v in herd_to_hf_state_dict(config, state).items()}
    dtypes = {t.dtype for t in hf_state.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    (directory / "config.json").write_text(json.dumps(config_to_hf(config, dtype), indent=2) + "\n")
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in hf_state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / SINGLE_FILE), metadata=metadata)
        (directory / INDEX_FILE).unlink(missing_ok=True)
        return
    weight_map = {}
    total = sum(t.numel() * t.element_size() for t in hf_state.values())
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata=metadata)
        weight_map.update({key: name for key in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    (directory / SINGLE_FILE).unlink(missing_ok=True)


def write_hf_sequence_classification(directory: str | Path, config: ModelConfig, trunk: dict[str, torch.Tensor],
                                     score: torch.Tensor, tokenizer: Any = None) -> Path:
    """A reward model (trunk + `score` [labels, dim]) as Hugging Face `LlamaForSequenceClassification`.

    transformers reads the score at the last token that is not `pad_token_id`, and a reward is read at
    the response's closing token, so only a dedicated padding token (Llama 3's
    `<|finetune_right_pad_id|>`) is written as the pad id; without one, transformers scores one
    unpadded sequence per call.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trunk = {k: v.detach().to("cpu", torch.float32) for k, v in trunk.items() if k not in ("output.weight",
                                                                                           "score.weight")}
    hf_state = herd_to_hf_state_dict(config.replace(tie_embeddings=True), trunk)
    hf_state["score.weight"] = score.detach().to("cpu", torch.float32)
    save_file({k: v.contiguous() for k, v in hf_state.items()}, str(directory / SINGLE_FILE), metadata={"format": "pt"})
    (directory / INDEX_FILE).unlink(missing_ok=True)
    hf_config = config_to_hf(config, torch.float32)
    specials = getattr(tokenizer, "special_tokens", {}) or {}
    labels = int(score.shape[0])
    hf_config.update(architectures=["LlamaForSequenceClassification"], num_labels=labels,
                     id2label={str(i): f"LABEL_{i}" for i in range(labels)},
                     label2id={f"LABEL_{i}": i for i in range(labels)}, tie_word_embeddings=False,
                     pad_token_id=specials.get("<|finetune_right_pad_id|>"))
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    if tokenizer is not None:
        from herd.tokenizer.files import save_tokenizer

        save_tokenizer(tokenizer, directory, "hf", chat_template=getattr(tokenizer, "chat_template", None))
    return directory
