"""Train and score an image adapter on synthetic VQA (herd.multimodal.scenes) around a frozen chat model.

The recipe is the paper's with the language model frozen: only the projection, the cross-attention
layers and the new token rows train. On a CPU the image encoder (a pretrained EfficientNet-Lite0)
is frozen too, so each image is encoded once and its features are reused every epoch; the paper
trains its encoder, which this does not do.

A turn is ChatML without a system prompt: `<|im_start|>user\\n<|image|>{question}<|im_end|>\\n
<|im_start|>assistant\\n{answer}<|im_end|>`; the loss covers the answer and its end marker, and
every token from the image token on may see the image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from herd.multimodal.model import VisionLanguageModel
from herd.multimodal.scenes import Question


@dataclass
class Encoded:
    """Token ids, loss targets (-100 = not trained) and image features of a list of questions."""

    ids: list[list[int]]
    targets: list[list[int]]
    image_at: list[int]              # position of the image token in each sequence
    features: torch.Tensor           # [N, 1, 1, patches, feature dim] from the frozen encoder
    answers: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


class VQAFormat:
    """ChatML turns with the image token, for a tokenizer with <|im_start|>/<|im_end|>."""

    def __init__(self, tokenizer: Any, image_token: int) -> None:
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.start = tokenizer.special_id("<|im_start|>")
        self.end = tokenizer.special_id("<|im_end|>")

    def prompt(self, question: str) -> tuple[list[int], int]:
        """Prompt ids ending where the answer starts, and the image token's position."""
        head = [self.start, *self.tokenizer.encode("user\n")]
        ids = head + [self.image_token] + self.tokenizer.encode(question) + [self.end]
        ids += self.tokenizer.encode("\n") + [self.start] + self.tokenizer.encode("assistant\n")
        return ids, len(head)

    def example(self, question: str, answer: str) -> tuple[list[int], list[int], int]:
        prompt, at = self.prompt(question)
        answer_ids = self.tokenizer.encode(answer) + [self.end]
        ids = prompt + answer_ids
        targets = [-100] * (len(prompt) - 1) + answer_ids + [-100]
        return ids, targets, at


@torch.no_grad()
def encode_questions(questions: Sequence[Question], fmt: VQAFormat, encoder: torch.nn.Module,
                     pixels_of: Callable[[Any], torch.Tensor], batch: int = 32) -> Encoded:
    """Tokenise every question and run the frozen encoder once over every image (its `features`, the
    frozen backbone only, when it has them: trainable parts are applied by `image_tokens`)."""
    ids, targets, image_at, feats = [], [], [], []
    for i in range(0, len(questions), batch):
        chunk = questions[i:i + batch]
        pixels = torch.stack([pixels_of(q.image) for q in chunk])[:, None, None]
        if hasattr(encoder, "features"):
            feats.append(encoder.features(pixels.flatten(0, 2)).reshape(*pixels.shape[:3], encoder.patches, -1))
        else:
            feats.append(encoder(pixels))
        for q in chunk:
            a, t, at = fmt.example(q.text, q.answer)
            ids.append(a)
            targets.append(t)
            image_at.append(at)
    return Encoded(ids, targets, image_at, torch.cat(feats), [q.answer for q in questions],
                   [q.kind for q in questions])


def _pad(rows: Sequence[list[int]], value: int) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def _cross_mask(image_at: Sequence[int], length: int) -> torch.Tensor:
    mask = torch.zeros(len(image_at), length, 1, 1, dtype=torch.long)
    for b, at in enumerate(image_at):
        mask[b, at:] = 1
    return mask


def image_tokens(model: VisionLanguageModel, features: torch.Tensor) -> torch.Tensor:
    """Cached backbone features [N, 1, 1, patches, D] -> projected image tokens [N, patches, text dim],
    through the encoder's trainable position embedding when it has one."""
    add_position = getattr(model.vision, "add_position", None)
    if add_position is not None:
        features = add_position(features)
    return model.projector(features).flatten(1, 3)


