"""The one-step primitives of ``gpu_trader._internal.indicator_loops``.

The row bodies, the chunked scans and the streaming updates all call these, so
their results are checked end to end elsewhere (TA-Lib, stream vs batch, scan vs
rows). Here: each primitive gives the same bits compiled by numba as run as plain
Python (the CUDA simulator runs them as Python), on ordinary and special values,
and the edge semantics their docstrings promise.
"""
from __future__ import annotations

import itertools
import math

import numba
import numpy as np
import pytest

from gpu_trader._internal import indicator_loops
from gpu_trader._internal.indicator_specs import SPECS

SPECIAL = [0.0, -0.0, 1.0, -2.5, 1e-300, 3e300, math.inf, -math.inf, math.nan]


def _floats(n, seed):
    rng = np.random.default_rng(seed)
    values = list(rng.normal(0.0, 100.0, n)) + SPECIAL
    return [float(v) for v in values]


# primitive -> argument tuples (floats, with the integer arguments the callers pass)
def _cases():
    f = _floats(6, 0)
    pairs = list(itertools.product(f[:4] + SPECIAL[::2], repeat=2))
    return {
        "sma_step": [(a, b, c, p) for (a, b), c, p in zip(pairs, itertools.cycle(f), itertools.cycle([1, 3, 20]))],
        "ema_step": [(a, b, 2.0 / 21) for a, b in pairs],
        "wma_divider": [(p,) for p in (1, 2, 7, 200)],
        "wma_add": [(a, b, c, w) for (a, b), c, w in zip(pairs, itertools.cycle(f), itertools.cycle([1, 5]))],
        "wma_push": [(a, b, c, d, 14) for (a, b), (c, d) in zip(pairs, reversed(pairs))],
        "rsi_add": [(abs(a), abs(b), c) for (a, b), c in zip(pairs, itertools.cycle(f))],
        "rsi_step": [(abs(a), abs(b), c, 14, 1.0 / 14) for (a, b), c in zip(pairs, itertools.cycle(f))],
        "rsi_ratio": [(abs(a), abs(b)) for a, b in pairs],
        "shifted_add": [(a, b, c, 3.0) for (a, b), c in zip(pairs, itertools.cycle(f))],
        "shifted_variance": [(a, abs(b), 0.05) for a, b in pairs],
        "bbands_step": [(a, 1.0, b, abs(c), d, e, 20, 0.05)
                        for (a, b), c, (d, e) in zip(pairs, itertools.cycle(f), reversed(pairs))],
        "bbands_reseeded": [(a, abs(b), c, 2.0, 0.2) for (a, b), c in zip(pairs, itertools.cycle(f))],
        "bbands_bands": [(a, abs(b), 2.0) for a, b in pairs],
        "true_range": [(a, b, c) for (a, b), c in zip(pairs, itertools.cycle(f))],
        "atr_coefficients": [(p,) for p in (1, 2, 14, 1000)],
        "atr_step": [(a, abs(b), 1.0 / 14, 13.0 / 14) for a, b in pairs],
        "stoch_k": [(a, b, c) for (a, b), c in zip(pairs, itertools.cycle(f + [0.0]))],
        "obv_step": [(a, b, c, 5.0) for (a, b), c in zip(pairs, itertools.cycle(f))],
        "typical_pv": [(a, b, c, 10.0) for (a, b), c in zip(pairs, itertools.cycle(f))],
        "vwap_add": [(1.0, 2.0, 1, a, b) for a, b in pairs],
        "vwap_remove": [(1.0, 2.0, 1, a, b) for a, b in pairs],
        "vwap_value": [(a, b, n) for (a, b), n in zip(pairs, itertools.cycle([0, 1]))],
    }


CASES = _cases()


def _bits(value):
    values = value if isinstance(value, tuple) else (value,)
    return tuple(np.float64(v).tobytes() if not isinstance(v, (bool, np.bool_)) else bool(v) for v in values)


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_equals_python_bitwise(name):
    fn = getattr(indicator_loops, name)
    compiled = numba.njit(fn)
    with np.errstate(all="ignore"):
        for args in CASES[name]:
            try:
                want = fn(*args)
            except ZeroDivisionError:  # Python raises where numba returns inf/nan
                continue
            assert _bits(compiled(*args)) == _bits(want), (name, args)


