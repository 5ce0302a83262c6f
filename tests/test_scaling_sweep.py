"""`herd scaling sweep / fit / forecast` end to end on a tiny grid, and resuming a killed sweep."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from herd.config import ConfigError
from herd.scaling.recipe import scaling_recipe_from_dict
from herd.scaling.sweep import plan_runs, read_runs, run_sweep

TINY = {
    "sweep": {
        "budgets": [2e9, 6e9],
        "sizes": [{"name": "a", "dim": 8, "n_layers": 1, "n_heads": 1},
                  {"name": "b", "dim": 16, "n_layers": 1, "n_heads": 2},
                  {"name": "c", "dim": 32, "n_layers": 2, "n_heads": 2}],
        "seq_len": 32, "batch_tokens": [256, 256], "lr": [1e-2, 3e-3], "tasks": ["arith_mc"], "task_limit": 8,
        "validation_batches": 2, "validation_batch_size": 4, "min_steps": 2,
    },
    "data": {"corpus_docs": 60, "vocab_size": 300, "mix": {"general": 0.5, "math": 0.5}},
}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    recipe = scaling_recipe_from_dict(TINY)
    # a "killed" first launch: only the first two runs finish
    first = []
    run_sweep(recipe, out, log=lambda m: None, only=lambda p: len(first) < 2 and not first.append(p.point.name))
    assert [r["run"] for r in read_runs(out)] == first
    before = {r["run"]: r for r in read_runs(out)}
    messages: list[str] = []
    runs = run_sweep(recipe, out, log=messages.append)
    assert any("2 already finished, 4 to run" in m for m in messages)
    names = [r["run"] for r in runs]
    assert len(names) == len(set(names)) == 6  # nothing rerun, nothing missing
    for name, record in before.items():
        assert next(r for r in runs if r["run"] == name) == record
    return out


def test_records_hold_what_the_fit_needs(sweep_dir):
    runs = read_runs(sweep_dir)
    for r in runs:
        assert {"N", "N_total", "D", "C", "C_actual", "val_loss", "tasks", "vocab_size"} <= set(r)
        assert r["vocab_size"] == 300
        assert r["N"] < r["N_total"]
        # tokens = C / FLOPs per token, rounded to whole steps of the budget's batch
        assert abs(r["D"] * r["flops_per_token"] - r["C"]) <= r["flops_per_token"] * 256 / 2 + 1
        task = r["tasks"]["arith_mc"]
        assert task["n"] == 8 and task["chance"] == 0.25 and task["gold_nll_per_char"] > 0
    # every size at a budget gets the same budget, smaller models more tokens
    by_c = [r for r in runs if r["C"] == 2e9]
    assert min(by_c, key=lambda r: r["N"])["D"] > max(by_c, key=lambda r: r["N"])["D"]
    assert (sweep_dir / "data" / "tokenizer" / "tokenizer.json").is_file()


def test_an_unfinished_run_resumes_from_its_checkpoint(sweep_dir):
    runs = read_runs(sweep_dir)
    last = runs[-1]
    (sweep_dir / "runs.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in runs[:-1]))
    messages: list[str] = []
    again = run_sweep(scaling_recipe_from_dict(TINY), sweep_dir, log=messages.append)
    assert any("5 already finished, 1 to run" in m for m in messages)
    redo = next(r for r in again if r["run"] == last["run"])
    assert redo["val_loss"] == pytest.approx(last["val_loss"], abs=1e-6)  # restored, not retrained
    metrics = (sweep_dir / "runs" / last["run"] / "metrics.jsonl").read_text()
    assert "resumed from" in metrics or redo["train_s"] < last["train_s"] + 5


def test_fit_and_forecast_commands(sweep_dir):
    fit = subprocess.run([sys.executable, "-m", "herd", "scaling", "fit", str(sweep_dir), "--json", "--bootstrap", "50"],
                         check=False, capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr
    data = json.loads(fit.stdout)
    assert {"alpha", "A", "alpha_ci", "per_budget", "parametric"} <= set(data)
    assert [b["C"] for b in data["per_budget"]] == [2e9, 6e9]
    assert {"C", "D_opt", "N_opt", "loss_opt", "flags"} <= set(data["per_budget"][0])
    assert (sweep_dir / "isoflops.png").stat().st_size > 1000
    cast = subprocess.run([sys.executable, "-m", "herd", "scaling", "forecast", str(sweep_dir), "--task", "arith_mc",
                           "--target-flops", "2e10", "--json"], check=False, capture_output=True, text=True, timeout=300)
    assert cast.returncode == 0, cast.stderr
    result = json.loads(cast.stdout)
    assert result["C"] == 2e10 and 0.25 <= result["accuracy"] <= 1
    assert (sweep_dir / "forecast_arith_mc.png").stat().st_size > 1000
    bad = subprocess.run([sys.executable, "-m", "herd", "scaling", "forecast", str(sweep_dir), "--task", "nope",
                          "--target-flops", "1e12"], check=False, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nope" in bad.stderr and "arith_mc" in bad.stderr and "Traceback" not in bad.stderr


def test_a_relaunch_with_other_data_is_refused(sweep_dir):
    with pytest.raises(ValueError, match=r"vocab_size differ"):
        run_sweep(scaling_recipe_from_dict(TINY, ["data.vocab_size=400"]), sweep_dir, log=lambda m: None)
    with pytest.raises(ValueError, match=r"sweep.seq_len differ"):
        run_sweep(scaling_recipe_from_dict(TINY, ["sweep.seq_len=64"]), sweep_dir, log=lambda m: None)


def test_recipe_errors_are_reported_together():
    bad = {"sweep": {**TINY["sweep"], "budgets": [-1.0], "sizes": TINY["sweep"]["sizes"][:2], "lr": [1e-3]},
           "data": TINY["data"]}
    with pytest.raises(ConfigError) as err:
        scaling_recipe_from_dict(bad)
    text = str(err.value)
    assert "budgets" in text and "at least 3 sizes" in text and "sweep.lr" in text
    with pytest.raises(ConfigError, match="gsm8k is a generate task"):
        scaling_recipe_from_dict(TINY, ["sweep.tasks=[\"gsm8k\"]"])
    with pytest.raises(ConfigError, match="unknown config key 'sweep.budget'"):
        scaling_recipe_from_dict({"sweep": {"budget": [1e10]}})


def test_too_small_budgets_are_left_out_and_listed(tmp_path):
    recipe = scaling_recipe_from_dict(TINY, ["sweep.budgets=[1e5,2e9]", "sweep.batch_tokens=[256,256]"])
    plans, skipped = plan_runs(recipe, tmp_path, {"general": "x"}, 300)
    assert len(plans) == 3 and len(skipped) == 3 and all("sweep.min_steps" in s for s in skipped)
    # the paper's rule: the peak LR falls with size
    lrs = [p.config["optim"]["lr"] for p in sorted(plans, key=lambda p: p.params)]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(3e-3) and lrs[0] > lrs[1] > lrs[2]
    assert all(p.config["optim"]["min_lr"] == pytest.approx(0.1 * p.config["optim"]["lr"]) for p in plans)


def test_demo_predicts_before_it_runs(tmp_path, sweep_dir):
    """predict_and_run on a sweep whose records follow a known law: it writes its prediction first, then
    trains the chosen size at 3x the largest budget and compares (the plumbing of `herd scaling demo`)."""
    import shutil

    import numpy as np

    from herd.scaling.demo import predict_and_run, report_markdown
    from herd.scaling.laws import ParametricLaw

    out = tmp_path / "demo"
    shutil.copytree(sweep_dir / "data", out / "data")
    sizes = {p.point.size.label(): p.params for p in plan_runs(scaling_recipe_from_dict(TINY), out, {"general": "x"}, 300)[0]}
    # small budgets: the forecast run (3x the largest) is a few hundred steps of whichever size is picked
    recipe = scaling_recipe_from_dict(TINY, ["sweep.budgets=[2e7,6e7,2e8]", "sweep.batch_tokens=[256,256,256]"])
    law = ParametricLaw(E=1.5, A=40.0, B=300.0, a=0.35, b=0.3)
    records = []
    for budget in (2e7, 6e7, 2e8):
        # sizes around each budget's optimum (the tiny grid has only 3: scale them per budget)
        n_opt, _ = law.optimum(budget)
        for k, (label, _) in enumerate(sorted(sizes.items(), key=lambda kv: kv[1])):
            n = n_opt * 10 ** (k - 1)
            d = budget / (6 * n)
            nll = 3.0 - 0.2 * np.log10(budget)
            records.append({"run": f"{budget:.0e}_{label}", "C": budget, "C_actual": budget, "N": n, "D": d,
                            "val_loss": float(law.loss(n, d)), "train_s": 1.0, "eval_s": 0.5,
                            "tasks": {"arith_mc": {"gold_nll_per_char": nll + 0.01 * k, "accuracy": 0.3 + 0.01 * k,
                                                   "chance": 0.25, "n": 8}}})
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    comparison = predict_and_run(recipe, out, log=lambda m: None)
    predicted = json.loads((out / "prediction.json").read_text())
    assert predicted["C"] == pytest.approx(6e8)
    assert predicted["size"] in sizes and "val_loss" in predicted and "arith_mc" in predicted["tasks"]
    measured = comparison["measured"]
    assert measured["role"] == "forecast" and measured["val_loss"] > 0
    assert (out / "runs" / measured["run"] / "metrics.jsonl").is_file()
    for png in ("isoflops.png", "optimal_tokens.png", "forecast_arith_mc.png"):
        assert (out / png).stat().st_size > 1000
    text = report_markdown(comparison, read_runs(out), {"sweep": 1.0})
    assert "Predicted before running" in text and "arith_mc accuracy" in text
