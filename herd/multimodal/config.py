"""Shapes of the compositional vision model (paper section 7): an image encoder, a projection, and
cross-attention layers that feed a frozen Llama 3 language model.

Plain data, like herd.model.config: a `VisionConfig` for the ViT image encoder (ViT-H/14 in the paper;
`VISION_H14` holds Llama 3.2 Vision's shape) and a `VisionLanguageConfig` that pairs it with the text
model's `ModelConfig` and says where the cross-attention layers go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from herd.model.config import ModelConfig

# Llama 3.2 Vision's tilings for 4 tiles: (rows, columns) of tiles; id = index + 1 (0 = no image)
DEFAULT_ASPECT_RATIOS: tuple[tuple[int, int], ...] = (
    (1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1),
)
NEW_TOKEN_ROWS = 8   # embedding rows added after the text vocabulary (the image token is the first)


@dataclass(frozen=True)
class VisionConfig:
    """A ViT over square tiles: patches of `patch_size`, a CLS token, `layers` local blocks, then
    `global_layers` gated blocks that see all tiles of an image at once.

    The output of each patch is the final hidden state concatenated with the local blocks' outputs
    at `intermediate_layers` (0-based), so `output_dim = dim * (1 + len(intermediate_layers))`
    (7,680 = 1,280 x 6 for ViT-H/14)."""

    dim: int = 1280
    layers: int = 32
    global_layers: int = 8
    heads: int = 16
    ffn_dim: int = 5120
    image_size: int = 448
    patch_size: int = 14
    channels: int = 3
    max_tiles: int = 4
    intermediate_layers: tuple[int, ...] = (3, 7, 15, 23, 30)
    aspect_ratios: tuple[tuple[int, int], ...] = DEFAULT_ASPECT_RATIOS
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        problems = []
        if self.dim % self.heads:
            problems.append(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        bad = [i for i in self.intermediate_layers if not 0 <= i < self.layers]
        if bad:
            problems.append(f"intermediate_layers {bad} are not in 0..{self.layers - 1}")
        if any(r * c > self.max_tiles for r, c in self.aspect_ratios):
            problems.append(f"an aspect ratio in {list(self.aspect_ratios)} needs more than {self.max_tiles} tiles")
        if problems:
            raise ValueError("invalid VisionConfig: " + "; ".join(problems))

    @property
    def patches(self) -> int:
        """Tokens per tile: the patch grid plus the CLS token."""
        return (self.image_size // self.patch_size) ** 2 + 1

    @property
    def output_dim(self) -> int:
        return self.dim * (1 + len(self.intermediate_layers))

    @property
    def max_aspect_ratio_id(self) -> int:
        return len(self.aspect_ratios)


VISION_H14 = VisionConfig()


def fusion_schedule(n_layers: int, n_cross: int) -> tuple[int, ...]:
    """The language-model layers before which a cross-attention layer runs (the reference's
    `layers[::-1][::ceil(L/n)][:n][::-1]`: the last layer always, then every ceil(L/n)-th going down).

    (32, 8) -> (3, 7, 11, 15, 19, 23, 27, 31): one after every 4th layer, as the paper says."""
    if not 0 < n_cross <= n_layers:
        raise ValueError(f"need 1..{n_layers} cross-attention layers for {n_layers} layers, got {n_cross}")
    layers = list(range(n_layers))
    step = math.ceil(n_layers / n_cross)
    return tuple(layers[::-1][::step][:n_cross][::-1])


def to_hf_layer_indices(schedule: tuple[int, ...]) -> tuple[int, ...]:
    """transformers' `cross_attention_layers`: positions in one list holding both kinds of layer
    (a cross-attention layer sits at the index of the text layer it precedes, shifted by those before)."""
    return tuple(layer + i for i, layer in enumerate(sorted(schedule)))


def from_hf_layer_indices(indices: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """The inverse of `to_hf_layer_indices`."""
    return tuple(index - i for i, index in enumerate(sorted(indices)))


@dataclass(frozen=True)
class VisionLanguageConfig:
    """A frozen text model plus the image path: `cross_attention_before` lists the text layers
    (0-based) preceded by a gated cross-attention layer; the projection maps the encoder's
    `vision.output_dim` features to the text model's width."""

    text: ModelConfig
    vision: VisionConfig = field(default_factory=VisionConfig)
    cross_attention_before: tuple[int, ...] = ()
    image_token_id: int | None = None   # default: the first new row, text.vocab_size

    def __post_init__(self) -> None:
        if not self.cross_attention_before:
            object.__setattr__(self, "cross_attention_before",
                               fusion_schedule(self.text.n_layers, max(1, self.text.n_layers // 4)))
        bad = [i for i in self.cross_attention_before if not 0 <= i < self.text.n_layers]
        if bad or len(set(self.cross_attention_before)) != len(self.cross_attention_before):
            raise ValueError(f"cross_attention_before {list(self.cross_attention_before)} must be distinct "
                             f"text layers in 0..{self.text.n_layers - 1}")
        if self.text.dim % self.text.n_heads:
            raise ValueError(f"cross-attention needs text dim {self.text.dim} divisible by n_heads {self.text.n_heads}")

    @property
    def image_token(self) -> int:
        return self.text.vocab_size if self.image_token_id is None else self.image_token_id
