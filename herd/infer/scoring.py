"""Scoring many (context, continuations) items through the paged engine, computing each context once.

`LLMEngine.score_many` has two ways; this module holds the checks both share (`validate_items`), the
rule that picks one (`prefers_prefix_cache`) and the paged way. The other, packed rows without a KV
cache, is herd.infer.packed_scoring: faster whenever contexts differ from item to item. This one wins
when most contexts start with one long prefix (a fixed few-shot prompt), computed only once here.

The evaluation harness asks "how likely is each choice after this question?" thousands of times.
lm-evaluation-harness recomputes the shared context once per choice; here every request is a
prompt-logprob request (`SamplingParams(max_tokens=0, prompt_logprobs=0)`, logits only at the
continuation's positions) and the order of submission makes the paged cache do the sharing:

1. a prefix that most contexts share (a fixed few-shot prompt) is computed once, first;
2. the first continuation of each distinct context runs; its full blocks enter the prefix cache;
3. when it finishes, the context's other continuations run and hit those blocks, so each computes
   only its last partial block of context plus itself.

At most `window` requests are in flight, so the cache holds what the next requests will reuse.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from herd.infer.sampling import SamplingParams

if TYPE_CHECKING:
    from herd.infer.engine import LLMEngine, RequestOutput, ScoreResult

_SCORE_PARAMS = SamplingParams(max_tokens=0, prompt_logprobs=0)


def _ids(value: object, what: str) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{what} must be a list of token ids, got {type(value).__name__}")
    ids = list(value)
    if any(isinstance(t, bool) or not isinstance(t, int) for t in ids):
        raise ValueError(f"{what} must hold integer token ids")
    return ids


def majority_prefix(sequences: Sequence[Sequence[int]], candidates: int = 3) -> list[int]:
    """The longest prefix that at least half of the sequences start with (one odd context, such as a
    few-shot item that could not use the shared examples, does not cancel the sharing for the rest)."""
    best: list[int] = []
    for ref in sequences[:candidates]:
        lengths = []
        for other in sequences:
            n = min(len(ref), len(other))
            i = 0
            while i < n and ref[i] == other[i]:
                i += 1
            lengths.append(i)
        lengths.sort(reverse=True)
        length = lengths[(len(lengths) - 1) // 2]   # reached by at least half of them
        if length > len(best):
            best = list(ref[:length])
    return best


Item = tuple[list[int], list[list[int]]]


def validate_items(items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[Item]:
    """(context, continuations) pairs as lists of ints; ValueError naming the first bad item."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValueError(f"items must be a list of (context_ids, [continuation_ids, ...]) pairs, got {type(items).__name__}")
    out: list[Item] = []
    for n, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"item {n} must be a (context_ids, [continuation_ids, ...]) pair")
        context = _ids(item[0], f"item {n}'s context")
        if not context:
            raise ValueError(f"item {n}'s context is empty; scoring needs at least one token (use BOS)")
        if isinstance(item[1], (str, bytes)) or not isinstance(item[1], Sequence) or not item[1]:
            raise ValueError(f"item {n} needs a non-empty list of continuations")
        continuations = [_ids(c, f"item {n}'s continuation {j}") for j, c in enumerate(item[1])]
        if any(not c for c in continuations):
            raise ValueError(f"item {n} has an empty continuation")
        out.append((context, continuations))
    return out


def shared_cache_prefix(items: Sequence[Item], block_size: int) -> list[int]:
    """The prefix most contexts share, if it spans at least one full cache block (else [])."""
    shared = majority_prefix([c for c, _ in items]) if len(items) > 1 else []
    # only full blocks are shared through the prefix cache
    return shared if len(shared) >= block_size else []


# the paged path needs a shared prefix of at least this many tokens to be considered
MIN_CACHED_PREFIX = 64


