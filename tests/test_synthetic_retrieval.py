"""Synthetic retrieval documents: every planted fact is asked about and answered, and no NIAH evaluation key
is ever used (so the long-context gate measures a skill, not memorised cases)."""

from __future__ import annotations

import random
import re

import pytest

from herd.data.errors import DataError
from herd.data.synthetic_retrieval import made_up_key, retrieval_documents
from herd.eval.niah import _KEYS
from herd.tokenizer import Llama3Tokenizer

FILLER = ["The quick brown fox jumps over the lazy dog. " * 40, "def f(x):\n    return x + 1\n" * 30]


def test_every_fact_is_planted_once_and_answered_at_the_end() -> None:
    tok = Llama3Tokenizer()
    docs = list(retrieval_documents(tok, FILLER, 5, 600, facts=6, seed=3))
    assert len(docs) == 5
    for doc in docs:
        assert abs(len(tok.encode(doc)) - 600) <= 12  # about `length` tokens (re-tokenising joins a few)
        answers = re.findall(r"(?:is|maps to|==) (\d+)\.\n?", doc)
        assert len(answers) >= 6
        for value in set(answers):  # each answer value also appears earlier, in its fact
            assert len(re.findall(rf"\b{value}\b", doc)) >= 2


def test_keys_are_never_niah_keys_and_documents_are_deterministic() -> None:
    rng = random.Random(0)
    assert not {made_up_key(rng) for _ in range(5000)} & set(_KEYS)
    tok = Llama3Tokenizer()
    assert list(retrieval_documents(tok, FILLER, 2, 400, 4, seed=1)) == list(retrieval_documents(tok, FILLER, 2, 400, 4, seed=1))


def test_too_many_facts_for_the_length_is_an_error() -> None:
    with pytest.raises(DataError, match="do not fit"):
        list(retrieval_documents(Llama3Tokenizer(), FILLER, 1, 100, facts=20))
