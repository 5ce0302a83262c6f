"""Synthetic scenes, the CPU image encoder and the adapter training loop (herd.multimodal)."""

from __future__ import annotations

import random
from typing import ClassVar

import numpy as np
import pytest
import torch

from herd.model.config import ModelConfig
from herd.multimodal import VisionLanguageConfig, VisionLanguageModel
from herd.multimodal.scenes import COLOURS, HELD_OUT, SHAPES, draw_scene, questions, random_things
from herd.multimodal.vqa import Encoded, VQAFormat, accuracy_table, answer, encode_questions, train_adapter


def test_scenes_are_deterministic_and_keep_held_out_pairs_out_of_training() -> None:
    a = list(questions(40, seed=3, size=96))
    b = list(questions(40, seed=3, size=96))
    assert [q.text for q in a] == [q.text for q in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    for q in a:
        assert not {(t.colour, t.shape) for t in q.things} & HELD_OUT
        assert len({t.colour for t in q.things}) == len(q.things) == len({t.shape for t in q.things})
        assert q.answer in set(COLOURS) | set(SHAPES) | {"left", "middle", "right"}
    held = list(questions(20, seed=4, size=96, held_out=True))
    assert all({(t.colour, t.shape) for t in q.things} & HELD_OUT for q in held)
    # the held-out question is about the held-out thing
    for q in held:
        pair = next(t for t in q.things if (t.colour, t.shape) in HELD_OUT)
        assert pair.shape in q.text or pair.colour in q.text


def test_a_drawn_shape_has_its_colour_where_it_was_put() -> None:
    rng = random.Random(0)
    things = random_things(rng, held_out=False)
    image = np.asarray(draw_scene(things, 150, rng)).astype(int)
    for t in things:
        cx, cy = int((t.column + 0.5) * 50), int((t.row + 0.5) * 50)
        pixel = image[cy, cx]
        assert np.abs(pixel - np.asarray(COLOURS[t.colour])).max() <= 16, (t, pixel)


class _Tokens:
    """A byte-level stand-in tokenizer with the two ChatML markers."""

    specials: ClassVar[dict[str, int]] = {"<|im_start|>": 256, "<|im_end|>": 257}

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def special_id(self, name: str) -> int:
        return self.specials[name]

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode(errors="replace")


class _Features(torch.nn.Module):
    """Mean colour of each image quadrant: a tiny fixed encoder whose features do carry the answer."""

    patches, output_dim = 4, 3

    def forward(self, pixels: torch.Tensor, *_: object) -> torch.Tensor:
        b, n, t = pixels.shape[:3]
        x = pixels.reshape(-1, 3, pixels.shape[-2], pixels.shape[-1])
        quads = torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(2).transpose(1, 2)
        return quads.reshape(b, n, t, 4, 3)


def _tiny_vlm() -> tuple[VisionLanguageModel, VQAFormat]:
    torch.manual_seed(0)
    text = ModelConfig(dim=32, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=258, ffn_dim=64)
    model = VisionLanguageModel(VisionLanguageConfig(text=text), encoder=_Features())
    model.freeze_language_model()
    return model, VQAFormat(_Tokens(), model.config.image_token)


def _pixels(image) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def test_the_answer_is_the_only_trained_text_and_the_image_token_sits_after_the_user_header() -> None:
    _, fmt = _tiny_vlm()
    ids, targets, at = fmt.example("What color is the star?", "red")
    assert ids[at] == fmt.image_token and ids[0] == fmt.start
    trained = [t for t in targets if t != -100]
    assert trained == [*b"red", fmt.end]
    assert len(targets) == len(ids)
    prompt, at2 = fmt.prompt("What color is the star?")
    assert ids[:len(prompt)] == prompt and at2 == at


def test_adapter_training_lowers_the_loss_and_never_touches_the_language_model() -> None:
    model, fmt = _tiny_vlm()
    data = encode_questions(list(questions(32, seed=0, size=32, kinds=("colour",))), fmt, model.vision, _pixels)
    assert data.features.shape == (32, 1, 1, 4, 3)
    frozen = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    result = train_adapter(model, data, steps=40, batch=8, lr=3e-2)
    assert np.mean(result.losses[-5:]) < 0.75 * np.mean(result.losses[:5])
    assert all(torch.equal(v, frozen[k]) for k, v in model.language_model.state_dict().items())
    answers = answer(model, fmt, data, max_new=3)
    assert len(answers) == 32 and all(isinstance(a, str) for a in answers)
    table = accuracy_table(answers, data)
    assert table["all"]["n"] == 32 and 0.0 <= table["all"]["accuracy"] <= 1.0


def test_accuracy_table_counts_per_kind() -> None:
    data = Encoded([[1]] * 3, [[-100]] * 3, [0] * 3, torch.zeros(3, 1, 1, 1, 1), ["red", "left", "star"],
                   ["colour", "position", "shape"])
    table = accuracy_table(["red", "right", "star"], data)
    assert table["all"] == {"accuracy": pytest.approx(2 / 3), "n": 3}
    assert table["position"]["accuracy"] == 0.0 and table["colour"]["accuracy"] == 1.0


def test_efficientnet_lite0_features() -> None:
    from herd.multimodal.conv_encoder import EfficientNetLiteEncoder, efficientnet_lite0_available

    assert efficientnet_lite0_available()   # the [multimodal] extra, part of [all]
    encoder = EfficientNetLiteEncoder(64).eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 1, 1, 3, 64, 64))
    assert out.shape == (2, 1, 1, 4, 472) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        EfficientNetLiteEncoder(100)
