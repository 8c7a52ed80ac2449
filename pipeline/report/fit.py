"""Saturating power laws per line, acc(C) = a - b * (C / C0) ** -c (C: training FLOPs, C0:
the sweep's geometric-mean budget, so b is the gap to the ceiling there), fitted with
scipy's curve_fit on every seed's run; and the budget where two fitted lines cross."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.report.data import Line


@dataclass
class Fit:
    a: float  # ceiling (accuracy as C grows)
    b: float  # gap to the ceiling at C0
    c: float  # exponent
    errors: tuple[float, float, float]  # one standard error each (inf when the points cannot tell)
    c0: float
    points: int

    @property
    def determined(self) -> bool:
        """Whether the runs pin the curve down: the ceiling known to within 25 pp and the
        exponent to within max(1, c). Scattered or flat points give a curve through them
        whose parameters could be anything (seen: a = 100% ± 1e6%); such a curve is neither
        drawn nor used to place a crossing."""
        a_err, _, c_err = self.errors
        return a_err <= 0.25 and c_err <= max(1.0, self.c)

    def __call__(self, flops: np.ndarray | float) -> np.ndarray | float:
        return self.a - self.b * (np.asarray(flops) / self.c0) ** (-self.c)

    def text(self) -> str:
        def pm(value: float, err: float, scale: float = 1.0) -> str:
            return f"{value * scale:.3g} ± {err * scale:.2g}" if math.isfinite(err) else f"{value * scale:.3g} (± n/a)"

        return (f"a = {pm(self.a, self.errors[0], 100)}%, b = {pm(self.b, self.errors[1], 100)}%, "
                f"c = {pm(self.c, self.errors[2])} ({self.points} runs)")


def _law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * x ** (-c)


def fit_line(line: Line, c0: float) -> Fit | None:
    """The fit of one line over all its seeds' runs; None with fewer than 3 budgets (a
    3-parameter curve through 2 budgets says nothing) or when the fit does not converge."""
    from scipy.optimize import curve_fit

    if len(line.points) < 3:
        return None
    x = np.array([f for p in line.points for f in p.flops]) / c0
    y = np.array([v for p in line.points for v in p.values])
    guess = (min(1.0, float(y.max()) + 0.05), max(1e-3, float(y.max() - y.min())), 0.5)
    try:
        params, cov = curve_fit(_law, x, y, p0=guess, bounds=([0.0, 0.0, 0.0], [1.0, 10.0, 3.0]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    with np.errstate(invalid="ignore"):
        errors = tuple(float(e) if np.isfinite(e) else math.inf for e in np.sqrt(np.diag(cov)))
    return Fit(*(float(v) for v in params), errors=errors, c0=c0, points=len(y))


def crossing(f1: Fit, f2: Fit, low: float, high: float) -> float | None:
    """The budget in [low, high] where the two fitted curves cross (the first, on a log grid),
    or None when one stays above the other."""
    from scipy.optimize import brentq

    grid = np.geomspace(low, high, 200)
    diff = f1(grid) - f2(grid)
    signs = np.sign(diff)
    for i in range(len(grid) - 1):
        if signs[i] != 0 and signs[i] != signs[i + 1]:
            return float(brentq(lambda c: float(f1(c) - f2(c)), grid[i], grid[i + 1]))
    return None


def c0_of(lines: list[Line]) -> float:
    """The geometric mean of every measured budget: the fits' reference compute."""
    flops = [f for line in lines for p in line.points for f in p.flops if f > 0]
    return float(np.exp(np.mean(np.log(flops)))) if flops else 1.0
