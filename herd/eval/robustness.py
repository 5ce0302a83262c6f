"""The paper's multiple-choice robustness study (Llama 3 paper section 5.1.2, Figures 13-14).

A model that really knows the answer picks it whatever the answer is called, wherever it is listed,
however the question is worded, and whatever the few-shot examples' answers were. Each study turns a
task's items into letter-format items (the question, the labelled choices, then "Answer:"; each
continuation is " " + a label) and scores every variant through the same harness:

- labels: which symbols name the choices (A. B. C. D., a. b. c. d., (A) (B), 1. 2. 3. 4., and rare
  symbols $ & # @ as the paper tried);
- answer order: the choices rotated by 0..k-1 places (so the gold answer moves through every position),
  plus "gold always first" and "gold always last";
- prompt format: several wordings of the same letter prompt;
- few-shot label bias: examples whose gold labels are all the first label, all the last, or balanced.

What the paper reads off the figures: accuracy should barely move across labels and prompts, and
a model should not follow the few-shot examples' label pattern.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from herd.eval.harness import Evaluator, SampleStore
from herd.eval.metrics import Metric
from herd.eval.prompting import PromptSettings
from herd.eval.tasks.base import MCItem, Task

if TYPE_CHECKING:
    from herd.infer.engine import LLMEngine
    from herd.loading import LoadedModel

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "A. B. C.": tuple("ABCDEFGHIJKLM"),
    "a. b. c.": tuple("abcdefghijklm"),
    "(A) (B)": tuple("ABCDEFGHIJKLM"),
    "1. 2. 3.": tuple(str(i) for i in range(1, 14)),
    "$ & # @": tuple("$&#@%^*~+=<>!"),
}
PROMPT_FORMATS: dict[str, str] = {
    "plain": "{question}\n{choices}\nAnswer:",
    "question/choices": "Question: {question}\nChoices:\n{choices}\nAnswer:",
    "instruction": "Choose the correct answer to the question.\n\n{question}\n{choices}\nThe correct answer is",
    "exam": "The following is a multiple choice question.\n{question}\n\nOptions:\n{choices}\n\nYour answer:",
}


def _stem(query: str) -> str:
    """The question without a cloze prompt's trailing answer cue ("Q: ...\\nA:" -> "...")."""
    return query.strip().removesuffix("\nA:").removeprefix("Q: ")


def letter_item(item: MCItem, labels: Sequence[str], order: Sequence[int] | None = None,
                template: str = PROMPT_FORMATS["plain"], style: str = "A. B. C.") -> MCItem:
    """`item` as a letter-format question: choices listed in `order`, named by `labels`."""
    order = list(range(len(item.choices))) if order is None else list(order)
    if sorted(order) != list(range(len(item.choices))):
        raise ValueError(f"order {order} is not a permutation of {len(item.choices)} choices")
    if len(labels) < len(order):
        raise ValueError(f"{len(labels)} labels for {len(order)} choices")
    shown = [f"({labels[i]}) " if style == "(A) (B)" else f"{labels[i]}. " for i in range(len(order))]
    lines = "\n".join(s + item.choices[j].strip() for s, j in zip(shown, order))
    query = template.format(question=_stem(item.query), choices=lines)
    return MCItem(item.id, query, tuple(" " + labels[i] for i in range(len(order))), order.index(item.gold))


def rotated(item: MCItem, shift: int) -> list[int]:
    n = len(item.choices)
    return [(i + shift) % n for i in range(n)]


def gold_at(item: MCItem, position: int) -> list[int]:
    """An order that puts the gold answer at `position` (the others keep their relative order)."""
    others = [i for i in range(len(item.choices)) if i != item.gold]
    position = position % len(item.choices)
    return others[:position] + [item.gold] + others[position:]


@dataclass(frozen=True)
class Variant:
    study: str
    name: str
    items: list[MCItem]
    fewshot_pool: list[MCItem] | None = None    # examples for the label-bias study


