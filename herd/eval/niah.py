"""Needle-in-a-haystack (NIAH): can the model retrieve facts planted anywhere in a long context?

The paper gates each long-context pretraining stage on it ("the model perfectly solves
needle-in-a-haystack tasks up to that length") and reports multi-needle variants. A case is a
haystack of real filler text (Python's pydoc topics by default: real prose, no download) of an
exact token length, with `num_needles` sentences

    "The special magic number for {key} is {value}."

inserted at chosen depths (fractions of the context). Each needle gives one query appended after the
haystack: "... What is the special magic number for {key}? The special magic number for {key} is"
and the model must continue with `{value}` (greedy). With several needles every other needle is a
distractor with a different key (the multi-key retrieval of RULER), so copying the nearest number
does not pass. All queries of a case share the haystack as a prompt prefix, so the paged engine
computes its KV cache once.

`training_documents` writes the same task with its answer as plain text documents: the synthetic
long-context data the long-context stage mixes in (tiny models learn retrieval from it; the paper
uses synthetic long-context data in post-training for the same reason).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herd.tokenizer.base import Tokenizer

if TYPE_CHECKING:
    from herd.infer.engine import LLMEngine

DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
_KEYS = (
    "amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
    "kestrel", "lagoon", "meadow", "nimbus", "onyx", "prairie", "quartz", "raven", "saffron", "tundra",
    "umber", "violet", "willow", "xenon", "yarrow", "zephyr",
)


def needle_sentence(key: str, value: str) -> str:
    return f" The special magic number for {key} is {value}. "


def question(key: str) -> str:
    return f"\nWhat is the special magic number for {key}? The special magic number for {key} is"


@dataclass(frozen=True)
class Needle:
    key: str
    value: str
    depth: float      # requested fraction of the haystack before it (0 = start, 1 = end)
    position: int     # token offset where it was inserted


@dataclass
class NIAHCase:
    """One haystack with its needles; `queries[i]` asks for `needles[i]`."""

    length: int                       # tokens of prompt (haystack + the longest query)
    haystack: list[int]               # token ids: bos? + filler with the needles inside
    needles: list[Needle]
    queries: list[list[int]]          # full prompt ids per needle (haystack + question)


def default_filler() -> str:
    """Real English prose available on every Python install: the pydoc help topics."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def _snap_to_sentence(tokenizer: Tokenizer, filler: list[int], pos: int, window: int = 40) -> int:
    """Move an insertion point back to just after a '.' or newline token when one is near."""
    for i in range(pos, max(pos - window, 0), -1):
        piece = tokenizer.decode([filler[i - 1]])
        if piece.endswith((".", "\n")):
            return i
    return pos


