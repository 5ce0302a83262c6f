"""POST /v1/completions: plain continuation of text or token-id prompts (echo, logprobs, n, streaming).

A request holds one or more prompts (OpenAI's str | str[] | int[] | int[][]); each is one engine
request with n samples, and choice `p * n + i` is sample i of prompt p. With `max_tokens = 0`
nothing is generated: the answer is the echoed prompt (or empty text).

`echo` with `logprobs` returns the prompt's token logprobs too (the first token's is null, as
OpenAI's), computed by the engine (`SamplingParams.prompt_logprobs`): what lm-evaluation-harness's
`local-completions` model asks for to score choices.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from herd.serve.protocol import CompletionRequest, OpenAIError, clamp_logprob, new_id, now, parse_request, stream_chunk, usage
from herd.serve.served_model import ServedModel
from herd.serve.transport import SSE_DONE, Generations, respond, sse, stream_error

LogprobRows = dict[str, list[Any]]


async def completion(served: ServedModel, request: Request) -> Response:
    started = time.perf_counter()
    req = parse_request(await request.body(), CompletionRequest)
    served.check_model(req.model)
    if req.suffix:
        raise OpenAIError("suffix is not supported by this server", param="suffix")
    if req.best_of is not None and req.best_of != req.n:
        raise OpenAIError("best_of other than n is not supported by this server", param="best_of")
    prompts = completion_prompts(served, req)
    params = None
    echo_logprobs = req.echo and req.logprobs is not None
    for ids, _ in prompts:
        params = served.sampling_params(
            req, req.max_tokens, len(ids), default_max=16, chat=False,
            logprobs=req.logprobs is not None, top_logprobs=req.logprobs or 0, what="prompt",
            prompt_logprobs=req.logprobs if echo_logprobs else None,
        )
    assert params is not None
    request_id = new_id("cmpl")
    run = CompletionRun(served, req, prompts, request_id)
    gens = None
    if params.max_tokens > 0 or echo_logprobs:  # else nothing to compute: echo (or empty text) without the engine
        gens = Generations(served.engine, [ids for ids, _ in prompts], params, request_id, "prompt")
        await gens.start()
        served.metrics.observe_first_token(time.perf_counter() - started)
    return await respond(request, req.stream, gens.close, lambda: run.stream(gens), lambda: run.collect(gens))


def completion_prompts(served: ServedModel, req: CompletionRequest) -> list[tuple[list[int], str]]:
    """The request's prompts as (token ids, text): texts are encoded, token ids checked and decoded."""
    prompt = req.prompt
    if isinstance(prompt, str):
        items: list[Any] = [prompt]
        params = ["prompt"]
    elif prompt and all(isinstance(p, int) for p in prompt):
        items, params = [prompt], ["prompt"]
    else:
        items = list(prompt)
        params = [f"prompt.{i}" for i in range(len(items))]
    if not items:
        raise OpenAIError("prompt must not be empty", param="prompt")
    out = []
    tok = served.tokenizer
    for item, param in zip(items, params):
        if isinstance(item, str):
            ids = tok.encode(item, bos=bool(tok.add_bos and tok.bos_id is not None))
            text = item
        else:  # the request model let only ints >= 0 through; the vocabulary is the served model's
            bad = [j for j, t in enumerate(item) if not 0 <= t < tok.vocab_size]
            if bad:
                raise OpenAIError(f"Invalid value for '{param}.{bad[0]}': token ids must be in "
                                  f"[0, {tok.vocab_size}), got {item[bad[0]]}", param=f"{param}.{bad[0]}")
            ids, text = list(item), tok.decode(item)
        if not ids:
            raise OpenAIError("prompt must not be empty", param="prompt")
        out.append((ids, text))
    return out


def _rows() -> LogprobRows:
    return {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}


@dataclass
class CompletionChoice:
    """One choice's text so far, its logprob rows (None without logprobs), and what has been reported."""

    text: list[str] = field(default_factory=list)
    logprobs: LogprobRows | None = None
    logprobs_sent: int = 0
    text_offset: int = 0
    tokens: int = 0
    finish_reason: str | None = None


