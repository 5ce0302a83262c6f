"""The one error type of herd.data: bad input data, detected before any compute."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or inconsistent data (missing/truncated shard, unknown source, bad mix...).

    A ValueError so that the CLI reports it as a user error; the message names the file, key or value.
    """
