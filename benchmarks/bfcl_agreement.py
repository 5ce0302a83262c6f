"""herd's BFCL checker against bfcl-eval's own, on a model's recorded outputs.

`herd eval run --task bfcl_...` records every item's parsed calls (`pred`) and herd's verdict
(`correct`) in samples.jsonl. This script hands the same calls, function docs and possible answers to
bfcl-eval's checker, run in its own environment (benchmarks/.bfcl-env: bfcl-eval installed with
--no-deps, as its declared dependencies are every model vendor's client; its one model-config module
that imports them is stubbed), and counts the items where the two verdicts agree, per category.
AST categories go through bfcl-eval's `ast_checker`; irrelevance through its relevance rule
(`is_empty_output`: correct when no call was decoded).

    python benchmarks/bfcl_agreement.py RUN_DIR [RUN_DIR...] [--bfcl-python PATH]

Prints the host line and a table; exits non-zero on any disagreement.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from host import describe  # noqa: E402

ENV = Path(__file__).resolve().parent / ".bfcl-env"

# Runs in bfcl-eval's environment: one JSON request per line in, one verdict per line out.
OFFICIAL = r'''
import json, sys, types
stub = types.ModuleType("bfcl_eval.constants.model_config")
stub.MODEL_CONFIG_MAPPING = {"herd": types.SimpleNamespace(underscore_to_dot=False)}
sys.modules["bfcl_eval.constants.model_config"] = stub
from bfcl_eval.constants.enums import Language
from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
from bfcl_eval.utils import is_empty_output
LANG = {"java": Language.JAVA, "javascript": Language.JAVASCRIPT}
NAMES = {"simple": "simple_python", "java": "simple_java", "javascript": "simple_javascript"}
for line in sys.stdin:
    r = json.loads(line)
    if r["category"] == "irrelevance":
        ok = is_empty_output(r["calls"])
    else:
        ok = ast_checker(r["functions"], r["calls"], r["answers"], LANG.get(r["category"], Language.PYTHON),
                         NAMES.get(r["category"], r["category"]), "herd")["valid"]
    print(json.dumps(bool(ok)), flush=True)
'''


def bfcl_python(given: str | None) -> str:
    """The Python of bfcl-eval's environment; created (offline, from pip's cache) on first use."""
    if given:
        return given
    python = ENV / "bin" / "python"
    if not python.is_file():
        venv.create(ENV, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "bfcl-eval"], check=True)
        # the checker itself needs nothing more; bfcl_eval.utils (the relevance rule) imports filelock
        subprocess.run([str(python), "-m", "pip", "install", "-q", "filelock"], check=True)
    return str(python)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="herd eval run output directories (samples.jsonl)")
    parser.add_argument("--bfcl-python", default=None, help="Python with bfcl-eval (default: benchmarks/.bfcl-env)")
    args = parser.parse_args()

    from herd.eval.tasks import get_task
    from herd.eval.tasks.bfcl import category_of

    requests, mine = [], []
    items: dict[str, dict] = {}
    for run in args.runs:
        for line in (Path(run) / "samples.jsonl").read_text().splitlines():
            sample = json.loads(line)
            if not sample["task"].startswith("bfcl_"):
                continue
            task = sample["task"]
            if task not in items:
                items[task] = {i.id: i for i in get_task(task).load()}  # type: ignore[union-attr]
            item = items[task][sample["id"]]
            requests.append({"category": category_of(task), "functions": list(item.functions),
                             "calls": sample["pred"], "answers": list(item.possible_answer)})
            mine.append(bool(sample["correct"]))
    if not requests:
        raise SystemExit("no BFCL samples in the given runs")
    proc = subprocess.run([bfcl_python(args.bfcl_python), "-c", OFFICIAL], input="".join(
        json.dumps(r) + "\n" for r in requests), capture_output=True, text=True, check=True)
    theirs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(theirs) == len(mine)
    total, agree, right = Counter(), Counter(), Counter()
    for r, a, b in zip(requests, mine, theirs, strict=True):
        total[r["category"]] += 1
        agree[r["category"]] += a == b
        right[r["category"]] += a
    print(describe())
    print(f"{'category':<20}{'items':>6}{'agree':>7}{'herd acc':>10}")
    for cat in sorted(total):
        print(f"{cat:<20}{total[cat]:>6}{agree[cat]:>7}{right[cat] / total[cat]:>10.3f}")
    print(f"{'all':<20}{sum(total.values()):>6}{sum(agree.values()):>7}")
    return 0 if agree == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
