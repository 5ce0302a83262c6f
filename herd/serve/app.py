"""The OpenAI-compatible HTTP server (what vLLM's `vllm serve` offers): the FastAPI app and its routes.

    POST /v1/chat/completions   chat, streaming (SSE), n, logprobs, stop, tools / tool_choice  (herd.serve.chat)
    POST /v1/completions        plain completion of str / token-id prompts, echo, logprobs     (herd.serve.completions)
    GET  /v1/models             the served model (and /v1/models/{id})
    GET  /health                200 while the server runs
    GET  /metrics               Prometheus exposition (herd.serve.metrics)
    GET  /                      the web chat page (herd/serve/static/index.html)

Every error is OpenAI's `{"error": {"message", "type", "param", "code"}}` (herd.serve.transport). With
`api_key` set the /v1 routes need `Authorization: Bearer <key>`. A client that goes away aborts its
request and frees its KV blocks (herd.serve.transport).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herd.serve.chat import chat_completion
from herd.serve.completions import completion
from herd.serve.metrics import CONTENT_TYPE, Metrics
from herd.serve.moderation import moderation
from herd.serve.protocol import error_body
from herd.serve.served_model import ServedModel
from herd.serve.transport import install_error_handlers

STATIC_DIR = Path(__file__).parent / "static"
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/moderations", "/v1/models", "/health", "/metrics", "/version", "/")


def endpoint_label(path: str) -> str:
    """The metrics label of a path: a known route or a family, so clients cannot grow the label set."""
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


def engine_stats_fn(engine: Any) -> Callable[[], Any] | None:
    """The engine's `stats()` (on the AsyncEngine itself or the LLMEngine it drives)."""
    for obj in (engine, getattr(engine, "engine", None), getattr(engine, "llm_engine", None)):
        fn = getattr(obj, "stats", None)
        if callable(fn):
            return fn
    return None


def create_app(engine: Any, loaded: Any, model_name: str, api_key: str | None = None,
               server_tools: Any = None, guard: Any = None) -> FastAPI:
    """The server for `engine` (a herd.infer.async_engine.AsyncEngine) over `loaded` (LoadedModel);
    `server_tools` (herd.serve.server_tools.ServerTools) makes it run built-in tool calls itself."""
    app = FastAPI(title="herd", description="OpenAI-compatible API for herd models", docs_url="/docs", redoc_url=None)
    metrics = Metrics(engine_stats_fn(engine), model_name)
    served = ServedModel(engine, loaded, model_name, metrics, server_tools, guard)
    app.state.served = served
    app.state.metrics = metrics
    app.add_middleware(ServeMiddleware, metrics=metrics, api_key=api_key)
    install_error_handlers(app)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await chat_completion(served, request)

    @app.post("/v1/moderations")
    async def moderations(request: Request) -> dict[str, Any]:
        return await moderation(served, request)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await completion(served, request)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [served.model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        served.check_model(model_id)
        return served.model_card()

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
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    page = STATIC_DIR / "index.html"

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})

    return app
