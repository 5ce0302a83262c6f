"""POST /v1/chat/completions: messages -> the chat format's prompt -> choices (text or tool calls).

`chat_completion()` validates the request, builds the prompt (`herd.serve.tools` places the tools
and any forced-call prefill per chat format), submits it, and answers as a stream or one body.
`ChatRun` turns engine outputs into OpenAI chunks: each choice's text goes through its
`ChoiceParser`, which holds back what may be the start of a tool call.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from herd.serve.protocol import (
    ChatCompletionRequest,
    OpenAIError,
    chat_logprob_entries,
    new_id,
    now,
    parse_request,
    stream_chunk,
    usage,
)
from herd.serve.served_model import ServedModel
from herd.serve.tools import ChatPlan, ChoiceParser, ChoiceResult, build_chat_prompt
from herd.serve.transport import SSE_DONE, Generations, respond, sse, stream_error


async def chat_completion(served: ServedModel, request: Request) -> Response:
    started = time.perf_counter()
    req = parse_request(await request.body(), ChatCompletionRequest)
    served.check_model(req.model)
    if req.top_logprobs and not req.logprobs:
        raise OpenAIError("top_logprobs needs logprobs set to true", param="top_logprobs")
    plan = build_chat_prompt(served.chat_format, req.messages, req.tools, req.tool_choice)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    params = served.sampling_params(
        req, max_tokens, len(plan.prompt_ids), default_max=None, chat=True,
        logprobs=req.logprobs, top_logprobs=req.top_logprobs or 0, what="messages",
    )
    request_id = new_id("chatcmpl")
    gens = Generations(served.engine, [plan.prompt_ids], params, request_id, "messages")
    await gens.start()
    served.metrics.observe_first_token(time.perf_counter() - started)
    run = ChatRun(served, req, plan, request_id)
    return await respond(request, req.stream, gens, lambda: run.stream(gens), lambda: run.collect(gens))


@dataclass
class ChatChoice:
    """One choice's progress: its parser, the message so far, and what has been reported."""

    parser: ChoiceParser
    result: ChoiceResult = field(default_factory=ChoiceResult)
    logprobs_sent: int = 0
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)


class ChatRun:
    """One chat request's choices: engine outputs -> OpenAI chunks or one response body."""

    def __init__(self, served: ServedModel, req: ChatCompletionRequest, plan: ChatPlan, request_id: str) -> None:
        self.served = served
        self.req = req
        self.plan = plan
        self.id = request_id
        self.created = now()
        self.top = req.top_logprobs or 0
        self.choices = [ChatChoice(ChoiceParser(served.chat_format, plan)) for _ in range(req.n)]
        self.include_usage = req.stream_options is not None and req.stream_options.include_usage

    def _update(self, out: Any) -> list[tuple[int, list[Any], list[dict[str, Any]] | None, str | None]]:
        """Feed one RequestOutput: per changed choice (index, events, new logprob entries, finish)."""
        changes = []
        for c in out.outputs:
            st = self.choices[c.index]
            if st.finish_reason is not None:
                continue
            parser = st.parser
            events = parser.feed(c.delta_text)
            st.tokens = len(c.token_ids)
            entries = None
            if self.req.logprobs and c.logprobs is not None:
                new = c.logprobs[st.logprobs_sent :]
                st.logprobs_sent = len(c.logprobs)
                entries = chat_logprob_entries(new, self.served.tokenizer.token_bytes, self.top)
                st.logprobs.extend(entries)
            finish = None
            if parser.done or c.finish_reason is not None:
                more, finish = parser.finish(None if parser.done else c.finish_reason)
                events = events + more
                st.finish_reason = finish
            st.result.add(events)
            if events or entries or finish:
                changes.append((c.index, events, entries, finish))
        return changes

    def all_done(self) -> bool:
        return all(st.finish_reason is not None for st in self.choices)

    def usage(self) -> dict[str, int]:
        return usage(len(self.plan.prompt_ids), sum(st.tokens for st in self.choices))

    def _chunk(self, choices: list[dict[str, Any]], last: bool = False) -> dict[str, Any]:
        return stream_chunk(self.id, "chat.completion.chunk", self.created, self.served.model_name, choices,
                            self.include_usage, self.usage() if last else None)

    @staticmethod
    def _delta(events: list[Any]) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        text = "".join(e for e in events if isinstance(e, str))
        if text:
            delta["content"] = text
        calls = [e.to_json() for e in events if not isinstance(e, str)]
        if calls:
            delta["tool_calls"] = calls
        return delta

    async def stream(self, gens: Generations) -> AsyncIterator[str]:
        try:
            yield sse(self._chunk([
                {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                for i in range(self.req.n)
            ]))
            async for _, out in gens:
                for index, events, entries, finish in self._update(out):
                    delta = self._delta(events)
                    logprobs = {"content": entries} if entries is not None else None
                    if finish is not None and (delta or logprobs):
                        yield sse(self._chunk([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}]))
                        delta, logprobs = {}, None
                    yield sse(self._chunk([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]))
                if self.all_done():
                    break
            if self.include_usage:
                yield sse(self._chunk([], last=True))
        except Exception as exc:  # noqa: BLE001 - the status line is gone: report in the stream
            yield stream_error(exc)
        finally:
            await gens.close()
        yield SSE_DONE

    async def collect(self, gens: Generations) -> dict[str, Any]:
        async for _, out in gens:
            self._update(out)
            if self.all_done():
                break
        choices = [
            {
                "index": i,
                "message": st.result.message(),
                "logprobs": {"content": st.logprobs} if self.req.logprobs else None,
                "finish_reason": st.finish_reason or "abort",
            }
            for i, st in enumerate(self.choices)
        ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.served.model_name,
            "system_fingerprint": None,
            "choices": choices,
            "usage": self.usage(),
        }
