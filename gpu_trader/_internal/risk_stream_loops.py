"""One-bar steps of :class:`gpu_trader.risk_stream.RiskStream`: loop bodies for every book at once.

Plain Python decorated with numba's ``register_jitable``; the CPU backend's area ``risk_stream``
(:mod:`gpu_trader.cpu_fallback.risk_stream`) compiles them into its kernels. Each step keeps the
running state of one quantity and does, in the same order, the float64 operations of the batch
function it stands for, so that the stream equals the batch (see :mod:`gpu_trader.risk_stream`):

* :func:`ewma_step`: the zero-mean EWMA covariance of
  :meth:`gpu_trader._internal.correlation_xp.CorrelationEstimators.ewma_cov` as two recursions
  per pair, ``num <- decay num + x_i x_j`` and ``den <- decay den + 1`` over the bars where both
  assets are valid (both only decay on the others): ``num / den`` is the batch's
  ``sum_t w_t x_i x_j / sum_t w_t``. Only the upper triangle (``i <= j``) is kept. While no bar
  has had some assets valid and others NaN, every pair's ``den`` is the same number, kept once
  (``G_DEN``) instead of ``n^2`` times; the first such bar writes it into the matrix.
* :func:`books_step`: each book's return ``sum_i w_i r_i`` over its held assets (nonzero
  weights, in ascending asset order; NaN when one of them is NaN) and the O(1) recursion of
  its EWMA variance numerator ``w' num w`` (see :func:`book_ewma_variance`).
* :func:`window_replace`: the book's trailing window of returns kept sorted (valid values
  only): the value leaving the window is replaced by the new one and moved to its place,
  O(distance) element moves.
* :func:`series_step`: the running state of the book's return series over all its bars
  (NaNs skipped, as the batch risk functions do): count, sum (the batch's order), Welford
  mean and sum of squared deviations, sum of excess returns, compounded wealth, running
  peak and maximum drawdown (``cpu_fallback.risk._summarize_row``'s operations).

Layout of the state (all float64 unless said; ``B`` books, ``n`` assets, ``W`` window):
``num``, ``den`` ``(n, n)``; ``g`` ``(G_SIZE,)`` the scalars :data:`G_DECAY` ...; ``book``
``(B, BOOK_SIZE)`` the per-book scalars :data:`B_V` ...; ``ring`` ``(B, W)`` the last ``W`` book
returns (NaN included) at ``bar % W``; ``srt`` ``(B, W)`` the valid ones among them sorted
ascending in ``srt[k, :book[k, B_M]]``; the weights in compressed rows ``wptr`` ``(B + 1,)``,
``widx`` ``(nnz,)`` int64 and ``wval`` ``(nnz,)`` (held assets ascending), and transposed
``wt`` ``(n, B)``.
"""
from __future__ import annotations

import math

from numba.extending import register_jitable

from .risk_xp import rounding_residue

__all__ = [
    "G_DECAY", "G_DEN", "G_COMMON", "G_BARS", "G_RF", "G_SQRT_PPY", "G_SIZE",
    "B_V", "B_D", "B_PARTIAL", "B_M", "B_N", "B_TOTAL", "B_MEAN", "B_M2", "B_EXCESS", "B_WEALTH", "B_PEAK",
    "B_MDD", "B_RETURN", "BOOK_SIZE",
    "ewma_step", "books_step", "book_ewma_variance", "window_replace", "series_step", "sharpe_of",
    "parametric_of", "reweight_book",
]

# scalars of g: the EWMA decay per bar, the common EWMA denominator (while G_COMMON is 1), 1.0
# while every pair's denominator is that common one, the number of bars seen; then two constants:
# the per-period risk-free rate and sqrt(periods_per_year)
G_DECAY, G_DEN, G_COMMON, G_BARS, G_RF, G_SQRT_PPY = range(6)
G_SIZE = 6
# per-book scalars: EWMA numerator w' num w and denominator of the book's held pairs (B_PARTIAL
# 1.0 once they differ: then the variance is summed from the matrix), valid returns in the window,
# then the return series' count, sum, Welford mean and M2, excess sum, wealth, peak, max drawdown,
# and the latest return
(B_V, B_D, B_PARTIAL, B_M, B_N, B_TOTAL, B_MEAN, B_M2, B_EXCESS, B_WEALTH, B_PEAK, B_MDD,
 B_RETURN) = range(13)
