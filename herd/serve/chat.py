"""POST /v1/chat/completions: messages -> the chat format's prompt -> choices (text or tool calls).

`chat_completion()` validates the request, builds the prompt (`herd.serve.tools` places the tools
and any forced-call prefill per chat format), submits it, and answers as a stream or one body.
`ChatRun` turns engine outputs into OpenAI chunks: each choice's text goes through its
`ChoiceParser`, which holds back what may be the start of a tool call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from herd.safety.guard_prompt import CANNED_REFUSAL
from herd.serve.guarding import conversation_of
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
from herd.serve.server_tools import ServerTools
from herd.serve.tools import ChatPlan, ChoiceParser, ChoiceResult, build_chat_prompt
from herd.serve.transport import SSE_DONE, Generations, respond, sse, stream_error
from herd.tokenizer.chat import Message, ToolCall
from herd.tokenizer.tool_prompt import tool_result_message


async def chat_completion(served: ServedModel, request: Request) -> Response:
    started = time.perf_counter()
    req = parse_request(await request.body(), ChatCompletionRequest)
    served.check_model(req.model)
    if req.top_logprobs and not req.logprobs:
        raise OpenAIError("top_logprobs needs logprobs set to true", param="top_logprobs")
    server_tools = served.server_tools if req.tool_choice in (None, "auto") else None
    if server_tools is not None and req.n != 1:
        raise OpenAIError("n must be 1 when the server runs built-in tools (--execute-builtin-tools)", param="n")
    builtin = server_tools.builtin if server_tools is not None else ()
    plan = build_chat_prompt(served.chat_format, req.messages, req.tools, req.tool_choice, builtin)
    request_id = new_id("chatcmpl")
    run = ChatRun(served, req, plan, request_id, server_tools)
    if served.guard is not None and not (await served.guard.check_input(run.conversation)).safe:
        served.metrics.observe_guard_block("input")  # the engine never sees the request
        return await respond(request, req.stream, None, run.refused_stream, run.refused_body)
    await run.start_round()
    served.metrics.observe_first_token(time.perf_counter() - started)
    return await respond(request, req.stream, run.close, run.stream, run.collect)


@dataclass
class ChatChoice:
    """One choice's progress: its parser, the message so far, and what has been reported."""

    parser: ChoiceParser
    result: ChoiceResult = field(default_factory=ChoiceResult)
    logprobs_sent: int = 0
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    sent: str = ""  # content released to a streaming client (guarded serving)
    held: str = ""  # content generated but not yet passed by the output guard
    blocked: bool = False


