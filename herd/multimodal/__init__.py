"""Compositional multimodal adapters (paper sections 7-8): image encoders, projections and gated
cross-attention layers around a frozen Llama 3 language model."""

from herd.multimodal.config import (
    VISION_H14,
    VisionConfig,
    VisionLanguageConfig,
    from_hf_layer_indices,
    fusion_schedule,
    to_hf_layer_indices,
)
from herd.multimodal.cross_attention import CrossAttentionBlock, cross_attention_bias
from herd.multimodal.model import ImageContext, VisionLanguageModel
from herd.multimodal.vision import VisionEncoder

__all__ = [
    "VISION_H14", "CrossAttentionBlock", "ImageContext", "VisionConfig", "VisionEncoder", "VisionLanguageConfig",
    "VisionLanguageModel", "cross_attention_bias", "from_hf_layer_indices", "fusion_schedule", "to_hf_layer_indices",
]
