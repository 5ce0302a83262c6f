"""Quality and difficulty scores for dialogs (paper section 4.2.3, "Data pruning").

Quality: the reward model's score of each dialog's last assistant turn given everything before it, and
its quartile within the scored set (quartile 4 = the top quarter, which the paper keeps as "high
quality"); and/or MT-bench's 1-10 judge. A dialog is `high_quality` when either flags it (the paper
keeps samples "marked as high quality by either the RM or the Llama-based filter"). Difficulty: the 3-point
judge and the number of intents. `quality` and `difficulty` are those signals mapped to (0, 1] and
averaged; `dedup` sorts each cluster by their product.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from herd.tokenizer.chat import Message

INTENT_CAP = 5  # intents beyond this many count as maximally difficult


def dialog_rewards(model: Any, chat_format: Any, dialogs: Sequence[Sequence[Message]], batch_size: int = 8,
                   progress: bool = False) -> list[float]:
    """The reward of each dialog's last assistant turn, read at its closing token (as `herd rm score`).

    Each dialog is one prefix group (everything up to the last assistant turn's generation prompt,
    then the turn as its single branch), so the reward is exactly the one the reward model gives
    that response to that prompt in `herd rm score` or `herd rs`.
    """
    import torch

    from herd.post.chatdata.rows import progress as bar
    from herd.post.encoding import EncodedPreference
    from herd.post.reward_model import preference_rewards

    encoded = []
    for messages in dialogs:
        last = max(i for i, m in enumerate(messages) if m.role == "assistant")
        generation = chat_format.encode_dialog(list(messages[:last]), add_generation_prompt=True).tokens
        full = chat_format.encode_dialog(list(messages[:last + 1]), add_generation_prompt=False).tokens
        shared = 0
        while shared < min(len(generation), len(full) - 1) and generation[shared] == full[shared]:
            shared += 1
        branch = list(full[shared:])
        encoded.append(EncodedPreference(list(full[:shared]), [branch], [[True] * len(branch)]))
    rewards: list[float] = []
    starts = range(0, len(encoded), batch_size)
    with torch.no_grad():
        for start in bar(starts, len(starts), "reward model", progress):
            rewards += [float(r[0]) for r in preference_rewards(model, encoded[start:start + batch_size])]
    return rewards


def quartiles(scores: Sequence[float]) -> list[int]:
    """Each score's quartile within `scores`, 1 (bottom quarter) to 4 (top quarter).

    By rank: the i-th smallest of n is in quartile 1 + floor(4 i / n); tied scores share the lowest
    rank among them, so a tie never lifts a score into a higher quartile than its equals.
    """
    n = len(scores)
    order = sorted(range(n), key=lambda i: scores[i])
    rank = [0] * n
    for position, i in enumerate(order):
        previous = order[position - 1] if position else None
        rank[i] = rank[previous] if previous is not None and scores[previous] == scores[i] else position
    return [1 + (4 * rank[i]) // n for i in range(n)]


def combine(fields: dict[str, Any], judge_threshold: float) -> dict[str, Any]:
    """`quality`, `difficulty` (means of the available signals in (0, 1], 1 when none) and `high_quality`."""
    quality = []
    if fields.get("rm_quartile") is not None:
        quality.append(fields["rm_quartile"] / 4)
    if fields.get("judge_quality") is not None:
        quality.append(fields["judge_quality"] / 10)
    difficulty = []
    if fields.get("judge_difficulty") is not None:
        difficulty.append(fields["judge_difficulty"] / 3)
    if fields.get("intent_count") is not None:
        difficulty.append(min(fields["intent_count"], INTENT_CAP) / INTENT_CAP)
    high = fields.get("rm_quartile") == 4 or (fields.get("judge_quality") or 0) >= judge_threshold
    return {"quality": sum(quality) / len(quality) if quality else 1.0,
            "difficulty": sum(difficulty) / len(difficulty) if difficulty else 1.0,
            "high_quality": bool(high) if quality else None}
