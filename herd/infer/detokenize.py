"""Incremental detokenization with stop strings.

`Detokenizer` turns one sequence's generated ids into text as they arrive:
- UTF-8 safe: bytes of a character split across tokens are held until it completes
  (`herd.tokenizer.base.IncrementalDecoder`), so a stream never shows U+FFFD mid-character;
- stop strings may span tokens: text that could still be the start of a stop string is held back
  (not yet visible), and when a stop string appears the text ends right before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from herd.tokenizer.base import IncrementalDecoder, Tokenizer


def _held_suffix(text: str, stops: Sequence[str], longest: int) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    for size in range(min(longest - 1, len(text)), 0, -1):
        suffix = text[-size:]
        if any(stop.startswith(suffix) for stop in stops):
            return size
    return 0


class Detokenizer:
    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self._decoder = IncrementalDecoder(tokenizer)
        self._stops = tuple(stop)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""            # decoded but not yet visible (could begin a stop string)
        self.text = ""             # visible text
        self.stopped: str | None = None   # the stop string that ended the text

    def add(self, token_id: int) -> str | None:
        """Decode one more token; returns the stop string if one now appears (the text ends before it)."""
        if self.stopped is not None:
            return self.stopped
        piece = self._decoder.add(token_id)
        if piece:
            self._take(piece)
        return self.stopped

    def finish(self) -> None:
        """No more tokens: release held text (incomplete UTF-8 at the very end becomes U+FFFD)."""
        if self.stopped is not None:
            return
        tail = self._decoder.flush()
        if tail:
            self._take(tail)
        if self.stopped is None:
            self.text += self._held
            self._held = ""

    def _take(self, piece: str) -> None:
        if not self._stops:
            self.text += piece
            return
        pending = self._held + piece
        # A stop string cannot start inside visible text (any such start was held back), so search `pending`.
        first: tuple[int, str] | None = None
        for stop in self._stops:
            at = pending.find(stop)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self.text += pending[: first[0]]
            self._held = ""
            self.stopped = first[1]
            return
        hold = _held_suffix(pending, self._stops, self._longest)
        self.text += pending[: len(pending) - hold]
        self._held = pending[len(pending) - hold:]
