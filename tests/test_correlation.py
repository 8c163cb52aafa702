"""Covariance/correlation against NumPy, pandas and scikit-learn, on every backend."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hs
from sklearn.covariance import LedoitWolf

import gpu_trader as gt
from gpu_trader import correlation as corrmod

from conftest import on_backend

AREA = "correlation"  # the backends that implement it run these tests (conftest.py)

TOL = dict(rtol=1e-10, atol=1e-12)


def returns(n: int, t: int, seed: int = 0, nan_frac: float = 0.0) -> np.ndarray:
    """Correlated returns: a common factor plus noise, ~1 % scale, optional NaN holes."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(0.0005, 0.01, t)
    r = 0.6 * factor + rng.normal(0.0002, 0.01, (n, t)) * rng.uniform(0.5, 2.0, (n, 1))
    if nan_frac:
        r[rng.random(r.shape) < nan_frac] = np.nan
    return r


def close(actual, expected, **tol):
    np.testing.assert_allclose(gt.to_numpy(actual), expected, equal_nan=True, **(tol or TOL))


@pytest.mark.parametrize("nan_frac", [0.0, 0.1])
@pytest.mark.parametrize("min_periods", [1, 200])
def test_cov_corr_match_pandas(backend, nan_frac, min_periods):
    r = returns(8, 252, seed=1, nan_frac=nan_frac)
    df = pd.DataFrame(r.T)
    rb = on_backend(backend, r)
    close(corrmod.cov(rb, min_periods=min_periods, backend=backend), df.cov(min_periods=min_periods).to_numpy())
    close(corrmod.corr(rb, min_periods=min_periods, backend=backend), df.corr(min_periods=min_periods).to_numpy())


def test_complete_data_matches_numpy(backend):
    r = returns(6, 100, seed=2)
    rb = on_backend(backend, r)
    close(corrmod.cov(rb, backend=backend), np.cov(r))
    close(corrmod.cov(rb, ddof=0, backend=backend), np.cov(r, ddof=0))
    close(corrmod.corr(rb, backend=backend), np.corrcoef(r))


@pytest.mark.filterwarnings("ignore:Degrees of freedom")
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=hs.integers(1, 6), t=hs.integers(1, 40), seed=hs.integers(0, 2**32 - 1),
       nan_frac=hs.sampled_from([0.0, 0.3]), min_periods=hs.integers(1, 5))
def test_random_shapes_and_holes(backend, n, t, seed, nan_frac, min_periods):
    r = returns(n, t, seed=seed, nan_frac=nan_frac)
    assume((~np.isnan(r)).sum(-1).min() >= 1)  # an all-NaN series is an error (test_bad_input)
    df = pd.DataFrame(r.T)
    rb = on_backend(backend, r)
    with np.errstate(all="ignore"):
        close(corrmod.cov(rb, min_periods=min_periods, backend=backend),
              df.cov(min_periods=min_periods).to_numpy(), rtol=1e-9, atol=1e-12)
        close(corrmod.corr(rb, min_periods=min_periods, backend=backend),
              df.corr(min_periods=min_periods).to_numpy(), rtol=1e-9, atol=1e-9)


def test_batch_axes_float32_noncontiguous(backend):
    r = returns(2 * 3 * 5, 120, seed=3, nan_frac=0.05).reshape(2, 3, 5, 120)
    got = gt.to_numpy(corrmod.corr(on_backend(backend, r), backend=backend))
    assert got.shape == (2, 3, 5, 5)
    for i in range(2):
        for j in range(3):
            close(got[i, j], pd.DataFrame(r[i, j].T).corr().to_numpy())
    got32 = corrmod.cov(on_backend(backend, r.astype(np.float32)), backend=backend)
    assert got32.dtype == np.float32
    close(got32[1, 2], pd.DataFrame(r[1, 2].T.astype(np.float32).astype(np.float64)).cov().to_numpy(),
          rtol=1e-5, atol=1e-9)
    strided = np.asfortranarray(returns(4, 300, seed=4))[:, ::3]
    close(corrmod.corr(on_backend(backend, strided), backend=backend), np.corrcoef(strided))


