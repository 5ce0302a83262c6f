"""OpenAI-compatible HTTP server and web chat for herd models (`herd serve`).

`create_app(engine, loaded, model_name, api_key=None)` builds the FastAPI app over an
`herd.infer.async_engine.AsyncEngine`. One module per concern:

    app           the app factory and its routes (models, health, metrics, the chat page), API key check
    chat          POST /v1/chat/completions
    completions   POST /v1/completions
    transport     SSE streams, client disconnects (abort + free KV blocks), OpenAI error bodies
    served_model  the served model and the request checks both endpoints share
    protocol      the wire format: request models, response pieces, the error shape
    tools         tools and tool_choice per chat format
    server_tools  built-in tools the server runs itself (--execute-builtin-tools)
    guarding      input/output guard, code shield on answers (--guard, --code-shield)
    moderation    POST /v1/moderations
    metrics       Prometheus metrics (prometheus_client, one registry per app)
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(engine: Any, loaded: Any, model_name: str, api_key: str | None = None,
               server_tools: Any = None, guard: Any = None) -> Any:
    # imported on use: `import herd.serve` (e.g. by the CLI's command table) must not load FastAPI
    from herd.serve.app import create_app as _create_app

    return _create_app(engine, loaded, model_name, api_key, server_tools, guard)
