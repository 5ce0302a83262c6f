"""The paper's scaling-law figures as PNGs: IsoFLOP curves (Figure 2), compute-optimal tokens against
budget (Figure 3), and the two forecast steps (Figure 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from herd.scaling.forecast import Forecast
from herd.scaling.laws import PAPER_FIGURE, ScalingFit


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:  # type: ignore[no-untyped-def]
    """Legend, layout, write the PNG, free the figure."""
    for ax in fig.axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return Path(path)


def plot_isoflops(fit: ScalingFit, path: str | Path) -> Path:
    """Figure 2: validation loss against training tokens per budget, each with its quadratic and minimum."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(fit.curves)))
    for curve, color in zip(fit.curves, colors):
        x = np.log(curve.tokens)
        ax.scatter(curve.tokens, curve.losses, color=color, s=18, zorder=3)
        grid = np.linspace(x.min() - 0.3, x.max() + 0.3, 100)
        label = f"{curve.flops:.0e} FLOPs" + (f" ({', '.join(curve.flags)})" if curve.flags else "")
        ax.plot(np.exp(grid), curve.in_tokens(grid), color=color, lw=1.2, ls="--" if curve.flags else "-", label=label)
        if curve.in_tokens.a > 0:
            ax.scatter([curve.tokens_opt], [curve.loss_opt], color=color, marker="*", s=120, edgecolor="k", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title("IsoFLOP curves (stars: compute-optimal)")
    return _save(fig, path)


def plot_optimal_tokens(fit: ScalingFit, path: str | Path, extra: list[tuple[float, float, str]] = ()) -> Path:  # type: ignore[assignment]
    """Figure 3: compute-optimal tokens against budget with the fitted power law (and the paper's, for its
    slope); `extra` adds (C, D, label) points such as a forecast run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    good = [c for c in fit.curves if c.ok]
    ax.scatter([c.flops for c in good], [c.tokens_opt for c in good], color="C0", zorder=3, label="IsoFLOP minima")
    bad = [c for c in fit.curves if not c.ok]
    if bad:
        ax.scatter([c.flops for c in bad], [c.tokens_opt for c in bad], color="C3", marker="x", label="flagged (not fitted)")
    budgets = [c.flops for c in fit.curves] + [e[0] for e in extra]
    lo, hi = min(budgets) / 2, max(budgets) * 2
    grid = np.logspace(np.log10(lo), np.log10(hi), 50)
    if fit.law is not None:
        ci = f" [{fit.alpha_ci[0]:.3f}, {fit.alpha_ci[1]:.3f}]" if fit.alpha_ci else ""
        ax.plot(grid, fit.law.tokens(grid), color="C0", label=f"fit: {fit.law.A:.3g} C^{fit.law.alpha:.3f}{ci}")
        # the paper's exponent through this sweep's middle budget, for comparison of slopes
        mid = float(np.exp(np.mean(np.log([c.flops for c in good]))))
        scale = fit.law.tokens(mid) / PAPER_FIGURE.tokens(mid)
        ax.plot(grid, scale * PAPER_FIGURE.tokens(grid), color="gray", ls=":", label="paper's slope (0.537)")
    for c, d, label in extra:
        ax.scatter([c], [d], marker="D", color="C2", zorder=4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("compute-optimal training tokens")
    return _save(fig, path)


def plot_forecast(runs: list[dict[str, Any]], task: str, result: Forecast, path: str | Path,
                  line_points: list[tuple[float, float]] = (), measured: dict[str, float] | None = None) -> Path:  # type: ignore[assignment]
    """Figure 4: (left) gold-answer NLL per character against FLOPs with the line; (right) accuracy
    against that NLL with the sigmoid; the forecast (and, when given, the measured run) marked on both."""
    plt = _pyplot()
    flops = np.array([r["C_actual"] for r in runs])
    nll = np.array([r["tasks"][task]["gold_nll_per_char"] for r in runs])
    acc = np.array([r["tasks"][task]["accuracy"] for r in runs])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.scatter(flops, nll, s=18, alpha=0.5, label="runs")
    if line_points:
        left.scatter([c for c, _ in line_points], [v for _, v in line_points], s=40, color="C0", edgecolor="k",
                     label="compute-optimal (step 1)")
    grid = np.logspace(np.log10(flops.min()) - 0.2, np.log10(max(result.flops, flops.max())) + 0.2, 50)
    left.plot(grid, result.line(np.log10(grid)), color="C1", label="linear in log C")
    left.errorbar([result.flops], [result.nll], yerr=[[result.nll - result.nll_interval[0]],
                                                     [result.nll_interval[1] - result.nll]],
                  fmt="D", color="C2", capsize=4, label="forecast")
    right.scatter(nll, acc, s=18, label="runs")
    x = np.linspace(min(nll.min(), result.nll) - 0.1, nll.max() + 0.1, 100)
    right.plot(x, result.sigmoid(x), color="C1", label="sigmoid")
    right.errorbar([result.nll], [result.accuracy], yerr=[[result.accuracy - result.accuracy_interval[0]],
                                                          [result.accuracy_interval[1] - result.accuracy]],
                   fmt="D", color="C2", capsize=4, label="forecast")
    if measured:
        left.scatter([measured["C"]], [measured["nll"]], marker="*", s=150, color="C3", label="measured")
        right.scatter([measured["nll"]], [measured["accuracy"]], marker="*", s=150, color="C3", label="measured")
    left.set_xscale("log")
    left.set_xlabel("training FLOPs")
    left.set_ylabel(f"{task}: gold-answer NLL per character")
    right.set_xlabel(f"{task}: gold-answer NLL per character")
    right.set_ylabel("accuracy")
    right.axhline(result.sigmoid.chance, color="gray", ls=":", lw=1)
    right.invert_xaxis()
    return _save(fig, path)