@pytest.mark.parametrize("nan_frac, min_periods", [(0.0, None), (0.08, None), (0.08, 5)])
def test_rolling_corr_matches_pandas(backend, nan_frac, min_periods):
    r = returns(5, 260, seed=5, nan_frac=nan_frac)
    window = 21
    ref = pd.DataFrame(r.T).rolling(window, min_periods=min_periods).corr().to_numpy()
    ref = ref.reshape(260, 5, 5).transpose(1, 2, 0)
    got = gt.to_numpy(corrmod.rolling_corr(on_backend(backend, r), window, min_periods=min_periods, backend=backend))
    assert got.shape == (5, 5, 260)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    close(got, ref, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("halflife", [1.0, 11.2, 60.0])
def test_ewma_cov_matches_pandas_ewm(backend, halflife):
    r = returns(4, 300, seed=6, nan_frac=0.05)
    df = pd.DataFrame(r.T)
    ref = np.array([[(df[i] * df[j]).ewm(halflife=halflife).mean().iloc[-1] for j in range(4)] for i in range(4)])
    close(corrmod.ewma_cov(on_backend(backend, r), halflife, backend=backend), ref)


def test_ewma_cov_is_the_riskmetrics_recursion(backend):
    """Complete data: equals S_t = lam S_{t-1} + (1 - lam) r_t r_t^T, normalized by the weight sum."""
    r = returns(3, 200, seed=7)
    lam = 0.94
    s = np.zeros((3, 3))
    for t in range(200):
        s = lam * s + (1 - lam) * np.outer(r[:, t], r[:, t])
    s /= 1 - lam**200
    halflife = np.log(0.5) / np.log(lam)
    close(corrmod.ewma_cov(on_backend(backend, r), halflife, backend=backend), s)


@pytest.mark.parametrize("n, t", [(1, 50), (5, 300), (40, 30)])
def test_ledoit_wolf_matches_sklearn(backend, n, t):
    r = returns(n, t, seed=n)
    lw = LedoitWolf().fit(r.T)
    cov_, shrink = corrmod.ledoit_wolf(on_backend(backend, r), backend=backend)
    close(cov_, lw.covariance_)
    assert float(gt.to_numpy(shrink)) == pytest.approx(lw.shrinkage_, rel=1e-9, abs=1e-14)


def test_ledoit_wolf_batched(backend):
    r = returns(12, 80, seed=9).reshape(3, 4, 80)
    cov_, shrink = corrmod.ledoit_wolf(on_backend(backend, r), backend=backend)
    assert cov_.shape == (3, 4, 4) and shrink.shape == (3,)
    for i in range(3):
        lw = LedoitWolf().fit(r[i].T)
        close(cov_[i], lw.covariance_)


def test_pandas_in_pandas_out():
    r = returns(3, 100, seed=10, nan_frac=0.05)
    df = pd.DataFrame(r.T, index=pd.bdate_range("2024-01-01", periods=100), columns=["A", "B", "C"])
    c = corrmod.corr(df)
    assert isinstance(c, pd.DataFrame)
    pd.testing.assert_frame_equal(c, df.corr(), rtol=1e-10, atol=1e-12)
    rc = corrmod.rolling_corr(df, 10)
    pd.testing.assert_frame_equal(rc, df.rolling(10).corr(), rtol=1e-8, atol=1e-9)


def test_inputs_not_modified(backend):
    r = returns(4, 60, seed=11, nan_frac=0.1)
    rb = on_backend(backend, r)
    for fn in (corrmod.cov, corrmod.corr, lambda x, backend: corrmod.rolling_corr(x, 5, backend=backend),
               lambda x, backend: corrmod.ewma_cov(x, 10, backend=backend)):
        fn(rb, backend=backend)
    np.testing.assert_array_equal(gt.to_numpy(rb), r)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda r: corrmod.corr(r[0]), ValueError, r"shape \(\.\.\., n_series, T\)"),
        (lambda r: corrmod.cov(r, min_periods=0), ValueError, "min_periods"),
        (lambda r: corrmod.cov(r, ddof=1.5), TypeError, "ddof"),
        (lambda r: corrmod.rolling_corr(r, 1), ValueError, "window"),
        (lambda r: corrmod.rolling_corr(r, 5, min_periods=6), ValueError, "min_periods"),
        (lambda r: corrmod.ewma_cov(r, 0), ValueError, "halflife"),
        (lambda r: corrmod.ewma_cov(r, [5, 10]), TypeError, "halflife"),
        (lambda r: corrmod.ledoit_wolf(np.where(r > 0.02, np.nan, r)), ValueError, "NaN"),
        (lambda r: corrmod.corr(r[:, :0]), ValueError, "at least one"),
        (lambda r: corrmod.rolling_corr(r, 41), ValueError, "fewer than window=41"),
        (lambda r: corrmod.corr(np.where(np.arange(3)[:, None] == 1, np.nan, r)), ValueError,
         r"r has a series with 0 valid .*batch index \(1,\)"),
        (lambda r: corrmod.ewma_cov(np.full_like(r, np.nan), 5), ValueError, "0 valid"),
        (lambda r: corrmod.ledoit_wolf(r[:, :1]), ValueError, "ledoit_wolf needs at least 2"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call(returns(3, 40, seed=12))


# -- zero dispersion: a constant series has NaN correlations, as in pandas ----------------
# 0.1, 0.003, 1e-5 and 123.456 leave a rounding residue when centred on their float64 mean
CONSTANTS = (0.0, 0.01, 0.1, 0.003, 1e-5, -0.007, 123.456)


def with_constant(value: float, t: int, seed: int, nan_frac: float) -> np.ndarray:
    r = returns(3, t, seed=seed, nan_frac=nan_frac)
    r[1] = np.where(np.isnan(r[1]), np.nan, value)
    r[1, 0] = value
    return r


def pandas_rolling(r: np.ndarray, window: int, min_periods=None) -> np.ndarray:
    n, t = r.shape
    ref = pd.DataFrame(r.T).rolling(window, min_periods=min_periods).corr().to_numpy()
    return ref.reshape(t, n, n).transpose(1, 2, 0)


@pytest.mark.parametrize("nan_frac", [0.0, 0.2])
@pytest.mark.parametrize("t", [5, 252, 2520])
def test_constant_series_correlations_are_nan_like_pandas(backend, t, nan_frac):
    for i, value in enumerate(CONSTANTS):
        r = with_constant(value, t, seed=i, nan_frac=nan_frac)
        rb = on_backend(backend, r)
        got = gt.to_numpy(corrmod.corr(rb, backend=backend))
        ref = pd.DataFrame(r.T).corr().to_numpy()
        assert np.isnan(got[1]).all() and np.isnan(got[:, 1]).all(), (value, got)
        close(got, ref, rtol=1e-9, atol=1e-12)
        window = min(t, 10)
        got = gt.to_numpy(corrmod.rolling_corr(rb, window, min_periods=2, backend=backend))
        np.testing.assert_array_equal(np.isnan(got), np.isnan(pandas_rolling(r, window, 2)), err_msg=str(value))
        close(got, pandas_rolling(r, window, 2), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("value", [0.0, 0.02, -0.0137])
def test_constant_stretch_inside_a_varying_series_rolls_to_nan(backend, value):
    """A window where one series stands still (a halted stock) is NaN there and only there."""
    r = returns(3, 600, seed=31, nan_frac=0.03)
    r[0, 200:240] = value
    r[2, 450:470] = value
    ref = pandas_rolling(r, 15)
    got = gt.to_numpy(corrmod.rolling_corr(on_backend(backend, r), 15, backend=backend))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    close(got, ref, rtol=1e-7, atol=1e-8)
    assert np.isnan(got[0, 1, 240]) and np.isfinite(got[0, 1, 200])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scale=hs.sampled_from([1e-9, 1e-3, 1.0, 1e4]), offset=hs.sampled_from([0.0, 1.0, 1e3]),
       spread=hs.sampled_from([1e-7, 1e-4, 1.0]), seed=hs.integers(0, 2**32 - 1))
def test_scaled_and_shifted_series_are_not_taken_for_constants(backend, scale, offset, spread, seed):
    """The rule is relative to the data: scaling or shifting real variation never zeroes it."""
    r = offset * scale + scale * returns(4, 60, seed=seed)
    r[0] = offset * scale + spread * scale * returns(1, 60, seed=seed + 1)[0]  # a quiet, not constant, series
    got = gt.to_numpy(corrmod.corr(on_backend(backend, r), backend=backend))
    assert np.isfinite(got).all()
    close(got, np.corrcoef(r), rtol=1e-6, atol=1e-8)


def test_min_periods_and_ddof_past_the_periods_give_nan_like_pandas(backend):
    r = returns(3, 30, seed=13, nan_frac=0.1)
    rb = on_backend(backend, r)
    df = pd.DataFrame(r.T)
    for mp in (31, 1000, 2**62, np.int64(2**62)):
        close(corrmod.cov(rb, min_periods=mp, backend=backend), df.cov(min_periods=31).to_numpy())
        close(corrmod.corr(rb, min_periods=mp, backend=backend), df.corr(min_periods=31).to_numpy())
    for ddof in (30, 2**62):
        assert np.isnan(gt.to_numpy(corrmod.cov(rb, ddof=ddof, backend=backend))).all()
    full = returns(3, 30, seed=13)  # (pandas applies ddof only to complete data)
    close(corrmod.cov(on_backend(backend, full), ddof=np.int32(0), backend=backend), np.cov(full, ddof=0))
    with pytest.raises(ValueError, match="min_periods must be <="):
        corrmod.cov(rb, min_periods=2**64, backend=backend)


@pytest.mark.parametrize("call", [
    lambda: corrmod.corr(np.zeros((40_000, 2))),           # a 40000 x 40000 matrix
    lambda: corrmod.cov(np.zeros((2, 30_000, 2))),
    lambda: corrmod.ewma_cov(np.zeros((40_000, 2)), 5.0),
    lambda: corrmod.ledoit_wolf(np.zeros((40_000, 2))),
    lambda: corrmod.rolling_corr(np.zeros((2000, 2200)), 5),  # a 2000 x 2000 x 2200 result (70 GB)
])
def test_absurd_matrices_are_refused_before_allocating(call):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="working memory"):
            call()
        assert tracemalloc.get_traced_memory()[1] < 64 << 20  # the inputs' size, never the matrices'
    finally:
        tracemalloc.stop()


