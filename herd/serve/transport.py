"""HTTP transport for generation requests: SSE streams, client disconnects, OpenAI error bodies.

What the chat and completion endpoints share below the wire format:
- `Generations` reads several engine requests (one per prompt) as one stream and aborts them all
  on `close()`, which frees their KV blocks.
- A streaming client that goes away closes the SSE body (`SSEResponse` always closes it, even when
  the client left before the first byte), which closes `Generations`; a non-streaming request watches
  for the disconnect while it collects (`run_watching_disconnect`) and is answered 499.
- `respond()` is that choice between the two for one run.
- `install_error_handlers()` makes every error, FastAPI's own included, OpenAI's
  `{"error": {"message", "type", "param", "code"}}` with the right status.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import suppress
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from herd.serve.protocol import OpenAIError, error_body, validation_error

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_DONE = "data: [DONE]\n\n"
CLIENT_CLOSED = 499  # nginx's "client closed request", recorded in metrics for abandoned requests


# ------------------------------------------------------------------------------------ SSE


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


def stream_error(exc: BaseException) -> str:
    """An error after the status line went out: reported as one SSE event with its status."""
    if isinstance(exc, OpenAIError):
        return sse(exc.body() | {"status": exc.status})
    return sse(error_body(f"generation failed: {exc}", "internal_server_error") | {"status": 500})


# ------------------------------------------------------------------------- engine requests


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


# ----------------------------------------------------------------------------- disconnects


class ClientGone(Exception):
    """The client disconnected before a non-streaming response was ready."""


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_watching_disconnect(request: Request, work: Coroutine[Any, Any, Any]) -> Any:
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


async def respond(
    request: Request,
    stream: bool,
    close: Callable[[], Coroutine[Any, Any, None]] | None,
    events: Callable[[], AsyncIterator[str]],
    collect: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
) -> Response:
    """One run's response: SSE `events()` when `stream`, else the body `collect()` builds.

    Either way `close()` (aborting the run's engine requests: `Generations.close`) is called when
    the client goes away (the stream closes it; a non-streaming request watches the connection while
    it collects) or when the run ends.
    """
    on_close = close
    if stream:
        return SSEResponse(events(), on_close=on_close, headers=SSE_HEADERS)
    try:
        body = await run_watching_disconnect(request, collect())
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    finally:
        if close is not None:
            await close()
    return JSONResponse(body)


# ---------------------------------------------------------------------------------- errors


def install_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's error object: ours, FastAPI's validation, Starlette's 404/405, crashes."""

    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_error(exc).body(), status_code=400)

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
