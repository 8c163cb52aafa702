"""Risk metrics on the CPU: one numba pass per series, parallel over series.

The GPU (:mod:`gpu_trader.kernels.risk`) runs the array formulation of
:class:`gpu_trader._internal.risk_xp.RiskMetrics` on CuPy (one segmented sort for all
series, then reductions). On the CPU that formulation costs ~15 NumPy calls per
metric, too slow for a one-series latency path, and a full sort where a quantile needs
a few order statistics. So here each series is summarized in one compiled loop (valid
count, moments, wealth path and drawdown, win/loss tallies, Sharpe and Sortino ratios)
and, only when a quantile is asked for, the smallest values that the levels read are
found on a scratch copy of the series' valid values by selection, not a sort
(:func:`_sort_smallest`: an insertion scan for a few, else a gathering pass below a
sampled threshold and introselect, O(T) expected and O(T log T) at worst, whatever the
order of the data). The metrics use the same closed forms as
:mod:`gpu_trader._internal.risk_xp` (including its zero-dispersion rule,
:func:`gpu_trader._internal.risk_xp.rounding_residue`, compiled into the loop) and, for the
quantiles, the same order statistics and summation order: historical VaR and CVaR equal
the array formulation's bit for bit. Both formulations are tested against the same
oracles (empyrical, scipy) and against each other.

Semantics, NaN policy and sign conventions: see :mod:`gpu_trader.risk`.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import prange
from numba.extending import register_jitable

from .._internal.jit import njit_cached
from .._internal.risk_xp import cornish_fisher_z, normal_quantile, rounding_residue

# fields of a series summary (the leading index of summarize's result); the historical VaR of each
# level follows, then its CVaR (both as losses). EXCESS is the mean of r - mar, DOWNSIDE the root
# mean square of min(r - mar, 0) (``mar``: summarize's rate); SHARPE and SORTINO are annualized
# with summarize's ``ppy`` and taken at ``mar``
N, MEAN, STD, SKEW, KURT, MDD, WEALTH, EXCESS, DOWNSIDE, KELLY, SHARPE, SORTINO = range(12)
N_FIXED = 12
_rounding_residue = register_jitable(rounding_residue)
_PARALLEL_MIN_VALUES = 50_000  # below this many values the thread pool costs more than it saves
_INSERTION_MAX = 16       # ranges this short are sorted by insertion
_SCAN_MAX_SMALLEST = 32   # up to this many smallest values an insertion scan beats a selection
_SAMPLE = 128             # values sampled to pick _gather_below's threshold
_CACHED_LEVELS = 8        # level grids up to this long keep their array (_level_array)


@njit_cached(nogil=True)
def has_nan(x):
    """Whether ``x`` (any shape and layout) holds a NaN: one branch-free scan (the NaN screen of
    :class:`gpu_trader._internal.series_input.SeriesInput` on the CPU, ~5x ``isnan(x).any()``)."""
    found = False
    for v in x.flat:
        found |= v != v
    return found


@register_jitable
def _insertion_sort(a, lo, hi):
    """Sort ``a[lo:hi]`` ascending in place (no NaN); for short ranges."""
    for i in range(lo + 1, hi):
        v = a[i]
        j = i - 1
        while j >= lo and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@register_jitable
def _sift_down(a, lo, root, end):
    """Restore the max-heap ``a[lo:lo + end]`` (children of ``i`` at ``2i + 1``, ``2i + 2``) below ``root``."""
    v = a[lo + root]
    child = 2 * root + 1
    while child < end:
        if child + 1 < end and a[lo + child + 1] > a[lo + child]:
            child += 1
        if not a[lo + child] > v:
            break
        a[lo + root] = a[lo + child]
        root = child
        child = 2 * root + 1
    a[lo + root] = v


@register_jitable
def _sort(a, lo, hi):
    """Sort ``a[lo:hi]`` ascending in place (no NaN): insertion for short ranges, else heapsort,
    O(n log n) whatever the order (numba's quicksort has no such bound)."""
    n = hi - lo
    if n <= _INSERTION_MAX:
        _insertion_sort(a, lo, hi)
        return
    for root in range(n // 2 - 1, -1, -1):
        _sift_down(a, lo, root, n)
    for end in range(n - 1, 0, -1):
        a[lo], a[lo + end] = a[lo + end], a[lo]
        _sift_down(a, lo, 0, end)


@register_jitable
def _select(a, n, k, rounds):
    """Reorder ``a[:n]`` (no NaN; infinities allowed) so that ``a[k]`` holds the value the sorted
    ``a[:n]`` has at ``k``, with nothing larger before it and nothing smaller after it.

    Introselect: quickselect with a median-of-three pivot and a Hoare partition (which
    splits runs of equal values evenly, so all-equal rows are no worst case); after
    ``rounds`` partitions that have not isolated ``k`` (an adversarial order), the remaining
    range is sorted. With ``rounds`` = :func:`_select_rounds` that is O(n) expected and
    O(n log n) at worst."""
    lo = 0
    hi = n - 1
    while hi - lo > _INSERTION_MAX:
        if rounds == 0:
            _sort(a, lo, hi + 1)
            return
        rounds -= 1
        mid = (lo + hi) >> 1
        # median of a[lo], a[mid], a[hi] into a[lo + 1]; a[lo] <= pivot <= a[hi] guard the scans
        a[mid], a[lo + 1] = a[lo + 1], a[mid]
        if a[lo] > a[hi]:
            a[lo], a[hi] = a[hi], a[lo]
        if a[lo + 1] > a[hi]:
            a[lo + 1], a[hi] = a[hi], a[lo + 1]
        if a[lo] > a[lo + 1]:
            a[lo], a[lo + 1] = a[lo + 1], a[lo]
        pivot = a[lo + 1]
        i = lo + 1
        j = hi
        while True:
            i += 1
            while a[i] < pivot:
                i += 1
            j -= 1
            while a[j] > pivot:
                j -= 1
            if j < i:
                break
            a[i], a[j] = a[j], a[i]
        a[lo + 1] = a[j]
        a[j] = pivot
        # a[lo:j] <= pivot = a[j] <= a[j + 1:hi + 1]
        if j >= k:
            hi = j - 1
        if j <= k:
            lo = i
    _insertion_sort(a, lo, hi + 1)


@register_jitable
def _select_rounds(n):
    """Partition rounds :func:`_select` may take on ``n`` values: ``2 log2(n)``, introselect's bound."""
    return 2 * int(math.log2(n) + 1.0)


@register_jitable
def _gather_below(a, n, m, sample):
    """Move to the front of ``a[:n]`` (no NaN) the values at most a threshold meant to leave a few
    more than the ``m`` smallest, and return how many (a count below ``m``, or ``n``: the threshold
    missed, and ``a[:n]`` still holds every value).

    The threshold is an order statistic of ``sample`` (a scratch array, ``len(sample)`` strided
    values of ``a``) a few standard deviations past the rank where the ``m``-th smallest value is
    expected; one branch-free partition pass (Floyd-Rivest's first step) then moves the values
    at most it to the front."""
    s = sample.shape[0]
    if n < 4 * s:
        return n
    step = n // s
    for i in range(s):
        sample[i] = a[i * step]
    expected = m * s / n
    r = min(s - 1, int(expected + 2.0 * math.sqrt(expected) + 3.0))
    _select(sample, s, r, _select_rounds(s))
    threshold = sample[r]
    c = 0
    for i in range(n):  # Lomuto without branches: a[:c] <= threshold < a[c:i]
        v = a[i]
        a[i] = a[c]
        a[c] = v
        c += v <= threshold
    return c


@register_jitable
def _sort_smallest(a, n, m, sample):
    """Reorder ``a[:n]`` (no NaN, 1 <= m <= n) so that ``a[:m]`` holds its ``m`` smallest values in
    ascending order; ``sample``: scratch for :func:`_gather_below`. Few of them (the tails of
    VaR at usual levels): one insertion scan, a comparison per value and rare inserts; more:
    :func:`_gather_below`, :func:`_select` among the gathered values (all of them when the
    gathering missed), then a sort of ``a[:m]``."""
    if m <= _SCAN_MAX_SMALLEST:
        _insertion_sort(a, 0, m)
        top = a[m - 1]
        for i in range(m, n):
            v = a[i]
            if v < top:
                a[i] = top  # the evicted value stays in a[:n]
                j = m - 2
                while j >= 0 and a[j] > v:
                    a[j + 1] = a[j]
                    j -= 1
                a[j + 1] = v
                top = a[m - 1]
    else:
        gathered = _gather_below(a, n, m, sample)
        if gathered < m:
            gathered = n
        _select(a, gathered, m - 1, _select_rounds(gathered))
        _sort(a, 0, m - 1)  # a[:m - 1] <= a[m - 1]


@register_jitable
def _tail_index(q, n):
    """(index below, interpolation weight) of the ``q`` quantile of ``n`` sorted values (NumPy's
    ``linear`` method); the CVaR tail is the ``index below + 1`` smallest values."""
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    return lo, pos - lo


@register_jitable
def _losses(a, n, q):
    """(historical VaR, CVaR) at tail probability ``q`` of ``n`` values, as losses, from ``a``
    holding their smallest values in ascending order, at least ``_tail_index(q, n)[0] + 2``
    of them (or all ``n``).

    VaR is minus NumPy's ``linear`` quantile with its two-sided lerp (bit for bit
    ``numpy.quantile``); CVaR is minus empyrical's tail mean, the mean of the
    ``floor((n - 1) q) + 1`` smallest values, summed smallest first."""
    lo, t = _tail_index(q, n)
    below = a[lo]
    above = a[min(lo + 1, n - 1)]
    diff = above - below
    quantile = above - diff * (1.0 - t) if t >= 0.5 else below + diff * t
    tail = 0.0
    for i in range(lo + 1):
        tail += a[i]
    return -quantile, -(tail / (lo + 1))


@register_jitable
def _summarize_row(x, qs, mar, ppy, buf, sample, out):
    """Summary of one series ``x`` (NaNs skipped) into ``out`` (one value per field);
    ``buf``: scratch, len(x); ``sample``: scratch for :func:`_sort_smallest`."""
    n = 0
    total = 0.0
    wealth = 1.0
    peak = 1.0
    mdd = 0.0
    excess = 0.0
    down = 0.0
    n_win = 0
    n_loss = 0
    win = 0.0
    loss = 0.0
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            continue
        # branch-free: the signs of returns are a coin flip for the branch predictor
        buf[n] = v
        n += 1
        total += v
        wealth *= 1.0 + v
        peak = max(peak, wealth)
        mdd = max(mdd, 1.0 - wealth / peak)
        a = v - mar
        excess += a
        a_down = min(a, 0.0)
        down += a_down * a_down
        n_win += v > 0.0
        n_loss += v < 0.0
        win += max(v, 0.0)
        loss -= min(v, 0.0)
    nq = qs.shape[0]
    if n == 0:
        out[:] = np.nan
        out[N] = 0.0
        return
    mean = total / n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    for i in range(n):
        d = buf[i] - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
    var_pop = m2 / n
    std = math.sqrt(m2 / (n - 1)) if n > 1 else np.nan
    if _rounding_residue(std, mean, n):  # a constant series: see risk_xp.rounding_residue
        std = 0.0
        out[SKEW] = np.nan
        out[KURT] = np.nan
    else:
        out[SKEW] = (m3 / n) / var_pop ** 1.5
        out[KURT] = (m4 / n) / (var_pop * var_pop) - 3.0
    out[N] = n
    out[MEAN] = mean
    out[STD] = std
    out[MDD] = mdd
    out[WEALTH] = wealth
    excess /= n
    downside = math.sqrt(down / n)
    out[EXCESS] = excess
    out[DOWNSIDE] = downside
    out[SHARPE] = excess / std * math.sqrt(ppy)
    out[SORTINO] = excess / downside * math.sqrt(ppy)
    if n_win > 0 and n_loss > 0:
        p = n_win / (n_win + n_loss)
        out[KELLY] = p - (1.0 - p) * (loss / n_loss) / (win / n_win)
    else:
        out[KELLY] = np.nan
    if nq == 0:
        return
    m = 0  # the smallest values every level reads
    for j in range(nq):
        m = max(m, _tail_index(qs[j], n)[0] + 2)
    _sort_smallest(buf, n, min(m, n), sample)
    for j in range(nq):
        out[N_FIXED + j], out[N_FIXED + nq + j] = _losses(buf, n, qs[j])


@njit_cached(parallel=True, nogil=True, error_model="numpy")
def _summarize_parallel(x, qs, mar, ppy, out):
    for r in prange(x.shape[0]):
        _summarize_row(x[r], qs, mar, ppy, np.empty(x.shape[1]), np.empty(_SAMPLE), out[:, r])


@njit_cached(nogil=True, error_model="numpy")
def _summarize_serial(x, qs, mar, ppy, out):
    buf = np.empty(x.shape[1])
    sample = np.empty(_SAMPLE)
    for r in range(x.shape[0]):
        _summarize_row(x[r], qs, mar, ppy, buf, sample, out[:, r])


def _level_array(qs: tuple[float, ...], normal: bool = False) -> np.ndarray:
    """The tail probabilities ``qs`` (``normal``: their standard normal quantiles) as a read-only
    float64 array. Short grids are kept: levels repeat from call to call, and building the
    array costs as much as a one-series selection (a normal quantile, several times that)."""
    return _cached_level_array(qs, normal) if len(qs) <= _CACHED_LEVELS else _new_level_array(qs, normal)


@functools.lru_cache(maxsize=128)
def _cached_level_array(qs: tuple[float, ...], normal: bool) -> np.ndarray:
    return _new_level_array(qs, normal)


def _new_level_array(qs: tuple[float, ...], normal: bool) -> np.ndarray:
    a = np.array([normal_quantile(p) for p in qs] if normal else qs, dtype=np.float64)
    a.flags.writeable = False
    return a


def summarize(x: np.ndarray, qs: tuple[float, ...] = (), mar: float = 0.0, ppy: float = 252.0) -> np.ndarray:
    """Summaries of every series of ``x`` (..., T) -> (N_FIXED + 2 * len(qs), ...) float64, one
    field per leading index: ``s[SHARPE]`` has the batch shape ``(...)``, and
    ``s[N_FIXED:N_FIXED + len(qs)]`` (VaR) and the next ``len(qs)`` (CVaR) the level grid's
    ``(len(qs), ...)``. ``mar`` (float): the rate of EXCESS, DOWNSIDE, SHARPE and SORTINO;
    ``ppy`` (float): their annualization."""
    rows = x.reshape(-1, x.shape[-1])
    out = np.empty((N_FIXED + 2 * len(qs), rows.shape[0]))
    run = _summarize_parallel if rows.size >= _PARALLEL_MIN_VALUES and rows.shape[0] > 1 else _summarize_serial
    run(rows, _level_array(qs), mar, ppy, out)
    return out.reshape(out.shape[:1] + x.shape[:-1])


def _calmar(s: np.ndarray, ppy: float) -> np.ndarray:
    """Compound annual growth / max drawdown; NaN without a drawdown. NumPy's ``power`` (its SIMD
    kernel may differ from a compiled ``pow`` in the last bit: this keeps RiskMetrics' result)."""
    mdd = s[MDD]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        annual = s[WEALTH] ** (ppy / s[N]) - 1.0
        return np.where(mdd > 0, annual / mdd, np.nan)


def _parametric(s: np.ndarray, qs, cornish_fisher: bool) -> np.ndarray:
    """``-(mean + z std)``; ``-mean`` where the std is 0, as
    :meth:`gpu_trader._internal.risk_xp.RiskMetrics.var_parametric_moments`."""
    z = _level_array(qs, normal=True).reshape((len(qs),) + (1,) * (s.ndim - 1))
    if cornish_fisher:
        z = cornish_fisher_z(z, s[SKEW], s[KURT])
    std = s[STD]
    return -(s[MEAN] + np.where(std == 0, 0.0, z * std))


class _NumbaRiskMetrics:
    """Same methods and results as :class:`gpu_trader._internal.risk_xp.RiskMetrics`."""

    xp = np
    has_nan = staticmethod(has_nan)

    def var_historical(self, x, qs):
        return summarize(x, qs)[N_FIXED:N_FIXED + len(qs)]

    def cvar(self, x, qs):
        return summarize(x, qs)[N_FIXED + len(qs):]

    def var_parametric(self, x, qs, cornish_fisher):
        return _parametric(summarize(x), qs, cornish_fisher)

    def max_drawdown(self, x):
        return summarize(x)[MDD]

    def sharpe(self, x, ppy, rf):
        return summarize(x, (), rf, ppy)[SHARPE]

    def sortino(self, x, ppy, mar):
        return summarize(x, (), mar, ppy)[SORTINO]

    def calmar(self, x, ppy):
        return _calmar(summarize(x), ppy)

    def kelly_fraction(self, x):
        return summarize(x)[KELLY]

    def risk_report(self, x, q, ppy, rf):
        s = summarize(x, (q,), rf, ppy)
        return {
            "n": s[N].astype(np.int64),
            "mean": s[MEAN],
            "volatility": s[STD] * math.sqrt(ppy),
            "var_historical": s[N_FIXED],
            "var_parametric": _parametric(s, (q,), False)[0],
            "var_cornish_fisher": _parametric(s, (q,), True)[0],
            "cvar": s[N_FIXED + 1],
            "max_drawdown": s[MDD],
            "sharpe": s[SHARPE],
            "sortino": s[SORTINO],
            "calmar": _calmar(s, ppy),
            "kelly_fraction": s[KELLY],
        }


metrics = _NumbaRiskMetrics()
