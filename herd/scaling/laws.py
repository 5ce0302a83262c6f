"""Compute-optimal scaling laws from IsoFLOP sweeps (the paper, section 3.2.1; Chinchilla's approaches 2 and 3).

For each compute budget C the runs trade model size N against training tokens D (C ~ 6ND). Validation
loss against log D is fitted with a second-degree polynomial; its vertex is the compute-optimal point
(D*, and N* from the same fit in log N). Across budgets, D*(C) = A * C^alpha is a straight line in log
space. The paper reports the law in **training tokens**: (alpha, A) = (0.537, 0.299) in its figure and
(0.53, 0.29) in its text -- the two disagree (1.629e13 vs 1.046e13 tokens at 3.8e25 FLOPs), which is why
the tests check the formula rather than the "402B" headline.

A curve that does not open upward, or whose vertex falls outside the sampled range, says the grid
missed the optimum; such curves are flagged (and kept out of the power-law fit) instead of silently
extrapolated. A parametric cross-check, L(N, D) = E + A/N^a + B/D^b fitted with a Huber loss on log L
(Chinchilla's approach 3), implies D* ~ C^(a/(a+b)) under C = 6ND; its exponent is reported next to the
IsoFLOP one so a disagreement is visible.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FLAG_DOWNWARD = "opens downward"
STARTS = 12  # L-BFGS starts of the parametric fit (the best of its starting grid)
FLAG_EDGE = "minimum at the grid's edge"


@dataclass(frozen=True)
class PowerLaw:
    """Compute-optimal training tokens D*(C) = A * C^alpha."""

    alpha: float
    A: float

    def tokens(self, flops: float) -> float:
        return self.A * flops ** self.alpha


PAPER_FIGURE = PowerLaw(alpha=0.537, A=0.299)  # Llama 3 paper, Figure 3
PAPER_TEXT = PowerLaw(alpha=0.53, A=0.29)      # Llama 3 paper, section 3.2.1 text


@dataclass(frozen=True)
class Quadratic:
    """y = a x^2 + b x + c."""

    a: float
    b: float
    c: float

    @property
    def vertex(self) -> tuple[float, float]:
        """(x, y) of the turning point (a minimum when a > 0)."""
        x = -self.b / (2 * self.a) if self.a != 0 else math.nan
        return x, self(x)

    def __call__(self, x: Any) -> Any:
        return self.a * np.square(x) + self.b * np.asarray(x) + self.c


def fit_quadratic(x: Sequence[float], y: Sequence[float]) -> Quadratic:
    """Least-squares second-degree polynomial (needs at least 3 distinct x)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(np.unique(xs)) < 3:
        raise ValueError(f"a quadratic needs at least 3 distinct points, got {len(np.unique(xs))}")
    a, b, c = np.polyfit(xs, ys, 2)
    return Quadratic(float(a), float(b), float(c))


@dataclass
class IsoFlopCurve:
    """One budget's runs and their quadratic fits (in natural-log tokens and natural-log parameters)."""

    flops: float
    tokens: list[float]
    params: list[float]
    losses: list[float]
    in_tokens: Quadratic = field(init=False)
    in_params: Quadratic = field(init=False)
    flags: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if not len(self.tokens) == len(self.params) == len(self.losses):
            raise ValueError("tokens, params and losses must have one entry per run")
        self.in_tokens = fit_quadratic(np.log(self.tokens), self.losses)
        self.in_params = fit_quadratic(np.log(self.params), self.losses)
        self.flags = curve_flags(self.in_tokens, np.log(self.tokens), self.losses)

    @property
    def ok(self) -> bool:
        return not self.flags

    @property
    def tokens_opt(self) -> float:
        return float(math.exp(self.in_tokens.vertex[0]))

    @property
    def params_opt(self) -> float:
        return float(math.exp(self.in_params.vertex[0]))

    @property
    def loss_opt(self) -> float:
        return float(self.in_tokens.vertex[1])

    def summary(self) -> dict[str, Any]:
        return {"C": self.flops, "D_opt": self.tokens_opt, "N_opt": self.params_opt, "loss_opt": self.loss_opt,
                "runs": len(self.tokens), "flags": list(self.flags)}


def curve_flags(quad: Quadratic, x: Sequence[float], y: Sequence[float]) -> list[str]:
    """Why a curve's vertex is not a trustworthy optimum: it opens downward, or its minimum is not inside
    the sampled range (the vertex outside it, or the lowest measured loss at either end)."""
    if quad.a <= 0:
        return [FLAG_DOWNWARD]
    xs = np.asarray(x, dtype=np.float64)
    lowest = int(np.argmin(np.asarray(y)))
    vertex = quad.vertex[0]
    order = np.argsort(xs)
    if not xs.min() < vertex < xs.max() or lowest in (order[0], order[-1]):
        return [FLAG_EDGE]
    return []