BOOK_SIZE = 13

_rounding_residue = register_jitable(rounding_residue)


@register_jitable
def ewma_step(x, num, den, g):
    """Advance the EWMA sums of every asset pair by the bar ``x`` ``(n,)`` (NaN: missing)."""
    n = x.shape[0]
    decay = g[G_DECAY]
    valid = 0
    for i in range(n):
        valid += x[i] == x[i]
    if g[G_COMMON] != 0.0 and valid != 0 and valid != n:  # the first bar with some assets missing
        d = g[G_DEN]
        for i in range(n):
            for j in range(i, n):
                den[i, j] = d
        g[G_COMMON] = 0.0
    if g[G_COMMON] != 0.0:
        g[G_DEN] = decay * g[G_DEN] + (1.0 if valid == n else 0.0)
        if valid == n:
            for i in range(n):
                xi = x[i]
                for j in range(i, n):
                    num[i, j] = decay * num[i, j] + xi * x[j]
        else:
            for i in range(n):
                for j in range(i, n):
                    num[i, j] = decay * num[i, j]
        return
    for i in range(n):
        xi = x[i]
        for j in range(i, n):
            p = xi * x[j]
            if p == p:
                num[i, j] = decay * num[i, j] + p
                den[i, j] = decay * den[i, j] + 1.0
            else:
                num[i, j] = decay * num[i, j]
                den[i, j] = decay * den[i, j]


@register_jitable
def books_step(x, wptr, widx, wval, wt, acc, book, decay):
    """Each book's return of the bar ``x`` into ``book[:, B_RETURN]`` and its EWMA variance
    recursion: with all held assets valid ``v <- decay v + ret^2``, ``d <- decay d + 1``; with none
    ``v <- decay v``, ``d <- decay d``; with some missing the held pairs' denominators part ways
    and the book is marked partial (its variance then comes from the matrix).

    A bar of finite returns is summed densely, asset by asset for all books at once over the
    transposed weights ``wt`` ``(n, B)`` into the scratch ``acc`` ``(B,)`` (independent sums the
    compiler vectorizes); an unheld asset adds ``0 * x = +-0``, which leaves a sum started at
    ``+0`` unchanged, so both ways give the same bits. Other bars go through the held assets."""
    n = x.shape[0]
    finite = True
    for i in range(n):
        finite &= math.isfinite(x[i])
    n_books = book.shape[0]
    if finite:
        for k in range(n_books):
            acc[k] = 0.0
        for i in range(n):
            xi = x[i]
            for k in range(n_books):
                acc[k] += wt[i, k] * xi
        for k in range(n_books):
            ret = acc[k]
            book[k, B_V] = decay * book[k, B_V] + ret * ret
            book[k, B_D] = decay * book[k, B_D] + 1.0
            book[k, B_RETURN] = ret
        return
    for k in range(n_books):
        ret = 0.0
        valid = 0
        for p in range(wptr[k], wptr[k + 1]):
            v = x[widx[p]]
            ret += wval[p] * v
            valid += v == v
        held = wptr[k + 1] - wptr[k]
        if valid == held:
            book[k, B_V] = decay * book[k, B_V] + ret * ret
            book[k, B_D] = decay * book[k, B_D] + 1.0
        else:
            book[k, B_V] = decay * book[k, B_V]
            book[k, B_D] = decay * book[k, B_D]
            if valid != 0:
                book[k, B_PARTIAL] = 1.0
            ret = math.nan
        book[k, B_RETURN] = ret


@register_jitable
def _pair(num, den, common, d, i, j):
    """``num / den`` of the pair ``i <= j`` (the common denominator ``d`` when ``common``)."""
    return num[i, j] / (d if common else den[i, j])


@register_jitable
def book_ewma_variance(k, wptr, widx, wval, num, den, g, book):
    """Book ``k``'s variance ``w' S w`` over its held assets with ``S`` the EWMA covariance
    (NaN where a held pair has no common valid bar): ``v / d`` while its held pairs share one
    denominator, else summed from the matrix, O(held^2)."""
    if book[k, B_PARTIAL] == 0.0:
        return book[k, B_V] / book[k, B_D]
    common = g[G_COMMON] != 0.0
    d = g[G_DEN]
    total = 0.0
    for p in range(wptr[k], wptr[k + 1]):
        i = widx[p]
        wi = wval[p]
        total += wi * wi * _pair(num, den, common, d, i, i)
        cross = 0.0
        for q in range(p + 1, wptr[k + 1]):
            cross += wval[q] * _pair(num, den, common, d, i, widx[q])
        total += 2.0 * wi * cross
    return total