def test_edge_semantics():
    assert indicator_loops.stoch_k(5.0, 1.0, 0.0) == 0.0  # flat window
    assert math.isnan(indicator_loops.vwap_value(1.0, 2.0, 1))  # a non-finite bar in the window
    assert math.isnan(indicator_loops.vwap_value(1.0, 0.0, 0))  # no volume
    assert indicator_loops.vwap_add(1.0, 2.0, 0, math.nan, 3.0) == (1.0, 2.0, 1)
    assert indicator_loops.vwap_remove(1.0, 2.0, 1, math.inf, 3.0) == (1.0, 2.0, 0)
    assert indicator_loops.true_range(3.0, 1.0, math.nan) == 2.0  # NaN terms lose the comparisons
    alpha, beta = indicator_loops.atr_coefficients(14)
    assert alpha + beta == 1.0
    # re-seed: a variance below 1e-12 of var2 / period (cancellation residue) is floored to 0
    assert indicator_loops.shifted_variance(1.0, 1.0 + 2.0**-52, 1.0) > 0.0
    assert indicator_loops.bbands_reseeded(1.0, 1.0 + 2.0**-52, 0.0, 0.0, 1.0)[2] == 0.0
    upper, middle, lower = indicator_loops.bbands_bands(10.0, 4.0, 1.5)
    assert (upper, middle, lower) == (13.0, 10.0, 7.0)
    # the drift test fires when a large value leaves the window
    *_, drifted = indicator_loops.bbands_step(0.0, 0.0, 0.0, 1.0, 0.0, 1e9, 2, 0.5)
    assert drifted


