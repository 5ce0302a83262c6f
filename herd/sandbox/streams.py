"""Talking to the sandboxed process without trusting it: capped reads, writes that cannot block us.

Untrusted code may print gigabytes, never read its stdin, or leave a daemon holding the pipes; the
host must neither buffer without bound nor hang. So the pipes are read incrementally with a selector,
each keeping at most `cap` bytes (the rest is read and dropped, so the writer never blocks on a full
pipe and the program's own outcome is unchanged) plus a short tail of stderr for diagnosis, and inputs
are written from a daemon thread that gives up on a broken pipe.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNK = 1 << 16
TAIL = 4096


@dataclass
class Capture:
    cap: int
    data: bytearray = field(default_factory=bytearray)
    tail: bytes = b""
    total: int = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.tail = (self.tail + chunk)[-TAIL:]

    @property
    def truncated(self) -> bool:
        return self.total > self.cap


def feed(writes: list[tuple[int, bytes]]) -> threading.Thread:
    """Write each payload to its descriptor and close it, in a daemon thread."""

    def run() -> None:
        for fd, payload in writes:
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view[:CHUNK]):]
            except OSError:  # the reader is gone (exited, killed, never reads): nothing left to do
                pass
            finally:
                os.close(fd)

    thread = threading.Thread(target=run, daemon=True, name="herd-sandbox-feed")
    thread.start()
    return thread


def collect(fds: dict[str, int], caps: dict[str, int], deadline: float,
            on_deadline: Callable[[], None]) -> dict[str, Capture]:
    """Read the named descriptors until all reach EOF. At `deadline` (monotonic) `on_deadline()` is called
    once (it must make the writers go away, e.g. kill them) and reading continues to EOF. The caller
    closes the descriptors."""
    captures = {name: Capture(caps[name]) for name in fds}
    with selectors.DefaultSelector() as sel:
        for name, fd in fds.items():
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, name)
        fired = False
        while sel.get_map():
            timeout = None if fired else max(0.0, deadline - time.monotonic())
            events = sel.select(timeout)
            if not events and not fired and time.monotonic() >= deadline:
                on_deadline()
                fired = True
            for key, _ in events:
                try:
                    chunk = os.read(key.fd, CHUNK)
                except BlockingIOError:
                    continue
                if chunk:
                    captures[key.data].add(chunk)
                else:
                    sel.unregister(key.fd)
    return captures
