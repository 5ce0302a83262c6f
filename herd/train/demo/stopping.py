"""Stop requests (SIGTERM/SIGINT) and quiet stages: how the demo stops after the running stage saved
what it can, and keeps the terminal for its status line while stages log to `<out>/demo.log`."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class StopRequested(Exception):
    """SIGTERM/SIGINT arrived: the demo stops after the running stage saved its state."""

    def __init__(self, signum: int | None) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name if signum else "a stop request")


_wakeup_read: int | None = None  # the read end of the signal wakeup pipe while the demo runs


def _signal_received() -> int | None:
    """The last SIGTERM/SIGINT that arrived, also when the trainer's handler took it: Python's C-level
    handler writes every signal's number to the wakeup fd whichever Python handler runs."""
    if _wakeup_read is None:
        return None
    try:
        data = os.read(_wakeup_read, 512)
    except BlockingIOError:
        return None
    stops = [b for b in data if b in (signal.SIGTERM, signal.SIGINT)]
    return stops[-1] if stops else None


@contextmanager
def _stop_requests() -> Iterator[None]:
    """SIGTERM/SIGINT raise StopRequested between training runs.

    During `train` the trainer installs its own handlers (it finishes the step and saves a checkpoint)
    and puts these back afterwards; the demo then sees `stopped == "signal"` and raises StopRequested
    itself. Outside training, stopping at once is safe: every other stage writes its outputs atomically
    or is redone from the start by --resume."""
    global _wakeup_read
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise StopRequested(signum)

    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    _wakeup_read = read
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(previous_fd)
        _wakeup_read = None
        os.close(read)
        os.close(write)


@contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 (trainer messages, datatrove logs, tqdm bars) to `log`, so the
    terminal shows only the demo's status line; restored even when a stage fails or is stopped."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(log, "ab") as fh:
            os.dup2(fh.fileno(), 1)
            os.dup2(fh.fileno(), 2)
            try:
                yield
            finally:
                # a stop request must not land between the two restores (it would leave fd 2 in the log)
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os.dup2(saved[0], 1)
                    os.dup2(saved[1], 2)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    finally:
        os.close(saved[0])
        os.close(saved[1])
