"""The OpenAI-compatible HTTP server (what vLLM's `vllm serve` offers), as a FastAPI app.

    POST /v1/chat/completions   chat, streaming (SSE), n, logprobs, stop, tools / tool_choice
    POST /v1/completions        plain completion of str / token-id prompts, echo, logprobs, streaming
    GET  /v1/models             the served model (and /v1/models/{id})
    GET  /health                200 while the server runs
    GET  /metrics               Prometheus text (herd.serve.metrics)
    GET  /                      the web chat page (herd/serve/static/index.html)

Every error is OpenAI's `{"error": {"message", "type", "param", "code"}}`. With `api_key` set the
/v1 routes need `Authorization: Bearer <key>`. A streaming client that goes away aborts its
request: the SSE body is closed, which closes the engine's async generator, which aborts the
request and frees its KV blocks (non-streaming requests watch for the disconnect too).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herd.serve.metrics import CONTENT_TYPE, Metrics
from herd.serve.protocol import (
    MAX_TOP_LOGPROBS,
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    chat_logprob_entries,
    clamp_logprob,
    error_body,
    new_id,
    now,
    parse_request,
    usage,
    validation_error,
)
from herd.serve.tools import ChatPlan, ChoiceParser, ChoiceResult, build_chat_prompt

STATIC_DIR = Path(__file__).parent / "static"
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/version", "/")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CLIENT_CLOSED = 499  # nginx's "client closed request", recorded in metrics for abandoned requests


# ------------------------------------------------------------------------------ middleware


def endpoint_label(path: str) -> str:
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    if path.startswith("/static/"):
        return "/static"
    return "other"


class ServeMiddleware:
    """Pure ASGI (streams stay unbuffered): API key check on /v1 and per-request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.api_key is not None and scope["path"].startswith("/v1") and not self._authorized(scope):
                response = JSONResponse(
                    error_body("Incorrect or missing API key. Send 'Authorization: Bearer <key>'.",
                               "invalid_request_error", None, "invalid_api_key"),
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send_wrapper)
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(endpoint_label(scope["path"]), status[0], time.perf_counter() - start)

    def _authorized(self, scope: Scope) -> bool:
        assert self.api_key is not None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())
        return False


