"""The image path (paper section 7.1) against transformers' `mllama` and the reference semantics."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers

from herd.checkpoint.errors import CheckpointError
from herd.model import Transformer
from herd.model.config import ModelConfig
from herd.multimodal import (
    VISION_H14,
    VisionConfig,
    VisionLanguageConfig,
    VisionLanguageModel,
    from_hf_layer_indices,
    fusion_schedule,
    to_hf_layer_indices,
)
from herd.multimodal.hf_mllama import config_from_hf_mllama, read_hf_mllama, state_from_hf_mllama

VOCAB = 300


def _hf_model(seed: int = 0, gate: float = 0.7):  # type: ignore[no-untyped-def]
    cfg = transformers.MllamaConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 4, "num_global_layers": 2, "attention_heads": 4,
                           "intermediate_size": 64, "vision_output_dim": 96, "image_size": 28, "patch_size": 14,
                           "max_num_tiles": 4, "intermediate_layers_indices": [3, 1]},
        text_config={"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 4,
                         "num_key_value_heads": 2, "intermediate_size": 128, "cross_attention_layers": [1, 4],
                         "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},
        image_token_index=VOCAB)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.MllamaForConditionalGeneration(cfg).eval()
    with torch.no_grad():   # transformers starts every gate at 0 (or pi/4); open them so they are exercised
        for name, p in hf.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate", ".gate")):
                p.fill_(gate)
    return hf


def _herd_from(hf) -> VisionLanguageModel:  # type: ignore[no-untyped-def]
    config = config_from_hf_mllama(hf.config.to_dict())
    model = VisionLanguageModel(config).eval()
    model.load_state_dict(state_from_hf_mllama(config, hf.state_dict()), strict=True)
    return model


def _inputs(batch: int = 2, seq: int = 12, seed: int = 1):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, VOCAB, (batch, seq), generator=g)
    tokens[:, 0] = VOCAB                                   # the image token first: every row sees the image
    pixels = torch.randn(batch, 1, 4, 3, 28, 28, generator=g)
    aspect_ratio_ids = torch.tensor([[6], [2]])[:batch]    # 2x2 tiles; 1x2 tiles (two padded tiles)
    tile_mask = torch.tensor([[[1, 1, 1, 1]], [[1, 1, 0, 0]]])[:batch]
    cross_mask = tile_mask[:, None].expand(batch, seq, 1, 4).clone()
    return tokens, pixels, aspect_ratio_ids, tile_mask, cross_mask


def test_fusion_schedule_matches_the_reference_and_transformers() -> None:
    assert fusion_schedule(32, 8) == (3, 7, 11, 15, 19, 23, 27, 31)
    assert to_hf_layer_indices(fusion_schedule(32, 8)) == (3, 8, 13, 18, 23, 28, 33, 38)
    assert transformers.MllamaTextConfig().cross_attention_layers == [3, 8, 13, 18, 23, 28, 33, 38]
    assert from_hf_layer_indices([3, 8, 13, 18, 23, 28, 33, 38]) == fusion_schedule(32, 8)
    assert fusion_schedule(80, 20) == tuple(range(3, 80, 4))   # 70B: 100 layers in transformers' list
    assert fusion_schedule(6, 2) == (2, 5)
    with pytest.raises(ValueError, match="cross-attention layers"):
        fusion_schedule(4, 5)


def test_vit_h14_shapes() -> None:
    assert VISION_H14.output_dim == 7680           # 1,280 x (final + 5 intermediate layers)
    assert VISION_H14.patches == 32 * 32 + 1       # 448 / 14 = 32 patches a side, plus CLS
    small = VisionConfig(dim=16, layers=3, global_layers=1, heads=2, ffn_dim=32, image_size=28, patch_size=7,
                         intermediate_layers=(0, 2))
    encoder = VisionEncoder_for(small)
    out = encoder(torch.randn(2, 3, 4, 3, 28, 28), torch.ones(2, 3, dtype=torch.long))
    assert out.shape == (2, 3, 4, 17, 48)
    with pytest.raises(ValueError, match="intermediate_layers"):
        VisionConfig(layers=4, intermediate_layers=(5,))


def VisionEncoder_for(config: VisionConfig):  # type: ignore[no-untyped-def]
    from herd.multimodal import VisionEncoder

    return VisionEncoder(config).eval()


def test_logits_match_transformers_with_and_without_images() -> None:
    hf = _hf_model()
    model = _herd_from(hf)
    tokens, pixels, ids, tile_mask, cross_mask = _inputs()
    with torch.no_grad():
        ref = hf(input_ids=tokens, pixel_values=pixels, aspect_ratio_ids=ids, aspect_ratio_mask=tile_mask,
                 cross_attention_mask=cross_mask).logits
        features = hf.model.vision_model(pixel_values=pixels, aspect_ratio_ids=ids,
                                         aspect_ratio_mask=tile_mask).last_hidden_state
        ours = model(tokens, images=model.image_context(model.image_states(pixels, ids, tile_mask), cross_mask))
        text_ref = hf(input_ids=tokens[:, 1:]).logits
        text_ours = model(tokens[:, 1:])
    torch.testing.assert_close(model.vision(pixels, ids, tile_mask), features, atol=1e-5, rtol=0)
    assert (ours - ref).abs().max() < 1e-4
    assert (text_ours - text_ref).abs().max() < 1e-4
    # the images change the answer: the parity above is not the text path twice
    assert (ours - model(tokens)).abs().max() > 1e-3


def test_closed_gates_leave_the_language_model_exactly_as_it_was() -> None:
    model = _herd_from(_hf_model(gate=0.0))
    tokens, pixels, ids, tile_mask, cross_mask = _inputs()
    text_only = Transformer(model.config.text).eval()
    text_only.load_state_dict(model.language_model.state_dict())
    with torch.no_grad():
        ours = model(tokens[:, 1:], images=model.image_context(model.image_states(pixels, ids, tile_mask),
                                                               cross_mask[:, 1:]))
        assert torch.equal(ours, text_only(tokens[:, 1:]))


def test_text_before_the_image_does_not_depend_on_the_image() -> None:
    model = _herd_from(_hf_model())
    tokens, pixels, ids, tile_mask, cross_mask = _inputs(batch=1)
    tokens[0, 0] = 5
    tokens[0, 6] = VOCAB                 # text, then the image token at 6, then text about it
    cross_mask[:, :6] = 0
    outs = []
    with torch.no_grad():
        for seed in (0, 1):
            other = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed))
            ctx = model.image_context(model.image_states(other, ids, tile_mask), cross_mask)
            outs.append(model(tokens, images=ctx))
    assert torch.equal(outs[0][:, :6], outs[1][:, :6])
    assert (outs[0][:, 6:] - outs[1][:, 6:]).abs().max() > 1e-4


def test_adapter_training_leaves_the_language_model_bit_identical() -> None:
    model = _herd_from(_hf_model())
    model.train()
    model.freeze_language_model()
    before = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    adapter_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("language_model.")}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    tokens, pixels, ids, tile_mask, cross_mask = _inputs()
    for _ in range(3):
        ctx = model.image_context(model.image_states(pixels, ids, tile_mask), cross_mask[:, :-1])
        logits = model(tokens[:, :-1], images=ctx)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(v, before[k]) for k, v in model.language_model.state_dict().items())
    changed = [k for k, v in model.state_dict().items() if k in adapter_before and not torch.equal(v, adapter_before[k])]
    assert any(k.startswith("cross_layers.") for k in changed)
    assert any(k.startswith("vision.") for k in changed)
    assert "new_token_embeddings.weight" in changed
    with pytest.raises(ValueError, match="mask covers 12 tokens"):
        model(tokens[:, :-1], images=model.image_context(model.image_states(pixels, ids, tile_mask), cross_mask))


def test_new_token_rows_and_bad_ids() -> None:
    model = _herd_from(_hf_model())
    hf_embed = _hf_model().model.language_model.embed_tokens.weight
    tokens = torch.tensor([[5, VOCAB, VOCAB + 7]])
    torch.testing.assert_close(model.embed(tokens)[0], hf_embed[tokens[0]], atol=0, rtol=0)
    with pytest.raises(ValueError, match="past the vocabulary"):
        model.embed(torch.tensor([[VOCAB + 8]]))


def test_read_a_saved_checkpoint_and_refuse_strangers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    config, state = read_hf_mllama(tmp_path)
    assert config.cross_attention_before == (1, 3) and config.text.n_layers == 4
    assert config.image_token == VOCAB
    model = VisionLanguageModel(config)
    model.load_state_dict(state, strict=True)
    bad = dict(hf.state_dict())
    bad["model.vision_model.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected tensor"):
        state_from_hf_mllama(config, bad)
    with pytest.raises(CheckpointError, match="not mllama"):
        config_from_hf_mllama({"model_type": "llama"})


def test_config_validation() -> None:
    text = ModelConfig(dim=64, n_layers=8, n_heads=4, n_kv_heads=2, vocab_size=100, ffn_dim=128)
    assert VisionLanguageConfig(text=text).cross_attention_before == (3, 7)   # default: every 4th layer
    with pytest.raises(ValueError, match="distinct"):
        VisionLanguageConfig(text=text, cross_attention_before=(3, 3))
    with pytest.raises(ValueError, match="distinct"):
        VisionLanguageConfig(text=text, cross_attention_before=(8,))


def test_image_tiles_and_cross_attention_mask_match_the_mllama_processor() -> None:
    import numpy as np
    from PIL import Image
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil
    from transformers.models.mllama.processing_mllama import (
        convert_sparse_cross_attention_mask_to_dense,
        get_cross_attention_token_mask,
    )

    from herd.multimodal.images import CLIP_MEAN, CLIP_STD, cross_attention_mask, prepare_images

    rng = np.random.default_rng(0)
    config = VisionConfig(dim=32, layers=2, global_layers=1, heads=4, ffn_dim=64, image_size=56, patch_size=14,
                          intermediate_layers=(1,))
    sizes = [(30, 100), (200, 60), (56, 56), (120, 130), (10, 300)]   # wide, tall, exact, 2x2, very wide
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    batch = [[images[0], images[1]], [images[2]], [images[3], images[4]]]
    processor = MllamaImageProcessorPil(size={"height": 56, "width": 56}, image_mean=list(CLIP_MEAN),
                                        image_std=list(CLIP_STD), max_image_tiles=4)
    ref = processor(images=batch, return_tensors="pt")
    ours = prepare_images(batch, config)
    torch.testing.assert_close(ours.pixels, ref["pixel_values"], atol=1e-6, rtol=0)
    assert ours.aspect_ratio_ids.tolist() == ref["aspect_ratio_ids"].tolist()
    assert ours.tile_mask.tolist() == ref["aspect_ratio_mask"].tolist()
    assert ours.num_tiles == ref["num_tiles"]

    tokens = [[1, 9, 5, 6, 9, 9, 7, 8, 9, 3], [9, 4, 4], [2, 9, 3, 9, 9, 9, 5]]   # 9 = the image token
    tiles = [[1, 2, 3, 4], [3], [1, 2, 3, 4]]
    dense = convert_sparse_cross_attention_mask_to_dense(
        [get_cross_attention_token_mask(t, 9) for t in tokens], tiles, 4, 10)
    assert cross_attention_mask(tokens, 9, tiles, 4).tolist() == dense.tolist()
    with pytest.raises(ValueError, match="2 image tokens but 1 images"):
        cross_attention_mask([[9, 9]], 9, [[1]], 4)


def test_herd_convert_writes_the_vision_model_and_extracts_its_text_model(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from herd.checkpoint.hf import read_hf
    from herd.cli import main
    from herd.multimodal.io import load_vision_language_model

    hf = _hf_model()
    hf.save_pretrained(tmp_path / "mllama")
    assert main(["convert", str(tmp_path / "mllama"), str(tmp_path / "vlm"), "--to", "herd-vlm"]) == 0
    assert "herd-vlm" in capsys.readouterr().out
    model = load_vision_language_model(tmp_path / "vlm")
    tokens, pixels, ids, tile_mask, cross_mask = _inputs()
    with torch.no_grad():
        ref = hf(input_ids=tokens, pixel_values=pixels, aspect_ratio_ids=ids, aspect_ratio_mask=tile_mask,
                 cross_attention_mask=cross_mask).logits
        ours = model(tokens, images=model.image_context(model.image_states(pixels, ids, tile_mask), cross_mask))
    assert (ours - ref).abs().max() < 1e-4

    assert main(["convert", str(tmp_path / "mllama"), str(tmp_path / "text"), "--to", "hf"]) == 0
    config, state = read_hf(tmp_path / "text")
    text = Transformer(config).eval()
    text.load_state_dict(state)
    with torch.no_grad():
        assert (text(tokens[:, 1:]) - hf(input_ids=tokens[:, 1:]).logits).abs().max() < 1e-4
    assert main(["convert", "random:llama3-tiny", str(tmp_path / "x"), "--to", "herd-vlm"]) == 2
