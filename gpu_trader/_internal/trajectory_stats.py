"""The statistics of :meth:`gpu_trader.trajectories.TrajectoryStore.verdict`: a weighted mean of
neighbours' outcomes with a Student-t confidence interval (host NumPy float64, no SciPy).

* :func:`similarity_weights`: kernel weights of the ``k`` neighbours from their scores;
* :func:`weighted_interval`: weighted mean, standard error, effective sample size and the
  two-sided t-interval at a confidence level;
* :func:`student_t_quantile`: the Student-t quantile for real degrees of freedom >= 1 (Hill's
  algorithm 396 as the start, polished by Newton steps on the exact tail probability, the
  regularized incomplete beta function by its continued fraction).
"""
from __future__ import annotations

import math

import numpy as np

from .risk_xp import normal_quantile

__all__ = ["similarity_weights", "weighted_interval", "student_t_quantile"]


def similarity_weights(scores: np.ndarray, metric: str, temperature: float | None) -> np.ndarray:
    """Weights ``(k,)`` float64 summing to 1 for neighbours with these search ``scores`` ``(k,)``.

    ``temperature`` None: uniform weights. Otherwise a softmax of the similarity at that
    temperature: ``w_i ∝ exp(s_i / temperature)`` for cosine and inner-product scores,
    ``exp(-d_i / temperature)`` for squared l2 distances (computed relative to the best
    score, so no overflow)."""
    s = np.asarray(scores, np.float64)
    if temperature is None:
        return np.full(s.shape, 1.0 / s.size)
    sim = -s if metric == "l2" else s
    w = np.exp((sim - sim.max()) / temperature)
    return w / w.sum()


def weighted_interval(values: np.ndarray, weights: np.ndarray, level: float):
    """``(mean, std_error, n_eff, low, high)`` of ``values`` ``(k,)`` under ``weights`` ``(k,)``
    (non-negative, summing to 1).

    ``mean = Σ w y``; ``n_eff = 1 / Σ w²`` (Kish's effective sample size, ``k`` for uniform
    weights); the variance is the reliability-weighted unbiased one,
    ``Σ w (y - mean)² / (1 - Σ w²)``, and ``std_error = sqrt(variance / n_eff)`` (for uniform
    weights the textbook ``s / sqrt(k)``); the interval is ``mean ± t · std_error`` with ``t``
    the Student-t quantile at ``(1 + level) / 2`` with ``n_eff - 1`` degrees of freedom.
    With ``n_eff - 1 < 1`` (one neighbour carries all the weight) the error and the
    interval are NaN."""
    y = np.asarray(values, np.float64)
    w = np.asarray(weights, np.float64)
    mean = float(w @ y)
    sum_sq = float(w @ w)
    n_eff = 1.0 / sum_sq
    if n_eff - 1.0 < 1.0 - 1e-9:
        return mean, math.nan, n_eff, math.nan, math.nan
    variance = float(w @ (y - mean) ** 2) / (1.0 - sum_sq)
    se = math.sqrt(variance / n_eff)
    half = student_t_quantile((1.0 + level) / 2.0, max(n_eff - 1.0, 1.0)) * se
    return mean, se, n_eff, mean - half, mean + half


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (``0.5 <= p < 1``) of Student's t with ``df >= 1`` (real) degrees of
    freedom, to about 1e-10 relative: Newton's method on ``P(T > t) = 1 - p`` from Hill's
    approximation (:func:`_hill_start`)."""
    if p <= 0.5:
        return 0.0
    t = _hill_start(p, df)
    log_norm = math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    for _ in range(50):
        density = math.exp(log_norm - (df + 1.0) / 2.0 * math.log1p(t * t / df))
        step = (_upper_tail(t, df) - (1.0 - p)) / density
        t = max(t + step, t / 2.0)  # the tail is convex for t > 0: steps from below undershoot, never cross 0
        if abs(step) <= 1e-12 * t:
            break
    return t


def _upper_tail(t: float, df: float) -> float:
    """``P(T > t)`` for ``t >= 0``: half the regularized incomplete beta ``I_{df/(df+t²)}(df/2, 1/2)``."""
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300

    def guard(v: float) -> float:
        return tiny if abs(v) < tiny else v

    c, d = 1.0, 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, 500):
        for aa in (m * (b - m) * x / ((a - 1.0 + 2 * m) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1.0 + 2 * m))):
            d = 1.0 / guard(1.0 + aa * d)
            c = guard(1.0 + aa / c)
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _hill_start(p: float, df: float) -> float:
    """Hill (1970), "Algorithm 396: Student's t-quantiles", CACM 13(10), for the two-tailed
    probability ``2 (1 - p)`` (good to ~1e-4 for ``df >= 2.5``, a start below that)."""
    tail = 2.0 * (1.0 - p)
    a = 1.0 / (df - 0.5)
    b = 48.0 / (a * a)
    c = ((20700.0 * a / b - 98.0) * a - 16.0) * a + 96.36
    d = ((94.5 / (b + c) - 3.0) / b + 1.0) * math.sqrt(a * math.pi / 2.0) * df
    y = (d * tail) ** (2.0 / df)
    if y > 0.05 + a:  # asymptotic inverse expansion about the normal
        x = normal_quantile(tail * 0.5)
        y = x * x
        if df < 5.0:
            c += 0.3 * (df - 4.5) * (x + 0.6)
        c = (((0.05 * d * x - 5.0) * x - 7.0) * x - 2.0) * x + b + c
        y = (((((0.4 * y + 6.3) * y + 36.0) * y + 94.5) / c - y - 3.0) / b + 1.0) * x
        y = math.expm1(a * y * y)
    else:
        y = ((1.0 / (((df + 6.0) / (df * y) - 0.089 * d - 0.822) * (df + 2.0) * 3.0)
              + 0.5 / (df + 4.0)) * y - 1.0) * (df + 1.0) / (df + 2.0) + 1.0 / y
    return math.sqrt(df * y)
