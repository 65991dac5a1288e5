"""Uncertainty over seeds: Student-t confidence intervals and paired differences (scipy.stats).

A sweep trains every arm with ``n`` seeds; a difference between two arms is a finding only when
its confidence interval excludes 0. For values x_1..x_n (n >= 2):

    mean +- t_{(1 + level) / 2, n - 1} * s / sqrt(n),     s the sample standard deviation

(``scipy.stats.t``). Two arms measured with the same seeds are compared *paired*: the interval and
the two-sided p-value (``scipy.stats.ttest_rel``) are those of the per-seed differences d_i = b_i - a_i,
which removes the variation the seeds share. A per-seed statistic of a curve (the slope of FD
against C_sigma, the curvature of a quadratic fit) is summarised the same way, with ``mean_ci``.
With fewer than two values there is no interval: lo = hi = NaN, and every verdict built on it is
"inconclusive".
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` seeds with its ``level`` confidence interval [lo, hi] (NaN if n < 2) and,
    for a paired difference, the two-sided p-value of mean = 0."""

    mean: float
    lo: float
    hi: float
    n: int
    p: float = float("nan")

    @property
    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)

    @property
    def sign(self) -> int:
        """+1 if the interval lies above 0, -1 if below, 0 if it contains 0 or is undefined."""
        if not self.excludes_zero:
            return 0
        return 1 if self.lo > 0 else -1

    def text(self, digits: int = 3) -> str:
        """``mean [lo, hi]`` (and ``p=`` for a paired difference), for tables."""
        if self.n < 2 or not math.isfinite(self.lo):
            return f"{self.mean:.{digits}g} (n={self.n}, no CI)"
        out = f"{self.mean:.{digits}g} [{self.lo:.{digits}g}, {self.hi:.{digits}g}]"
        return out + (f", p={self.p:.2g}" if math.isfinite(self.p) else "")


def _finite(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    return x[np.isfinite(x)]


def mean_ci(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and Student-t confidence interval of ``values`` (non-finite values dropped)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = float(x.mean())
    if n < 2:
        return Interval(m, float("nan"), float("nan"), n)
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(m, m - half, m + half, n)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Interval:
    """b - a over the seeds both have (``{seed: value}``): mean, t interval and ``ttest_rel`` p-value."""
    seeds = sorted(s for s in set(a) & set(b)
                   if a[s] is not None and b[s] is not None and math.isfinite(a[s]) and math.isfinite(b[s]))
    d = [float(b[s]) - float(a[s]) for s in seeds]
    ci = mean_ci(d, level)
    if len(d) < 2:
        return ci
    if np.allclose(d, d[0]):
        p = 0.0 if d[0] != 0 else 1.0  # no spread: the t statistic is infinite (or undefined at 0)
    else:
        p = float(sps.ttest_rel([float(b[s]) for s in seeds], [float(a[s]) for s in seeds]).pvalue)
    return Interval(ci.mean, ci.lo, ci.hi, ci.n, p)


def per_seed_fit(points: Mapping[int, Sequence[tuple[float, float]]], degree: int) -> dict[int, np.ndarray]:
    """Least-squares polynomial coefficients (highest power first, ``numpy.polyfit``) of y against x
    per seed, for seeds with more than ``degree`` distinct x values."""
    out = {}
    for seed, xy in points.items():
        xy = [(float(x), float(y)) for x, y in xy if math.isfinite(float(y))]
        if len({x for x, _ in xy}) > degree:
            xs, ys = zip(*xy)
            out[seed] = np.polyfit(xs, ys, degree)
    return out
