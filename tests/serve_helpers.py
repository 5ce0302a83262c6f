"""Shared code for the server tests: run a herd server (real engine, real model) in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

MODEL_NAME = "smollm2-test"
API_KEY = "sk-herd-test"


_MODELS: dict[str, Any] = {}


def shared_model(spec: str = "smollm2-135m-instruct") -> Any:
    """Load a model once per test process (both server test modules use the same SmolLM2)."""
    if spec not in _MODELS:
        from herd.loading import load_model

        _MODELS[spec] = load_model(spec)
    return _MODELS[spec]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll until `condition()` is truthy; returns its value, fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class RunningServer:
    base_url: str
    app: Any
    engine: Any
    llm_engine: Any
    loaded: Any
    api_key: str | None

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def stats(self) -> Any:
        return self.llm_engine.stats()

    def metrics(self) -> dict[str, float]:
        from herd.serve.metrics import parse_metrics

        resp = httpx.get(self.base_url + "/metrics", timeout=10)
        resp.raise_for_status()
        return parse_metrics(resp.text)

    def wait_idle(self, timeout: float = 30.0) -> Any:
        """Wait until the engine has no running/waiting requests and no KV blocks in use."""
        def idle() -> Any:
            s = self.stats()
            return s if s.running == 0 and s.waiting == 0 and s.kv_blocks_used == 0 else None

        return wait_for(idle, timeout)


@contextmanager
def running_server(
    loaded: Any,
    *,
    api_key: str | None = None,
    model_name: str = MODEL_NAME,
    configure_app: Callable[[Any], None] | None = None,
    **engine_config: Any,
) -> Iterator[RunningServer]:
    """Engine + app + uvicorn on a free port in a daemon thread; everything stops on exit."""
    import uvicorn

    from herd.infer.async_engine import AsyncEngine
    from herd.infer.engine import EngineConfig, LLMEngine
    from herd.serve import create_app

    llm_engine = LLMEngine(loaded, EngineConfig(**engine_config))
    engine = AsyncEngine(llm_engine)
    app = create_app(engine, loaded, model_name, api_key=api_key)
    if configure_app is not None:
        configure_app(app)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="herd-test-server", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not thread.is_alive():
            raise AssertionError("the server thread died during startup")
        try:
            return httpx.get(base + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=30)
        yield RunningServer(base, app, engine, llm_engine, loaded, api_key)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.shutdown()
