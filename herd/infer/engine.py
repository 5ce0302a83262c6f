"""`LLMEngine`: continuous batching over a paged KV cache (see herd/infer/ENGINE.md).

One `step()`:
1. the scheduler picks sequences and token counts (decodes first, then chunked prefill, preempting
   by recompute when blocks run out);
2. copy-on-write block copies run, and the step's metadata (slot mapping, gather slots, masks) is
   built once;
3. one model forward over the flattened new tokens of every scheduled sequence, with logits only
   for the last token of each sequence that samples;
4. one batched sampling call for all of them (a request with n samples forks here, after its
   prompt is computed once);
5. tokens are appended, detokenized, checked against stop tokens/strings and length, finished
   sequences free their blocks, and one `RequestOutput` per touched request is returned.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from herd.infer import cpu_kernels
from herd.infer.block_manager import BlockManager
from herd.infer.compiled_decode import CompiledDecodeStep
from herd.infer.detokenize import Detokenizer
from herd.infer.paged_attention import PagedAttentionState, PagedKVCache, build_metadata
from herd.infer.prepare import prepare_for_inference
from herd.infer.sampling import SamplerRow, SamplingParams, sample_batch
from herd.infer.scheduler import Scheduler, Sequence, SequenceGroup, Status

if TYPE_CHECKING:
    from herd.loading import LoadedModel

CPU_KV_CACHE_BYTES = 1 << 30
GPU_KV_CACHE_FRACTION = 0.3


@dataclass
class EngineConfig:
    block_size: int = 16
    num_blocks: int | None = None        # None: as many as kv_cache_bytes allows
    kv_cache_bytes: int | None = None    # None: 1 GiB on CPU, 30% of free memory on GPU
    max_num_seqs: int = 64               # sequences in one step
    max_batched_tokens: int = 2048       # token budget per step (decodes first, then chunked prefill)
    enable_prefix_caching: bool = True
    quantization: str | None = None      # None | "int8" | "fp8" (herd.infer.quant) | "int4" (quant_int4)
    compile: bool = False                # decode-only steps through torch.compile (herd.infer.compiled_decode)
    attention: str = "portable"          # "portable" (gathers blocks; measured) | "flex" (no copy; FlexAttention)

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.num_blocks is not None and self.num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {self.num_blocks}")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes < 1:
            raise ValueError(f"kv_cache_bytes must be >= 1, got {self.kv_cache_bytes}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_batched_tokens < 1:
            raise ValueError(f"max_batched_tokens must be >= 1, got {self.max_batched_tokens}")
        if self.attention not in ("portable", "flex"):
            raise ValueError(f"attention must be 'portable' or 'flex', got {self.attention!r}")
        if self.quantization not in (None, "int8", "fp8", "int4"):
            raise ValueError(f"quantization must be None, 'int8', 'fp8' or 'int4', got {self.quantization!r}")


@dataclass
class TokenLogprob:
    token_id: int
    token: str          # the token's text (bytes decoded with errors="replace")
    logprob: float
    top: list[tuple[int, str, float]]   # top_logprobs alternatives, best first
    rank: int | None = None              # 1 + how many tokens scored higher (1: greedy would pick it)


@dataclass
class CompletionOutput:        # one of the n choices of a request
    index: int
    text: str                  # all text so far (stop strings and stop tokens excluded)
    token_ids: list[int]
    delta_text: str            # new since the previous RequestOutput of this request
    delta_token_ids: list[int]
    logprobs: list[TokenLogprob] | None   # per generated token when params.logprobs
    finish_reason: str | None  # None while running; "stop" | "length" | "abort"
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it (extension)


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    # params.prompt_logprobs: one entry per prompt token, None before `prompt_logprobs_from`
    prompt_logprobs: list[TokenLogprob | None] | None = None


@dataclass
class EngineStats:
    running: int
    waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    prompt_tokens_total: int
    generation_tokens_total: int
    requests_total: int
    preemptions_total: int = 0
    prefix_cache_hit_tokens: int = 0
    cow_copies_total: int = 0


@dataclass
class _Pending:
    """A request validated outside the engine's thread, ready to be queued."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    seed: int
    extra: dict = field(default_factory=dict)
    prompt_logprobs_from: int = 1


