"""One-row layouts: a prefix computed once, several branches that each see it and never each other.

Preference training (the reward model's 2-3 ranked responses, DPO's chosen and rejected) and
log-likelihood evaluation (a multiple-choice question's choices) all score several continuations of
one shared prompt. Putting each (prompt, response) pair in its own row computes the prompt once per
response; here the prompt is placed once and each response follows it in the same row, attending to
the prompt and to itself only, with positions restarting where the prompt ends. Every response is
then computed exactly as in its own row (same positions, same visible keys), the prompt only once.
Several such groups can share a row (packing); they never see each other.

The layout is an attention mask plus positions (`herd.model.attention.Masked`), so it runs through
the same `Transformer.forward` as everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from herd.model.attention import Masked

PAD_ID = 0


@dataclass(frozen=True)
class PrefixGroup:
    """A shared prefix (prompt) and the branches (responses, choices) that continue it."""

    prefix: Sequence[int]
    branches: Sequence[Sequence[int]]

    def __post_init__(self) -> None:
        if len(self.prefix) == 0:
            raise ValueError("a prefix group needs a non-empty prefix (the branches are predicted from it)")
        if not self.branches or any(len(b) == 0 for b in self.branches):
            raise ValueError("a prefix group needs at least one branch and no empty branch")

    @property
    def length(self) -> int:
        return len(self.prefix) + sum(len(b) for b in self.branches)


@dataclass(frozen=True)
class BranchSpan:
    """Where one branch lies in the packed batch, and which hidden states predict its tokens."""

    row: int
    start: int  # column of the branch's first token
    length: int
    prefix_last: int  # column of the prefix's last token: its output predicts the branch's first token

    def predicting_columns(self) -> list[int]:
        """Columns whose outputs predict the branch's tokens, in order (logits there score them)."""
        return [self.prefix_last] + list(range(self.start, self.start + self.length - 1))

    def token_columns(self) -> list[int]:
        return list(range(self.start, self.start + self.length))


@dataclass
class PackedPrefixBatch:
    """Token ids, positions and the attention state of packed prefix groups, plus where each branch is."""

    tokens: torch.Tensor  # int64 [B, T], PAD_ID after the last group of a row
    positions: torch.Tensor  # int64 [B, T]
    attention: Masked
    spans: list[list[BranchSpan]]  # per group (input order), per branch
    prefix_spans: list[tuple[int, int, int]]  # per group: (row, start, length)

    def predicting_index(self, group: int, branch: int) -> tuple[int, list[int]]:
        span = self.spans[group][branch]
        return span.row, span.predicting_columns()


def pack_rows(lengths: Sequence[int], max_len: int | None) -> list[list[int]]:
    """Group indices per row, first-fit in decreasing length (a group longer than max_len gets its own row)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if max_len is None:
        return [[i] for i in sorted(order)]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max(0, max_len - lengths[i]))
    return rows


def pack_prefix_groups(groups: Sequence[PrefixGroup], max_len: int | None = None,
                       device: torch.device | str | None = None) -> PackedPrefixBatch:
    """Lay out `groups` in rows (one group per row when `max_len` is None, else packed up to it).

    Token (i) may attend to token (j) when both belong to the same group, j <= i, and j is in the
    prefix or in i's own branch. Pad columns attend only to themselves (no all-masked rows, no NaN).
    """
    if not groups:
        raise ValueError("no prefix groups to pack")
    lengths = [g.length for g in groups]
    rows = pack_rows(lengths, max_len)
    width = max(sum(lengths[i] for i in row) for row in rows)
    tokens = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    group_id = torch.full((len(rows), width), -1, dtype=torch.long)
    branch_id = torch.zeros((len(rows), width), dtype=torch.long)
    spans: list[list[BranchSpan]] = [[] for _ in groups]
    prefix_spans: list[tuple[int, int, int]] = [(0, 0, 0)] * len(groups)
    for r, row in enumerate(rows):
        column = 0
        for g in row:
            group = groups[g]
            p = len(group.prefix)
            tokens[r, column:column + p] = torch.as_tensor(list(group.prefix), dtype=torch.long)
            positions[r, column:column + p] = torch.arange(p)
            group_id[r, column:column + p] = g
            prefix_spans[g] = (r, column, p)
            prefix_last = column + p - 1
            column += p
            for b, branch in enumerate(group.branches):
                n = len(branch)
                tokens[r, column:column + n] = torch.as_tensor(list(branch), dtype=torch.long)
                positions[r, column:column + n] = torch.arange(p, p + n)
                group_id[r, column:column + n] = g
                branch_id[r, column:column + n] = b + 1
                spans[g].append(BranchSpan(r, column, n, prefix_last))
                column += n
        # pads keep increasing positions (harmless) and a group id of their own
        if column < width:
            positions[r, column:] = torch.arange(width - column)
    mask = prefix_tree_mask(group_id, branch_id)
    if device is not None:
        tokens, positions, mask = tokens.to(device), positions.to(device), mask.to(device)
    return PackedPrefixBatch(tokens, positions, Masked(mask), spans, prefix_spans)


def prefix_tree_mask(group_id: torch.Tensor, branch_id: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, T, T]: causal, same group, and the key in the prefix (branch 0) or in the query's branch.

    `group_id` -1 marks padding, which sees only itself.
    """
    seqlen = group_id.shape[1]
    causal = torch.ones(seqlen, seqlen, dtype=torch.bool, device=group_id.device).tril()
    same_group = group_id[:, :, None] == group_id[:, None, :]
    key_visible = (branch_id[:, None, :] == 0) | (branch_id[:, :, None] == branch_id[:, None, :])
    padding = group_id < 0
    eye = torch.eye(seqlen, dtype=torch.bool, device=group_id.device)[None]
    mask = (same_group & causal & key_visible & ~padding[:, :, None]) | (eye & padding[:, :, None])
    return mask[:, None]


def gather_branch_logprobs(logprobs_or_logits: torch.Tensor, batch: PackedPrefixBatch,
                           normalized: bool = False) -> list[list[torch.Tensor]]:
    """Per group, per branch: the log-probabilities of the branch's tokens [L] (differentiable).

    `logprobs_or_logits` is [B, T, V]; pass `normalized=True` when it already holds log-softmax.
    """
    out: list[list[torch.Tensor]] = []
    for group_spans in batch.spans:
        per_branch = []
        for span in group_spans:
            cols = torch.as_tensor(span.predicting_columns(), device=logprobs_or_logits.device)
            rows = logprobs_or_logits[span.row, cols]
            if not normalized:
                rows = torch.log_softmax(rows.float(), dim=-1)
            targets = batch.tokens[span.row, span.start:span.start + span.length].to(rows.device)
            per_branch.append(rows.gather(-1, targets[:, None]).squeeze(-1))
        out.append(per_branch)
    return out