def variants(items: Sequence[MCItem], pool: Sequence[MCItem], shots: int) -> list[Variant]:
    """Every variant of the four studies for these items."""
    plain = PROMPT_FORMATS["plain"]
    labels_std = LABEL_SETS["A. B. C."]
    out = [Variant("labels", name, [letter_item(i, labels, style=name) for i in items])
           for name, labels in LABEL_SETS.items()]
    max_choices = max(len(i.choices) for i in items)
    for shift in range(min(max_choices, 4)):
        out.append(Variant("answer order", f"rotate {shift}",
                           [letter_item(i, labels_std, rotated(i, shift), plain) for i in items]))
    out.append(Variant("answer order", "gold first", [letter_item(i, labels_std, gold_at(i, 0), plain) for i in items]))
    out.append(Variant("answer order", "gold last", [letter_item(i, labels_std, gold_at(i, -1), plain) for i in items]))
    out += [Variant("prompt format", name, [letter_item(i, labels_std, None, t) for i in items])
            for name, t in PROMPT_FORMATS.items()]
    if shots > 0:
        pool_l = list(pool)
        for name, position in (("few-shot gold all first", 0), ("few-shot gold all last", -1), ("few-shot balanced", None)):
            examples = []
            for n, e in enumerate(pool_l):
                where = position if position is not None else n % len(e.choices)
                examples.append(letter_item(e, labels_std, gold_at(e, where), plain))
            out.append(Variant("few-shot label bias", name, [letter_item(i, labels_std, None, plain) for i in items],
                               examples))
    return out


def run_robustness(engine: LLMEngine, loaded: LoadedModel, task: Task, out: str | Path, *, limit: int | None = None,
                   shots: int = 0, bos: bool = True, progress: bool = True) -> dict[str, Any]:
    """Score every variant; writes robustness.json, robustness.md and robustness.png under `out`."""
    if task.kind != "mc":
        raise ValueError(f"the robustness study needs a multiple-choice task; {task.name} is {task.kind}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pool = [i for i in task.load() if isinstance(i, MCItem)]
    items = pool[:limit] if limit is not None else pool
    evaluator = Evaluator(engine, loaded, PromptSettings(shots=shots, bos=bos), progress=progress)
    store = SampleStore(out / "robustness.partial.jsonl")
    results: list[dict[str, Any]] = []
    try:
        for v in variants(items, pool, shots):
            shown, examples = list(v.items), v.fewshot_pool
            variant_task = Task(
                f"{task.name}[{v.study}: {v.name}]", task.version, "mc", task.source, task.licence, v.name,
                load=lambda shown=shown: list(shown),
                fewshot_pool=None if examples is None else (lambda examples=examples: list(examples)),
            )
            result = evaluator.run(variant_task, None, store)
            acc: Metric = result.metrics["acc"]
            results.append({"study": v.study, "variant": v.name, **acc.as_dict()})
    finally:
        store.close()
    summary = {"task": task.name, "model": loaded.source, "items": len(items), "shots": shots, "variants": results}
    (out / "robustness.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "robustness.md").write_text(robustness_markdown(summary), encoding="utf-8")
    plot_robustness(summary, out / "robustness.png")
    return summary


def robustness_markdown(summary: dict[str, Any]) -> str:
    lines = [f"## Multiple-choice robustness: {summary['task']} ({summary['items']} items, {summary['shots']}-shot)", "",
             "| study | variant | accuracy | 95% CI |", "|---|---|---:|---|"]
    for r in summary["variants"]:
        lines.append(f"| {r['study']} | {r['variant']} | {r['value']:.3f} | [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] |")
    lines += ["", "![robustness](robustness.png)", ""]
    return "\n".join(lines)


def plot_robustness(summary: dict[str, Any], path: Path) -> Path:
    """One panel per study, a bar per variant with its 95% interval (the paper's Figures 13-14)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = list(dict.fromkeys(r["study"] for r in summary["variants"]))
    fig, axes = plt.subplots(1, len(studies), figsize=(3.2 * len(studies), 3.4), sharey=True, squeeze=False)
    for ax, study in zip(axes[0], studies):
        rows = [r for r in summary["variants"] if r["study"] == study]
        values = [r["value"] * 100 for r in rows]
        err = [[(r["value"] - r["ci95"][0]) * 100 for r in rows], [(r["ci95"][1] - r["value"]) * 100 for r in rows]]
        ax.bar(range(len(rows)), values, yerr=err, capsize=3, color="#55A868")
        ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=35, ha="right", fontsize=7)
        ax.set_title(study, fontsize=9)
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("accuracy (%), 95% CI")
    fig.suptitle(f"{summary['task']} - {summary['model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
