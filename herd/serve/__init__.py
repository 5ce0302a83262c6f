"""OpenAI-compatible HTTP server and web chat for herd models (`herd serve`).

`create_app(engine, loaded, model_name, api_key=None)` builds the FastAPI app over an
`herd.infer.async_engine.AsyncEngine`; see `herd.serve.app` for the endpoints and
`herd.serve.tools` for how tools and tool_choice work per chat format.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(engine: Any, loaded: Any, model_name: str, api_key: str | None = None) -> Any:
    from herd.serve.app import create_app as _create_app

    return _create_app(engine, loaded, model_name, api_key)