class ChatRun:
    """One chat request's choices: engine outputs -> OpenAI chunks or one response body.

    Usually one round of generation. With server-side tools (`herd.serve.server_tools`) a round whose
    reply calls only built-ins is not reported: the server runs the calls, appends them and their
    results to the dialog and starts the next round, whose text continues the same response.
    """

    def __init__(self, served: ServedModel, req: ChatCompletionRequest, plan: ChatPlan, request_id: str,
                 server_tools: ServerTools | None = None) -> None:
        self.served = served
        self.req = req
        self.plan = plan
        self.id = request_id
        self.created = now()
        self.top = req.top_logprobs or 0
        self.choices = [ChatChoice(ChoiceParser(served.chat_format, plan)) for _ in range(req.n)]
        self.include_usage = req.stream_options is not None and req.stream_options.include_usage
        self.server_tools = server_tools
        self.toolbox: Any = None
        self.gens: Generations | None = None
        self.rounds = 0
        self.extra: list[Message] = []  # the server's tool rounds: the model's calls and their results
        self.tool_runs: list[dict[str, Any]] = []
        self.pending: list[ToolCall] = []  # built-in calls of the round that just ended
        self.round_text: list[str] = []  # content of the current round
        self.prompt_tokens = 0
        self.done_tokens = 0  # completion tokens of finished rounds
        self.guard = served.guard  # herd.serve.guarding.ServeGuard, or None
        self.conversation = conversation_of(req.messages)

    async def start_round(self) -> None:
        """Submit the current plan; an engine refusal (too long a prompt) is an OpenAIError here."""
        max_tokens = self.req.max_completion_tokens if self.req.max_completion_tokens is not None else self.req.max_tokens
        if max_tokens is not None:
            max_tokens -= self.done_tokens  # the budget covers every round's tokens
        params = self.served.sampling_params(
            self.req, max_tokens, len(self.plan.prompt_ids), default_max=None, chat=True,
            logprobs=self.req.logprobs, top_logprobs=self.top, what="messages",
        )
        self.rounds += 1
        rid = self.id if self.rounds == 1 else f"{self.id}-r{self.rounds}"
        self.gens = Generations(self.served.engine, [self.plan.prompt_ids], params, rid, "messages")
        self.prompt_tokens += len(self.plan.prompt_ids)
        await self.gens.start()

    async def close(self) -> None:
        if self.gens is not None:
            await self.gens.close()

    async def _run_tools(self) -> list[dict[str, Any]]:
        """Run the pending built-in calls, extend the dialog, and start the next round."""
        calls, self.pending = self.pending, []
        st = self.choices[0]
        fmt = self.served.chat_format
        self.done_tokens += st.tokens
        st.tokens = 0
        self.extra.append(Message("assistant", "".join(self.round_text).strip(), tool_calls=calls,
                                  end_of_message=True))
        self.round_text = []
        if self.toolbox is None:
            self.toolbox = self.server_tools.toolbox()
        runs = []
        for call in calls:
            started = time.perf_counter()
            output = await asyncio.to_thread(self.toolbox.run, call)
            self.extra.append(tool_result_message(fmt, output))
            runs.append({"name": call.name, "arguments": call.arguments, "output": output,
                         "seconds": round(time.perf_counter() - started, 3)})
        self.tool_runs.extend(runs)
        await self.close()
        self.plan = build_chat_prompt(fmt, self.req.messages, self.req.tools, self.req.tool_choice,
                                      self.server_tools.builtin, self.extra)
        st.parser = ChoiceParser(fmt, self.plan)
        st.logprobs_sent = 0
        await self.start_round()
        return runs

    def _holds_tool_round(self, st: ChatChoice, finish: str | None) -> bool:
        """True when this finished round's calls are the server's to run (and rounds are left)."""
        tools = self.server_tools
        if finish != "tool_calls" or tools is None or self.rounds > tools.max_steps:
            return False
        return tools.runs_all(st.parser.tool_calls)

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
                if self._holds_tool_round(st, finish):
                    self.pending = list(parser.tool_calls)
                    events, finish = [e for e in events if isinstance(e, str)], None
                st.finish_reason = finish
            self.round_text.extend(e for e in events if isinstance(e, str))
            st.result.add(events)
            if events or entries or finish:
                changes.append((c.index, events, entries, finish))
        return changes

    def all_done(self) -> bool:
        return all(st.finish_reason is not None for st in self.choices)

    def usage(self) -> dict[str, int]:
        return usage(self.prompt_tokens, self.done_tokens + sum(st.tokens for st in self.choices))

    async def _outputs(self) -> AsyncIterator[Any]:
        """Engine outputs of every round; between rounds the tool runs, as a list of run records."""
        while True:
            assert self.gens is not None
            async for _, out in self.gens:
                yield out
                if self.all_done() or self.pending:
                    break
            if not self.pending:
                return
            yield await self._run_tools()

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

    # ----- guarded serving
    def _refusal_choices(self, delta: bool) -> list[dict[str, Any]]:
        key = "delta" if delta else "message"
        return [{"index": i, key: {"role": "assistant", "content": CANNED_REFUSAL}, "logprobs": None,
                 "finish_reason": "content_filter"} for i in range(self.req.n)]

    async def refused_body(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.served.model_name,
                "system_fingerprint": None, "choices": self._refusal_choices(False), "usage": usage(0, 0)}

    async def refused_stream(self) -> AsyncIterator[str]:
        yield sse(self._chunk(self._refusal_choices(True)))
        if self.include_usage:
            yield sse(self._chunk([], last=True))
        yield SSE_DONE

    async def _guard_window(self, index: int, events: list[Any], finish: str | None) -> tuple[list[Any], str | None]:
        """Hold a streamed choice's text until the output guard has passed it (a window at a time)."""
        st = self.choices[index]
        if st.blocked:
            return [], None
        st.held += "".join(e for e in events if isinstance(e, str))
        calls = [e for e in events if not isinstance(e, str)]
        if len(st.held) < self.guard.window_chars and finish is None:
            return calls, None
        if (await self.guard.check_output(self.conversation, st.sent + st.held)).safe:
            released, st.sent, st.held = st.held, st.sent + st.held, ""
            return ([released] if released else []) + calls, finish
        self.served.metrics.observe_guard_block("output")
        st.blocked, st.finish_reason = True, "content_filter"
        return [("\n\n" if st.sent else "") + CANNED_REFUSAL], "content_filter"

    async def _guard_answers(self) -> None:
        """Judge each finished non-streamed answer; a flagged one becomes the canned refusal."""
        for st in self.choices:
            text = "".join(st.result.content)
            if text and not (await self.guard.check_output(self.conversation, text)).safe:
                self.served.metrics.observe_guard_block("output")
                st.result = ChoiceResult(content=[CANNED_REFUSAL])
                st.finish_reason = "content_filter"

    async def stream(self) -> AsyncIterator[str]:
        try:
            yield sse(self._chunk([
                {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                for i in range(self.req.n)
            ]))
            async for out in self._outputs():
                if isinstance(out, list):  # a server-side tool round: SSE comments, which clients skip
                    for r in out:
                        yield f": tool {r['name']} {r['seconds']}s {json.dumps(r['output'][:200], ensure_ascii=False)}\n\n"
                    continue
                for index, events, entries, finish in self._update(out):
                    if self.guard is not None:
                        events, finish = await self._guard_window(index, events, finish)
                    delta = self._delta(events)
                    logprobs = {"content": entries} if entries is not None else None
                    if finish is None and not delta and not logprobs:
                        continue
                    if finish is not None and (delta or logprobs):
                        yield sse(self._chunk([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}]))
                        delta, logprobs = {}, None
                    yield sse(self._chunk([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]))
            if self.include_usage:
                yield sse(self._chunk([], last=True))
        except Exception as exc:  # noqa: BLE001 - the status line is gone: report in the stream
            yield stream_error(exc)
        finally:
            await self.close()
        yield SSE_DONE

    async def collect(self) -> dict[str, Any]:
        async for out in self._outputs():
            if not isinstance(out, list):
                self._update(out)
        if self.guard is not None:
            await self._guard_answers()
        choices = [
            {
                "index": i,
                "message": st.result.message(),
                "logprobs": {"content": st.logprobs} if self.req.logprobs else None,
                "finish_reason": st.finish_reason or "abort",
            }
            for i, st in enumerate(self.choices)
        ]
        body = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.served.model_name,
            "system_fingerprint": None,
            "choices": choices,
            "usage": self.usage(),
        }
        if self.server_tools is not None:
            body["tool_runs"] = self.tool_runs
        return body