@register_jitable
def reweight_book(k, wptr, widx, wval, num, den, g, book):
    """Restart book ``k``'s EWMA variance recursion for new weights: ``v = w' num w`` and ``d``
    the held pairs' denominator, or partial when those differ."""
    common = g[G_COMMON] != 0.0
    start, stop = wptr[k], wptr[k + 1]
    if common:
        d = g[G_DEN]
    elif start == stop:  # nothing held: the return is 0 on every bar, its variance 0
        d = 1.0
    else:
        d = den[widx[start], widx[start]]
    v = 0.0
    partial = 0.0
    for p in range(start, stop):
        i = widx[p]
        wi = wval[p]
        v += wi * wi * num[i, i]
        for q in range(p + 1, stop):
            v += 2.0 * wi * wval[q] * num[i, widx[q]]
            if not common and den[i, widx[q]] != d:
                partial = 1.0
        if not common and den[i, i] != d:
            partial = 1.0
    book[k, B_V] = v
    book[k, B_D] = d
    book[k, B_PARTIAL] = partial


@register_jitable
def window_replace(srt, m, old, new):
    """Sorted window ``srt[:m]`` (valid values, ascending) with ``old`` (NaN: none) leaving and
    ``new`` (NaN: none) entering; returns the new count of valid values."""
    if old == old:
        lo, hi = 0, m - 1  # the leftmost position holding old (it is there)
        while lo < hi:
            mid = (lo + hi) >> 1
            if srt[mid] < old:
                lo = mid + 1
            else:
                hi = mid
        p = lo
        if new == new:  # replace in place, then move the new value to its rank
            while p + 1 < m and srt[p + 1] < new:
                srt[p] = srt[p + 1]
                p += 1
            while p > 0 and srt[p - 1] > new:
                srt[p] = srt[p - 1]
                p -= 1
            srt[p] = new
            return m
        for i in range(p, m - 1):
            srt[i] = srt[i + 1]
        return m - 1
    if new == new:
        p = m
        while p > 0 and srt[p - 1] > new:
            srt[p] = srt[p - 1]
            p -= 1
        srt[p] = new
        return m + 1
    return m


@register_jitable
def series_step(b, v, rf):
    """Add the return ``v`` (NaN: skipped) to the series state ``b`` (one book's row)."""
    if v != v:
        return
    n = b[B_N] + 1.0
    b[B_N] = n
    b[B_TOTAL] += v
    delta = v - b[B_MEAN]
    b[B_MEAN] += delta / n
    b[B_M2] += delta * (v - b[B_MEAN])
    b[B_EXCESS] += v - rf
    wealth = b[B_WEALTH] * (1.0 + v)
    b[B_WEALTH] = wealth
    b[B_PEAK] = max(b[B_PEAK], wealth)
    b[B_MDD] = max(b[B_MDD], 1.0 - wealth / b[B_PEAK])


@register_jitable
def _std(b):
    """Sample standard deviation (ddof 1) of the series; 0 for a constant one (rounding residue,
    :func:`gpu_trader._internal.risk_xp.rounding_residue`), NaN below two values."""
    n = b[B_N]
    if n < 2.0:
        return math.nan
    std = math.sqrt(b[B_M2] / (n - 1.0))
    return 0.0 if _rounding_residue(std, b[B_TOTAL] / n, n) else std


@register_jitable
def sharpe_of(b, sqrt_ppy):
    """``mean(r - rf) / std(r) * sqrt(ppy)`` of the series (NaN below two values)."""
    std = _std(b)
    if std != std:
        return math.nan
    return (b[B_EXCESS] / b[B_N]) / std * sqrt_ppy


@register_jitable
def parametric_of(b, z):
    """``-(mean + z std)`` of the series (``-mean`` for a zero std; NaN below two values)."""
    std = _std(b)
    if std != std:
        return math.nan
    mean = b[B_TOTAL] / b[B_N]
    return -(mean + (0.0 if std == 0.0 else z * std))
