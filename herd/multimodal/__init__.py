"""Compositional multimodal adapters (paper sections 7-8): image encoders, projections and gated
cross-attention layers around a frozen Llama 3 language model.

- `config`: shapes (`VisionConfig`, `VisionLanguageConfig`) and the fusion schedule;
- `vision`, `conv_encoder`: the ViT image encoder (Llama 3.2 Vision's) and a pretrained CPU-sized CNN;
- `cross_attention`, `model`: the gated cross-attention blocks and `VisionLanguageModel`;
- `images`: image tiling and the text-to-image mask (as transformers' mllama processor);
- `hf_mllama`: import a Hugging Face mllama checkpoint;
- `scenes`, `vqa`, `cli`: synthetic VQA, adapter training and scoring, `herd mm`.

Names are imported lazily so that `herd mm --help` loads no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VISION_H14": "config", "VisionConfig": "config", "VisionLanguageConfig": "config",
    "fusion_schedule": "config", "to_hf_layer_indices": "config", "from_hf_layer_indices": "config",
    "CrossAttentionBlock": "cross_attention", "cross_attention_bias": "cross_attention",
    "ImageContext": "model", "VisionLanguageModel": "model", "VisionEncoder": "vision",
}
__all__ = [
    "VISION_H14", "CrossAttentionBlock", "ImageContext", "VisionConfig", "VisionEncoder", "VisionLanguageConfig",
    "VisionLanguageModel", "cross_attention_bias", "from_hf_layer_indices", "fusion_schedule", "to_hf_layer_indices",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"herd.multimodal.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'herd.multimodal' has no attribute {name!r}")