def prefers_prefix_cache(items: Sequence[Item], block_size: int) -> bool:
    """Whether the paged engine with its prefix cache should score `items` rather than packed rows.

    Packed rows (herd.infer.packed_scoring) compute every distinct context once and every choice
    once, in large dense forwards; the paged path additionally computes a prefix that most contexts
    share (a fixed few-shot prompt) only once, but runs per-sequence attention and recomputes each
    context's last partial block per choice. It wins when the shared prefix is long and is most of
    the packed work: the tokens it saves, (sharers - 1) x prefix, are at least half of what packed
    rows would compute.
    """
    shared = shared_cache_prefix(items, block_size)
    if len(shared) < max(MIN_CACHED_PREFIX, block_size):
        return False
    n = len(shared)
    sharers = sum(1 for c, _ in items if c[:n] == shared)
    distinct: dict[tuple[int, ...], int] = {}
    for context, continuations in items:
        distinct[tuple(context)] = distinct.get(tuple(context), len(context)) + sum(map(len, continuations))
    return 2 * (sharers - 1) * n >= sum(distinct.values())


class ScorePlan:
    """The requests for a batch of items and the order that lets contexts be computed once."""

    def __init__(self, items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], block_size: int) -> None:
        self.items = validate_items(items)
        self.block_size = block_size
        self.shared_prefix = shared_cache_prefix(self.items, block_size)

    def run(self, engine: LLMEngine, progress: bool = False, desc: str = "scoring") -> list[list[ScoreResult]]:
        from herd.infer.engine import ScoreResult

        results: list[list[ScoreResult | None]] = [[None] * len(conts) for _, conts in self.items]
        first: deque[tuple[int, int]] = deque()             # (item, continuation) that opens a context
        later: dict[tuple[int, ...], list[tuple[int, int]]] = {}  # context -> continuations waiting for it
        for i, (context, continuations) in enumerate(self.items):
            key = tuple(context)
            pairs = [(i, j) for j in range(len(continuations))]
            if key in later:
                later[key] += pairs
            else:
                first.append(pairs[0])
                later[key] = pairs[1:]
        ready: deque[tuple[int, int]] = deque()
        in_flight: dict[str, tuple[int, int] | None] = {}
        window = max(2, engine.config.max_num_seqs)
        total = sum(len(c) for _, c in self.items)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=desc, unit="seq", dynamic_ncols=True)

        def submit(pair: tuple[int, int]) -> None:
            context, continuations = self.items[pair[0]]
            rid = engine.add_request(
                context + continuations[pair[1]], _SCORE_PARAMS, request_id=f"score-{id(self)}-{pair[0]}-{pair[1]}",
                prompt_logprobs_from=len(context),
            )
            in_flight[rid] = pair

        def finish(out: RequestOutput) -> None:
            pair = in_flight.pop(out.request_id)
            if pair is None:      # the shared prefix
                return
            i, j = pair
            context, continuations = self.items[i]
            rows = (out.prompt_logprobs or [])[len(context):]
            if len(rows) != len(continuations[j]) or any(r is None for r in rows):
                raise RuntimeError(f"scoring item {i} returned {len(rows)} logprobs for {len(continuations[j])} tokens")
            results[i][j] = ScoreResult(
                logprob=float(sum(r.logprob for r in rows)),
                token_logprobs=[r.logprob for r in rows],
                greedy=all(r.rank == 1 for r in rows),
            )
            if first_of.get(tuple(context)) == (i, j):   # its context's blocks are cached now
                ready.extendleft(reversed(later.pop(tuple(context), [])))
            if bar is not None:
                bar.update(1)

        first_of = {tuple(self.items[i][0]): (i, j) for i, j in first}
        try:
            if self.shared_prefix:
                rid = engine.add_request(
                    self.shared_prefix, _SCORE_PARAMS, request_id=f"score-{id(self)}-prefix",
                    prompt_logprobs_from=len(self.shared_prefix),
                )
                in_flight[rid] = None
                self._drain(engine, in_flight, finish)
            while first or ready or in_flight:
                while len(in_flight) < window and (ready or first):
                    submit(ready.popleft() if ready else first.popleft())
                for out in engine.step():
                    if out.finished and out.request_id in in_flight:
                        finish(out)
        except BaseException:
            for rid in list(in_flight):
                engine.abort(rid)
            raise
        finally:
            if bar is not None:
                bar.close()
        return [[r for r in row if r is not None] for row in results]

    @staticmethod
    def _drain(engine: LLMEngine, in_flight: dict, finish) -> None:  # type: ignore[no-untyped-def]
        while in_flight:
            for out in engine.step():
                if out.finished and out.request_id in in_flight:
                    finish(out)
