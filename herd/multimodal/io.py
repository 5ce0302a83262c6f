"""herd's own vision-language checkpoint: `vlm.json` (text, vision and fusion config) and
`model.safetensors` (herd names). `herd convert` writes it from a Hugging Face mllama checkpoint;
`load_vision_language_model` reads it back."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from herd.checkpoint.errors import CheckpointError
from herd.model.config import ModelConfig, RopeScaling
from herd.multimodal.config import VisionConfig, VisionLanguageConfig

CONFIG_FILE = "vlm.json"
WEIGHTS_FILE = "model.safetensors"


def config_to_dict(config: VisionLanguageConfig) -> dict[str, Any]:
    return {"format": "herd-vlm", "text": dataclasses.asdict(config.text), "vision": dataclasses.asdict(config.vision),
            "cross_attention_before": list(config.cross_attention_before), "image_token_id": config.image_token_id}


def config_from_dict(data: dict[str, Any]) -> VisionLanguageConfig:
    if data.get("format") != "herd-vlm":
        raise CheckpointError(f"not a herd vision-language config (format {data.get('format')!r})")
    text = dict(data["text"])
    if text.get("rope_scaling") is not None:
        text["rope_scaling"] = RopeScaling(**text["rope_scaling"])
    vision = dict(data["vision"])
    vision["intermediate_layers"] = tuple(vision["intermediate_layers"])
    vision["aspect_ratios"] = tuple(tuple(r) for r in vision["aspect_ratios"])
    return VisionLanguageConfig(text=ModelConfig(**text), vision=VisionConfig(**vision),
                                cross_attention_before=tuple(data["cross_attention_before"]),
                                image_token_id=data.get("image_token_id"))


def save_vision_language(directory: str | Path, config: VisionLanguageConfig, state: dict[str, torch.Tensor],
                         dtype: torch.dtype | None = None) -> Path:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
               for k, v in state.items() if not (config.text.tie_embeddings and k == "language_model.output.weight")}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    return directory


def load_vision_language_model(directory: str | Path):  # type: ignore[no-untyped-def]
    """A VisionLanguageModel (ViT encoder) from a herd-vlm directory."""
    from safetensors.torch import load_file

    from herd.multimodal.model import VisionLanguageModel

    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_FILE} (not a herd vision-language checkpoint)")
    config = config_from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    with torch.device("meta"):
        model = VisionLanguageModel(config)
    model.to_empty(device="cpu")
    model.language_model.init_rope_buffer()
    missing, unexpected = model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=False)
    missing = [k for k in missing if not (config.text.tie_embeddings and k == "language_model.output.weight")]
    if missing or unexpected:
        raise CheckpointError(f"{directory}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