def test_read_only_arrays_and_copy_on_write_frames(backend):
    r = returns(3, 80, seed=14, nan_frac=0.05)
    ro = r.copy()
    ro.flags.writeable = False
    mixed = pd.DataFrame({"a": ro[0], "b": r[1].copy(), "c": ro[2].astype(np.float32)})
    df = pd.DataFrame(r.T)
    assert not df.to_numpy().flags.writeable
    for x in (ro, ro[:, ::2], df, mixed):
        xb = x if isinstance(x, pd.DataFrame) else on_backend(backend, x)
        frame = x if isinstance(x, pd.DataFrame) else pd.DataFrame(x.T)  # the oracle sees the values we do
        close(corrmod.cov(xb, backend=backend), frame.cov().to_numpy())
        close(corrmod.corr(xb, backend=backend), frame.corr().to_numpy())
        rolled = frame.rolling(5).corr().to_numpy()  # rows (time, column), as a DataFrame input gives
        close(corrmod.rolling_corr(xb, 5, backend=backend),
              rolled if x is frame else rolled.reshape(-1, 3, 3).transpose(1, 2, 0), rtol=1e-7, atol=1e-8)
        corrmod.ewma_cov(xb, 10.0, backend=backend)
        filled = frame.fillna(0.0)
        cov_, _ = corrmod.ledoit_wolf(filled if x is frame else on_backend(backend, filled.to_numpy().T),
                                      backend=backend)
        close(cov_, LedoitWolf().fit(filled.to_numpy()).covariance_)
    np.testing.assert_array_equal(ro, r)