class CompletionRun:
    """One /v1/completions request: choice `p * n + i` is sample i of prompt p."""

    def __init__(self, served: ServedModel, req: CompletionRequest, prompts: list[tuple[list[int], str]],
                 request_id: str) -> None:
        self.served = served
        self.req = req
        self.prompts = prompts
        self.id = request_id
        self.created = now()
        self.n = req.n
        self.top = req.logprobs or 0
        self.choices = [CompletionChoice(logprobs=None if req.logprobs is None else _rows())
                        for _ in range(len(prompts) * req.n)]
        self.include_usage = req.stream_options is not None and req.stream_options.include_usage
        # echo with logprobs waits for the engine's prompt logprobs; plain echo is sent at once
        self.echo_waits = req.echo and req.logprobs is not None
        self.echoed = [False] * len(prompts)

    def _echo(self, index: int, prompt_logprobs: list[Any] | None = None) -> tuple[str, LogprobRows | None]:
        """The prompt part of a choice when echo is on: text, and logprob rows (null where the engine
        gave none: the first token, or every token when it was not asked)."""
        ids, text = self.prompts[index // self.n]
        st = self.choices[index]
        st.text.append(text)
        if st.logprobs is None:
            return text, None
        lp = _rows()
        for pos, tid in enumerate(ids):
            piece = self.served.token_text(tid)
            entry = prompt_logprobs[pos] if prompt_logprobs is not None else None
            lp["tokens"].append(piece)
            if entry is None:
                lp["token_logprobs"].append(None)
                lp["top_logprobs"].append(None)
            else:
                lp["token_logprobs"].append(clamp_logprob(entry.logprob))
                top: dict[str, float] = {}
                for _, tok, val in entry.top[: self.top]:
                    top.setdefault(tok, clamp_logprob(val))
                lp["top_logprobs"].append(top)
            lp["text_offset"].append(st.text_offset)
            st.text_offset += len(piece)
        st.text_offset = len(text)
        for key, values in lp.items():
            st.logprobs[key].extend(values)
        return text, lp

    def _logprob_rows(self, st: CompletionChoice, new: list[Any]) -> LogprobRows:
        rows = _rows()
        for lp in new:
            rows["tokens"].append(lp.token)
            rows["token_logprobs"].append(clamp_logprob(lp.logprob))
            top: dict[str, float] = {}
            for _, tok, val in (lp.top or [])[: self.top]:
                top.setdefault(tok, clamp_logprob(val))
            rows["top_logprobs"].append(top)
            rows["text_offset"].append(st.text_offset)
            st.text_offset += len(lp.token)
        assert st.logprobs is not None
        for key, values in rows.items():
            st.logprobs[key].extend(values)
        return rows

    def _late_echo(self, prompt_index: int, out: Any) -> list[tuple[int, str, LogprobRows | None]]:
        """Echo prompt `prompt_index` (all its n choices) once its prompt logprobs have arrived."""
        if not self.echo_waits or self.echoed[prompt_index] or out.prompt_logprobs is None:
            return []
        self.echoed[prompt_index] = True
        echoes = []
        for i in range(self.n):
            index = prompt_index * self.n + i
            text, lp = self._echo(index, out.prompt_logprobs)
            echoes.append((index, text, lp))
        return echoes

    def _update(self, prompt_index: int, out: Any) -> list[tuple[int, str, LogprobRows | None, str | None]]:
        changes: list[tuple[int, str, LogprobRows | None, str | None]] = [
            (index, text, lp, None) for index, text, lp in self._late_echo(prompt_index, out)
        ]
        for c in out.outputs:
            index = prompt_index * self.n + c.index
            st = self.choices[index]
            if st.finish_reason is not None:
                continue
            st.text.append(c.delta_text)
            st.tokens = len(c.token_ids)
            rows = None
            if st.logprobs is not None and c.logprobs is not None:
                new = c.logprobs[st.logprobs_sent :]
                st.logprobs_sent = len(c.logprobs)
                rows = self._logprob_rows(st, new)
            st.finish_reason = c.finish_reason
            if c.delta_text or rows or c.finish_reason:
                changes.append((index, c.delta_text, rows, c.finish_reason))
        return changes

    def usage(self) -> dict[str, int]:
        prompt = sum(len(ids) for ids, _ in self.prompts)
        return usage(prompt, sum(st.tokens for st in self.choices))

    def _chunk(self, choices: list[dict[str, Any]], last: bool = False) -> dict[str, Any]:
        return stream_chunk(self.id, "text_completion", self.created, self.served.model_name, choices,
                            self.include_usage, self.usage() if last else None)

    async def stream(self, gens: Generations | None) -> AsyncIterator[str]:
        try:
            if self.req.echo and not self.echo_waits:
                for index in range(len(self.choices)):
                    text, lp = self._echo(index)
                    yield sse(self._chunk([{"index": index, "text": text, "logprobs": lp, "finish_reason": None}]))
            if gens is None:
                for index, st in enumerate(self.choices):
                    st.finish_reason = "length"
                    yield sse(self._chunk([{"index": index, "text": "", "logprobs": None, "finish_reason": "length"}]))
            else:
                async for p, out in gens:
                    for index, text, rows, finish in self._update(p, out):
                        yield sse(self._chunk([{"index": index, "text": text, "logprobs": rows, "finish_reason": finish}]))
            if self.include_usage:
                yield sse(self._chunk([], last=True))
        except Exception as exc:  # noqa: BLE001 - the status line is gone: report in the stream
            yield stream_error(exc)
        finally:
            if gens is not None:
                await gens.close()
        yield SSE_DONE

    async def collect(self, gens: Generations | None) -> dict[str, Any]:
        if self.req.echo and not self.echo_waits:
            for index in range(len(self.choices)):
                self._echo(index)
        if gens is None:
            for st in self.choices:
                st.finish_reason = "length"
        else:
            async for p, out in gens:
                self._update(p, out)
        choices = [
            {"index": i, "text": "".join(st.text), "logprobs": st.logprobs, "finish_reason": st.finish_reason or "abort"}
            for i, st in enumerate(self.choices)
        ]
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.served.model_name,
            "system_fingerprint": None,
            "choices": choices,
            "usage": self.usage(),
        }
