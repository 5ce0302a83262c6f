"""The post-training demo's pieces and a tiny end-to-end run (random model, a ShareGPT-shaped file)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from herd.post.demo import DemoScale, demo_prompts, repeats, run_demo, verified, with_constraint
from herd.post.rejection import PromptRecord
from herd.tokenizer.chat import Message


def sharegpt_file(path: Path, n: int = 60) -> Path:
    rows = [{"conversations": [{"from": "human", "value": f"Tell me something about topic number {i} please."},
                               {"from": "gpt", "value": "ok"}]} for i in range(n)]
    text = json.dumps(rows)
    path.write_text(text[: len(text) - 30])  # truncated, as the real file is
    return path


def test_constraints_and_checks() -> None:
    rng = random.Random(0)
    kinds = [with_constraint("Hi there.", rng, i)[1] for i in range(4)]
    assert set().union(*kinds) == {"max_words", "must_include", "ends_with", "lowercase"}
    r = PromptRecord([Message("user", "x")], constraints={"ends_with": "Good luck"})
    assert verified(r, "Here it is. Good luck.") and not verified(r, "Good luck, here it is.")
    assert verified(PromptRecord([Message("user", "x")], constraints={"lowercase": True}), "all lower here")
    assert verified(PromptRecord([Message("user", "x")], "math", answer="12"), "so... Answer: 12")
    assert repeats("a b c d a b c d a b c d") and not repeats("a b c d e f g h")


def test_prompt_split(tmp_path: Path) -> None:
    scale = DemoScale(train_prompts=12, heldout_prompts=8)
    train, heldout = demo_prompts(scale, 0, sharegpt_file(tmp_path / "s.json"))
    assert len(train) == 12 and len(heldout) == 8
    assert not {r.id for r in train} & {r.id for r in heldout}
    assert sum(r.capability == "math" for r in train + heldout) == 5


def test_tiny_demo_runs_every_stage_and_writes_the_report(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from herd.post import demo
    from herd.post.rejection import Sample

    def fake_samples(model, prompts, scale, seed):  # type: ignore[no-untyped-def]
        # a random model never follows a constraint: give each prompt one sample that does and some that do not
        out = []
        for j, record in enumerate(prompts):
            good = "Answer: " + (record.answer or "ok") + " " + " ".join(record.constraints.get("must_include", []))
            out.append([Sample(good.lower() + (" hope this helps" if "ends_with" in record.constraints else ""), 5,
                               "stop", {"format": True}),
                        Sample(f"NO NO {j} " * 20, 40, "length", {"format": False}),
                        Sample(f"Wrong {j}", 2, "stop", {"format": False})])
        return out

    monkeypatch.setattr(demo, "_samples", fake_samples)
    scale = DemoScale(train_prompts=10, heldout_prompts=6, k=3, max_tokens=24, rm_steps=2, sft_steps=2, dpo_steps=2,
                      batch=2, model="random:llama3-tiny")
    results = run_demo(tmp_path / "demo", scale, sharegpt=sharegpt_file(tmp_path / "s.json"))
    for name in ("start", "sft", "dpo_paper", "dpo_plain", "average"):
        assert results[name]["pass_rate"]["n"] == 6
    assert "best_of_k" in results["reward_model"]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| dpo_paper |" in report and "Held-out pair accuracy" in report
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    assert {"rs_train", "rm", "sft", "dpo_paper", "dpo_plain", "average"} <= set(manifest["stages"])
