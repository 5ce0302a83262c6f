"""Continuous batching: which sequences run in the next engine step, and how many tokens each.

Each step has a token budget (`max_batched_tokens`) and a seat limit (`max_num_seqs`):
1. running sequences that decode (one new token each) go first, oldest first;
2. running sequences in the middle of a chunked prefill continue;
3. waiting sequences are admitted first come, first served while budget, seats and blocks last; a
   long prompt is cut to the remaining budget (chunked prefill) and continues next step.
When a running sequence needs a block and none is free, the newest running sequence that is not
yet scheduled this step is preempted by recompute: its blocks are freed and it goes back to the
front of the queue with its generated tokens, which are prefilled again when it is readmitted
(with prefix caching, mostly from blocks still in the cache).

A request with n > 1 samples enters as one sequence; when its prompt is computed it forks into n
sequences that share the prompt's blocks (see `block_manager`).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herd.infer.block_manager import BlockManager
from herd.infer.sampling import SamplingParams

if TYPE_CHECKING:
    from herd.infer.detokenize import Detokenizer


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: int
    group: "SequenceGroup"
    index: int                     # which of the request's n samples
    token_ids: list[int]           # prompt + generated
    num_prompt: int
    seed: int                      # the sampling stream's seed
    num_computed: int = 0          # leading tokens whose k/v are in the cache
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    num_registered: int = 0
    status: Status = Status.WAITING
    output_ids: list[int] = field(default_factory=list)
    detokenizer: "Detokenizer | None" = None
    logprobs: list | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    sent_tokens: int = 0           # how much the previous RequestOutput already reported
    sent_text: int = 0

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED


@dataclass(eq=False)
class SequenceGroup:
    """One request: a prompt, its parameters and its n samples."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    max_len: int                   # total tokens (prompt + generated) at which a sample ends with "length"
    arrival: int
    base_seed: int = 0             # sample i draws from the stream of base_seed + i
    seqs: list[Sequence] = field(default_factory=list)
    forked: bool = False
    # prompt logprobs (params.prompt_logprobs): the first prompt index reported, and one entry per
    # prompt token (None before that index), filled as the prompt is computed
    prompt_logprobs_from: int = 1
    prompt_logprobs: list | None = None
    prompt_logprobs_ready: bool = False   # every asked entry is filled (the prompt is computed)

    @property
    def compute_from(self) -> int | None:
        """The first position whose logits this request needs before it samples (prefix-cache hits
        must stop there), or None when only the last prompt token's logits matter."""
        return self.prompt_logprobs_from - 1 if self.prompt_logprobs is not None else None

    @property
    def finished(self) -> bool:
        return bool(self.seqs) and all(s.finished for s in self.seqs) and (self.forked or self.params.n == 1)


@dataclass
class ScheduledChunk:
    seq: Sequence
    start: int      # first position computed this step
    length: int     # tokens computed this step

    @property
    def samples(self) -> bool:
        """This chunk reaches the sequence's last token, so a new token is sampled from it."""
        return self.start + self.length == len(self.seq.token_ids)


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk]           # decodes (length 1) first, then prefill chunks
    copies: list[tuple[int, int]]          # copy-on-write block copies to run before the step
    preempted: list[Sequence]

    @property
    def num_tokens(self) -> int:
        return sum(c.length for c in self.chunks)


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_batched_tokens: int) -> None:
        if max_num_seqs < 1 or max_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_batched_tokens must be >= 1")
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_batched_tokens = max_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions_total = 0

    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def remove(self, seq: Sequence) -> None:
        """Drop a sequence (finished or aborted) and free its blocks."""
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
        elif seq.status is Status.WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        self.blocks.free(seq)
        seq.status = Status.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.num_computed = 0
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.preemptions_total += 1

    def _seats(self, seq: Sequence) -> int:
        group = seq.group
        return group.params.n if not group.forked and seq.num_computed < seq.num_prompt else 1

    def schedule(self) -> SchedulerOutput:
        budget = self.max_batched_tokens
        decodes: list[ScheduledChunk] = []
        prefills: list[ScheduledChunk] = []
        copies: list[tuple[int, int]] = []
        preempted: list[Sequence] = []
        scheduled: set[int] = set()

        def make_room(seq: Sequence, length: int) -> bool:
            """Free blocks for `seq` by preempting newer unscheduled sequences; False if `seq` itself went."""
            while not self.blocks.can_append(seq, length):
                victim = next(
                    (s for s in reversed(self.running) if s.seq_id not in scheduled and s is not seq), None
                )
                if victim is None:
                    self._preempt(seq)
                    preempted.append(seq)
                    return False
                self._preempt(victim)
                preempted.append(victim)
            return True

        for want_decode in (True, False):
            for seq in list(self.running):
                if budget == 0:
                    break
                if seq.status is not Status.RUNNING or seq.seq_id in scheduled:
                    continue
                if (seq.num_uncomputed == 1) != want_decode:
                    continue
                length = min(seq.num_uncomputed, budget)
                if not make_room(seq, length):
                    continue
                start = seq.num_computed
                copies += self.blocks.append_slots(seq, length)
                scheduled.add(seq.seq_id)
                budget -= length
                (decodes if length == 1 else prefills).append(ScheduledChunk(seq, start, length))

        seats = self.max_num_seqs - sum(self._seats(s) for s in self.running)
        while self.waiting and budget > 0:
            seq = self.waiting[0]
            need_seats = self._seats(seq)
            if need_seats > seats:
                break
            # A waiting sequence holds no blocks (preemption frees them all); reuse cached ones.
            hits = self.blocks.match_prefix(seq, seq.group.compute_from)
            computed = len(hits) * self.blocks.block_size
            length = min(len(seq.token_ids) - computed, budget)
            new_blocks = -(-(computed + length) // self.blocks.block_size) - len(hits)
            if new_blocks + self.blocks.evictable_among(hits) > self.blocks.num_free:
                break
            self.waiting.popleft()
            self.blocks.acquire_prefix(seq, hits)
            start = seq.num_computed
            copies += self.blocks.append_slots(seq, length)
            seq.status = Status.RUNNING
            self.running.append(seq)
            scheduled.add(seq.seq_id)
            seats -= need_seats
            budget -= length
            (decodes if length == 1 else prefills).append(ScheduledChunk(seq, start, length))
        return SchedulerOutput(decodes + prefills, copies, preempted)