class SSEResponse(StreamingResponse):
    """A StreamingResponse that always closes its body generator, even when the client is gone
    (Starlette cancels the stream on disconnect but leaves the generator for the GC)."""

    media_type = "text/event-stream"

    def __init__(self, content: Any, on_close: Callable[[], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                if self.on_close is not None:  # the body may never have started (client gone at once)
                    await self.on_close()


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"


# -------------------------------------------------------------------------- engine plumbing


class Generations:
    """Several engine requests (one per prompt) read as one stream of (prompt index, RequestOutput).

    `start()` submits them and waits for each one's first output, so a prompt the engine refuses
    (too long for the context or the KV cache) is a 400 before any response byte is sent.
    `close()` aborts whatever is still running; it is safe to call more than once and from
    cancelled code.
    """

    def __init__(self, engine: Any, prompts: Sequence[list[int]], params: Any, request_id: str, param: str) -> None:
        self.engine = engine
        self.request_ids = [request_id if len(prompts) == 1 else f"{request_id}-{i}" for i in range(len(prompts))]
        self.gens = [engine.generate(p, params, request_id=rid) for p, rid in zip(prompts, self.request_ids, strict=True)]
        self.param = param
        self.firsts: list[Any] = []
        self.finished = [False] * len(prompts)
        self._tasks: dict[asyncio.Future[Any], int] = {}
        self._closed = False

    async def start(self) -> None:
        results = await asyncio.gather(*(g.__anext__() for g in self.gens), return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            await self.close()
            if isinstance(failure, ValueError):
                raise OpenAIError(str(failure), param=self.param) from None
            if isinstance(failure, StopAsyncIteration):
                raise OpenAIError("the engine returned no output", status=500, type="internal_server_error")
            raise failure
        self.firsts = list(results)

    async def __aiter__(self) -> AsyncIterator[tuple[int, Any]]:
        for i, out in enumerate(self.firsts):
            self.finished[i] = bool(out.finished)
            yield i, out
        for i, gen in enumerate(self.gens):
            if not self.finished[i]:
                self._tasks[asyncio.ensure_future(gen.__anext__())] = i
        while self._tasks:
            done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                i = self._tasks.pop(fut)
                try:
                    out = fut.result()
                except StopAsyncIteration:
                    self.finished[i] = True
                    continue
                self.finished[i] = bool(out.finished)
                if not out.finished:
                    self._tasks[asyncio.ensure_future(self.gens[i].__anext__())] = i
                yield i, out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            for fut in self._tasks:
                fut.cancel()
            for fut in list(self._tasks):
                with suppress(BaseException):
                    await fut
            self._tasks.clear()
            for gen in self.gens:
                with suppress(Exception):
                    await gen.aclose()


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class ClientGone(Exception):
    pass


async def run_watching_disconnect(request: Request, work: Any) -> Any:
    """Await `work` unless the client disconnects first (then `work` is cancelled: ClientGone)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with suppress(BaseException):
            await task
        raise ClientGone
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


# ------------------------------------------------------------------------------------ server


@dataclass
class _ChoiceState:
    parser: ChoiceParser | None = None
    result: ChoiceResult = field(default_factory=ChoiceResult)
    text: list[str] = field(default_factory=list)  # completions
    logprobs_sent: int = 0
    text_offset: int = 0
    tokens: int = 0
    finish_reason: str | None = None
    chat_logprobs: list[dict[str, Any]] = field(default_factory=list)
    completion_logprobs: dict[str, list[Any]] | None = None


class Server:
    def __init__(self, engine: Any, loaded: Any, model_name: str, metrics: Metrics) -> None:
        self.engine = engine
        self.loaded = loaded
        self.model_name = model_name
        self.metrics = metrics
        self.tokenizer = loaded.tokenizer
        self.chat_format = loaded.chat_format
        # the engine's max_model_len also counts the KV cache's size (vLLM's max_model_len)
        llm = getattr(engine, "engine", engine)
        self.context = int(min(loaded.config.max_seq_len, getattr(llm, "max_model_len", loaded.config.max_seq_len)))
        self.created = now()

    # --- shared validation
    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise OpenAIError(
                f"The model `{model}` does not exist. This server serves `{self.model_name}`.",
                status=404,
                param="model",
                code="model_not_found",
            )

    def sampling_params(
        self, req: Any, max_tokens: int | None, prompt_len: int, *, default_max: int | None, chat: bool,
        logprobs: bool, top_logprobs: int, what: str,
    ) -> Any:
        from herd.infer.sampling import SamplingParams

        if req.n < 1:
            raise OpenAIError(f"n must be at least 1, got {req.n}", param="n")
        if req.logit_bias:
            raise OpenAIError("logit_bias is not supported by this server", param="logit_bias")
        name = "max_completion_tokens" if chat and getattr(req, "max_completion_tokens", None) is not None else "max_tokens"
        minimum = 1 if chat else 0
        if max_tokens is not None and max_tokens < minimum:
            raise OpenAIError(f"{name} must be at least {minimum}, got {max_tokens}", param=name)
        if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            param = "top_logprobs" if chat else "logprobs"
            raise OpenAIError(f"{param} must be between 0 and {MAX_TOP_LOGPROBS}, got {top_logprobs}", param=param)
        if prompt_len >= self.context:
            raise OpenAIError(
                f"This model's maximum context length is {self.context} tokens. However, your {what} resulted in "
                f"{prompt_len} tokens. Please reduce the length of the {what}.",
                param="messages" if chat else "prompt",
                code="context_length_exceeded",
            )
        room = self.context - prompt_len
        if max_tokens is None:
            max_tokens = room if default_max is None else min(default_max, room)
        elif max_tokens > room:
            raise OpenAIError(
                f"This model's maximum context length is {self.context} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the {what}, {max_tokens} in the completion). "
                f"Please reduce the length of the {what} or the completion.",
                param=name,
                code="context_length_exceeded",
            )
        try:
            return SamplingParams(
                temperature=1.0 if req.temperature is None else req.temperature,
                top_p=1.0 if req.top_p is None else req.top_p,
                top_k=req.top_k or 0,
                max_tokens=max_tokens,
                seed=req.seed,
                min_p=req.min_p or 0.0,
                repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
                frequency_penalty=req.frequency_penalty,
                presence_penalty=req.presence_penalty,
                stop=req.stop_list(),
                stop_token_ids=tuple(req.stop_token_ids or ()),
                ignore_eos=req.ignore_eos,
                n=req.n,
                logprobs=logprobs,
                top_logprobs=top_logprobs,
            )
        except (TypeError, ValueError) as exc:
            text = str(exc)
            param = text.split(" ", 1)[0] if text.split(" ", 1)[0].isidentifier() else None
            raise OpenAIError(text, param=param) from None

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")

    # --- chat
    async def chat(self, request: Request) -> Response:
        started = time.perf_counter()
        req = parse_request(await request.body(), ChatCompletionRequest)
        self.check_model(req.model)
        if req.top_logprobs and not req.logprobs:
            raise OpenAIError("top_logprobs needs logprobs set to true", param="top_logprobs")
        plan = build_chat_prompt(self.chat_format, req.messages, req.tools, req.tool_choice)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        params = self.sampling_params(
            req, max_tokens, len(plan.prompt_ids), default_max=None, chat=True,
            logprobs=req.logprobs, top_logprobs=req.top_logprobs or 0, what="messages",
        )
        request_id = new_id("chatcmpl")
        gens = Generations(self.engine, [plan.prompt_ids], params, request_id, "messages")
        await gens.start()
        self.metrics.observe_first_token(time.perf_counter() - started)
        run = ChatRun(self, req, plan, request_id)
        if req.stream:
            return SSEResponse(run.stream(gens), on_close=gens.close, headers=SSE_HEADERS)
        try:
            body = await run_watching_disconnect(request, run.collect(gens))
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        finally:
            await gens.close()
        return JSONResponse(body)

    # --- completions
    def completion_prompts(self, req: CompletionRequest) -> list[tuple[list[int], str]]:
        prompt = req.prompt
        if isinstance(prompt, str):
            items: list[Any] = [prompt]
        elif prompt and all(isinstance(p, int) for p in prompt):
            items = [prompt]
        else:
            items = list(prompt)
        if not items:
            raise OpenAIError("prompt must not be empty", param="prompt")
        out = []
        tok = self.tokenizer
        for item in items:
            if isinstance(item, str):
                ids = tok.encode(item, bos=bool(tok.add_bos and tok.bos_id is not None))
                text = item
            else:
                bad = [t for t in item if not 0 <= t < tok.vocab_size]
                if bad:
                    raise OpenAIError(f"prompt token ids must be in [0, {tok.vocab_size}), got {bad[0]}", param="prompt")
                ids, text = list(item), tok.decode(item)
            if not ids:
                raise OpenAIError("prompt must not be empty", param="prompt")
            out.append((ids, text))
        return out

    async def completions(self, request: Request) -> Response:
        started = time.perf_counter()
        req = parse_request(await request.body(), CompletionRequest)
        self.check_model(req.model)
        if req.suffix:
            raise OpenAIError("suffix is not supported by this server", param="suffix")
        if req.best_of is not None and req.best_of != req.n:
            raise OpenAIError("best_of other than n is not supported by this server", param="best_of")
        prompts = self.completion_prompts(req)
        logprobs = req.logprobs is not None
        params = None
        for ids, _ in prompts:
            params = self.sampling_params(
                req, req.max_tokens, len(ids), default_max=16, chat=False,
                logprobs=logprobs, top_logprobs=req.logprobs or 0, what="prompt",
            )
        assert params is not None
        request_id = new_id("cmpl")
        run = CompletionRun(self, req, prompts, request_id)
        if params.max_tokens == 0:  # nothing to generate: echo (or empty text) without the engine
            return SSEResponse(run.stream(None), headers=SSE_HEADERS) if req.stream else JSONResponse(await run.collect(None))
        gens = Generations(self.engine, [ids for ids, _ in prompts], params, request_id, "prompt")
        await gens.start()
        self.metrics.observe_first_token(time.perf_counter() - started)
        if req.stream:
            return SSEResponse(run.stream(gens), on_close=gens.close, headers=SSE_HEADERS)
        try:
            body = await run_watching_disconnect(request, run.collect(gens))
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        finally:
            await gens.close()
        return JSONResponse(body)

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_card()]}

    def model_card(self) -> dict[str, Any]:
        return {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "herd",
            "root": str(self.loaded.source),
            "parent": None,
            "max_model_len": self.context,
        }


def _stream_error(exc: BaseException) -> str:
    if isinstance(exc, OpenAIError):
        return sse(exc.body() | {"status": exc.status})
    return sse(error_body(f"generation failed: {exc}", "internal_server_error") | {"status": 500})


def stream_chunk(run: Any, obj: str, choices: list[dict[str, Any]], with_usage: bool) -> dict[str, Any]:
    """One SSE chunk of a chat or completion run; `usage` only when the client asked for it
    (stream_options.include_usage): null on every chunk but the last."""
    chunk: dict[str, Any] = {
        "id": run.id, "object": obj, "created": run.created, "model": run.server.model_name,
        "system_fingerprint": None, "choices": choices,
    }
    if run.req.stream_options is not None and run.req.stream_options.include_usage:
        chunk["usage"] = run.usage() if with_usage else None
    return chunk


class ChatRun:
    """One chat request's choices: engine outputs -> OpenAI chunks or one response body."""

    def __init__(self, server: Server, req: ChatCompletionRequest, plan: ChatPlan, request_id: str) -> None:
        self.server = server
        self.req = req
        self.plan = plan
        self.id = request_id
        self.created = now()
        self.top = req.top_logprobs or 0
        self.states = [_ChoiceState(parser=ChoiceParser(server.chat_format, plan)) for _ in range(req.n)]

    def _update(self, out: Any) -> list[tuple[int, list[Any], list[dict[str, Any]] | None, str | None]]:
        """Feed one RequestOutput: per changed choice (index, events, new logprob entries, finish)."""
        changes = []
        for c in out.outputs:
            st = self.states[c.index]
            if st.finish_reason is not None:
                continue
            parser = st.parser
            assert parser is not None
            events = parser.feed(c.delta_text)
            st.tokens = len(c.token_ids)
            entries = None
            if self.req.logprobs and c.logprobs is not None:
                new = c.logprobs[st.logprobs_sent :]
                st.logprobs_sent = len(c.logprobs)
                entries = chat_logprob_entries(new, self.server.tokenizer.token_bytes, self.top)
                st.chat_logprobs.extend(entries)
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
        return all(st.finish_reason is not None for st in self.states)

    def usage(self) -> dict[str, int]:
        return usage(len(self.plan.prompt_ids), sum(st.tokens for st in self.states))

    def _chunk(self, choices: list[dict[str, Any]], with_usage: bool = False) -> dict[str, Any]:
        return stream_chunk(self, "chat.completion.chunk", choices, with_usage)

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
            if self.req.stream_options is not None and self.req.stream_options.include_usage:
                yield sse(self._chunk([], with_usage=True))
        except Exception as exc:  # noqa: BLE001 - the status line is gone: report in the stream
            yield _stream_error(exc)
        finally:
            await gens.close()
        yield SSE_DONE

    async def collect(self, gens: Generations) -> dict[str, Any]:
        async for _, out in gens:
            self._update(out)
            if self.all_done():
                break
        choices = []
        for i, st in enumerate(self.states):
            choices.append({
                "index": i,
                "message": st.result.message(),
                "logprobs": {"content": st.chat_logprobs} if self.req.logprobs else None,
                "finish_reason": st.finish_reason or "abort",
            })
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.server.model_name,
            "system_fingerprint": None,
            "choices": choices,
            "usage": self.usage(),
        }


class CompletionRun:
    """One /v1/completions request: choice `p * n + i` is sample i of prompt p."""

    def __init__(self, server: Server, req: CompletionRequest, prompts: list[tuple[list[int], str]], request_id: str) -> None:
        self.server = server
        self.req = req
        self.prompts = prompts
        self.id = request_id
        self.created = now()
        self.n = req.n
        self.top = req.logprobs or 0
        self.states = [_ChoiceState() for _ in range(len(prompts) * req.n)]
        if req.logprobs is not None:
            for st in self.states:
                st.completion_logprobs = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def _echo(self, index: int) -> tuple[str, dict[str, list[Any]] | None]:
        """The prompt part of a choice when echo is on: text, and logprob rows (None logprobs)."""
        ids, text = self.prompts[index // self.n]
        st = self.states[index]
        st.text.append(text)
        lp = None
        if st.completion_logprobs is not None:
            lp = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
            for tid in ids:
                piece = self.server.token_text(tid)
                lp["tokens"].append(piece)
                lp["token_logprobs"].append(None)
                lp["top_logprobs"].append(None)
                lp["text_offset"].append(st.text_offset)
                st.text_offset += len(piece)
            st.text_offset = len(text)
            for key, values in lp.items():
                st.completion_logprobs[key].extend(values)
        return text, lp

    def _logprob_rows(self, st: _ChoiceState, new: list[Any]) -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for lp in new:
            rows["tokens"].append(lp.token)
            rows["token_logprobs"].append(clamp_logprob(lp.logprob))
            top: dict[str, float] = {}
            for _, tok, val in (lp.top or [])[: self.top]:
                top.setdefault(tok, clamp_logprob(val))
            rows["top_logprobs"].append(top)
            rows["text_offset"].append(st.text_offset)
            st.text_offset += len(lp.token)
        assert st.completion_logprobs is not None
        for key, values in rows.items():
            st.completion_logprobs[key].extend(values)
        return rows

    def _update(self, prompt_index: int, out: Any) -> list[tuple[int, str, dict[str, list[Any]] | None, str | None]]:
        changes = []
        for c in out.outputs:
            index = prompt_index * self.n + c.index
            st = self.states[index]
            if st.finish_reason is not None:
                continue
            st.text.append(c.delta_text)
            st.tokens = len(c.token_ids)
            rows = None
            if st.completion_logprobs is not None and c.logprobs is not None:
                new = c.logprobs[st.logprobs_sent :]
                st.logprobs_sent = len(c.logprobs)
                rows = self._logprob_rows(st, new)
            st.finish_reason = c.finish_reason
            if c.delta_text or rows or c.finish_reason:
                changes.append((index, c.delta_text, rows, c.finish_reason))
        return changes

    def usage(self) -> dict[str, int]:
        prompt = sum(len(ids) for ids, _ in self.prompts)
        return usage(prompt, sum(st.tokens for st in self.states))

    def _chunk(self, choices: list[dict[str, Any]], with_usage: bool = False) -> dict[str, Any]:
        return stream_chunk(self, "text_completion", choices, with_usage)

    async def stream(self, gens: Generations | None) -> AsyncIterator[str]:
        try:
            if self.req.echo:
                for index in range(len(self.states)):
                    text, lp = self._echo(index)
                    yield sse(self._chunk([{"index": index, "text": text, "logprobs": lp, "finish_reason": None}]))
            if gens is None:
                for index, st in enumerate(self.states):
                    st.finish_reason = "length"
                    yield sse(self._chunk([{"index": index, "text": "", "logprobs": None, "finish_reason": "length"}]))
            else:
                async for p, out in gens:
                    for index, text, rows, finish in self._update(p, out):
                        yield sse(self._chunk([{"index": index, "text": text, "logprobs": rows, "finish_reason": finish}]))
            if self.req.stream_options is not None and self.req.stream_options.include_usage:
                yield sse(self._chunk([], with_usage=True))
        except Exception as exc:  # noqa: BLE001
            yield _stream_error(exc)
        finally:
            if gens is not None:
                await gens.close()
        yield SSE_DONE

    async def collect(self, gens: Generations | None) -> dict[str, Any]:
        if self.req.echo:
            for index in range(len(self.states)):
                self._echo(index)
        if gens is None:
            for st in self.states:
                st.finish_reason = "length"
        else:
            async for p, out in gens:
                self._update(p, out)
        choices = [
            {
                "index": i,
                "text": "".join(st.text),
                "logprobs": st.completion_logprobs,
                "finish_reason": st.finish_reason or "abort",
            }
            for i, st in enumerate(self.states)
        ]
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.server.model_name,
            "system_fingerprint": None,
            "choices": choices,
            "usage": self.usage(),
        }


# --------------------------------------------------------------------------------- the app


def engine_stats_fn(engine: Any) -> Callable[[], Any] | None:
    """The engine's `stats()` (on the AsyncEngine itself or the LLMEngine it drives)."""
    for obj in (engine, getattr(engine, "engine", None), getattr(engine, "llm_engine", None)):
        fn = getattr(obj, "stats", None)
        if callable(fn):
            return fn
    return None


def create_app(engine: Any, loaded: Any, model_name: str, api_key: str | None = None) -> FastAPI:
    """The server for `engine` (a herd.infer.async_engine.AsyncEngine) over `loaded` (LoadedModel)."""
    app = FastAPI(title="herd", description="OpenAI-compatible API for herd models", docs_url="/docs", redoc_url=None)
    metrics = Metrics(engine_stats_fn(engine), model_name)
    server = Server(engine, loaded, model_name, metrics)
    app.state.server = server
    app.state.metrics = metrics
    app.add_middleware(ServeMiddleware, metrics=metrics, api_key=api_key)

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}"
        else:
            message = str(exc.detail)
        kind = "invalid_request_error" if exc.status_code < 500 else "internal_server_error"
        return JSONResponse(error_body(message, kind), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "internal_server_error"), 500)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await server.chat(request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await server.completions(request)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return server.models()

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        server.check_model(model_id)
        return server.model_card()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/version")
    async def version() -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as pkg_version

        try:
            return {"version": pkg_version("herd")}
        except PackageNotFoundError:
            return {"version": "unknown"}

    @app.get("/metrics")
    async def metrics_text() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    page = STATIC_DIR / "index.html"

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})

    return app