# -- the CPU's compiled passes: the array formulation's numbers, bit for bit ----------------------
def stress_returns(n: int, t: int, seed: int, nan_frac: float) -> np.ndarray:
    """returns() with a constant series, a constant stretch and signed zeros mixed in."""
    r = returns(n, t, seed=seed, nan_frac=nan_frac)
    if n > 2:
        r[1] = np.where(np.isnan(r[1]), np.nan, 0.003)
    r[0, t // 3: t // 3 + min(t // 3, 40)] = 0.01
    r[-1, ::5] = -0.0
    return r


@pytest.mark.parametrize("n, t", [(1, 5), (3, 12), (6, 300), (20, 260)])
@pytest.mark.parametrize("nan_frac", [0.0, 0.1, 0.5])
def test_cpu_compiled_passes_equal_the_array_formulation(n, t, nan_frac):
    """The CPU's compiled normalization of a complete-data correlation matrix and its fused
    rolling correlation take the sums of CorrelationEstimators (run here on NumPy) in the same
    order: the same numbers, NaNs included."""
    from gpu_trader._internal.correlation_xp import CorrelationEstimators

    array_form = CorrelationEstimators(np)
    cpu = gt.get_backend("cpu").ops("correlation").estimators
    r = stress_returns(n, t, seed=n * t, nan_frac=nan_frac)
    for x in (r, r.reshape(1, n, t)[:, :, ::-1], np.stack([r, r[::-1]])):  # batch axes, strided
        with np.errstate(all="ignore"):
            for mp in (1, 3, t + 1):
                np.testing.assert_array_equal(cpu.corr(x, mp), array_form.corr(x, mp))
            for window, mp in ((2, 2), (5, 5), (min(t, 21), 3)):
                np.testing.assert_array_equal(cpu.rolling_corr(x, window, mp), array_form.rolling_corr(x, window, mp))


# -- the fast path: the same results and errors as the general path -------------------------------
CORR_CALLS = {
    "cov": lambda r: corrmod.cov(r, min_periods=3),
    "corr": corrmod.corr,
    "rolling_corr": lambda r: corrmod.rolling_corr(r, 4, min_periods=2),
    "ewma_cov": lambda r: corrmod.ewma_cov(r, 5.0),
    "ledoit_wolf": lambda r: corrmod.ledoit_wolf(r)[0],
}


def corr_outcome(call, r):
    try:
        return gt.to_numpy(call(r))
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)


