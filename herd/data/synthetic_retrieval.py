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
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

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


def retrieval_document(tokenizer: Tokenizer, filler: Sequence[int], length: int, facts: int,
                       rng: random.Random) -> str:
    """One document of about `length` tokens: `facts` facts in a window of `filler`, then the Q&A."""
    if facts < 1:
        raise DataError(f"facts must be >= 1, got {facts}")
    keys: list[str] = []
    while len(keys) < facts:
        key = made_up_key(rng)
        if key not in keys:
            keys.append(key)
    values = [str(rng.randrange(10, 1_000_000)) for _ in keys]
    templates = [rng.choice(TEMPLATES) for _ in keys]
    fact_ids = [tokenizer.encode(t[0].format(k=k, v=v)) for t, k, v in zip(templates, keys, values)]
    qa_ids = [tokenizer.encode(t[1].format(k=k) + f" {v}.") for t, k, v in zip(templates, keys, values)]
    budget = length - sum(map(len, fact_ids)) - sum(map(len, qa_ids))
    if budget < 16:
        raise DataError(f"{facts} facts do not fit in {length} tokens; use fewer facts or a longer length")
    start = rng.randrange(0, max(len(filler) - budget, 1))
    hay = list((list(filler) * (budget // max(len(filler), 1) + 2))[start:start + budget])
    cuts = sorted(rng.randrange(0, len(hay) + 1) for _ in keys)
    pieces: list[int] = []
    cursor = 0
    for cut, ids in zip(cuts, (fact_ids[i] for i in rng.sample(range(facts), facts))):
        pieces += hay[cursor:cut] + ids
        cursor = cut
    pieces += hay[cursor:]
    for i in rng.sample(range(facts), facts):
        pieces += qa_ids[i]
    return tokenizer.decode(pieces)


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
