"""`AsyncEngine`: an `LLMEngine` driven by one background thread, usable from asyncio.

The engine is not thread-safe, so only the background thread touches it: callers validate their
request in their own thread (`LLMEngine.prepare_request`, so a too-long prompt raises at once) and
hand it over through a locked inbox; the thread drains the inbox, runs `step()` while there is
work and sleeps on a condition otherwise. Each request's outputs are delivered to its own
`asyncio.Queue` with `loop.call_soon_threadsafe`. Closing a request's async iterator (the client
went away, the task was cancelled) aborts it, which frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from herd.infer.engine import EngineStats, LLMEngine, RequestOutput
from herd.infer.sampling import SamplingParams


@dataclass
class _Listener:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue


class AsyncEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._adds: list = []
        self._aborts: list[str] = []
        self._listeners: dict[str, _Listener] = {}
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="herd-engine", daemon=True)
        self._thread.start()

    # ----- background thread

    def _run(self) -> None:
        engine = self.engine
        while True:
            with self._cond:
                while not (self._closed or self._adds or self._aborts or engine.has_unfinished()):
                    self._cond.wait()
                if self._closed:
                    break
                adds, self._adds = self._adds, []
                aborts, self._aborts = self._aborts, []
            for pending in adds:
                try:
                    engine.add_prepared(pending)
                except Exception as exc:  # e.g. a duplicate request id
                    self._deliver_error(pending.request_id, exc)
            for rid in aborts:
                engine.abort(rid)
            try:
                outputs = engine.step()
            except BaseException as exc:  # a model error: fail every open request, keep serving
                self._fail_all(exc)
                continue
            for out in outputs:
                self._deliver(out)

    def _deliver(self, out: RequestOutput) -> None:
        with self._cond:
            listener = self._listeners.get(out.request_id)
            if listener is not None and out.finished:
                del self._listeners[out.request_id]
        if listener is not None:
            try:
                listener.loop.call_soon_threadsafe(listener.queue.put_nowait, out)
            except RuntimeError:  # the loop is closed: nobody is listening
                pass

    def _deliver_error(self, request_id: str, exc: BaseException) -> None:
        with self._cond:
            listener = self._listeners.pop(request_id, None)
        if listener is not None:
            try:
                listener.loop.call_soon_threadsafe(listener.queue.put_nowait, exc)
            except RuntimeError:
                pass

    def _fail_all(self, exc: BaseException) -> None:
        self._error = exc
        with self._cond:
            ids = list(self._listeners)
        for rid in ids:
            self.engine.abort(rid)
            self._deliver_error(rid, exc)
        try:
            self.engine.step()  # flush the abort outputs (nobody listens any more)
        except BaseException:
            pass

    # ----- asyncio side

    async def generate(
        self, prompt: str | list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Stream a request's outputs; the last one has `finished=True`."""
        if self._closed:
            raise RuntimeError("the engine is shut down")
        pending = self.engine.prepare_request(prompt, params, request_id)
        rid = pending.request_id
        queue: asyncio.Queue = asyncio.Queue()
        with self._cond:
            if rid in self._listeners:
                raise ValueError(f"request id {rid!r} is already running")
            self._listeners[rid] = _Listener(asyncio.get_running_loop(), queue)
            self._adds.append(pending)
            self._cond.notify()
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._abort_now(rid)

    def _abort_now(self, request_id: str) -> None:
        with self._cond:
            self._listeners.pop(request_id, None)
            self._aborts.append(request_id)
            self._cond.notify()

    async def abort(self, request_id: str) -> None:
        """Abort a request; its stream ends with a finish_reason "abort" output."""
        with self._cond:
            self._aborts.append(request_id)
            self._cond.notify()

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> "AsyncEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
