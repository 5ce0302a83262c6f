"""Scoring (context, continuations) items in packed one-row forwards: each context once, no KV cache.

Log-likelihood evaluation asks how likely each choice is after a question. Through the paged engine
every choice is its own sequence: the context's full cache blocks are shared, but each choice
recomputes the context's last partial block and every prefill step runs attention sequence by
sequence. At 0-shot the contexts are short and the choices as long as them, so that overhead is
most of the work. Here each context is laid out once with its choices after it in one row
(`herd.model.shared_prefix`: each choice sees the context and itself, positions restart after
the context, exactly as in its own row), several items share a row, and rows run through the
model's plain forward as large dense matmuls. Hidden states go through the output head only at
the columns that predict a continuation token.

Results do not depend on what else is packed with an item beyond float rounding (the mask hides
every other group; positions are the item's own), which keeps scores batch-invariant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from herd.model.shared_prefix import PrefixGroup, pack_prefix_groups, pack_rows
from herd.model.transformer import Transformer

# Tokens per packed row. Measured on SmolLM2-135M (2-core CPU, HellaSwag-100 0-shot); see
# benchmarks/RESULTS.md. Larger rows waste more of the dense mask (attention over other groups'
# columns is computed, then masked), smaller ones make smaller matmuls.
ROW_TOKENS = 1024
# Tokens per forward call (rows x row width): bounds the activations and the [B, 1, T, T] mask.
CALL_TOKENS = 4096
# Continuation positions per head chunk: bounds the float32 [K, vocab] log-softmax.
HEAD_CHUNK = 512


@dataclass
class TokenScores:
    """Per continuation token: its log-probability and whether it is the argmax (ties count)."""

    logprobs: list[float]
    greedy: list[bool]


@dataclass
class _Group:
    """One distinct context with some of the continuations asked about it (item, choice) pairs."""

    context: list[int]
    continuations: list[list[int]]
    owners: list[tuple[int, int]]

    @property
    def length(self) -> int:
        return len(self.context) + sum(map(len, self.continuations))


def build_groups(items: Sequence[tuple[list[int], list[list[int]]]], row_tokens: int) -> list[_Group]:
    """Merge items with the same context into one group; split a group longer than a row so that
    no row grows past max(row_tokens, its context + its longest continuation)."""
    by_context: dict[tuple[int, ...], _Group] = {}
    for i, (context, continuations) in enumerate(items):
        group = by_context.setdefault(tuple(context), _Group(context, [], []))
        for j, cont in enumerate(continuations):
            group.continuations.append(cont)
            group.owners.append((i, j))
    groups: list[_Group] = []
    for group in by_context.values():
        if group.length <= row_tokens or len(group.continuations) == 1:
            groups.append(group)
            continue
        current = _Group(group.context, [], [])
        for cont, owner in zip(group.continuations, group.owners):
            if current.continuations and current.length + len(cont) > row_tokens:
                groups.append(current)
                current = _Group(group.context, [], [])
            current.continuations.append(cont)
            current.owners.append(owner)
        groups.append(current)
    return groups


def _calls(groups: Sequence[_Group], row_tokens: int, call_tokens: int) -> list[list[int]]:
    """Group indices per forward call: rows packed first-fit, rows of similar width together."""
    rows = pack_rows([g.length for g in groups], row_tokens)
    rows.sort(key=lambda row: -sum(groups[g].length for g in row))
    calls: list[list[int]] = []
    width = 0
    count = 0
    for row in rows:
        w = sum(groups[g].length for g in row)
        if calls and (count + 1) * max(width, w) <= call_tokens:
            calls[-1] += row
            count += 1
            width = max(width, w)
        else:
            calls.append(list(row))
            count, width = 1, w
    return calls


@torch.inference_mode()
def _score_call(model: Transformer, groups: Sequence[_Group], row_tokens: int, device: torch.device,
                head_chunk: int) -> list[TokenScores]:
    """One packed forward over `groups`; per (group, continuation) in order, its token scores."""
    batch = pack_prefix_groups([PrefixGroup(g.context, g.continuations) for g in groups], row_tokens, device)
    rows: list[int] = []
    cols: list[int] = []
    lengths: list[int] = []
    for group_spans in batch.spans:
        for span in group_spans:
            predicting = span.predicting_columns()
            rows += [span.row] * len(predicting)
            cols += predicting
            lengths.append(span.length)
    targets = torch.tensor([t for g in groups for c in g.continuations for t in c], device=device)
    h = model.run_layers(model.embed(batch.tokens), batch.positions, batch.attention)
    h = h[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]   # [K, dim]
    chosen_parts, greedy_parts = [], []
    for start in range(0, h.shape[0], head_chunk):
        logits = model.head(h[None, start:start + head_chunk])[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        t = targets[start:start + head_chunk, None]
        chosen = logp.gather(1, t)
        chosen_parts.append(chosen[:, 0])
        greedy_parts.append(~(logp > chosen).any(dim=1))   # rank 1, as the paged path's prompt logprobs
    chosen_l = torch.cat(chosen_parts).tolist()
    greedy_l = torch.cat(greedy_parts).tolist()
    out: list[TokenScores] = []
    offset = 0
    for n in lengths:
        out.append(TokenScores(chosen_l[offset:offset + n], greedy_l[offset:offset + n]))
        offset += n
    return out


def score_packed(
    model: Transformer,
    items: Sequence[tuple[list[int], list[list[int]]]],
    row_tokens: int | None = None,
    call_tokens: int | None = None,
    head_chunk: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[list[TokenScores]]:
    """Token scores of every continuation of every (validated) item, in item and choice order.

    `on_progress(n)` is told after each forward call how many continuations it finished. Sizes
    default to ROW_TOKENS, CALL_TOKENS and HEAD_CHUNK.
    """
    row_tokens = ROW_TOKENS if row_tokens is None else row_tokens
    call_tokens = CALL_TOKENS if call_tokens is None else call_tokens
    head_chunk = HEAD_CHUNK if head_chunk is None else head_chunk
    if row_tokens < 1 or call_tokens < 1 or head_chunk < 1:
        raise ValueError(f"row_tokens, call_tokens and head_chunk must be >= 1, got {row_tokens}, {call_tokens}, {head_chunk}")
    device = model.tok_embeddings.weight.device
    groups = build_groups(items, row_tokens)
    results: list[list[TokenScores | None]] = [[None] * len(conts) for _, conts in items]
    for call in _calls(groups, row_tokens, call_tokens):
        members = [groups[g] for g in call]
        scores = iter(_score_call(model, members, row_tokens, device, head_chunk))
        for group in members:
            for owner in group.owners:
                results[owner[0]][owner[1]] = next(scores)
        if on_progress is not None:
            on_progress(sum(len(g.owners) for g in members))
    return [[r for r in row if r is not None] for row in results]


def packed_token_count(items: Sequence[tuple[list[int], list[list[int]]]], row_tokens: int | None = None) -> int:
    """Tokens the packed forwards compute for `items` (padding excluded): each distinct context once
    per group, each continuation once."""
    return sum(g.length for g in build_groups(items, ROW_TOKENS if row_tokens is None else row_tokens))