@pytest.mark.parametrize("fastk", [1, 2, 5, 16])
def test_stoch_direct_extremes_equal_tracked_bit_for_bit(fastk):
    """The branch-free window min/max must give TA_STOCH's tracked extremes exactly,
    ties (prices on a tick grid) and infinities included."""
    rng = np.random.default_rng(fastk)
    close = np.round(100 + np.cumsum(rng.normal(0, 0.3, 400)), 1)
    high = close + np.round(rng.uniform(0, 0.5, 400), 1)
    low = close - np.round(rng.uniform(0, 0.5, 400), 1)
    high[50:55] = high[50]  # a flat stretch: ties everywhere
    low[50:55] = low[50]
    high[200] = np.inf
    direct = np.full(400, -1.0)
    tracked = np.full(400, -1.0)
    windows = np.full(400, -1.0)
    indicator_loops.stoch_raw_direct(high, low, close, fastk - 1, fastk, direct)
    indicator_loops.stoch_raw_tracked(high, low, close, 0, fastk - 1, tracked)
    indicator_loops.stoch_raw_windows(high, low, close, fastk - 1, fastk, np.empty(400), windows)
    np.testing.assert_array_equal(direct.view(np.int64), tracked.view(np.int64))
    np.testing.assert_array_equal(windows.view(np.int64), tracked.view(np.int64))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_has_nan2_sees_a_nan_in_either_input_from_begin_on(dtype):
    """has_nan2 looks at a[begin:] and b[begin:] only, compiled and as plain Python alike."""
    compiled = numba.njit(lambda a, b, begin: indicator_loops.has_nan2(a, b, begin))
    for n in (1, 2, 7, 64, 333):
        for where in sorted({0, min(1, n - 1), n // 2, n - 1}):
            for begin in sorted({0, where, min(where + 1, n)}):
                for nan_in_b in (False, True):
                    a = np.arange(n, dtype=dtype)
                    b = np.arange(n, dtype=dtype) + 0.5
                    a[n - 1] = np.inf  # an infinity is no NaN
                    (b if nan_in_b else a)[where] = np.nan
                    expected = where >= begin
                    assert indicator_loops.has_nan2(a, b, begin) == expected
                    assert compiled(a, b, begin) == expected


# parameter sets of the four-series bodies' test: period 1 (a copy), short and usual windows;
# MACD with fast > slow (swapped) and signal 1 (a copy of the line)
FOUR_SERIES_PARAMS = {
    "sma": [(1,), (2,), (20,)],
    "ema": [(1,), (2,), (14,)],
    "rsi": [(2,), (14,)],
    "macd": [(12, 26, 9), (5, 3, 1), (2, 4, 3), (1, 1, 1)],
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(FOUR_SERIES_PARAMS))
def test_four_series_bodies_equal_the_row_body_bit_for_bit(name, dtype):
    """The CPU driver's interleaved bodies (dispatch4) give each series exactly what its row
    body gives: series starting at different bars (late listings), all-NaN and too-short
    series (the whole group falls back), interior NaNs and infinities, period 1."""
    code = SPECS[name][0]
    row = getattr(indicator_loops, f"{name}_row")

    @numba.njit
    def four(x, params, out):
        handled = True
        for i in range(0, x.shape[0], 4):
            handled &= indicator_loops.dispatch4(code, x, i, params, out)
        return handled

    @numba.njit
    def one(x, params, out):
        for i in range(x.shape[0]):
            row(x[i], params, out[:, i])

    rng = np.random.default_rng(5)
    for T in (1, 2, 9, 40, 300):
        x = (100 + np.cumsum(rng.normal(0, 1, (16, T)), -1)).astype(dtype)
        for i in range(16):
            kind = i % 8
            if kind == 1:
                x[i, : T // 3] = np.nan  # a late listing
            elif kind == 2:
                x[i, : 2 * T // 3] = np.nan
            elif kind == 3 and i > 8:
                x[i] = np.nan  # all NaN: its group falls back
            elif kind == 5:
                x[i, T // 2] = np.nan
            elif kind == 6:
                x[i, T // 2] = np.inf
        for values in FOUR_SERIES_PARAMS[name]:
            params = np.array(values, dtype=np.float64)
            got = np.full((SPECS[name][2],) + x.shape, -1.0, dtype=dtype)
            want = np.full_like(got, -1.0)
            assert four(x, params, got)
            one(x, params, want)
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8), err_msg=f"{T=} {values=}")
    wma_code = SPECS["wma"][0]
    assert not numba.njit(lambda x, p, o: indicator_loops.dispatch4(wma_code, x, 0, p, o))(
        x, np.array([3.0]), np.empty((1,) + x.shape, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stoch_smooth_equals_two_sma_passes_bit_for_bit(dtype):
    """stoch_smooth (both of TA_STOCH's SMAs in one loop, %D overwriting the staged raw %K behind
    slow %K's window) stores exactly what the two ma_into passes store from its first output on,
    for any first bar and periods >= 2, with NaNs and infinities in the raw %K (a NaN poisons
    both running sums from there on), and in float32 (each stage rounded on store)."""

    @numba.njit
    def fused(out, first_k, slowk, slowd):
        indicator_loops.stoch_smooth(out[0], out[1], first_k, slowk, slowd)

    @numba.njit
    def two_passes(out, first_k, slowk, slowd):
        indicator_loops.ma_into(out[1], first_k, slowk, out[0])
        indicator_loops.ma_into(out[0], first_k + slowk - 1, slowd, out[1])

    rng = np.random.default_rng(11)
    for T in (3, 4, 9, 40, 257):
        raw = rng.uniform(0.0, 100.0, T)
        if T > 9:
            raw[T // 2] = np.nan if T % 2 else np.inf
        for slowk, slowd in ((2, 2), (3, 3), (2, 7), (7, 2), (5, 4)):
            for first_k in sorted({0, 1, T // 3}):
                start = first_k + slowk + slowd - 2
                if start >= T:
                    continue
                got = np.full((2, T), -1.0, dtype=dtype)
                got[1] = raw
                want = got.copy()
                fused(got, first_k, slowk, slowd)
                two_passes(want, first_k, slowk, slowd)
                np.testing.assert_array_equal(got[:, start:].view(np.uint8), want[:, start:].view(np.uint8),
                                              err_msg=f"{T=} {slowk=} {slowd=} {first_k=}")


@numba.njit
def _row_forms(code, first, lo, c, params, out, float64_rows):
    """dispatch_rows over every series; ``first``: the indicator's first input (BBANDS: closes)."""
    handled = True
    for s in range(c.shape[0]):
        handled &= indicator_loops.dispatch_rows(code, first[s], lo[s], c[s], params, out, 0, s, float64_rows)
    return handled


@numba.njit
def _bbands_body(h, lo, c, params, out):
    for s in range(c.shape[0]):
        indicator_loops.bbands_row(c[s], params, out[:, s])


@numba.njit
def _stoch_body(h, lo, c, params, out):
    for s in range(c.shape[0]):
        indicator_loops.stoch_row(h[s], lo[s], c[s], params, out[:, s])


ROW_FORM_PARAMS = {
    "bollinger": [(1, 2.0), (2, 1.0), (5, 2.5), (20, 2.0)],
    "stoch": [(1, 1, 1), (1, 3, 2), (5, 3, 3), (5, 1, 4), (14, 3, 3), (16, 2, 2), (17, 3, 3), (30, 5, 1)],
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(ROW_FORM_PARAMS))
def test_row_forms_equal_the_row_body_bit_for_bit(name, dtype):
    """The CPU's contiguous-row forms (dispatch_rows: BBANDS staged into float64 rows and its
    bands in a second pass, STOCH's window extremes in elementwise passes) store exactly the
    row body's bits: zeros of both signs, flat stretches, late listings, NaNs in highs/lows
    (the tracked path) and in closes, infinities, windows past STOCH_DIRECT_MAX, short series.
    BBANDS into float32 rows is not handled (returns False)."""
    code, _, n_out, _ = SPECS[name]
    float64_rows = dtype == np.float64
    body = _bbands_body if name == "bollinger" else _stoch_body
    rng = np.random.default_rng(7)
    for T in (1, 3, 17, 60, 400):
        c = np.round(np.cumsum(rng.normal(0, 0.5, (12, T)), -1), 1)
        c[0] = 0.0  # zeros of both signs: the sign of a zero extreme must agree
        c[0, ::3] = -0.0
        h = c + np.round(rng.uniform(0, 0.5, (12, T)), 1)
        lo = c - np.round(rng.uniform(0, 0.5, (12, T)), 1)
        h[0], lo[0] = np.where(np.arange(T) % 2, 0.0, -0.0), np.where(np.arange(T) % 3, -0.0, 0.0)
        h[1, T // 4 : T // 2] = h[1, T // 4]  # a flat stretch
        lo[1, T // 4 : T // 2] = lo[1, T // 4]
        c[1, T // 4 : T // 2] = lo[1, T // 4]
        h[2, : T // 3] = lo[2, : T // 3] = c[2, : T // 3] = np.nan  # a late listing
        h[3, T // 2] = np.nan  # the tracked path
        c[4, T // 2] = np.nan
        # a zero low of either sign, a -0.0 close and positive highs: (close - lowest) keeps the
        # sign of the window's first zero low, so the scan order of every window must agree
        lo[7], c[7], h[7] = rng.choice([0.0, -0.0, 0.5], T), -0.0, 1.0
        h[5, T // 3] = np.inf
        c[6, T // 3] = 1e300
        h, lo, c = (a.astype(dtype) for a in (h, lo, c))
        for values in ROW_FORM_PARAMS[name]:
            params = np.array(values, dtype=np.float64)
            got = np.full((n_out,) + c.shape, -1.0, dtype=dtype)
            want = np.full_like(got, -1.0)
            if name == "bollinger" and not float64_rows:
                assert not _row_forms(code, c if name == "bollinger" else h, lo, c, params, got, float64_rows)
                continue
            assert _row_forms(code, c if name == "bollinger" else h, lo, c, params, got, float64_rows)
            body(h, lo, c, params, want)
            np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8), err_msg=f"{T=} {values=}")