def fit_power_law(flops: Sequence[float], tokens: Sequence[float]) -> PowerLaw:
    """(alpha, A) of D = A * C^alpha by least squares in log space (needs at least 2 budgets)."""
    c, d = np.log(np.asarray(flops, dtype=np.float64)), np.log(np.asarray(tokens, dtype=np.float64))
    if len(np.unique(c)) < 2:
        raise ValueError("a power law needs at least 2 distinct compute budgets")
    alpha, log_a = np.polyfit(c, d, 1)
    return PowerLaw(float(alpha), float(math.exp(log_a)))


def bootstrap_power_law(curves: Sequence[IsoFlopCurve], samples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile intervals of (alpha, A) by a residual bootstrap: each resample adds every curve's
    quadratic-fit residuals, redrawn with replacement, to its fitted losses, refits the quadratics and the
    power law through the new optima. (Redrawing the runs themselves is degenerate with five runs per
    budget: a draw often keeps three sizes on one side of the minimum.) Draws whose curve opens downward
    are redrawn."""
    rng = np.random.default_rng(seed)
    alphas, amps = [], []
    tries = 0
    prepared = []
    for curve in curves:
        x = np.log(np.asarray(curve.tokens, dtype=np.float64))
        fitted = curve.in_tokens(x)
        prepared.append((x, fitted, np.asarray(curve.losses, dtype=np.float64) - fitted))
    while len(alphas) < samples and tries < samples * 20:
        tries += 1
        optima = []
        for x, fitted, residuals in prepared:
            quad = fit_quadratic(x, fitted + rng.choice(residuals, len(residuals)))
            if quad.a <= 0:
                break
            optima.append(math.exp(quad.vertex[0]))
        else:
            law = fit_power_law([c.flops for c in curves], optima)
            alphas.append(law.alpha)
            amps.append(law.A)
    if not alphas:
        raise ValueError("no bootstrap resample gave an upward curve for every budget")
    tail = (1 - level) / 2 * 100
    lo_a, hi_a = np.percentile(alphas, [tail, 100 - tail])
    lo_A, hi_A = np.percentile(amps, [tail, 100 - tail])
    return (float(lo_a), float(hi_a)), (float(lo_A), float(hi_A))


def optimal_values(curves: Sequence[IsoFlopCurve], runs: Sequence[dict[str, Any]], value: Any) -> list[tuple[float, float]]:
    """(C, value at the compute-optimal point) per curve: `value(run)` (a task's gold NLL, say) fitted by a
    quadratic in log tokens over the budget's runs and read at that budget's D* -- the paper's step 1
    uses compute-optimal models, not every run of the grid."""
    points = []
    for curve in curves:
        rs = sorted((r for r in runs if float(r["C"]) == curve.flops), key=lambda r: r["D"])
        x = np.log([float(r["D"]) for r in rs])
        quad = fit_quadratic(x, [float(value(r)) for r in rs])
        points.append((curve.flops, float(quad(math.log(curve.tokens_opt)))))
    return points


# ---------------------------------------------------------------------------------------------------
# Chinchilla approach 3: L(N, D) = E + A / N^a + B / D^b


@dataclass(frozen=True)
class ParametricLaw:
    E: float
    A: float
    B: float
    a: float
    b: float

    def loss(self, params: Any, tokens: Any) -> Any:
        return self.E + self.A / np.power(params, self.a) + self.B / np.power(tokens, self.b)

    @property
    def token_exponent(self) -> float:
        """D* ~ C^(a/(a+b)) when C = 6ND."""
        return self.a / (self.a + self.b)

    def optimum(self, flops: float) -> tuple[float, float]:
        """(N*, D*) minimising the loss at C = 6ND (closed form)."""
        g = (self.a * self.A / (self.b * self.B)) ** (1 / (self.a + self.b))
        n_opt = g * (flops / 6) ** (self.b / (self.a + self.b))
        return n_opt, flops / (6 * n_opt)


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def fit_parametric(params: Sequence[float], tokens: Sequence[float], losses: Sequence[float],
                   delta: float = 1e-3) -> ParametricLaw:
    """Minimise sum Huber_delta(LSE(log A - a log N, log B - b log D, log E) - log L) with L-BFGS from a
    grid of starting points (Hoffmann et al. 2022, approach 3) and return the best fit."""
    from scipy.optimize import minimize

    log_n = np.log(np.asarray(params, dtype=np.float64))
    log_d = np.log(np.asarray(tokens, dtype=np.float64))
    log_l = np.log(np.asarray(losses, dtype=np.float64))
    if len(log_l) < 5:
        raise ValueError(f"the parametric law has 5 constants; got {len(log_l)} runs")

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        la, lb, le, a, b = theta
        terms = np.stack([la - a * log_n, lb - b * log_d, np.full_like(log_n, le)])
        top = terms.max(axis=0)
        weights = np.exp(terms - top)
        total = weights.sum(axis=0)
        pred = top + np.log(total)
        r = pred - log_l
        grad_r = np.where(np.abs(r) <= delta, r, delta * np.sign(r))
        soft = weights / total  # d pred / d term
        grad = np.array([
            np.sum(grad_r * soft[0]), np.sum(grad_r * soft[1]), np.sum(grad_r * soft[2]),
            np.sum(grad_r * soft[0] * -log_n), np.sum(grad_r * soft[1] * -log_d),
        ])
        return float(_huber(r, delta).sum()), grad

    # Chinchilla's grid of starting points, ranked by their objective; L-BFGS from the best few
    grid = [np.array(p) for p in itertools.product(np.arange(0.0, 30.0, 5.0), np.arange(0.0, 30.0, 5.0),
                                                   (-1.0, -0.5, 0.0, 0.5, 1.0), np.arange(0.0, 2.5, 0.5) + 0.05,
                                                   np.arange(0.0, 2.5, 0.5) + 0.05)]
    grid.sort(key=lambda theta: objective(theta)[0])
    best = None
    for theta in grid[:STARTS]:
        result = minimize(objective, theta, jac=True, method="L-BFGS-B",
                          bounds=[(-20, 40), (-20, 40), (-5, 5), (1e-3, 3), (1e-3, 3)],
                          options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    la, lb, le, a, b = best.x
    return ParametricLaw(E=float(math.exp(le)), A=float(math.exp(la)), B=float(math.exp(lb)), a=float(a), b=float(b))


# ---------------------------------------------------------------------------------------------------
# The whole fit of a sweep


@dataclass
class ScalingFit:
    curves: list[IsoFlopCurve]
    law: PowerLaw | None
    alpha_ci: tuple[float, float] | None
    A_ci: tuple[float, float] | None
    parametric: ParametricLaw | None
    excluded: list[float]  # budgets whose curve was flagged (not in the power-law fit)

    def as_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.law.alpha if self.law else None, "A": self.law.A if self.law else None,
            "alpha_ci": list(self.alpha_ci) if self.alpha_ci else None,
            "A_ci": list(self.A_ci) if self.A_ci else None,
            "per_budget": [c.summary() for c in self.curves],
            "excluded_budgets": self.excluded,
            "parametric": ({**asdict(self.parametric), "token_exponent": self.parametric.token_exponent}
                           if self.parametric else None),
            "paper": {"figure": asdict(PAPER_FIGURE), "text": asdict(PAPER_TEXT)},
        }


def fit_sweep(runs: Sequence[dict[str, Any]], *, bootstrap: int = 1000, seed: int = 0) -> ScalingFit:
    """Fit a sweep's records (dicts with "C", "N", "D", "val_loss"): IsoFLOP curves per budget, the
    power law through the unflagged optima, its bootstrap interval, and the parametric cross-check."""
    by_budget: dict[float, list[dict[str, Any]]] = {}
    for r in runs:
        by_budget.setdefault(float(r["C"]), []).append(r)
    curves = []
    for flops in sorted(by_budget):
        rs = sorted(by_budget[flops], key=lambda r: r["D"])
        if len({r["D"] for r in rs}) < 3:
            continue
        curves.append(IsoFlopCurve(flops, [float(r["D"]) for r in rs], [float(r["N"]) for r in rs],
                                   [float(r["val_loss"]) for r in rs]))
    if not curves:
        raise ValueError("no budget has 3 or more finished runs of different sizes")
    good = [c for c in curves if c.ok]
    law = fit_power_law([c.flops for c in good], [c.tokens_opt for c in good]) if len(good) >= 2 else None
    alpha_ci = A_ci = None
    if law is not None and bootstrap > 0:
        try:
            alpha_ci, A_ci = bootstrap_power_law(good, samples=bootstrap, seed=seed)
        except ValueError:
            pass
    parametric = None
    if len(runs) >= 5:
        parametric = fit_parametric([r["N"] for r in runs], [r["D"] for r in runs], [r["val_loss"] for r in runs])
    return ScalingFit(curves, law, alpha_ci, A_ci, parametric, [c.flops for c in curves if not c.ok])
