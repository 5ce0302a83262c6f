"""Scores with their uncertainty: every metric is reported with N and a 95% interval.

A 100-item benchmark has a binomial standard error of ~5 points at 50% accuracy, so two models 3
points apart are not distinguishable; the paper reports 95% confidence intervals for the same reason.
Proportions use the Wilson score interval (sane at 0% and 100%, unlike the normal approximation);
continuous metrics (NLL, bits per byte) use mean +- 1.96 standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Metric:
    value: float
    n: int
    low: float
    high: float

    def as_dict(self) -> dict[str, float | int]:
        return {"value": round(self.value, 6), "n": self.n, "ci95": [round(self.low, 6), round(self.high, 6)]}


def proportion(successes: Sequence[bool]) -> Metric:
    """Share of true values with its Wilson 95% interval."""
    n = len(successes)
    if n == 0:
        raise ValueError("no items to score")
    p = sum(bool(s) for s in successes) / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return Metric(p, n, max(0.0, centre - half), min(1.0, centre + half))


def mean(values: Sequence[float]) -> Metric:
    """Mean with a normal-approximation 95% interval (sample standard deviation)."""
    n = len(values)
    if n == 0:
        raise ValueError("no items to score")
    m = sum(values) / n
    if n == 1:
        return Metric(m, 1, m, m)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = Z95 * sd / math.sqrt(n)
    return Metric(m, n, m - half, m + half)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties (as numpy's argmax, which lm-eval uses)."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best
