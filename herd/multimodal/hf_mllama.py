"""Import a Hugging Face `mllama` checkpoint (Llama 3.2 Vision, `MllamaForConditionalGeneration`)
into herd's VisionLanguageModel.

transformers keeps text and cross-attention layers in one list (`cross_attention_layers` are their
positions there) and the 8 new token rows at the end of the text embedding; herd keeps the text
model whole (a plain `Transformer`, its q/k rows in Meta's interleaved RoPE layout) and the image path
beside it. Everything else is a rename.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from herd.checkpoint.errors import CheckpointError
from herd.checkpoint.hf import config_from_hf, hf_to_herd_state_dict, read_hf_config, read_hf_tensors
from herd.multimodal.config import NEW_TOKEN_ROWS, VisionConfig, VisionLanguageConfig, from_hf_layer_indices

_VISION_BLOCK = {
    "self_attn.q_proj.weight": "attention.wq.weight", "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight", "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.fc1.weight": "fc1.weight", "mlp.fc1.bias": "fc1.bias", "mlp.fc2.weight": "fc2.weight",
    "mlp.fc2.bias": "fc2.bias", "input_layernorm.weight": "attention_norm.weight",
    "input_layernorm.bias": "attention_norm.bias", "post_attention_layernorm.weight": "mlp_norm.weight",
    "post_attention_layernorm.bias": "mlp_norm.bias", "gate_attn": "gate_attention", "gate_ffn": "gate_mlp",
}
_VISION_TOP = {
    "class_embedding": "class_embedding", "patch_embedding.weight": "patch_embedding.weight",
    "gated_positional_embedding.gate": "tile_position_embedding.gate",
    "gated_positional_embedding.embedding": "position_embedding",
    "gated_positional_embedding.tile_embedding.weight": "tile_position_embedding.embedding.weight",
    "pre_tile_positional_embedding.gate": "pre_tile_embedding.gate",
    "pre_tile_positional_embedding.embedding.weight": "pre_tile_embedding.embedding.weight",
    "post_tile_positional_embedding.gate": "post_tile_embedding.gate",
    "post_tile_positional_embedding.embedding.weight": "post_tile_embedding.embedding.weight",
    "layernorm_pre.weight": "norm_pre.weight", "layernorm_pre.bias": "norm_pre.bias",
    "layernorm_post.weight": "norm_post.weight", "layernorm_post.bias": "norm_post.bias",
}
_CROSS_BLOCK = {
    "cross_attn.q_proj.weight": "attention.wq.weight", "cross_attn.k_proj.weight": "attention.wk.weight",
    "cross_attn.v_proj.weight": "attention.wv.weight", "cross_attn.o_proj.weight": "attention.wo.weight",
    "cross_attn.q_norm.weight": "attention.q_norm.weight", "cross_attn.k_norm.weight": "attention.k_norm.weight",
    "input_layernorm.weight": "attention_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight", "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight", "cross_attn_attn_gate": "gate_attention",
    "cross_attn_mlp_gate": "gate_ffn",
}
_LAYER = re.compile(r"^(transformer|global_transformer)\.layers\.(\d+)\.(.+)$")
_TEXT_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")


def _as_dict(config: Any) -> dict[str, Any]:
    return config if isinstance(config, dict) else config.to_dict()


def config_from_hf_mllama(hf: dict[str, Any]) -> VisionLanguageConfig:
    """A VisionLanguageConfig from an mllama `config.json` (or `MllamaConfig.to_dict()`)."""
    if hf.get("model_type") != "mllama":
        raise CheckpointError(f"config.json describes model_type {hf.get('model_type')!r}, not mllama")
    text, vision = _as_dict(hf["text_config"]), _as_dict(hf["vision_config"])
    cross = list(text.get("cross_attention_layers") or [3, 8, 13, 18, 23, 28, 33, 38])
    text_cfg = config_from_hf({**text, "model_type": "llama", "num_hidden_layers": int(text["num_hidden_layers"]) - len(cross),
                               "tie_word_embeddings": False})
    vision_cfg = VisionConfig(
        dim=int(vision["hidden_size"]), layers=int(vision["num_hidden_layers"]),
        global_layers=int(vision["num_global_layers"]), heads=int(vision["attention_heads"]),
        ffn_dim=int(vision["intermediate_size"]), image_size=int(vision["image_size"]),
        patch_size=int(vision["patch_size"]), channels=int(vision.get("num_channels", 3)),
        max_tiles=int(vision["max_num_tiles"]),
        intermediate_layers=tuple(int(i) for i in vision["intermediate_layers_indices"]),
        aspect_ratios=tuple(tuple(int(x) for x in r) for r in vision["supported_aspect_ratios"]),
        norm_eps=float(vision.get("norm_eps", 1e-5)),
    )
    if vision.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"vision hidden_act {vision.get('hidden_act')!r} is not supported (gelu)")
    if int(vision.get("vision_output_dim", vision_cfg.output_dim)) != vision_cfg.output_dim:
        raise CheckpointError(f"vision_output_dim {vision['vision_output_dim']} != hidden_size x (1 + "
                              f"{len(vision_cfg.intermediate_layers)} intermediate layers) = {vision_cfg.output_dim}")
    return VisionLanguageConfig(text=text_cfg, vision=vision_cfg,
                                cross_attention_before=from_hf_layer_indices(cross),
                                image_token_id=int(hf.get("image_token_index", text_cfg.vocab_size)))


def state_from_hf_mllama(config: VisionLanguageConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """herd VisionLanguageModel state dict from mllama tensors (`model.` prefixes as in transformers 4.5x+
    or the older top-level `vision_model.` / `language_model.model.` layout)."""
    text_cfg = config.text
    hf_cross = sorted(j + i for i, j in enumerate(sorted(config.cross_attention_before)))
    text_index = {j: j - sum(c < j for c in hf_cross) for j in range(text_cfg.n_layers + len(hf_cross))
                  if j not in hf_cross}
    out: dict[str, torch.Tensor] = {}
    text_state: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = key.removeprefix("model.")
        if name.startswith("vision_model."):
            sub = name.removeprefix("vision_model.")
            match = _LAYER.match(sub)
            if match:
                group, layer, rest = match.groups()
                if rest not in _VISION_BLOCK:
                    raise CheckpointError(f"unexpected tensor {key!r}")
                prefix = "local_layers" if group == "transformer" else "global_layers"
                out[f"vision.{prefix}.{layer}.{_VISION_BLOCK[rest]}"] = tensor
            elif sub in _VISION_TOP:
                out[f"vision.{_VISION_TOP[sub]}"] = tensor
            else:
                raise CheckpointError(f"unexpected tensor {key!r}")
        elif name.startswith("multi_modal_projector."):
            out[f"projector.{name.removeprefix('multi_modal_projector.')}"] = tensor
        elif name.startswith("language_model.") or key == "lm_head.weight":
            sub = name.removeprefix("language_model.").removeprefix("model.")
            match = _TEXT_LAYER.match(sub)
            if key == "lm_head.weight" or sub == "lm_head.weight":
                text_state["lm_head.weight"] = tensor
            elif sub == "embed_tokens.weight":
                text_state["model.embed_tokens.weight"] = tensor[:text_cfg.vocab_size]
                out["new_token_embeddings.weight"] = tensor[text_cfg.vocab_size:text_cfg.vocab_size + NEW_TOKEN_ROWS]
            elif sub == "norm.weight":
                text_state["model.norm.weight"] = tensor
            elif match:
                layer, rest = int(match.group(1)), match.group(2)
                if layer in text_index:
                    text_state[f"model.layers.{text_index[layer]}.{rest}"] = tensor
                elif rest in _CROSS_BLOCK:
                    before = config.cross_attention_before[hf_cross.index(layer)]
                    out[f"cross_layers.{before}.{_CROSS_BLOCK[rest]}"] = tensor
                else:
                    raise CheckpointError(f"unexpected tensor {key!r}")
            elif not sub.endswith("rotary_emb.inv_freq"):
                raise CheckpointError(f"unexpected tensor {key!r}")
        else:
            raise CheckpointError(f"unexpected tensor {key!r}")
    out.update({f"language_model.{k}": v for k, v in hf_to_herd_state_dict(text_cfg, text_state).items()})
    return out


def read_hf_mllama(directory: str | Path) -> tuple[VisionLanguageConfig, dict[str, torch.Tensor]]:
    """Config and herd state dict from a Hugging Face mllama model directory."""
    config = config_from_hf_mllama(read_hf_config(directory))
    return config, state_from_hf_mllama(config, read_hf_tensors(directory))
