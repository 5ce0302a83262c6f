"""The reward model (paper section 4.1.2): the pre-trained trunk and a scalar head read at the closing token.

`RewardModel` is the Transformer without its vocabulary head and with `score` (dim -> 1, no bias, as
Hugging Face's `LlamaForSequenceClassification`). A prompt's ranked responses are scored in one row
(herd.model.shared_prefix): the prompt once, each response after it and masked from the others, each
reward read at its response's last token (the closing eot), so each reward is exactly what the
response would get in a row of its own. `export_reward_model` writes the Hugging Face
sequence-classification layout, which transformers loads as `LlamaForSequenceClassification`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from herd.model import ModelConfig, Transformer
from herd.model.shared_prefix import PrefixGroup, pack_prefix_groups
from herd.model.transformer import init_plan
from herd.post.encoding import EncodedPreference
from herd.train.loss import autocast


class RewardModel(Transformer):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.output = None  # type: ignore[assignment]
        self.score = nn.Linear(config.dim, 1, bias=False)

    def rewards(self, tokens: torch.Tensor, positions: torch.Tensor, attention: object,
                rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Scalar rewards [K] read at (rows[k], cols[k]) of a packed batch."""
        hidden = self.run_layers(self.embed(tokens), positions, attention)  # type: ignore[arg-type]
        return self.score(self.norm(hidden[rows, cols])).squeeze(-1).float()


def preference_rewards(model: RewardModel, preferences: Sequence[EncodedPreference], *, one_row: bool = True,
                       device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None
                       ) -> list[torch.Tensor]:
    """Per preference: the rewards [K] of its K responses (best first), differentiable."""
    groups: list[PrefixGroup] = []
    for pref in preferences:
        if one_row:
            groups.append(pref.group())
        else:
            groups += [PrefixGroup(pref.prompt, [r]) for r in pref.responses]
    batch = pack_prefix_groups(groups, device=device)
    spans = [s for group in batch.spans for s in group]
    rows = torch.as_tensor([s.row for s in spans], device=batch.tokens.device)
    cols = torch.as_tensor([s.start + s.length - 1 for s in spans], device=batch.tokens.device)
    with autocast(torch.device(device), autocast_dtype):
        flat = model.rewards(batch.tokens, batch.positions, batch.attention, rows, cols)
    return list(torch.split(flat, [len(p.responses) for p in preferences]))


@dataclass(frozen=True)
class RewardInit:
    """The trunk from the starting model (its vocabulary head dropped), the score head seeded N(0, 1/dim)."""

    seed: int
    init_from: str = ""
    std: float = 0.02

    def apply(self, model: nn.Module) -> None:
        assert isinstance(model, RewardModel)
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(self.seed)
        params = dict(model.named_parameters())
        with torch.no_grad():
            if not self.init_from:  # with init_from the trunk's random init would be overwritten: skip it
                for name, init in init_plan(model.config, self.std):
                    if name in params:
                        init(params[name], generator)
            nn.init.normal_(model.score.weight, std=model.config.dim ** -0.5, generator=generator)
        if not self.init_from:
            return
        from herd.train.checkpointing import load_model_weights

        state = {k: v for k, v in load_model_weights(self.init_from).items() if k != "output.weight"}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"score.weight"}:
            from herd.checkpoint.errors import CheckpointError

            raise CheckpointError(f"{self.init_from}: does not fit the reward model's trunk (missing "
                                  f"{sorted(set(missing) - {'score.weight'})[:5]}, unexpected {unexpected[:5]})")


def export_reward_model(model: RewardModel, tokenizer: object, destination: str | Path) -> Path:
    """Hugging Face `LlamaForSequenceClassification` layout (config.json, model.safetensors, tokenizer)."""
    from herd.checkpoint.hf import write_hf_sequence_classification

    return write_hf_sequence_classification(destination, model.config, model.state_dict(), model.score.weight,
                                            tokenizer)


def load_reward_model(directory: str | Path, device: torch.device | str = "cpu") -> tuple[RewardModel, object]:
    """A reward model written by `export_reward_model` (or any Llama `LlamaForSequenceClassification`
    with one label) and its tokenizer."""
    from safetensors.torch import load_file

    from herd.checkpoint.errors import CheckpointError
    from herd.checkpoint.hf import config_from_hf, hf_to_herd_state_dict
    from herd.tokenizer.files import tokenizer_from_directory

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no config.json (not an exported reward model)")
    hf = json.loads(config_path.read_text())
    if "LlamaForSequenceClassification" not in hf.get("architectures", []) or hf.get("num_labels", 1) != 1:
        raise CheckpointError(f"{directory} is not a one-label LlamaForSequenceClassification (a reward model)")
    config = config_from_hf(hf)
    state = load_file(str(directory / "model.safetensors"))
    score = state.pop("score.weight", None)
    if score is None:
        raise CheckpointError(f"{directory}/model.safetensors has no score.weight")
    trunk = hf_to_herd_state_dict(config.replace(tie_embeddings=True), state)
    model = RewardModel(config)
    missing, unexpected = model.load_state_dict({**trunk, "score.weight": score}, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{directory}: reward model weights do not fit (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    return model.to(device).eval(), tokenizer_from_directory(directory)