def adapter_loss(model: VisionLanguageModel, data: Encoded, rows: Sequence[int]) -> torch.Tensor:
    ids = _pad([data.ids[i] for i in rows], 0)
    targets = _pad([data.targets[i] for i in rows], -100)
    images = model.image_context(image_tokens(model, data.features[list(rows)]),
                                 _cross_mask([data.image_at[i] for i in rows], ids.shape[1]))
    trained = (targets != -100).any(0).nonzero().squeeze(-1)   # logits only where some row is trained
    logits = model(ids, images=images, select=trained)
    return F.cross_entropy(logits.flatten(0, 1), targets[:, trained].flatten(), ignore_index=-100)


@dataclass
class TrainResult:
    steps: int
    examples: int
    seconds: float
    losses: list[float]


def train_adapter(model: VisionLanguageModel, data: Encoded, *, steps: int, batch: int = 16, lr: float = 1e-3,
                  warmup: int = 10, seed: int = 0, gate_lr_scale: float = 10.0,
                  progress: Callable[[int, float], None] | None = None) -> TrainResult:
    """AdamW on the trainable (adapter) parameters, linear warm-up then cosine to 10%.

    The tanh gates start at 0, so at first only they receive gradient and the layers they gate learn
    only as they open; a short run gives them `gate_lr_scale` times the learning rate."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    gates = [p for n, p in named if n.rsplit(".", 1)[-1].startswith("gate")]
    others = [p for n, p in named if not n.rsplit(".", 1)[-1].startswith("gate")]
    groups = [{"params": others, "scale": 1.0}, {"params": gates, "scale": gate_lr_scale}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses = []
    start = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        scale = min(1.0, step / max(1, warmup)) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr * scale * group["scale"]
        if len(order) < batch:
            order += rng.permutation(len(data.ids)).tolist()
        rows, order = order[:batch], order[batch:]
        loss = adapter_loss(model, data, rows)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return TrainResult(steps, steps * batch, time.perf_counter() - start, losses)


@torch.no_grad()
def answer(model: VisionLanguageModel, fmt: VQAFormat, data: Encoded, max_new: int = 2, batch: int = 32) -> list[str]:
    """Greedy one-word answers. Prompts of equal length are decoded together (no padding needed)."""
    model.eval()
    prompts = [ids[:len(ids) - sum(t != -100 for t in targets)] for ids, targets in zip(data.ids, data.targets)]
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    out = [""] * len(prompts)
    for rows_all in by_length.values():
        for k in range(0, len(rows_all), batch):
            rows = rows_all[k:k + batch]
            ids = torch.tensor([prompts[r] for r in rows])
            states = image_tokens(model, data.features[rows])
            generated = torch.empty(len(rows), 0, dtype=torch.long)
            for _ in range(max_new):
                images = model.image_context(states, _cross_mask([data.image_at[r] for r in rows], ids.shape[1]))
                nxt = model(ids, images=images, select=torch.tensor([ids.shape[1] - 1]))[:, -1].argmax(-1)
                generated = torch.cat([generated, nxt[:, None]], 1)
                ids = torch.cat([ids, nxt[:, None]], 1)
            for r, g in zip(rows, generated.tolist()):
                text = fmt.tokenizer.decode(g[:g.index(fmt.end)] if fmt.end in g else g).strip()
                out[r] = text.split()[0].strip(".,!").lower() if text else ""
    return out


@dataclass
class VQASettings:
    train: int = 2048            # training questions (fresh scenes, no held-out pair)
    steps: int = 160
    batch: int = 16
    lr: float = 3e-3
    eval: int = 300              # fresh test scenes, and as many with a held-out colour-shape pair
    image_size: int = 160
    cross_layers: int = 8
    gate_lr_scale: float = 10.0
    seed: int = 0


def accuracy_table(answers: Sequence[str], data: Encoded) -> dict[str, Any]:
    """Accuracy overall and per question kind, with counts."""
    table: dict[str, Any] = {}
    for kind in sorted(set(data.kinds)) + ["all"]:
        rows = [i for i, k in enumerate(data.kinds) if kind in ("all", k)]
        right = sum(answers[i] == data.answers[i] for i in rows)
        table[kind] = {"accuracy": right / max(1, len(rows)), "n": len(rows)}
    return table


def run_vqa(out: Any, settings: VQASettings, model_spec: str = "smollm2-135m-instruct",
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Frozen chat model + EfficientNet-Lite0 features + a trained adapter, scored on fresh scenes and on
    scenes holding a colour-shape pair never seen in training. Writes report.json and adapter.safetensors."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from herd.loading import load_model
    from herd.multimodal.config import VisionLanguageConfig, fusion_schedule
    from herd.multimodal.conv_encoder import IMAGENET_MEAN, IMAGENET_STD, EfficientNetLiteEncoder
    from herd.multimodal.scenes import HELD_OUT, questions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    started = time.perf_counter()
    loaded = load_model(model_spec)
    encoder = EfficientNetLiteEncoder(settings.image_size)
    encoder.freeze_backbone()
    config = VisionLanguageConfig(text=loaded.config,
                                  cross_attention_before=fusion_schedule(loaded.config.n_layers, settings.cross_layers))
    model = VisionLanguageModel(config, loaded.model, encoder)
    model.freeze_language_model()
    fmt = VQAFormat(loaded.tokenizer, config.image_token)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]

    def pixels_of(image: Any) -> torch.Tensor:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return (torch.from_numpy(array).permute(2, 0, 1) - mean) / std

    size = settings.image_size
    log(f"rendering and encoding {settings.train} training and {2 * settings.eval} test scenes")
    t0 = time.perf_counter()
    train = encode_questions(list(questions(settings.train, settings.seed, size=size)), fmt, encoder, pixels_of)
    fresh = encode_questions(list(questions(settings.eval, settings.seed + 1, size=size)), fmt, encoder, pixels_of)
    held = encode_questions(list(questions(settings.eval, settings.seed + 2, size=size, held_out=True)), fmt,
                            encoder, pixels_of)
    encode_s = time.perf_counter() - t0
    lm_before = {k: v.clone() for k, v in model.language_model.state_dict().items()}
    before = accuracy_table(answer(model, fmt, fresh), fresh)

    def progress(step: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == settings.steps:
            log(f"step {step}/{settings.steps} loss {loss:.3f} ({time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    result = train_adapter(model, train, steps=settings.steps, batch=settings.batch, lr=settings.lr,
                           seed=settings.seed, gate_lr_scale=settings.gate_lr_scale, progress=progress)
    frozen = all(torch.equal(v, lm_before[k]) for k, v in model.language_model.state_dict().items())
    t0 = time.perf_counter()
    fresh_table = accuracy_table(answer(model, fmt, fresh), fresh)
    held_table = accuracy_table(answer(model, fmt, held), held)
    answer_s = time.perf_counter() - t0
    trainable = {k: v.detach().contiguous() for k, v in model.named_parameters() if v.requires_grad}
    save_file(trainable, str(out / "adapter.safetensors"))
    report = {
        "model": model_spec, "encoder": "efficientnet-lite0 (ImageNet weights, frozen; its position embedding trained)", "settings": vars(settings),
        "cross_attention_before": list(config.cross_attention_before),
        "trainable_parameters": sum(v.numel() for v in trainable.values()),
        "held_out_pairs": sorted(f"{c} {s}" for c, s in HELD_OUT),
        "before_training": before, "fresh": fresh_table, "held_out": held_table,
        "language_model_unchanged": frozen, "final_loss": float(np.mean(result.losses[-10:])),
        "seconds": {"encode": encode_s, "train": result.seconds, "answer": answer_s,
                    "total": time.perf_counter() - started},
        "train_examples_per_s": result.examples / result.seconds,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