@settings(max_examples=40, deadline=None)
@given(shape=hs.sampled_from([(1, 1), (2, 3), (3, 8), (5, 60), (2, 3, 30)]),
       nan_frac=hs.sampled_from([0.0, 0.3, 0.95]), dtype=hs.sampled_from([np.float64, np.float32]),
       strided=hs.booleans(), seed=hs.integers(0, 2**32 - 1), name=hs.sampled_from(sorted(CORR_CALLS)))
def test_fast_path_equals_general_path(shape, nan_frac, dtype, strided, seed, name):
    """A plain NumPy array on the default backend (the latency path: the NaN screen, the valid-count
    check only where it finds a NaN) against a chosen default backend and a non-native byte
    order (the general path): the same values and dtype, or the same error."""
    rng = np.random.default_rng(seed)
    r = (rng.standard_t(3, size=shape[:-1] + (shape[-1] * (2 if strided else 1),)) * 0.01).astype(dtype)
    r[rng.random(r.shape) < nan_frac] = np.nan
    if strided:
        r = r[..., ::2]
    call = CORR_CALLS[name]
    with np.errstate(all="ignore"):
        fast = corr_outcome(call, r)
        with gt.use_backend("cpu"):
            general = corr_outcome(call, r)
        swapped = corr_outcome(call, r.astype(r.dtype.newbyteorder()))
    for other in (general, swapped):
        if isinstance(fast, tuple) or isinstance(other, tuple):
            assert other == fast
        else:
            assert other.dtype == fast.dtype
            np.testing.assert_array_equal(other, fast)
