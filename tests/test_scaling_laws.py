"""The scaling-law fits recover known laws (issue 18's "must show")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from herd.scaling.forecast import Sigmoid, fit_linear, fit_sigmoid, forecast
from herd.scaling.laws import (
    FLAG_DOWNWARD,
    FLAG_EDGE,
    PAPER_FIGURE,
    PAPER_TEXT,
    IsoFlopCurve,
    ParametricLaw,
    fit_parametric,
    fit_power_law,
    fit_quadratic,
    fit_sweep,
)

# Chinchilla's published approach-3 constants: a known law to recover
TRUE = ParametricLaw(E=1.69, A=406.4, B=410.7, a=0.34, b=0.28)
BUDGETS = (1e18, 1e19, 1e20, 1e21)


def synthetic_runs(law: ParametricLaw, budgets=BUDGETS, sizes: int = 9) -> list[dict]:
    """For each budget, 9 model sizes spanning +-1 decade around the true optimum, D = C / 6N."""
    runs = []
    for c in budgets:
        n_opt, _ = law.optimum(c)
        for n in n_opt * np.logspace(-1, 1, sizes):
            d = c / (6 * n)
            runs.append({"C": c, "N": float(n), "D": float(d), "val_loss": float(law.loss(n, d))})
    return runs


def test_paper_constants_give_the_papers_token_count():
    assert PAPER_FIGURE.tokens(3.8e25) == pytest.approx(1.629e13, rel=1e-3)
    assert PAPER_TEXT.tokens(3.8e25) == pytest.approx(1.046e13, rel=1e-3)
    # the headline's 6 x 402B x 16.55T is a different budget from the formula's 3.8e25
    assert 6 * 402e9 * 16.55e12 == pytest.approx(3.99e25, rel=1e-3)


def test_exact_quadratic_gives_its_exact_vertex():
    x = np.linspace(-2, 3, 7)
    quad = fit_quadratic(x, 0.7 * (x - 0.4) ** 2 + 2.5)
    vx, vy = quad.vertex
    assert vx == pytest.approx(0.4, abs=1e-9) and vy == pytest.approx(2.5, abs=1e-9)


def test_isoflop_token_exponent_recovers_the_law():
    fit = fit_sweep(synthetic_runs(TRUE), bootstrap=0)
    assert not fit.excluded
    assert fit.law is not None
    assert fit.law.alpha == pytest.approx(TRUE.token_exponent, abs=0.01)


def test_parametric_fit_recovers_the_constants():
    runs = synthetic_runs(TRUE)
    law = fit_parametric([r["N"] for r in runs], [r["D"] for r in runs], [r["val_loss"] for r in runs])
    for name in ("E", "A", "B", "a", "b"):
        assert getattr(law, name) == pytest.approx(getattr(TRUE, name), rel=0.01), name
    assert law.token_exponent == pytest.approx(TRUE.token_exponent, abs=0.01)


def test_power_law_through_exact_points():
    flops = [1e15, 1e16, 1e17, 1e18]
    law = fit_power_law(flops, [PAPER_FIGURE.tokens(c) for c in flops])
    assert law.alpha == pytest.approx(0.537, abs=1e-9) and law.A == pytest.approx(0.299, rel=1e-6)


def test_downward_and_edge_curves_are_flagged():
    d = np.logspace(6, 8, 5)
    downward = IsoFlopCurve(1e15, list(d), list(1e15 / (6 * d)), list(3.0 - 0.1 * (np.log(d) - 16.0) ** 2))
    assert downward.flags == [FLAG_DOWNWARD]
    edge = IsoFlopCurve(1e15, list(d), list(1e15 / (6 * d)), list(3.0 + 0.1 * (np.log(d) - 12.0) ** 2))
    assert edge.flags == [FLAG_EDGE]
    inside = IsoFlopCurve(1e15, list(d), list(1e15 / (6 * d)), list(3.0 + 0.1 * (np.log(d) - np.log(1e7)) ** 2))
    assert inside.flags == [] and inside.tokens_opt == pytest.approx(1e7, rel=1e-6)
    # a flagged budget is kept out of the power law
    runs = synthetic_runs(TRUE)
    runs += [{"C": 5e21, "N": float(n), "D": 5e21 / (6 * n), "val_loss": 2.0 + 0.01 * i}
             for i, n in enumerate(np.logspace(8, 10, 5))]
    fit = fit_sweep(runs, bootstrap=0)
    assert fit.excluded == [5e21]
    assert fit.law.alpha == pytest.approx(TRUE.token_exponent, abs=0.01)


def test_bootstrap_interval_covers_a_noisy_fit():
    rng = np.random.default_rng(0)
    runs = synthetic_runs(TRUE)
    for r in runs:
        r["val_loss"] += float(rng.normal(0, 0.002))
    fit = fit_sweep(runs, bootstrap=200)
    lo, hi = fit.alpha_ci
    assert lo < fit.law.alpha < hi
    assert hi - lo < 0.2


def test_linear_and_sigmoid_come_back():
    x = np.linspace(14, 18, 6)
    line = fit_linear(x, 3.0 - 0.25 * x)
    assert line.slope == pytest.approx(-0.25, abs=0.01) and line.intercept == pytest.approx(3.0, abs=0.01)
    truth = Sigmoid(k=6.0, x0=1.1, chance=0.25)
    nll = np.linspace(0.4, 2.0, 12)
    got = fit_sigmoid(nll, truth(nll), chance=0.25)
    assert got.k == pytest.approx(6.0, abs=0.01) and got.x0 == pytest.approx(1.1, abs=0.01)


def test_forecast_composes_the_two_steps():
    truth_line = lambda lc: 5.0 - 0.3 * lc
    truth_sig = Sigmoid(k=5.0, x0=0.8, chance=0.25)
    flops = np.logspace(12, 15, 8)
    nll = truth_line(np.log10(flops))
    result = forecast(flops, nll, nll, truth_sig(nll), chance=0.25, target_flops=1e17, bootstrap=50)
    expected_nll = truth_line(17.0)
    assert result.nll == pytest.approx(expected_nll, abs=1e-6)
    assert result.accuracy == pytest.approx(float(truth_sig(expected_nll)), abs=1e-4)
    lo, hi = result.accuracy_interval
    assert lo <= result.accuracy + 1e-9 and result.accuracy <= hi + 1e-9
    assert math.isfinite(result.as_dict()["nll_ci"][0])


def test_optimal_values_read_each_curve_at_its_optimum():
    from herd.scaling.laws import optimal_values

    runs = synthetic_runs(TRUE)
    for r in runs:  # a task NLL that is a known quadratic in log D around each budget's optimum
        r["nll"] = 2.0 - 0.1 * math.log10(r["C"]) + 0.05 * (math.log(r["D"]) - math.log(TRUE.optimum(r["C"])[1])) ** 2
    fit = fit_sweep(runs, bootstrap=0)
    points = optimal_values(fit.curves, runs, lambda r: r["nll"])
    for (c, value), curve in zip(points, fit.curves):
        expected = 2.0 - 0.1 * math.log10(c) + 0.05 * (math.log(curve.tokens_opt) - math.log(TRUE.optimum(c)[1])) ** 2
        assert value == pytest.approx(expected, abs=1e-9)
