"""`herd scaling sweep | fit | forecast | demo`: IsoFLOP sweeps, the compute-optimal law, the forecast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from herd.cli_args import add_out_arg
from herd.config import add_recipe_arguments, add_set_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("scaling", help="scaling laws: IsoFLOP sweeps, the compute-optimal fit, forecasts",
                              description="The paper's section 3.2.1: sweep budgets x model sizes, fit the "
                                          "compute-optimal token law, forecast downstream accuracy.")
    sub = p.add_subparsers(dest="scaling_command", required=True, metavar="SUBCOMMAND")

    s = sub.add_parser("sweep", help="run every (budget, size) pretraining run of a recipe (resumable)",
                       description="Each grid point is an ordinary pretraining run; a relaunch on the same --out "
                                   "skips finished runs and resumes an unfinished one from its checkpoint.")
    add_recipe_arguments(s, "sweep.budgets=[1e11,3e11]")
    add_out_arg(s, None, "sweep directory (runs.jsonl, runs/, data/)")
    s.set_defaults(func=run_sweep_cmd)

    f = sub.add_parser("fit", help="IsoFLOP quadratics, the token power law with bootstrap intervals, the "
                                   "parametric cross-check; writes isoflops.png and optimal_tokens.png")
    f.add_argument("dir", help="a sweep directory (holding runs.jsonl)")
    f.add_argument("--json", action="store_true", help="print the fit as JSON")
    f.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    f.set_defaults(func=run_fit_cmd)

    c = sub.add_parser("forecast", help="two-step downstream forecast: gold NLL linear in log FLOPs, then a "
                                        "sigmoid to accuracy; writes forecast_<task>.png")
    c.add_argument("dir", help="a sweep directory (holding runs.jsonl)")
    c.add_argument("--task", required=True, help="a task the sweep scored (sweep.tasks)")
    c.add_argument("--target-flops", type=float, required=True, help="the budget to forecast, e.g. 1e13")
    c.add_argument("--all-runs", action="store_true",
                   help="fit step 1 on every run (default: each budget's compute-optimal model, as the paper)")
    c.add_argument("--json", action="store_true", help="print the forecast as JSON")
    c.set_defaults(func=run_forecast_cmd)

    d = sub.add_parser("demo", help="3 budgets x 5 sizes on the local corpus, then predict and train the "
                                    "optimum at 3x the largest budget (<= 20 min on 2 CPU cores)")
    d.add_argument("--recipe", default=None, help="scaling recipe (default: herd/scaling/demo.toml, shipped with herd)")
    add_out_arg(d, "runs/scaling-demo", "demo directory")
    add_set_argument(d, "sweep.task_limit=50")
    d.set_defaults(func=run_demo_cmd)


def _load(path: str | None, overrides: list[str]):  # type: ignore[no-untyped-def]
    from herd.scaling.recipe import load_scaling_recipe

    if path is None:
        path = str(Path(__file__).with_name("demo.toml"))
    return load_scaling_recipe(path, overrides)


def _log(message: str) -> None:
    print(message, flush=True)


def run_sweep_cmd(args: argparse.Namespace) -> int:
    from herd.config import print_recipe
    from herd.scaling.sweep import run_sweep

    recipe = _load(args.config, args.overrides)
    if args.print_config:
        print_recipe(recipe, args.config)
        return 0
    runs = run_sweep(recipe, args.out, log=_log)
    print(f"{len(runs)} runs in {args.out}/runs.jsonl; next: herd scaling fit {args.out}")
    return 0


def _sweep_runs(directory: str) -> list[dict]:
    from herd.cli_args import UsageError
    from herd.scaling.sweep import read_runs

    runs = [r for r in read_runs(directory) if r.get("role", "sweep") == "sweep"]
    if not runs:
        raise UsageError(f"{directory} has no finished runs (no {directory}/runs.jsonl lines); run `herd scaling sweep`")
    return runs


def run_fit_cmd(args: argparse.Namespace) -> int:
    from herd.cli_args import UsageError
    from herd.scaling.laws import fit_sweep
    from herd.scaling.plots import plot_isoflops, plot_optimal_tokens

    try:
        fit = fit_sweep(_sweep_runs(args.dir), bootstrap=args.bootstrap)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plot_isoflops(fit, Path(args.dir) / "isoflops.png")
    plot_optimal_tokens(fit, Path(args.dir) / "optimal_tokens.png")
    if args.json:
        print(json.dumps(fit.as_dict(), indent=1))
        return 0
    for c in fit.curves:
        print(f"C {c.flops:.2e}: D* {c.tokens_opt:,.0f} tokens, N* {c.params_opt:,.0f} parameters, loss {c.loss_opt:.4f}"
              + (f"  [{', '.join(c.flags)}: not in the power law]" if c.flags else ""))
    if fit.law:
        ci = f", alpha 95% interval [{fit.alpha_ci[0]:.3f}, {fit.alpha_ci[1]:.3f}]" if fit.alpha_ci else ""
        print(f"D*(C) = {fit.law.A:.4g} * C^{fit.law.alpha:.4f}{ci} (the paper: 0.299 * C^0.537)")
    else:
        print("no power law: fewer than 2 budgets have an upward curve with an interior minimum", file=sys.stderr)
    if fit.parametric:
        p = fit.parametric
        print(f"parametric: L = {p.E:.3f} + {p.A:.4g}/N^{p.a:.3f} + {p.B:.4g}/D^{p.b:.3f}; "
              f"token exponent a/(a+b) = {p.token_exponent:.3f}")
    print(f"wrote {args.dir}/isoflops.png and optimal_tokens.png")
    return 0


def run_forecast_cmd(args: argparse.Namespace) -> int:
    from herd.cli_args import UsageError
    from herd.scaling.forecast import forecast_task
    from herd.scaling.laws import fit_sweep
    from herd.scaling.plots import plot_forecast

    runs = _sweep_runs(args.dir)
    missing = [r["run"] for r in runs if args.task not in r.get("tasks", {})]
    if missing:
        known = sorted(runs[0].get("tasks", {}))
        raise UsageError(f"--task {args.task} was not scored in runs {missing[:3]}; the sweep scored {known}")
    try:
        curves = [] if args.all_runs else fit_sweep(runs, bootstrap=0).curves
        result, points = forecast_task(runs, curves, args.task, args.target_flops, all_runs=args.all_runs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    png = plot_forecast(runs, args.task, result, Path(args.dir) / f"forecast_{args.task}.png", points)
    if args.json:
        print(json.dumps({**result.as_dict(), "step1_points": points}, indent=1))
        return 0
    basis = "every run" if args.all_runs or len(points) == len(runs) else f"{len(points)} compute-optimal points"
    print(f"{args.task} at {args.target_flops:.2e} FLOPs: gold NLL/char {result.nll:.4f} "
          f"[{result.nll_interval[0]:.4f}, {result.nll_interval[1]:.4f}] (step 1 on {basis}), accuracy "
          f"{result.accuracy:.3f} [{result.accuracy_interval[0]:.3f}, {result.accuracy_interval[1]:.3f}] "
          f"(chance {result.sigmoid.chance:.2f})")
    print(f"wrote {png}")
    return 0


def run_demo_cmd(args: argparse.Namespace) -> int:
    from herd.cli_args import UsageError
    from herd.scaling.demo import run_demo

    recipe = _load(args.recipe, args.overrides)
    try:
        comparison = run_demo(recipe, args.out, log=_log)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print((Path(args.out) / "report.md").read_text())
    err = comparison.get("val_loss_error")
    print(f"validation loss: predicted vs measured differ by {err:.4f} nats" if err is not None else "")
    return 0
