"""`herd scaling demo`: an IsoFLOP sweep on the local corpus that predicts before it runs.

Three budgets x five sizes are trained and fitted; then the compute-optimal run at 3x the largest
budget is forecast -- its size (the candidate whose parameter count is nearest the extrapolated N*),
its validation loss (the parametric law at that size and token count) and its task accuracy (the
two-step forecast) -- and only then trained, so the report can set predicted next to measured.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from herd.scaling.forecast import forecast_task
from herd.scaling.laws import fit_power_law, fit_sweep
from herd.scaling.recipe import ScalingRecipe, SizeSpec
from herd.scaling.sweep import (
    non_embedding_params,
    peak_lr,
    plan_runs,
    prepare_data,
    read_runs,
    run_plan,
    run_sweep,
    size_config,
)


def _nearest_size(candidates: list[SizeSpec], target_params: float, vocab: int, seq_len: int) -> SizeSpec:
    return min(candidates, key=lambda z: abs(math.log(non_embedding_params(size_config(z, vocab, seq_len)))
                                             - math.log(target_params)))


def predict_and_run(recipe: ScalingRecipe, out: str | Path, *, factor: float = 3.0,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit the sweep in `out`, forecast the optimum at `factor` x its largest budget, train it, compare."""
    out = Path(out)
    runs = [r for r in read_runs(out) if r.get("role", "sweep") == "sweep"]
    fit = fit_sweep(runs)
    if fit.law is None:
        flagged = ", ".join(f"{c.flops:.0e} ({', '.join(c.flags)})" for c in fit.curves if c.flags)
        raise ValueError(f"fewer than 2 budgets have an upward IsoFLOP curve with an interior minimum "
                         f"(flagged: {flagged}); widen sweep.sizes around the optimum")
    good = [c for c in fit.curves if c.ok]
    target = factor * max(c.flops for c in fit.curves)
    n_law = fit_power_law([c.flops for c in good], [c.params_opt for c in good])
    n_star, d_star = n_law.tokens(target), fit.law.tokens(target)
    tokenizer, sources = prepare_data(recipe, out, log)
    s = recipe.sweep
    size = _nearest_size(list(s.sizes) + list(s.forecast_sizes), n_star, tokenizer.vocab_size, s.seq_len)
    forecast_recipe = replace(recipe, sweep=replace(s, budgets=[target], sizes=[size],
                                                    batch_tokens=[recipe.batch_for(len(s.budgets) - 1)]))
    plans, _ = plan_runs(forecast_recipe, out, sources, tokenizer.vocab_size)
    plan = plans[0]
    # the size's peak LR from the sweep's own rule (a one-size grid would give it the smallest size's)
    # (extrapolated log-linearly in N for a forecast size outside the swept range)
    swept = [non_embedding_params(size_config(z, tokenizer.vocab_size, s.seq_len)) for z in s.sizes]
    lr = peak_lr(recipe, plan.params, min(swept), max(swept))
    plan.config["optim"].update(lr=lr, min_lr=lr * s.final_lr_ratio)
    plan.config["log"]["peak_flops"] = next((r["peak_flops"] for r in runs if r.get("peak_flops")), 0.0)
    predicted: dict[str, Any] = {"C": target, "N_opt": n_star, "D_opt": d_star, "size": size.label(),
                                 "N": plan.params, "D": plan.tokens}
    # the optimum's loss: the IsoFLOP minima's loss as a power law in C, extrapolated; and, as a cross-check
    # that accounts for the size actually trained, the parametric law at the run's (N, D)
    loss_law = fit_power_law([c.flops for c in good], [c.loss_opt for c in good])
    predicted["val_loss"] = float(loss_law.tokens(target))
    if fit.parametric is not None:
        predicted["val_loss_parametric"] = float(fit.parametric.loss(plan.params, plan.tokens))
    task_forecasts, line_points = {}, {}
    for task in s.tasks:
        task_forecasts[task], line_points[task] = forecast_task(runs, fit.curves, task, plan.flops)
    predicted["tasks"] = {t: f.as_dict() for t, f in task_forecasts.items()}
    (out / "prediction.json").write_text(json.dumps(predicted, indent=1) + "\n")
    log(f"predicted before running: {size.label()} (N {plan.params:,}, N* {n_star:,.0f}), D {plan.tokens:,} "
        f"(D* {d_star:,.0f}), val loss {predicted.get('val_loss', float('nan')):.4f}")
    done = {r["run"]: r for r in read_runs(out)}
    measured = done.get(plan.point.name + "_forecast")
    if measured is None:
        plan.config["run"]["out_dir"] = str(out / "runs" / (plan.point.name + "_forecast"))
        measured = run_plan(plan, tokenizer, forecast_recipe, log)
        measured.update(run=plan.point.name + "_forecast", role="forecast")
        with open(out / "runs.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(measured, sort_keys=True) + "\n")
    comparison = {
        "predicted": predicted, "measured": measured, "fit": fit.as_dict(),
        "val_loss_error": abs(predicted["val_loss"] - measured["val_loss"]),
        "accuracy_error": {t: abs(f.accuracy - measured["tasks"][t]["accuracy"]) for t, f in task_forecasts.items()},
    }
    (out / "forecast_check.json").write_text(json.dumps(comparison, indent=1) + "\n")
    from herd.scaling.plots import plot_forecast, plot_isoflops, plot_optimal_tokens

    plot_isoflops(fit, out / "isoflops.png")
    plot_optimal_tokens(fit, out / "optimal_tokens.png", [(plan.flops, plan.tokens, "forecast run")])
    for task, f in task_forecasts.items():
        plot_forecast(runs, task, f, out / f"forecast_{task}.png", line_points[task],
                      measured={"C": measured["C_actual"], "nll": measured["tasks"][task]["gold_nll_per_char"],
                                "accuracy": measured["tasks"][task]["accuracy"]})
    return comparison


def report_markdown(comparison: dict[str, Any], runs: list[dict[str, Any]], wall: dict[str, float]) -> str:
    fit, pred, meas = comparison["fit"], comparison["predicted"], comparison["measured"]
    lines = ["# herd scaling demo", "",
             f"Token law: D* = {fit['A']:.4g} C^{fit['alpha']:.4f}"
             + (f" (95% bootstrap interval of alpha [{fit['alpha_ci'][0]:.3f}, {fit['alpha_ci'][1]:.3f}])"
                if fit.get("alpha_ci") else "")
             + "; the paper: 0.299 C^0.537 (figure), 0.29 C^0.53 (text).", ""]
    if fit.get("parametric"):
        p = fit["parametric"]
        lines += [(f"Parametric cross-check: L = {p['E']:.3f} + {p['A']:.3g}/N^{p['a']:.3f} + {p['B']:.3g}/D^{p['b']:.3f}; "
                   f"implied token exponent a/(a+b) = {p['token_exponent']:.3f}."), ""]
    lines += ["| budget C | D* | N* | loss at the minimum | flags |", "|---:|---:|---:|---:|---|"]
    for b in fit["per_budget"]:
        lines.append(f"| {b['C']:.2e} | {b['D_opt']:,.0f} | {b['N_opt']:,.0f} | {b['loss_opt']:.4f} | "
                     f"{', '.join(b['flags']) or 'ok'} |")
    lines += ["", f"## Predicted before running, at {pred['C']:.2e} FLOPs (3x the largest budget)", "",
              "| quantity | predicted | measured | error |", "|---|---:|---:|---:|"]
    lines.append(f"| validation loss (the IsoFLOP minima's loss extrapolated in C) | {pred['val_loss']:.4f} | "
                 f"{meas['val_loss']:.4f} | {comparison['val_loss_error']:.4f} |")
    if "val_loss_parametric" in pred:
        lines.append(f"| validation loss (parametric law at the run's N {pred['N']:,}, D {pred['D']:,}) | "
                     f"{pred['val_loss_parametric']:.4f} | {meas['val_loss']:.4f} | "
                     f"{abs(pred['val_loss_parametric'] - meas['val_loss']):.4f} |")
    for task, f in pred["tasks"].items():
        m = meas["tasks"][task]
        lines.append(f"| {task} gold NLL/char | {f['nll']:.4f} [{f['nll_ci'][0]:.3f}, {f['nll_ci'][1]:.3f}] | "
                     f"{m['gold_nll_per_char']:.4f} | {abs(f['nll'] - m['gold_nll_per_char']):.4f} |")
        lines.append(f"| {task} accuracy | {f['accuracy']:.3f} [{f['accuracy_ci'][0]:.3f}, {f['accuracy_ci'][1]:.3f}] | "
                     f"{m['accuracy']:.3f} | {abs(f['accuracy'] - m['accuracy']):.3f} |")
    train_s = sum(r.get("train_s", 0) for r in runs)
    eval_s = sum(r.get("eval_s", 0) for r in runs)
    lines += ["", "## Where the time went", "",
              f"{len(runs)} runs: training {train_s:.0f} s, task scoring {eval_s:.0f} s; "
              + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items()) + ".", "",
              "Figures: isoflops.png (Figure 2), optimal_tokens.png (Figure 3), forecast_<task>.png (Figure 4)."]
    return "\n".join(lines) + "\n"


def run_demo(recipe: ScalingRecipe, out: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    out = Path(out)
    t0 = time.perf_counter()
    run_sweep(recipe, out, log=log)
    t1 = time.perf_counter()
    comparison = predict_and_run(recipe, out, log=log)
    t2 = time.perf_counter()
    wall = {"sweep (data + runs)": t1 - t0, "fit + forecast run": t2 - t1}
    text = report_markdown(comparison, read_runs(out), wall)
    (out / "report.md").write_text(text)
    return comparison
