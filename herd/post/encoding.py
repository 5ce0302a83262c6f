"""Dialogs and ranked responses as token ids with the loss masks post-training needs.

The masks come from the chat format (`herd.tokenizer.chat`: `target_mask`, `format_mask`):

  SFT, mask "paper"        every assistant message's body and its closing token (the model must
                           learn to stop), nothing the user or system said: the paper's "loss on
                           target tokens only".
  SFT, mask "completion"   every token after the generation prompt of the last assistant turn
                           (TRL's completion-only loss).
  DPO/RM, mask "paper"     the response's body without its header and termination tokens: the
                           paper masks those out of both the chosen and the rejected log-probs, since
                           tokens both responses share by construction only blur the margin.
  DPO/RM, mask "completion" every token of the response after the shared prompt (TRL's default).

A preference becomes one `PrefixGroup` (herd.model.shared_prefix): the prompt, through the assistant
header, once; each response after it as a branch. `EncodedPreference.branch_masks[k][t]` says whether
branch k's token t counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from herd.model.shared_prefix import PrefixGroup
from herd.tokenizer.chat import ChatFormat, Message

MASKS = ("paper", "completion")


def check_mask(mask: str) -> str:
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
    return mask


@dataclass(frozen=True)
class EncodedSFT:
    """One dialog's token ids and, per token, whether the model is trained to produce it."""

    tokens: list[int]
    loss_mask: list[bool]

    @property
    def trained_tokens(self) -> int:
        return sum(self.loss_mask)


@dataclass(frozen=True)
class EncodedPreference:
    """A prompt once, its ranked responses (best first) as branches, and each branch's loss mask."""

    prompt: list[int]
    responses: list[list[int]]
    branch_masks: list[list[bool]]
    strength: str | None = None

    def group(self) -> PrefixGroup:
        return PrefixGroup(self.prompt, self.responses)

    @property
    def length(self) -> int:
        return len(self.prompt) + sum(len(r) for r in self.responses)


def _last_assistant_start(chat_format: ChatFormat, messages: Sequence[Message]) -> int:
    """Tokens before the last assistant message's body: the prompt with its generation prompt."""
    last = max(i for i, m in enumerate(messages) if m.role == "assistant")
    return len(chat_format.encode_dialog(messages[:last], add_generation_prompt=True).tokens)


def encode_sft(chat_format: ChatFormat, messages: Sequence[Message], mask: str = "paper") -> EncodedSFT:
    """A complete dialog (ending with an assistant message) with its SFT loss mask."""
    check_mask(mask)
    if not messages or messages[-1].role != "assistant":
        raise ValueError("an SFT dialog must end with an assistant message")
    encoded = chat_format.encode_dialog(messages, add_generation_prompt=False)
    if mask == "paper":
        loss_mask = list(encoded.target_mask)
    else:
        start = min(_last_assistant_start(chat_format, messages), len(encoded.tokens))
        loss_mask = [i >= start for i in range(len(encoded.tokens))]
    return EncodedSFT(list(encoded.tokens), loss_mask)


def _common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in sequences)
    for i in range(n):
        first = sequences[0][i]
        if any(s[i] != first for s in sequences[1:]):
            return i
    return n


def encode_preference(chat_format: ChatFormat, prompt: Sequence[Message],
                      responses: Sequence[Sequence[Message]], mask: str = "paper",
                      strength: str | None = None) -> EncodedPreference:
    """Ranked responses (best first) to one prompt, as a shared prompt and per-response branches.

    The shared part ends at the generation prompt (or earlier where the format merges it with the
    reply's first bytes), so every response token, even one that all responses happen to share,
    stays in its branch and is scored for each response.
    """
    check_mask(mask)
    if len(responses) < 2:
        raise ValueError(f"a preference needs at least 2 ranked responses, got {len(responses)}")
    prompt = list(prompt)
    generation = chat_format.encode_dialog(prompt, add_generation_prompt=True).tokens
    full = [chat_format.encode_dialog(prompt + list(r), add_generation_prompt=False) for r in responses]
    shared = min(_common_prefix([generation] + [f.tokens for f in full]), len(generation))
    if any(len(f.tokens) <= shared for f in full):
        raise ValueError("a response is empty after the prompt")
    branches, masks = [], []
    for f in full:
        branches.append(list(f.tokens[shared:]))
        if mask == "paper":
            masks.append([t and not fm for t, fm in zip(f.target_mask[shared:], f.format_mask[shared:])])
        else:
            masks.append([True] * (len(f.tokens) - shared))
    return EncodedPreference(list(generation[:shared]), branches, masks, strength)
