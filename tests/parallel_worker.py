"""Runs under torchrun: train the tiny byte-level model once per layout given on the command line.

    torchrun --nproc-per-node 2 tests/parallel_worker.py SPEC.json

SPEC.json: {"overrides": [...common --set values...], "runs": [{"name": ..., "sets": [...],
"resume": null|path}, ...]}. Each run writes <out_dir>/metrics.jsonl (rank 0) like `herd pretrain`;
the test compares those losses with the single-process trainer's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from herd.train import load_config, train
from herd.train.parallel.distributed import DistributedPlan


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    plan = None
    for run in spec["runs"]:
        config = load_config(ROOT / "configs/pretrain/tiny.toml", spec["overrides"] + run["sets"])
        plan = DistributedPlan(config)
        train(config, resume=run.get("resume"), plan=plan)
    if plan is not None:
        plan.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
