"""A frozen Llama 3 language model with an image path composed around it (paper section 7).

The language model is herd's own `Transformer`, used through its composition calls (`embed`,
`run_layers(start, end)`, `head`): nothing in it is forked or patched. Around it:

- `vision`: the image encoder (herd.multimodal.vision), `projector`: its features -> text width;
- `cross_layers`: a gated cross-attention block before each text layer of the fusion schedule;
- `new_token_embeddings`: 8 rows after the text vocabulary (the image token is the first), trained
  while the text embedding stays frozen (the reference's "learnable embedding").

`freeze_language_model()` makes only these new parts trainable, as the paper trains the adapter
with the language model frozen. Without images the forward pass is the text model's, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from herd.model.attention import AttentionState
from herd.model.transformer import Transformer
from herd.multimodal.config import NEW_TOKEN_ROWS, VisionLanguageConfig
from herd.multimodal.cross_attention import CrossAttentionBlock, ImageKV, cross_attention_bias
from herd.multimodal.vision import VisionEncoder


@dataclass
class ImageContext:
    """What a request's text attends to: per cross-attention layer the image keys/values (computed
    once), and the additive bias and row mask from the text-to-tile mask (None: every text token
    sees every tile)."""

    kv: dict[int, ImageKV]
    bias: torch.Tensor | None = None
    rows: torch.Tensor | None = None


class VisionLanguageModel(nn.Module):
    def __init__(self, config: VisionLanguageConfig, language_model: Transformer | None = None,
                 encoder: nn.Module | None = None) -> None:
        """`encoder` replaces the ViT: any module mapping (pixels, aspect-ratio ids, tile mask) to
        [B, images, tiles, patches, output_dim] with `patches` and `output_dim` attributes (e.g. the
        pretrained CNN of herd.multimodal.conv_encoder for CPU runs)."""
        super().__init__()
        self.config = config
        if language_model is not None and language_model.config != config.text:
            raise ValueError("language_model's config differs from config.text")
        self.language_model = language_model if language_model is not None else Transformer(config.text)
        self.vision = encoder if encoder is not None else VisionEncoder(config.vision)
        self.patches = int(getattr(self.vision, "patches", config.vision.patches))
        output_dim = int(getattr(self.vision, "output_dim", config.vision.output_dim))
        self.projector = nn.Linear(output_dim, config.text.dim, bias=True)
        self.cross_layers = nn.ModuleDict(
            {str(i): CrossAttentionBlock(config.text) for i in sorted(config.cross_attention_before)})
        self.new_token_embeddings = nn.Embedding(NEW_TOKEN_ROWS, config.text.dim)

    def freeze_language_model(self) -> None:
        """Train only the image path: the language model's parameters stop taking gradients."""
        for p in self.language_model.parameters():
            p.requires_grad_(False)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text ids from the frozen table, ids vocab_size..vocab_size+7 from the new rows."""
        vocab = self.config.text.vocab_size
        if tokens.numel() and int(tokens.max()) >= vocab + NEW_TOKEN_ROWS:
            raise ValueError(f"token id {int(tokens.max())} is past the vocabulary ({vocab} + {NEW_TOKEN_ROWS} new rows)")
        new = tokens >= vocab
        h = self.language_model.embed(tokens.masked_fill(new, 0))
        if bool(new.any()):
            h = torch.where(new.unsqueeze(-1), self.new_token_embeddings((tokens - vocab).clamp(min=0)), h)
        return h

    def image_states(self, pixels: torch.Tensor, aspect_ratio_ids: torch.Tensor,
                     tile_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoded and projected image tokens [B, images * tiles * patches, text dim]."""
        features = self.vision(pixels, aspect_ratio_ids, tile_mask)
        return self.projector(features).reshape(features.shape[0], -1, self.config.text.dim)

    def image_context(self, image_states: torch.Tensor, cross_attention_mask: torch.Tensor | None = None
                      ) -> ImageContext:
        """Keys/values of every cross-attention layer, and the masks, for one batch of requests."""
        kv = {int(i): block.attention.image_kv(image_states) for i, block in self.cross_layers.items()}
        if cross_attention_mask is None:
            return ImageContext(kv)
        bias, rows = cross_attention_bias(cross_attention_mask, self.patches, image_states.dtype)
        return ImageContext(kv, bias, rows)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None,
                attention: AttentionState | None = None, *, images: ImageContext | None = None,
                select: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits; `images` None runs the text model alone (cross-attention layers skipped)."""
        lm = self.language_model
        if positions is None:
            positions = torch.arange(tokens.shape[-1], device=tokens.device)
        if images is not None and images.bias is not None and images.bias.shape[2] != tokens.shape[-1]:
            raise ValueError(f"the cross-attention mask covers {images.bias.shape[2]} tokens, the input has "
                             f"{tokens.shape[-1]}")
        h = self.embed(tokens)
        start = 0
        if images is not None:
            for layer in sorted(images.kv):
                h = lm.run_layers(h, positions, attention, start, layer)
                h = self.cross_layers[str(layer)](h, images.kv[layer], images.bias, images.rows)
                start = layer
        return lm.head(lm.run_layers(h, positions, attention, start), select)
