"""The paper's two-step downstream forecast (section 3.2.1, Figure 4).

Accuracy is a poor thing to extrapolate (it is flat at chance, then jumps), but the normalized negative
log-likelihood of the correct answer moves smoothly with compute. So:
1. NLL per character of the gold answer is linear in log training FLOPs, fitted on small models;
2. accuracy = c + (1 - c) * sigmoid(-k (NLL - x0)) with c the task's chance level, fitted on small
   models plus any larger ones;
and the forecast for a budget C composes them. Intervals come from a bootstrap that redraws the points of
both fits together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Linear:
    """NLL = slope * log10(C) + intercept."""

    slope: float
    intercept: float

    def __call__(self, log10_flops: Any) -> Any:
        return self.slope * np.asarray(log10_flops) + self.intercept


@dataclass(frozen=True)
class Sigmoid:
    """acc = chance + (1 - chance) * sigmoid(-k (nll - x0))."""

    k: float
    x0: float
    chance: float

    def __call__(self, nll: Any) -> Any:
        z = np.clip(-self.k * (np.asarray(nll, dtype=np.float64) - self.x0), -60, 60)
        return self.chance + (1 - self.chance) / (1 + np.exp(-z))


def fit_linear(log10_flops: Sequence[float], nll: Sequence[float]) -> Linear:
    x = np.asarray(log10_flops, dtype=np.float64)
    if len(np.unique(x)) < 2:
        raise ValueError("a line needs at least 2 distinct compute budgets")
    slope, intercept = np.polyfit(x, np.asarray(nll, dtype=np.float64), 1)
    return Linear(float(slope), float(intercept))


def fit_sigmoid(nll: Sequence[float], accuracy: Sequence[float], chance: float,
                start: Sigmoid | None = None) -> Sigmoid:
    """Least squares over (k, x0) with the chance level fixed; from `start`, else from several starting
    points with the best kept."""
    from scipy.optimize import least_squares

    if not 0 <= chance < 1:
        raise ValueError(f"chance must be in [0, 1), got {chance}")
    x = np.asarray(nll, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if len(x) < 2:
        raise ValueError("a sigmoid needs at least 2 points")

    def residual(theta: np.ndarray) -> np.ndarray:
        return Sigmoid(theta[0], theta[1], chance)(x) - y

    spread = float(np.ptp(x)) or 1.0
    starts = ([(start.k, start.x0)] if start is not None else
              [(k, x0) for k in (1.0 / spread, 4.0 / spread, 16.0 / spread) for x0 in np.quantile(x, [0.1, 0.5, 0.9])])
    best = None
    for k, x0 in starts:
        result = least_squares(residual, np.array([k, x0]), bounds=([0.0, -np.inf], [np.inf, np.inf]),
                               xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=200)
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    return Sigmoid(float(best.x[0]), float(best.x[1]), chance)


@dataclass
class Forecast:
    flops: float
    nll: float
    accuracy: float
    nll_interval: tuple[float, float]
    accuracy_interval: tuple[float, float]
    line: Linear
    sigmoid: Sigmoid

    def as_dict(self) -> dict[str, Any]:
        return {"C": self.flops, "nll": self.nll, "accuracy": self.accuracy, "nll_ci": list(self.nll_interval),
                "accuracy_ci": list(self.accuracy_interval),
                "line": {"slope": self.line.slope, "intercept": self.line.intercept},
                "sigmoid": {"k": self.sigmoid.k, "x0": self.sigmoid.x0, "chance": self.sigmoid.chance}}


def forecast(line_flops: Sequence[float], line_nll: Sequence[float], nll: Sequence[float], accuracy: Sequence[float],
             chance: float, target_flops: float, *, bootstrap: int = 500, seed: int = 0,
             level: float = 0.95) -> Forecast:
    """Step 1 on (`line_flops`, `line_nll`) -- the compute-optimal models' gold NLL per budget, or any
    points the caller picks -- step 2 on every (`nll`, `accuracy`) run, composed at `target_flops`.
    Intervals: a residual bootstrap of the line (few points) and a pairs bootstrap of the sigmoid."""
    x = np.log10(np.asarray(line_flops, dtype=np.float64))
    y_line = np.asarray(line_nll, dtype=np.float64)
    y_nll = np.asarray(nll, dtype=np.float64)
    y_acc = np.asarray(accuracy, dtype=np.float64)
    line = fit_linear(x, y_line)
    sig = fit_sigmoid(y_nll, y_acc, chance)
    target = math.log10(target_flops)
    point_nll = float(line(target))
    point_acc = float(sig(point_nll))
    rng = np.random.default_rng(seed)
    residuals = y_line - line(x)
    nlls, accs = [], []
    for _ in range(bootstrap):
        j = rng.choice(len(y_nll), len(y_nll))
        if len(np.unique(y_nll[j])) < 2:
            continue
        b_line = fit_linear(x, line(x) + rng.choice(residuals, len(residuals)))
        b_sig = fit_sigmoid(y_nll[j], y_acc[j], chance, start=sig)
        b_nll = float(b_line(target))
        nlls.append(b_nll)
        accs.append(float(b_sig(b_nll)))
    tail = (1 - level) / 2 * 100
    if nlls:
        nll_iv = tuple(float(v) for v in np.percentile(nlls, [tail, 100 - tail]))
        acc_iv = tuple(float(v) for v in np.percentile(accs, [tail, 100 - tail]))
    else:
        nll_iv, acc_iv = (point_nll, point_nll), (point_acc, point_acc)
    return Forecast(float(target_flops), point_nll, point_acc, nll_iv, acc_iv, line, sig)  # type: ignore[arg-type]


def forecast_task(runs: Sequence[dict[str, Any]], curves: Sequence[Any], task: str, target_flops: float, *,
                  all_runs: bool = False, bootstrap: int = 500) -> tuple[Forecast, list[tuple[float, float]]]:
    """The forecast for a sweep's `task`: step 1 on the compute-optimal gold NLL of each unflagged IsoFLOP
    curve (herd.scaling.laws.optimal_values), or on every run with `all_runs`; step 2 on every run.
    Returns the forecast and step 1's (C, NLL) points."""
    from herd.scaling.laws import optimal_values

    def gold_nll(r: dict[str, Any]) -> float:
        return float(r["tasks"][task]["gold_nll_per_char"])

    good = [c for c in curves if c.ok]
    if all_runs or len(good) < 2:
        points = [(float(r["C_actual"]), gold_nll(r)) for r in runs]
    else:
        points = optimal_values(good, runs, gold_nll)
    result = forecast([c for c, _ in points], [v for _, v in points], [gold_nll(r) for r in runs],
                      [float(r["tasks"][task]["accuracy"]) for r in runs], float(runs[0]["tasks"][task]["chance"]),
                      target_flops, bootstrap=bootstrap)
    return result, points