@dataclass
class ScoreResult:
    """How likely a continuation is after a context (`LLMEngine.score`)."""

    logprob: float                 # summed log-probability of the continuation's tokens
    token_logprobs: list[float]
    greedy: bool                   # greedy decoding from the context would produce exactly this continuation


class LLMEngine:
    def __init__(self, loaded: LoadedModel, config: EngineConfig | None = None) -> None:
        self.loaded = loaded
        self.config = config = config or EngineConfig()
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.model_config = self.model.config
        weight = self.model.tok_embeddings.weight
        self.device, self.dtype = weight.device, weight.dtype
        if self.device.type == "cpu":
            cpu_kernels.available()  # builds herd's C++ kernels once per machine; falls back if it cannot
        # a quantized copy: the caller's model (loaded.model) is never changed
        self.model = prepare_for_inference(self.model, quantization=config.quantization)
        per_block = PagedKVCache.bytes_per_block(self.model_config, config.block_size, self.dtype)
        num_blocks = config.num_blocks
        if num_blocks is None:
            budget = config.kv_cache_bytes
            if budget is None:
                if self.device.type == "cuda":
                    budget = int(torch.cuda.mem_get_info(self.device)[0] * GPU_KV_CACHE_FRACTION)
                else:
                    budget = CPU_KV_CACHE_BYTES
            num_blocks = budget // per_block
            if num_blocks < 1:
                raise ValueError(f"kv_cache_bytes={budget} holds no block of {per_block} bytes")
        self.num_blocks = num_blocks
        self.cache = PagedKVCache(self.model_config, num_blocks, config.block_size, self.dtype, self.device)
        self.blocks = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.blocks, config.max_num_seqs, config.max_batched_tokens)
        # One sequence can never outgrow the whole cache.
        self.max_model_len = min(self.model_config.max_seq_len, num_blocks * config.block_size)
        self._gqa = self.model_config.n_heads != self.model_config.n_kv_heads
        self._compiled_decode: CompiledDecodeStep | None = None
        if config.compile:
            if config.attention != "portable":
                raise ValueError("EngineConfig.compile runs the portable attention path; use attention='portable'")
            self._compiled_decode = CompiledDecodeStep(self.model, self.cache, self._gqa)
        self._groups: dict[str, SequenceGroup] = {}
        self._pending_outputs: list[RequestOutput] = []
        self._request_counter = itertools.count()
        self._seq_counter = itertools.count()
        self._arrivals = itertools.count()
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.requests_total = 0

    # ----- requests

    def _encode(self, prompt: str | SequenceABC[int]) -> list[int]:
        if isinstance(prompt, str):
            tok = self.tokenizer
            if tok is None:
                raise ValueError("this engine has no tokenizer; pass token ids")
            return tok.encode(prompt, bos=tok.add_bos and tok.bos_id is not None)
        return [int(t) for t in prompt]

    def prepare_request(
        self, prompt: str | SequenceABC[int], params: SamplingParams, request_id: str | None = None,
        *, prompt_logprobs_from: int = 1,
    ) -> _Pending:
        """Validate and encode a request without touching the engine's state (safe from any thread).

        With `params.prompt_logprobs`, prompt tokens from index `prompt_logprobs_from` on get their
        log-probability (scoring asks only for a continuation's tokens, so logits are projected only
        there); with `max_tokens=0` the request computes its prompt and samples nothing.
        """
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be SamplingParams, got {type(params).__name__}")
        ids = self._encode(prompt)
        if not ids:
            raise ValueError("the prompt is empty; generation needs at least one token")
        context = self.model_config.max_seq_len
        needs_room = params.max_tokens > 0   # a request that samples needs a position for its new token
        if len(ids) + needs_room > context:
            raise ValueError(f"prompt has {len(ids)} tokens; the model's context is {context}")
        if params.prompt_logprobs is not None and not 1 <= prompt_logprobs_from <= len(ids):
            raise ValueError(f"prompt_logprobs_from must be in [1, {len(ids)}], got {prompt_logprobs_from}")
        vocab = self.model_config.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"prompt token ids must be in [0, {vocab}), got {min(ids)}..{max(ids)}")
        bs = self.config.block_size
        if -(-(len(ids) + needs_room) // bs) > self.num_blocks:
            raise ValueError(
                f"prompt has {len(ids)} tokens; the KV cache holds {self.num_blocks} blocks of {bs} "
                f"({self.num_blocks * bs} tokens), so it can never run"
            )
        if params.n > self.config.max_num_seqs:
            raise ValueError(f"n={params.n} exceeds max_num_seqs={self.config.max_num_seqs}")
        if request_id is None:
            request_id = f"req-{next(self._request_counter)}"
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        return _Pending(str(request_id), ids, params, seed, prompt_logprobs_from=prompt_logprobs_from)

    def add_request(
        self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None,
        *, prompt_logprobs_from: int = 1,
    ) -> str:
        """Queue a request; returns its id. ValueError for a prompt that can never run."""
        return self.add_prepared(
            self.prepare_request(prompt, params, request_id, prompt_logprobs_from=prompt_logprobs_from)
        )

    def add_prepared(self, pending: _Pending) -> str:
        rid = pending.request_id
        if rid in self._groups:
            raise ValueError(f"request id {rid!r} is already running")
        params, ids = pending.params, pending.prompt_ids
        stops = set(params.stop_token_ids)
        if not params.ignore_eos and self.tokenizer is not None:
            stops |= set(self.tokenizer.stop_ids)
        group = SequenceGroup(
            rid, ids, params, frozenset(stops),
            max_len=min(len(ids) + params.max_tokens, self.max_model_len),
            arrival=next(self._arrivals), base_seed=pending.seed,
            prompt_logprobs_from=pending.prompt_logprobs_from,
            prompt_logprobs=None if params.prompt_logprobs is None else [None] * len(ids),
        )
        self.requests_total += 1
        self.prompt_tokens_total += len(ids)
        if group.max_len <= len(ids) and group.prompt_logprobs is None:  # max_tokens == 0: nothing to compute
            for i in range(params.n):
                seq = self._new_seq(group, i, list(ids), pending.seed + i)
                seq.status, seq.finish_reason = Status.FINISHED, "length"
                group.seqs.append(seq)
            group.forked = True
            self._pending_outputs.append(self._request_output(group))
            return rid
        parent = self._new_seq(group, 0, list(ids), pending.seed)
        group.seqs.append(parent)
        group.forked = params.n == 1
        self._groups[rid] = group
        self.scheduler.add(parent)
        return rid

    def _new_seq(self, group: SequenceGroup, index: int, token_ids: list[int], seed: int) -> Sequence:
        seq = Sequence(next(self._seq_counter), group, index, token_ids, len(group.prompt_ids), seed)
        if self.tokenizer is not None:
            seq.detokenizer = Detokenizer(self.tokenizer, group.params.stop)
        if group.params.logprobs:
            seq.logprobs = []
        return seq

    def abort(self, request_id: str) -> None:
        """Stop a request now and free its blocks; its final output (finish_reason "abort") comes
        with the next step()."""
        group = self._groups.pop(request_id, None)
        if group is None:
            return
        for seq in group.seqs:
            if not seq.finished:
                self.scheduler.remove(seq)
                seq.finish_reason = "abort"
        self._pending_outputs.append(self._request_output(group, finished=True))

    def has_unfinished(self) -> bool:
        return bool(self._groups) or bool(self._pending_outputs)

    # ----- the step

    def step(self) -> list[RequestOutput]:
        """One scheduler iteration: a model forward over every scheduled sequence, one sampling call."""
        outputs, self._pending_outputs = self._pending_outputs, []
        sched = self.scheduler.schedule()
        chunks = sched.chunks
        if not chunks:
            return outputs
        self.cache.copy_blocks(sched.copies)
        flat: list[int] = []
        select: list[int] = []
        sampling: list[Sequence] = []
        prompt_only: list[Sequence] = []     # max_tokens == 0 requests whose prompt is now computed
        scored: list[tuple[SequenceGroup, int]] = []   # (request, prompt index) of prompt-logprob rows
        scored_select: list[int] = []
        for chunk in chunks:
            seq, offset = chunk.seq, len(flat)
            flat += seq.token_ids[chunk.start:chunk.start + chunk.length]
            group = seq.group
            if group.prompt_logprobs is not None and seq.index == 0:
                # position p's logits score prompt token p + 1
                first = max(chunk.start, group.prompt_logprobs_from - 1)
                last = min(chunk.start + chunk.length, seq.num_prompt - 1)
                for p in range(first, last):
                    scored.append((group, p + 1))
                    scored_select.append(offset + p - chunk.start)
            if chunk.samples:
                if len(seq.token_ids) >= group.max_len:
                    prompt_only.append(seq)
                else:
                    select.append(len(flat) - 1)
                    sampling.append(seq)
        select += scored_select
        meta, positions = build_metadata(
            [c.seq.block_table for c in chunks], [c.start for c in chunks], [c.length for c in chunks],
            self.config.block_size, self.device,
        )
        block_mask = None
        if self.config.attention == "flex":
            from herd.infer.flex_paged import build_block_mask

            block_mask = build_block_mask(
                [c.seq.block_table for c in chunks], [c.start for c in chunks], [c.length for c in chunks],
                self.config.block_size, self.cache.num_blocks, self.device,
            )
        state = PagedAttentionState(self.cache, meta, self._gqa, block_mask)
        tokens = torch.tensor(flat, dtype=torch.long).to(self.device, non_blocking=True).view(1, -1)
        select_t = torch.tensor(select, dtype=torch.long).to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self._compiled_decode is not None and self._compiled_decode.applies(meta):
                logits = self._compiled_decode(tokens, positions.view(1, -1), meta)
                if select != list(range(len(flat))):
                    logits = logits[select_t]
            else:
                logits = self.model(tokens, positions.view(1, -1), state, select=select_t)[0]
        for chunk in chunks:
            chunk.seq.num_computed += chunk.length
            self.blocks.register_full_blocks(chunk.seq)
        if scored:
            self._record_prompt_logprobs(logits[len(sampling):], scored)
            logits = logits[: len(sampling)]
        for chunk in chunks:
            group = chunk.seq.group
            if group.prompt_logprobs is not None and chunk.seq.num_computed >= chunk.seq.num_prompt:
                group.prompt_logprobs_ready = True
        for seq in prompt_only:
            outputs.append(self._finish_prompt_only(seq))
        if not sampling:
            return outputs

        rows: list[SamplerRow] = []
        row_seqs: list[Sequence] = []
        logit_rows: list[int] = []
        for i, seq in enumerate(sampling):
            group = seq.group
            members = self._fork(seq) if not group.forked else [seq]
            for s in members:
                rows.append(SamplerRow(group.params, s.seed, len(s.output_ids), group.prompt_ids, s.output_ids))
                row_seqs.append(s)
                logit_rows.append(i)
        if len(logit_rows) != len(sampling):
            logits = logits[torch.tensor(logit_rows, device=logits.device)]
        with torch.inference_mode():
            result = sample_batch(logits, rows)
        touched: dict[str, SequenceGroup] = {}
        for i, seq in enumerate(row_seqs):
            top = result.top[i] if result.top is not None else None
            lp = result.logprobs[i] if result.logprobs is not None else None
            self._append_token(seq, result.tokens[i], lp, top)
            touched[seq.group.request_id] = seq.group
        for group in touched.values():
            outputs.append(self._request_output(group))
        return outputs

    def _record_prompt_logprobs(self, logits: torch.Tensor, rows: list[tuple[SequenceGroup, int]]) -> None:
        """Log-probability (and rank, and the k best) of each scored prompt token, in one batch."""
        with torch.inference_mode():
            logp = torch.log_softmax(logits.float(), dim=-1)
            targets = torch.tensor([g.prompt_ids[i] for g, i in rows], device=logp.device)
            chosen = logp.gather(1, targets[:, None])
            ranks = (logp > chosen).sum(dim=1) + 1
            k_max = max(g.params.prompt_logprobs or 0 for g, _ in rows)
            top_vals, top_ids = logp.topk(k_max, dim=1) if k_max else (None, None)
        chosen_l, ranks_l = chosen[:, 0].tolist(), ranks.tolist()
        top_vals_l = top_vals.tolist() if top_vals is not None else None
        top_ids_l = top_ids.tolist() if top_ids is not None else None
        for r, (group, index) in enumerate(rows):
            k = group.params.prompt_logprobs or 0
            top = []
            if k and top_ids_l is not None and top_vals_l is not None:
                top = [(t, self._token_text(t), v) for t, v in zip(top_ids_l[r][:k], top_vals_l[r][:k])]
            token = group.prompt_ids[index]
            assert group.prompt_logprobs is not None
            group.prompt_logprobs[index] = TokenLogprob(token, self._token_text(token), chosen_l[r], top, ranks_l[r])

    def _finish_prompt_only(self, seq: Sequence) -> RequestOutput:
        """A max_tokens=0 request (prompt logprobs only) has computed its prompt: end all n samples."""
        group = seq.group
        self._finish(seq, "length", None)
        for i in range(1, group.params.n if not group.forked else 0):
            child = self._new_seq(group, i, list(group.prompt_ids), group.base_seed + i)
            child.status, child.finish_reason = Status.FINISHED, "length"
            group.seqs.append(child)
        group.forked = True
        return self._request_output(group)

    def _fork(self, parent: Sequence) -> list[Sequence]:
        """A request's prompt is computed: make its n samples, all sharing the prompt's blocks."""
        group = parent.group
        members = [parent]
        for i in range(1, group.params.n):
            child = self._new_seq(group, i, list(parent.token_ids), group.base_seed + i)
            child.num_computed = parent.num_computed
            child.block_hashes = list(parent.block_hashes)
            self.blocks.fork(parent, child)
            child.status = Status.RUNNING
            self.scheduler.running.append(child)
            group.seqs.append(child)
            members.append(child)
        group.forked = True
        return members

    def _token_text(self, token_id: int) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")

    def _append_token(
        self, seq: Sequence, token: int, logprob: float | None, top: list[tuple[int, float]] | None
    ) -> None:
        group = seq.group
        self.generation_tokens_total += 1
        if token in group.stop_ids:
            self._finish(seq, "stop", token)
            return
        seq.token_ids.append(token)
        seq.output_ids.append(token)
        if seq.logprobs is not None and logprob is not None:
            alternatives = [(t, self._token_text(t), v) for t, v in (top or [])]
            seq.logprobs.append(TokenLogprob(token, self._token_text(token), logprob, alternatives))
        if seq.detokenizer is not None:
            stop = seq.detokenizer.add(token)
            if stop is not None:
                self._finish(seq, "stop", stop)
                return
        if len(seq.token_ids) >= group.max_len:
            self._finish(seq, "length", None)

    def _finish(self, seq: Sequence, reason: str, stop_reason: int | str | None) -> None:
        seq.finish_reason, seq.stop_reason = reason, stop_reason
        if seq.detokenizer is not None:
            seq.detokenizer.finish()
        self.scheduler.remove(seq)

    def _request_output(self, group: SequenceGroup, finished: bool | None = None) -> RequestOutput:
        outs = []
        for seq in sorted(group.seqs, key=lambda s: s.index):
            text = seq.detokenizer.text if seq.detokenizer is not None else ""
            outs.append(
                CompletionOutput(
                    seq.index, text, list(seq.output_ids), text[seq.sent_text:], seq.output_ids[seq.sent_tokens:],
                    list(seq.logprobs) if seq.logprobs is not None else None, seq.finish_reason, seq.stop_reason,
                )
            )
            seq.sent_text, seq.sent_tokens = len(text), len(seq.output_ids)
        done = group.finished if finished is None else finished
        if done:
            self._groups.pop(group.request_id, None)
        # from the first output after the prompt is computed (a stream echoes the prompt before its tokens)
        prompt_logprobs = group.prompt_logprobs if group.prompt_logprobs_ready else None
        return RequestOutput(group.request_id, group.prompt_ids, outs, done, prompt_logprobs)

    # ----- conveniences

    def generate(
        self,
        prompts: str | list[int] | SequenceABC[str | list[int]],
        params: SamplingParams | SequenceABC[SamplingParams] | None = None,
        progress: bool = False,
    ) -> list[RequestOutput]:
        """Run prompts to completion (continuous batching) and return their final outputs in order."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        prompts = list(prompts)  # type: ignore[arg-type]
        if params is None:
            params = SamplingParams()
        param_list = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
        if len(param_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(param_list)} sampling parameters")
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, param_list)]
        wanted = set(ids)
        final: dict[str, RequestOutput] = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(ids), desc="generating", unit="req", dynamic_ncols=True)
        start, generated0 = time.perf_counter(), self.generation_tokens_total
        try:
            while len(final) < len(ids) and self.has_unfinished():
                for out in self.step():
                    if out.finished and out.request_id in wanted:
                        final[out.request_id] = out
                        if bar is not None:
                            bar.update(1)
                if bar is not None:
                    rate = (self.generation_tokens_total - generated0) / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix(tok_s=f"{rate:.1f}", running=len(self.scheduler.running), refresh=False)
        except BaseException:
            for rid in ids:
                if rid not in final:
                    self.abort(rid)
            raise
        finally:
            if bar is not None:
                bar.close()
        return [final[rid] for rid in ids]

    def stream(
        self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None
    ) -> Iterator[RequestOutput]:
        """Add one request and step the engine until it ends, yielding each of its outputs.

        For a single caller driving the engine (CLI, chat). Closing the iterator aborts the request.
        """
        rid = self.add_request(prompt, params, request_id)
        try:
            while self.has_unfinished():
                for out in self.step():
                    if out.request_id == rid:
                        yield out
                        if out.finished:
                            return
        finally:
            if rid in self._groups:
                self.abort(rid)

    def score(
        self, context: SequenceABC[int], continuations: SequenceABC[SequenceABC[int]]
    ) -> list[ScoreResult]:
        """Log-likelihood of each continuation after `context` (token ids), one result per continuation.

        The evaluation harness's multiple-choice primitive: the context is computed once and every
        continuation reuses its KV blocks (prefix caching); logits are projected only at continuation
        positions. The numbers do not depend on what else runs in the same batch (to float rounding).
        """
        return self.score_many([(context, continuations)])[0]

    def score_many(
        self,
        items: SequenceABC[tuple[SequenceABC[int], SequenceABC[SequenceABC[int]]]],
        progress: bool = False,
        desc: str = "scoring",
        method: str = "paged",
    ) -> list[list[ScoreResult]]:
        """`score` for many (context, continuations) items, batched; results in item order.

        Two ways, the same numbers (to float rounding):
        - `"paged"` (the default): requests through the engine; a prefix that most contexts share (a
          fixed few-shot prompt) is computed once, then each continuation reuses its context's full
          blocks from the prefix cache (herd.infer.scoring.ScorePlan).
        - `"packed"`: each distinct context once with its continuations after it in one row, several
          items per row, through the model's plain forward (herd.infer.packed_scoring). No KV cache and
          no per-sequence attention, but a dense mask per row: on an idle 2-core CPU it measured 1.1-1.4x
          slower than "paged" on HellaSwag 0-shot (benchmarks/RESULTS.md), so it is not the default.
        `"auto"` takes the paged way when a shared prefix is most of the work
        (`herd.infer.scoring.prefers_prefix_cache`), else the packed way. The packed way runs beside
        the scheduler, not through it: requests queued on this engine do not advance while it runs.
        """
        from herd.infer.scoring import ScorePlan, prefers_prefix_cache, validate_items

        if method not in ("auto", "packed", "paged"):
            raise ValueError(f"method must be 'auto', 'packed' or 'paged', got {method!r}")
        checked = validate_items(items)
        for n, (context, continuations) in enumerate(checked):
            longest = len(context) + max(map(len, continuations))
            if longest > self.max_model_len:
                raise ValueError(f"item {n} has {longest} tokens with its longest continuation; "
                                 f"the engine's context is {self.max_model_len}")
            vocab = self.model_config.vocab_size
            ids = context + [t for c in continuations for t in c]
            if min(ids) < 0 or max(ids) >= vocab:
                raise ValueError(f"item {n}'s token ids must be in [0, {vocab}), got {min(ids)}..{max(ids)}")
        if method == "paged" or (method == "auto" and prefers_prefix_cache(checked, self.config.block_size)):
            return ScorePlan(checked, self.config.block_size).run(self, progress=progress, desc=desc)
        return self._score_packed(checked, progress, desc)

    def _score_packed(self, items: list[tuple[list[int], list[list[int]]]], progress: bool,
                      desc: str) -> list[list[ScoreResult]]:
        from herd.infer.packed_scoring import score_packed

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(len(c) for _, c in items), desc=desc, unit="seq", dynamic_ncols=True)
        try:
            scores = score_packed(self.model, items, on_progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        # counted as the paged way would: one request of context + continuation per continuation
        self.requests_total += sum(len(c) for _, c in items)
        self.prompt_tokens_total += sum(len(ctx) * len(c) + sum(map(len, c)) for ctx, c in items)
        return [[ScoreResult(logprob=float(sum(s.logprobs)), token_logprobs=s.logprobs, greedy=all(s.greedy))
                 for s in row] for row in scores]

    def warm_up(self) -> float:
        """Compile (or load from the on-disk caches) the decode graphs now, not on the first request.

        With `compile=True` the first decode steps of a batch of 1 and of a larger batch each build a
        graph (about a minute on a small CPU, seconds from the cache); `herd serve --compile` calls this
        before it opens its port, so the server is healthy only when it is fast. Counters are reset
        after, so /metrics shows only real traffic. Returns the seconds spent.
        """
        start = time.perf_counter()
        if self._compiled_decode is None:
            return 0.0
        params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
        self.generate([[1, 2, 3]], params)                        # batch 1 (its own graph)
        self.generate([[1, 2, 3], [4, 5, 6, 7]], params)          # batch > 1 with a mask (dynamic sizes)
        self.prompt_tokens_total = self.generation_tokens_total = self.requests_total = 0
        return time.perf_counter() - start

    def stats(self) -> EngineStats:
        return EngineStats(
            running=len(self.scheduler.running),
            waiting=len(self.scheduler.waiting),
            kv_blocks_used=self.blocks.num_used,
            kv_blocks_total=self.num_blocks,
            prompt_tokens_total=self.prompt_tokens_total,
            generation_tokens_total=self.generation_tokens_total,
            requests_total=self.requests_total,
            preemptions_total=self.scheduler.preemptions_total,
            prefix_cache_hit_tokens=self.blocks.prefix_hit_tokens,
            cow_copies_total=self.blocks.copies_total,
        )
