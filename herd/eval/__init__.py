"""Evaluation: tasks and scorers shared by training gates, post-training and the report card.

The names below load on first use: `herd --help` imports `herd.eval.cli`, and with it this package,
which must not pull in the tokenizer libraries or torch.
"""

from __future__ import annotations

from typing import Any

_NIAH = ("NIAHCase", "NIAHReport", "build_case", "evaluate_niah", "score_response", "training_documents")
__all__ = list(_NIAH)


def __getattr__(name: str) -> Any:
    if name in _NIAH:
        from herd.eval import niah

        return getattr(niah, name)
    raise AttributeError(f"module 'herd.eval' has no attribute {name!r}")
