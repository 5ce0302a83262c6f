"""Synthetic long-context retrieval documents: facts planted in real text, asked about at the end.

The paper mixes long data into its long-context stage and trains on synthetic long-context data so
that the model learns to use the whole window. A tiny model learns retrieval from such documents only
when the signal is dense: one answer per 1,000-token document (the NIAH evaluation's own format) gives
a few answer tokens per step, far too few on a CPU budget. So each document here plants `facts`
key -> value facts at random depths of a real-text haystack and ends with one question per fact (in
random order), each followed by its answer: every document teaches retrieval over every distance.

To keep the NIAH gate honest (herd.eval.niah), the documents never contain an evaluation case: the
keys are made-up words that are not NIAH keys, the facts use several phrasings (one of which is the
"special magic number" sentence, the task format, as instruction data teaches a format), the values
are random and the haystacks are windows of whatever text the caller passes (the demo uses its
curated corpus). What transfers to the gate is the skill: find the earlier mention of the asked key
and copy what followed it.

`write_retrieval_shards` stores such documents as token shards with a loss mask that trains only the
answers (herd.data.shards): the haystack and the questions are read, never predicted, so the head of a
128K-vocabulary model costs nothing on them (herd.train.fused_loss) and every trained token is a
retrieval. With `key_style="word"` the keys are single-token English words from the tokenizer's own
vocabulary (never a NIAH key), as the evaluation's keys are real words.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from herd.data.errors import DataError
from herd.tokenizer.base import Tokenizer

# (fact, question) with {k} = key, {v} = value; the question ends where the answer starts
TEMPLATES: tuple[tuple[str, str], ...] = (
    (" The special magic number for {k} is {v}. ",
     "\nWhat is the special magic number for {k}? The special magic number for {k} is"),
    (" The secret code of {k} is {v}. ", "\nWhat is the secret code of {k}? The secret code of {k} is"),
    (" Note: the room number of {k} is {v}. ", "\nWhich room number does {k} have? The room number of {k} is"),
    ("\n{k}_id = {v}\n", "\nassert {k}_id =="),
    (" Remember that {k} maps to {v}. ", "\nWhat does {k} map to? {k} maps to"),
)
_SYLLABLES = ("ba", "ko", "ri", "mu", "te", "za", "lo", "ni", "pe", "su", "da", "vi", "go", "fe", "ru", "xa",
              "mi", "to", "le", "qu", "sa", "no", "di", "we")
# herd.eval.niah's keys: never generated, so no evaluation key is ever trained on
_HELD_OUT = frozenset((
    "amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
    "kestrel", "lagoon", "meadow", "nimbus", "onyx", "prairie", "quartz", "raven", "saffron", "tundra",
    "umber", "violet", "willow", "xenon", "yarrow", "zephyr",
))


def made_up_key(rng: random.Random) -> str:
    """A pronounceable non-word of 2-4 syllables that is not one of the NIAH evaluation keys."""
    while True:
        key = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if key not in _HELD_OUT:
            return key


_WORD = re.compile(r" [a-z]{4,9}")
KEY_STYLES = ("made_up", "word")


def word_keys(tokenizer: Tokenizer, first: int = 20_000, last: int = 100_000) -> list[str]:
    """Single-token lower-case English words of the vocabulary (ids first..last), minus the NIAH keys.

    The NIAH keys are real words; made-up keys teach the matching on words that look like nothing in
    the evaluation, and single-token keys make "the asked key" one token to match."""
    words = []
    for token in range(first, min(last, tokenizer.vocab_size)):
        piece = tokenizer.decode([token])
        if _WORD.fullmatch(piece) and piece.strip() not in _HELD_OUT:
            words.append(piece.strip())
    if not words:
        raise DataError(f"the tokenizer has no single-token words in ids {first}..{last}")
    return words


def retrieval_example(tokenizer: Tokenizer, filler: Sequence[int], length: int, facts: int, rng: random.Random,
                      *, keys: Sequence[str] | None = None,
                      templates: Sequence[tuple[str, str]] = TEMPLATES) -> tuple[list[int], list[int]]:
    """Token ids of one document of about `length` tokens and its answer mask (1 on each answer's
    tokens but its final '.'). `keys` is the pool to draw keys from (None: made-up words)."""
    if facts < 1:
        raise DataError(f"facts must be >= 1, got {facts}")
    if keys is not None and len(keys) < facts:   # (a set of the pool per document would cost more than the rest)
        raise DataError(f"{facts} facts need at least {facts} keys, got {len(keys)}")
    chosen: list[str] = []
    while len(chosen) < facts:
        key = made_up_key(rng) if keys is None else rng.choice(keys)
        if key not in chosen:
            chosen.append(key)
    values = [str(rng.randrange(10, 1_000_000)) for _ in chosen]
    forms = [rng.choice(templates) for _ in chosen]
    fact_ids = [tokenizer.encode(t[0].format(k=k, v=v)) for t, k, v in zip(forms, chosen, values)]
    question_ids = [tokenizer.encode(t[1].format(k=k)) for t, k in zip(forms, chosen)]
    answer_ids = [tokenizer.encode(f" {v}.") for v in values]
    budget = length - sum(map(len, fact_ids)) - sum(map(len, question_ids)) - sum(map(len, answer_ids))
    if budget < 16:
        raise DataError(f"{facts} facts do not fit in {length} tokens; use fewer facts or a longer length")
    start = rng.randrange(0, max(len(filler) - budget, 1))
    if start + budget <= len(filler):
        hay = list(filler[start:start + budget])   # no copy of the whole filler per document
    else:
        hay = list((list(filler) * (budget // max(len(filler), 1) + 2))[start:start + budget])
    cuts = sorted(rng.randrange(0, len(hay) + 1) for _ in chosen)
    pieces: list[int] = []
    cursor = 0
    for cut, ids in zip(cuts, (fact_ids[i] for i in rng.sample(range(facts), facts))):
        pieces += hay[cursor:cut] + ids
        cursor = cut
    pieces += hay[cursor:]
    mask = [0] * len(pieces)
    for i in rng.sample(range(facts), facts):
        pieces += question_ids[i] + answer_ids[i]
        mask += [0] * len(question_ids[i]) + [1] * (len(answer_ids[i]) - 1) + [0]
    return pieces, mask


def retrieval_document(tokenizer: Tokenizer, filler: Sequence[int], length: int, facts: int,
                       rng: random.Random) -> str:
    """One document of about `length` tokens: `facts` facts in a window of `filler`, then the Q&A."""
    return tokenizer.decode(retrieval_example(tokenizer, filler, length, facts, rng)[0])


def retrieval_documents(tokenizer: Tokenizer, texts: Sequence[str], count: int, length: int, facts: int,
                        seed: int = 0) -> Iterator[str]:
    """`count` retrieval documents over haystacks cut from `texts` (joined, tokenized once)."""
    filler = tokenizer.encode("\n\n".join(t for t in texts if t.strip()))
    if len(filler) < 64:
        raise DataError("retrieval documents need at least 64 tokens of filler text")
    rng = random.Random(seed)
    for _ in range(count):
        yield retrieval_document(tokenizer, filler, length, facts, rng)


def write_retrieval_jsonl(path: str | Path, tokenizer: Tokenizer, texts: Sequence[str], count: int, length: int,
                          facts: int, seed: int = 0) -> Path:
    """The documents as JSONL (`{"id", "text"}`), written atomically, for `herd tokenize`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for n, text in enumerate(retrieval_documents(tokenizer, texts, count, length, facts, seed)):
            f.write(json.dumps({"id": f"retrieval:{n}", "text": text}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def write_retrieval_shards(out_dir: str | Path, tokenizer: Tokenizer, texts: Sequence[str], count: int,
                           length: int, facts: int, *, seed: int = 0, key_style: str = "made_up",
                           templates: Sequence[tuple[str, str]] = TEMPLATES, validation_fraction: float = 0.0,
                           source: str = "retrieval") -> dict[str, Any]:
    """`count` documents (`<|begin_of_text|> ... <|end_of_text|>`) as token shards whose loss mask
    trains only the answers; returns the manifest. Haystacks are cut from `texts`."""
    from herd.data.shards import ShardWriter

    if key_style not in KEY_STYLES:
        raise DataError(f"unknown key_style {key_style!r}; expected one of {KEY_STYLES}")
    filler = tokenizer.encode("\n\n".join(t for t in texts if t.strip()))
    if len(filler) < 64:
        raise DataError("retrieval documents need at least 64 tokens of filler text")
    keys = word_keys(tokenizer) if key_style == "word" else None
    info = {"name": "llama3", "file": getattr(getattr(tokenizer, "path", None), "name", None),
            "vocab_size": tokenizer.vocab_size, "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id}
    rng = random.Random(seed)
    with ShardWriter(out_dir, source, tokenizer=info, validation_fraction=validation_fraction,
                     split_seed=seed, loss_mask=True) as writer:
        for _ in range(count):
            ids, mask = retrieval_example(tokenizer, filler, length - 2, facts, rng, keys=keys, templates=templates)
            writer.add(np.asarray([tokenizer.bos_id, *ids, tokenizer.eos_id], dtype=np.int64),
                       np.asarray([0, *mask, 0], dtype=np.uint8))
        return writer.close({"synthetic": {"kind": "retrieval", "facts": facts, "length": length,
                                           "key_style": key_style, "templates": len(templates), "seed": seed}})