def build_case(
    tokenizer: Tokenizer,
    length: int,
    depths: Sequence[float] = (0.5,),
    *,
    seed: int = 0,
    filler: str | None = None,
    bos: bool = True,
) -> NIAHCase:
    """A haystack whose longest query prompt is exactly `length` tokens, with one needle per depth."""
    if not depths:
        raise ValueError("need at least one needle depth")
    if any(not 0.0 <= d <= 1.0 for d in depths):
        raise ValueError(f"needle depths must be in [0, 1], got {list(depths)}")
    if len(depths) > len(_KEYS):
        raise ValueError(f"at most {len(_KEYS)} needles per case, got {len(depths)}")
    rng = random.Random(seed)
    keys = rng.sample(_KEYS, len(depths))
    values = [str(rng.randrange(10_000, 1_000_000)) for _ in depths]
    needle_ids = [tokenizer.encode(needle_sentence(k, v)) for k, v in zip(keys, values)]
    question_ids = [tokenizer.encode(question(k)) for k in keys]
    prefix = [tokenizer.bos_id] if bos and tokenizer.bos_id is not None else []
    budget = length - len(prefix) - sum(map(len, needle_ids)) - max(map(len, question_ids))
    if budget < 16:
        raise ValueError(f"length {length} leaves only {budget} tokens of haystack; use a longer length")
    text = filler if filler is not None else default_filler()
    filler_ids = tokenizer.encode(text)
    if not filler_ids:
        raise ValueError("the filler text is empty")
    start = rng.randrange(0, max(len(filler_ids) - budget, 1))
    hay = (filler_ids * (budget // len(filler_ids) + 2))[start:start + budget]
    # insertion points on the plain filler, then insert in ascending order tracking the growing offset
    base = {i: _snap_to_sentence(tokenizer, hay, round(d * len(hay))) for i, d in enumerate(depths)}
    placed: dict[int, int] = {}
    out: list[int] = []
    cursor = 0
    for i in sorted(base, key=lambda j: (base[j], depths[j])):
        out += hay[cursor:base[i]]
        cursor = base[i]
        placed[i] = len(prefix) + len(out)
        out += needle_ids[i]
    hay = out + hay[cursor:]
    needles = [Needle(keys[i], values[i], depths[i], placed[i]) for i in range(len(depths))]
    haystack = prefix + hay
    queries = [haystack + q for q in question_ids]
    return NIAHCase(max(map(len, queries)), haystack, needles, queries)


_NUMBER = re.compile(r"\d+")


def score_response(text: str, answer: str) -> bool:
    """True when the first number in the model's continuation is the needle's value."""
    match = _NUMBER.search(text)
    return match is not None and match.group(0) == answer


@dataclass
class NIAHReport:
    """Accuracy per (context length, needle depth) cell, over all needles and cases."""

    num_needles: int
    cells: dict[tuple[int, float], list[bool]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        hits = [h for v in self.cells.values() for h in v]
        return sum(hits) / len(hits) if hits else 0.0

    def accuracy_at(self, length: int) -> float:
        hits = [h for (n, _), v in self.cells.items() if n == length for h in v]
        return sum(hits) / len(hits) if hits else 0.0

    def table(self) -> str:
        """Markdown grid: rows = lengths, columns = depths."""
        lengths = sorted({n for n, _ in self.cells})
        depths = sorted({d for _, d in self.cells})
        lines = ["| length | " + " | ".join(f"depth {d:.2f}" for d in depths) + " | all |",
                 "|---:|" + "---:|" * (len(depths) + 1)]
        for n in lengths:
            row = []
            for d in depths:
                v = self.cells.get((n, d), [])
                row.append(f"{sum(v) / len(v):.2f}" if v else "-")
            lines.append(f"| {n} | " + " | ".join(row) + f" | {self.accuracy_at(n):.2f} |")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Heatmap PNG (lengths x depths, green = retrieved)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lengths = sorted({n for n, _ in self.cells})
        depths = sorted({d for _, d in self.cells})
        grid = [[(sum(v) / len(v)) if (v := self.cells.get((n, d))) else float("nan") for d in depths]
                for n in lengths]
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(depths), 1.0 + 0.5 * len(lengths)))
        im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(depths)), [f"{d:.2f}" for d in depths])
        ax.set_yticks(range(len(lengths)), [str(n) for n in lengths])
        ax.set_xlabel("needle depth")
        ax.set_ylabel("context tokens")
        ax.set_title(f"needle in a haystack ({self.num_needles} needle{'s' if self.num_needles > 1 else ''})")
        fig.colorbar(im, ax=ax, label="accuracy")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def evaluate_niah(
    engine: LLMEngine,
    tokenizer: Tokenizer,
    lengths: Sequence[int],
    depths: Sequence[float] = DEFAULT_DEPTHS,
    *,
    num_needles: int = 1,
    cases_per_cell: int = 1,
    seed: int = 0,
    filler: str | None = None,
    max_tokens: int = 8,
) -> NIAHReport:
    """Greedy retrieval accuracy for each length and depth, through the batching engine.

    With `num_needles > 1` the needle at `depth` is the one asked about (counted in that cell); the
    others are placed at evenly spread depths as distractors and asked about too (counted in their
    own nearest depth's cell is not meaningful, so they count in the same cell).
    """
    from herd.infer.sampling import SamplingParams

    if num_needles < 1:
        raise ValueError(f"num_needles must be >= 1, got {num_needles}")
    report = NIAHReport(num_needles)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    prompts: list[list[int]] = []
    meta: list[tuple[int, float, Needle, NIAHCase]] = []
    for length in lengths:
        for depth in depths:
            for c in range(cases_per_cell):
                case_seed = hash((seed, length, depth, c)) & 0x7FFFFFFF
                others = [((k + 1) / num_needles + depth) % 1.0 for k in range(num_needles - 1)]
                case = build_case(tokenizer, length, [depth, *others], seed=case_seed, filler=filler)
                for needle, query in zip(case.needles, case.queries):
                    prompts.append(query)
                    meta.append((length, depth, needle, case))
    outputs = engine.generate(prompts, params)
    for (length, depth, needle, _), out in zip(meta, outputs):
        text = out.outputs[0].text
        hit = score_response(text, needle.value)
        report.cells.setdefault((length, depth), []).append(hit)
        if len(report.examples) < 20:
            report.examples.append({"length": length, "depth": depth, "key": needle.key, "answer": needle.value,
                                    "response": text, "correct": hit})
    return report


def training_documents(
    tokenizer: Tokenizer, count: int, length: int, *, num_needles: int = 1, seed: int = 0, filler: str | None = None
) -> list[str]:
    """`count` NIAH documents of about `length` tokens with the answer written out, for training."""
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        depths = [rng.random() for _ in range(num_needles)]
        case = build_case(tokenizer, length - 8, depths, seed=seed * 1_000_003 + i, filler=filler, bos=False)
        asked = rng.randrange(num_needles)
        needle = case.needles[asked]
        docs.append(tokenizer.decode(case.queries[asked]) + f" {needle.value}.")
    return docs
