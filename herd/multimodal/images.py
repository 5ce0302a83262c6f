"""Images to encoder input, as Llama 3.2 Vision prepares them: pick the tiling whose canvas needs the
least up-scaling (or, failing that, the least down-scaling), resize keeping the aspect ratio, pad
right and bottom with black, normalise, cut into `tile_size` tiles (row-major) and pad to `max_tiles`.

Also the text side: which text tokens may attend to which image (`cross_attention_mask`), as
transformers' mllama processor builds it: text before the first image token sees nothing, and a run of
consecutive image tokens is seen together by the text after it, up to the next image token.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from herd.multimodal.config import VisionConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # Llama 3.2 Vision's preprocessor_config.json
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def best_tiling(height: int, width: int, tile_size: int, aspect_ratios: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(tile rows, tile columns) of the canvas for an image of height x width: the smallest
    up-scaling that fits, else the largest down-scaling; ties go to the smaller canvas."""
    best: tuple[float, int, tuple[int, int]] | None = None
    scales = {ar: min(ar[0] * tile_size / height, ar[1] * tile_size / width) for ar in aspect_ratios}
    up = [s for s in scales.values() if s >= 1]
    chosen = min(up) if up else max(scales.values())
    for ar, s in scales.items():
        if s == chosen:
            area = ar[0] * ar[1]
            if best is None or area < best[1]:
                best = (s, area, ar)
    assert best is not None
    return best[2]


def fit_to_canvas(height: int, width: int, canvas_h: int, canvas_w: int, tile_size: int) -> tuple[int, int]:
    """Resized (height, width): clipped between one tile and the canvas, aspect ratio kept."""
    target_w = min(max(width, tile_size), canvas_w)
    target_h = min(max(height, tile_size), canvas_h)
    scale_h, scale_w = target_h / height, target_w / width
    if scale_w < scale_h:
        return min(math.floor(height * scale_w) or 1, target_h), target_w
    return target_h, min(math.floor(width * scale_h) or 1, target_w)


@dataclass
class ImageBatch:
    """Encoder input for a batch of requests, each with up to `images` images."""

    pixels: torch.Tensor            # [B, images, max_tiles, 3, tile, tile]
    aspect_ratio_ids: torch.Tensor  # [B, images]; 0 = no image
    tile_mask: torch.Tensor         # [B, images, max_tiles]; 1 = a real tile
    num_tiles: list[list[int]]


def tile_image(image: Image.Image, config: VisionConfig, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD) -> tuple[torch.Tensor, tuple[int, int]]:
    """One RGB image -> normalised tiles [n, 3, tile, tile] and its (rows, columns) tiling."""
    tile = config.image_size
    image = image.convert("RGB")
    rows, cols = best_tiling(image.height, image.width, tile, config.aspect_ratios)
    new_h, new_w = fit_to_canvas(image.height, image.width, rows * tile, cols * tile, tile)
    resized = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32)
    canvas = np.zeros((rows * tile, cols * tile, 3), dtype=np.float32)
    canvas[:new_h, :new_w] = resized
    canvas = (canvas / 255.0 - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    tiles = canvas.reshape(rows, tile, cols, tile, 3).transpose(0, 2, 4, 1, 3).reshape(rows * cols, 3, tile, tile)
    return torch.from_numpy(np.ascontiguousarray(tiles)), (rows, cols)


def prepare_images(batch: Sequence[Sequence[Image.Image]], config: VisionConfig,
                   mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> ImageBatch:
    """Tile every image of every request and pad to the same number of images and tiles."""
    if not batch or not any(batch):
        raise ValueError("prepare_images needs at least one image")
    most = max(len(images) for images in batch)
    tile = config.image_size
    pixels = torch.zeros(len(batch), most, config.max_tiles, 3, tile, tile)
    ids = torch.zeros(len(batch), most, dtype=torch.long)
    mask = torch.zeros(len(batch), most, config.max_tiles, dtype=torch.long)
    mask[:, :, 0] = 1   # as the reference pads missing images with a 1x1 tiling
    counts: list[list[int]] = []
    for b, images in enumerate(batch):
        counts.append([])
        for i, image in enumerate(images):
            tiles, tiling = tile_image(image, config, mean, std)
            pixels[b, i, :len(tiles)] = tiles
            ids[b, i] = config.aspect_ratios.index(tiling) + 1
            mask[b, i, :len(tiles)] = 1
            counts[-1].append(len(tiles))
    return ImageBatch(pixels, ids, mask, counts)


def cross_attention_mask(tokens: Sequence[Sequence[int]], image_token: int, num_tiles: Sequence[Sequence[int]],
                         max_tiles: int) -> torch.Tensor:
    """[B, S, images, max_tiles] 0/1: text token s of request b may see the real tiles of image i."""
    most = max((len(n) for n in num_tiles), default=0)
    seq = max(len(t) for t in tokens)
    out = torch.zeros(len(tokens), seq, max(most, 1), max_tiles, dtype=torch.long)
    for b, ids in enumerate(tokens):
        places = [s for s, t in enumerate(ids) if t == image_token]
        if len(places) != len(num_tiles[b]):
            raise ValueError(f"request {b} has {len(places)} image tokens but {len(num_tiles[b])} images")
        for i, (start, end) in enumerate(image_spans(places, len(ids), seq)):
            out[b, start:end, i, :num_tiles[b][i]] = 1
    return out


def image_spans(places: Sequence[int], length: int, padded: int) -> list[tuple[int, int]]:
    """[start, end) of the text each image token's image is seen by: up to the next image token, a
    run of adjacent image tokens all reaching the end of the run's text (transformers' rule; a lone
    image reaches the padded end)."""
    if not places:
        return []
    if len(places) == 1:
        return [(places[0], padded)]
    spans = [[a, b] for a, b in itertools.pairwise(places)] + [[places[-1], length]]
    last_end = spans[-1][1]
    for span in reversed(spans):
        if span[0] == span[1] - 1:
            span[1] = last_end
        last_end = span[1]
    return [(a, b) for a, b in spans]
