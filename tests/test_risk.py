"""Risk metrics against empyrical-reloaded, scipy.stats and independent NumPy code, on every backend."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hs

import gpu_trader as gt
from gpu_trader import risk
from gpu_trader._internal.risk_xp import RiskMetrics, doubling_running_max

from conftest import on_backend

ep = pytest.importorskip("empyrical")  # a dev extra; the GPU image's test install adds it

AREA = "risk"  # the backends that implement it run these tests (conftest.py)

RTOL = 1e-10


def returns(n_series: int, n_obs: int, seed: int = 0, nan_frac: float = 0.0, dof: float = 4.0) -> np.ndarray:
    """Fat-tailed daily returns (Student-t, ~1 % scale) with optional NaNs scattered in."""
    rng = np.random.default_rng(seed)
    r = rng.standard_t(dof, size=(n_series, n_obs)) * 0.01 + 0.0003
    if nan_frac:
        r[rng.random(r.shape) < nan_frac] = np.nan
    return r


def per_series(fn, r: np.ndarray) -> np.ndarray:
    """Apply a one-series oracle to each row after dropping its NaNs (our stated NaN policy)."""
    return np.array([fn(row[~np.isnan(row)]) for row in r.reshape(-1, r.shape[-1])]).reshape(r.shape[:-1])


def kelly_oracle(x: np.ndarray) -> float:
    """quantstats' kelly_criterion, written out with pandas."""
    s = pd.Series(x)
    wins, losses = s[s > 0], s[s < 0]
    if wins.empty or losses.empty:
        return np.nan
    win_prob = len(wins) / len(s[s != 0])
    payoff = wins.mean() / abs(losses.mean())
    return ((payoff * win_prob) - (1 - win_prob)) / payoff


ORACLES = {
    # name: (our call, one-series oracle in our sign convention)
    "var_historical": (lambda r, b: risk.var_historical(r, 0.99, backend=b), lambda x: -ep.value_at_risk(x, 0.01)),
    "var_historical_95": (lambda r, b: risk.var_historical(r, 0.95, backend=b),
                          lambda x: -ep.value_at_risk(x, 0.05)),
    "cvar": (lambda r, b: risk.cvar(r, 0.99, backend=b), lambda x: -ep.conditional_value_at_risk(x, 0.01)),
    "cvar_90": (lambda r, b: risk.cvar(r, 0.90, backend=b), lambda x: -ep.conditional_value_at_risk(x, 0.10)),
    "var_parametric": (lambda r, b: risk.var_parametric(r, 0.99, backend=b),
                       lambda x: -st.norm.ppf(0.01, x.mean(), x.std(ddof=1))),
    "var_cornish_fisher": (
        lambda r, b: risk.var_parametric(r, 0.975, method="cornish-fisher", backend=b),
        lambda x: -(x.mean() + x.std(ddof=1) * _cf(st.norm.ppf(0.025), st.skew(x), st.kurtosis(x))),
    ),
    "max_drawdown": (lambda r, b: risk.max_drawdown(r, backend=b), lambda x: -ep.max_drawdown(x)),
    "sharpe": (lambda r, b: risk.sharpe(r, backend=b), lambda x: ep.sharpe_ratio(x)),
    "sharpe_rf": (lambda r, b: risk.sharpe(r, 52, risk_free=0.0001, backend=b),
                  lambda x: ep.sharpe_ratio(x, risk_free=0.0001, annualization=52)),
    "sortino": (lambda r, b: risk.sortino(r, backend=b), lambda x: ep.sortino_ratio(x)),
    "sortino_mar": (lambda r, b: risk.sortino(r, 12, required_return=0.001, backend=b),
                    lambda x: ep.sortino_ratio(x, required_return=0.001, annualization=12)),
    "calmar": (lambda r, b: risk.calmar(r, backend=b), lambda x: ep.calmar_ratio(x)),
    "kelly_fraction": (lambda r, b: risk.kelly_fraction(r, backend=b), kelly_oracle),
}


def _cf(z, s, k):
    """Cornish-Fisher quantile, textbook form (Favre & Galeano 2002)."""
    return z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36


def assert_close(actual, expected, rtol=RTOL, atol=1e-13):
    actual = gt.to_numpy(actual)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("name", sorted(ORACLES))
@pytest.mark.parametrize("nan_frac", [0.0, 0.05])
def test_matches_oracle(backend, name, nan_frac):
    ours, oracle = ORACLES[name]
    r = returns(7, 252, seed=len(name), nan_frac=nan_frac)
    assert_close(ours(on_backend(backend, r), backend), per_series(oracle, r))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_obs=hs.integers(2, 60), seed=hs.integers(0, 2**32 - 1), nan_frac=hs.sampled_from([0.0, 0.2]),
       name=hs.sampled_from(sorted(ORACLES)))
def test_matches_oracle_short_random_series(backend, n_obs, seed, nan_frac, name):
    ours, oracle = ORACLES[name]
    r = returns(3, n_obs, seed=seed, nan_frac=nan_frac, dof=3.0)
    assume((~np.isnan(r)).sum(-1).min() >= 2)  # fewer valid values is an error, tested below
    with np.errstate(all="ignore"):
        expected = per_series(lambda x: oracle(x) if len(x) >= 2 else np.nan, r)
    got = gt.to_numpy(ours(on_backend(backend, r), backend))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-13, equal_nan=True)


def test_too_few_observations_is_an_error_not_nan(backend):
    r = np.full((3, 10), 0.01)
    r[1, :] = np.nan
    r[1, 4] = -0.02                                     # one valid value
    rb = on_backend(backend, r)
    one_ok = on_backend(backend, r[[0, 1]])
    assert gt.to_numpy(risk.var_historical(one_ok, backend=backend))[1] == pytest.approx(0.02)
    for fn in (risk.sharpe, risk.var_parametric, risk.risk_report):
        with pytest.raises(ValueError, match=r"r has a series with 1 valid .*batch index \(1,\)"):
            fn(rb, backend=backend)
    r[2, :] = np.nan                                    # all-NaN series
    rb = on_backend(backend, r)
    for fn in (risk.var_historical, risk.cvar, risk.max_drawdown, risk.kelly_fraction, risk.calmar):
        with pytest.raises(ValueError, match=r"r has a series with 0 valid .*batch index \(2,\)"):
            fn(rb, backend=backend)
    with pytest.raises(ValueError, match="r has 1 observations per series; sharpe"):
        risk.sharpe(on_backend(backend, np.array([0.01])), backend=backend)


def test_undefined_metrics_are_nan(backend):
    """Where the metric itself is undefined the result is NaN (documented), not an error."""
    r = np.full((2, 10), 0.01)
    r[1, ::2] = -0.01
    rb = on_backend(backend, r)
    assert np.isnan(gt.to_numpy(risk.kelly_fraction(rb, backend=backend))[0])   # no loss
    assert np.isnan(gt.to_numpy(risk.calmar(rb, backend=backend))[0])           # never draws down
    assert gt.to_numpy(risk.max_drawdown(rb, backend=backend))[0] == 0.0


def test_level_grid_adds_leading_axis(backend):
    r = returns(4, 500, seed=3)
    rb = on_backend(backend, r)
    for fn in (risk.var_historical, risk.cvar, risk.var_parametric):
        grid = gt.to_numpy(fn(rb, [0.9, 0.95, 0.99], backend=backend))
        assert grid.shape == (3, 4)
        for i, level in enumerate((0.9, 0.95, 0.99)):
            one = gt.to_numpy(fn(rb, level, backend=backend))
            if backend == "jax":  # XLA may fuse a grid's arithmetic differently: the last bit or two
                np.testing.assert_allclose(grid[i], one, rtol=1e-14, atol=0)
            else:
                np.testing.assert_array_equal(grid[i], one)
        assert (np.diff(grid, axis=0) > 0).all()  # a higher confidence is a larger loss


def test_batch_axes_and_float32_and_noncontiguous(backend):
    r = returns(24, 300, seed=5, nan_frac=0.02)
    expected = per_series(lambda x: -ep.conditional_value_at_risk(x, 0.01), r).reshape(2, 3, 4)
    got = risk.cvar(on_backend(backend, r.reshape(2, 3, 4, 300)), backend=backend)
    assert got.shape == (2, 3, 4)
    assert_close(got, expected)
    r32 = on_backend(backend, r.astype(np.float32))
    got32 = risk.cvar(r32, backend=backend)
    assert got32.dtype == np.float32
    exp32 = per_series(lambda x: -ep.conditional_value_at_risk(x, 0.01), r.astype(np.float32).astype(np.float64))
    assert_close(got32, exp32, rtol=1e-6, atol=1e-7)
    wide = np.asfortranarray(returns(5, 400, seed=6))[:, ::2]   # strided, not C-contiguous
    assert_close(risk.sharpe(on_backend(backend, wide), backend=backend), per_series(ep.sharpe_ratio, wide))


def test_inputs_are_not_modified(backend):
    r = returns(3, 100, seed=8, nan_frac=0.1)
    rb = on_backend(backend, r)
    before = gt.to_numpy(rb).copy()
    risk.risk_report(rb, backend=backend)
    np.testing.assert_array_equal(gt.to_numpy(rb), before)


def test_risk_report_equals_each_function(backend):
    r = returns(6, 252, seed=11, nan_frac=0.03)
    rb = on_backend(backend, r)
    report = risk.risk_report(rb, level=0.975, periods_per_year=252, risk_free=0.0002, backend=backend)
    assert set(report) == set(risk.REPORT_FIELDS)
    singles = {
        "var_historical": risk.var_historical(rb, 0.975, backend=backend),
        "var_parametric": risk.var_parametric(rb, 0.975, backend=backend),
        "var_cornish_fisher": risk.var_parametric(rb, 0.975, method="cornish-fisher", backend=backend),
        "cvar": risk.cvar(rb, 0.975, backend=backend),
        "max_drawdown": risk.max_drawdown(rb, backend=backend),
        "sharpe": risk.sharpe(rb, 252, 0.0002, backend=backend),
        "sortino": risk.sortino(rb, 252, 0.0002, backend=backend),
        "calmar": risk.calmar(rb, 252, backend=backend),
        "kelly_fraction": risk.kelly_fraction(rb, backend=backend),
    }
    for key, value in singles.items():
        np.testing.assert_array_equal(gt.to_numpy(report[key]), gt.to_numpy(value), err_msg=key)
    np.testing.assert_array_equal(gt.to_numpy(report["n"]), (~np.isnan(r)).sum(-1))
    assert_close(report["volatility"], per_series(lambda x: x.std(ddof=1) * np.sqrt(252), r))
    assert_close(report["mean"], per_series(np.mean, r))


def test_pandas_in_pandas_out():
    r = returns(3, 252, seed=2, nan_frac=0.02)
    df = pd.DataFrame(r.T, index=pd.bdate_range("2024-01-01", periods=252), columns=["AAA", "BBB", "CCC"])
    out = risk.var_historical(df)
    assert isinstance(out, pd.Series) and list(out.index) == ["AAA", "BBB", "CCC"]
    assert_close(out.to_numpy(), per_series(lambda x: -ep.value_at_risk(x, 0.01), r))
    grid = risk.cvar(df, [0.95, 0.99])
    assert isinstance(grid, pd.DataFrame) and grid.shape == (2, 3) and list(grid.index) == [0.95, 0.99]
    per_level = risk.var_parametric(df["AAA"], [0.95, 0.99])
    assert isinstance(per_level, pd.Series) and list(per_level.index) == [0.95, 0.99]
    assert per_level[0.99] == pytest.approx(risk.var_parametric(df["AAA"], 0.99), rel=1e-15)
    one = risk.sharpe(df["BBB"])
    assert np.ndim(one) == 0 and one == pytest.approx(ep.sharpe_ratio(df["BBB"].dropna()), rel=RTOL)


def test_gpu_formulation_on_numpy():
    """The cuda backend's array formulation (sort + reductions, doubling-scan running max),
    run on NumPy, agrees with the CPU backend's compiled per-series pass."""
    gpu_like = RiskMetrics(np, functools.partial(doubling_running_max, np))
    cpu = gt.get_backend("cpu").ops("risk").metrics
    for t in (1, 2, 3, 7, 64, 253):
        r = returns(4, t, seed=t, nan_frac=0.1)
        np.testing.assert_array_equal(doubling_running_max(np, r), np.maximum.accumulate(r, axis=-1))
        for a, b in zip(gpu_like.risk_report(r, 0.01, 252, 0.0).values(), cpu.risk_report(r, 0.01, 252, 0.0).values()):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, equal_nan=True)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda r: risk.var_historical(r, 1.0), ValueError, "level"),
        (lambda r: risk.var_historical(r, 0.0), ValueError, "level"),
        (lambda r: risk.cvar(r, [0.9, float("nan")]), ValueError, "level"),
        (lambda r: risk.cvar(r, "0.99"), TypeError, "level"),
        (lambda r: risk.var_parametric(r, method="student"), ValueError, "method"),
        (lambda r: risk.sharpe(r, periods_per_year=0), ValueError, "periods_per_year"),
        (lambda r: risk.sortino(r, required_return=[0.1]), TypeError, "required_return"),
        (lambda r: risk.risk_report(r, level=[0.9, 0.99]), TypeError, "level"),
        (lambda r: risk.var_historical(r[:, :0]), ValueError, "r has 0 observations per series; var_historical"),
        (lambda r: risk.var_historical(np.array(["a", "b"])), TypeError, "r must be a real numeric"),
        (lambda r: risk.var_historical(np.float64(0.1)), ValueError, "r must have at least one dimension"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call(returns(2, 50))


# -- zero dispersion: constant series follow empyrical-reloaded ------------------------
# 0.1, 0.003 and 0.3 leave a rounding residue in the float64 mean of 252 or 2520
# equal values (a std of ~1e-17 instead of 0); 0.0 makes every ratio 0 / 0.
CONSTANTS = (0.0, 0.01, -0.01, 0.1, 0.003, -0.007, 1e-5, -2e-4, 0.3)


def constant_rows(n_obs: int, dtype, values=CONSTANTS) -> np.ndarray:
    """One constant series per value, every other one with a NaN (dropped: still constant)."""
    r = np.repeat(np.asarray(values, dtype=dtype)[:, None], n_obs, axis=1)
    r[::2, 1] = np.nan
    return r


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_obs", [3, 252, 2520])
def test_constant_series_ratios_match_empyrical(backend, n_obs, dtype):
    r = constant_rows(n_obs, dtype)
    r64 = r.astype(np.float64)  # the oracle sees the very values we do
    rb = on_backend(backend, r)
    tol = dict(rtol=1e-6, atol=0) if dtype == np.float32 else dict(rtol=1e-10, atol=0)
    for rate in (0.0, 1e-4, 0.01):  # 0.01 equals a constant: 0 / 0 for the float64 rows
        assert_close(risk.sharpe(rb, 252, rate, backend=backend),
                     per_series(lambda x: ep.sharpe_ratio(x, risk_free=rate), r64), **tol)
        assert_close(risk.sortino(rb, 12, rate, backend=backend),
                     per_series(lambda x: ep.sortino_ratio(x, required_return=rate, annualization=12), r64), **tol)
        report = risk.risk_report(rb, 0.99, 52, rate, backend=backend)
        assert_close(report["sharpe"], per_series(lambda x: ep.sharpe_ratio(x, rate, annualization=52), r64), **tol)
    assert_close(risk.calmar(rb, backend=backend), per_series(ep.calmar_ratio, r64), **tol)


def test_constant_series_have_zero_volatility_and_parametric_var_minus_mean(backend):
    r = constant_rows(252, np.float64)
    rb = on_backend(backend, r)
    minus_c = -np.asarray(CONSTANTS)
    report = risk.risk_report(rb, 0.99, backend=backend)
    np.testing.assert_array_equal(gt.to_numpy(report["volatility"]), 0.0)
    for method in ("gaussian", "cornish-fisher"):
        got = gt.to_numpy(risk.var_parametric(rb, [0.9, 0.99], method=method, backend=backend))
        np.testing.assert_allclose(got, np.broadcast_to(minus_c, got.shape), rtol=1e-14, atol=0)
    np.testing.assert_allclose(gt.to_numpy(report["var_cornish_fisher"]), minus_c, rtol=1e-14, atol=0)
    # the same numbers as the historical VaR of a constant series (its every quantile)
    np.testing.assert_allclose(gt.to_numpy(risk.var_historical(rb, backend=backend)), minus_c, rtol=1e-14, atol=0)


@pytest.mark.parametrize("spread", [1e-9, 1e-6, 1e-3])
def test_nearly_constant_series_keep_their_finite_ratios(backend, spread):
    """The zero-dispersion rule must not swallow a real (if tiny) variation."""
    rng = np.random.default_rng(21)
    c = np.array([0.01, -0.003, 0.1])[:, None]
    r = c * (1.0 + spread * rng.standard_normal((3, 252)))
    rb = on_backend(backend, r)
    got = gt.to_numpy(risk.sharpe(rb, backend=backend))
    assert np.all(np.isfinite(got))
    assert_close(got, per_series(ep.sharpe_ratio, r), rtol=1e-6)
    assert np.all(gt.to_numpy(risk.risk_report(rb, backend=backend)["volatility"]) > 0)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=hs.lists(hs.floats(-0.25, 0.25, width=32, allow_subnormal=False), min_size=1, max_size=6),
       n_obs=hs.sampled_from([2, 5, 61, 252, 1000]), dtype=hs.sampled_from([np.float64, np.float32]),
       rate=hs.sampled_from([0.0, 5e-5]))
def test_any_constant_series_sharpe_is_empyricals(backend, values, n_obs, dtype, rate):
    """(Values normal in float32 too: XLA flushes float32 subnormals to zero.)"""
    r = np.repeat(np.asarray(values, dtype=dtype)[:, None], n_obs, axis=1)
    r64 = r.astype(np.float64)
    got = gt.to_numpy(risk.sharpe(on_backend(backend, r), 252, rate, backend=backend)).astype(np.float64)
    np.testing.assert_array_equal(got, per_series(lambda x: ep.sharpe_ratio(x, risk_free=rate), r64))


def test_gpu_formulation_on_numpy_constant_series():
    """The array formulation applies the same zero-dispersion rule as the compiled one."""
    gpu_like = RiskMetrics(np, functools.partial(doubling_running_max, np))
    cpu = gt.get_backend("cpu").ops("risk").metrics
    for t in (3, 252, 2520):
        r = constant_rows(t, np.float64)
        report = gpu_like.risk_report(r, 0.01, 252, 1e-4)
        assert_close(report["sharpe"], per_series(lambda x: ep.sharpe_ratio(x, risk_free=1e-4), r))
        assert_close(report["sortino"], per_series(lambda x: ep.sortino_ratio(x, required_return=1e-4), r))
        np.testing.assert_array_equal(report["volatility"], 0.0)
        np.testing.assert_allclose(report["var_parametric"], -np.asarray(CONSTANTS), rtol=1e-14, atol=0)
        for a, b in zip(report.values(), cpu.risk_report(r, 0.01, 252, 1e-4).values()):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, equal_nan=True)


# -- levels and annualization: one rule, NumPy scalars welcome --------------------------
LEVEL_FUNCTIONS = {
    "var_historical": risk.var_historical,
    "cvar": risk.cvar,
    "var_parametric": risk.var_parametric,
    "cornish_fisher": functools.partial(risk.var_parametric, method="cornish-fisher"),
    "risk_report": risk.risk_report,
}


@pytest.mark.parametrize("name", sorted(LEVEL_FUNCTIONS))
@pytest.mark.parametrize("level", [0.01, 0.05, 0.4999, np.float64(0.01), np.float32(0.1), 0, 1, 1.0, -0.99, 99])
def test_tail_probability_as_level_is_refused_with_a_hint(name, level):
    with pytest.raises(ValueError, match=r"level must satisfy 0\.5 <= level < 1.*not a tail probability such as 0\.01"):
        LEVEL_FUNCTIONS[name](returns(2, 50), level)


@pytest.mark.parametrize("name", ["var_historical", "cvar", "var_parametric"])
def test_level_grid_with_a_tail_probability_is_refused(name):
    with pytest.raises(ValueError, match="not a tail probability"):
        LEVEL_FUNCTIONS[name](returns(2, 50), [0.95, 0.05])


@pytest.mark.parametrize("level", [True, np.bool_(True), "0.99", None, 0.99j])
def test_level_of_the_wrong_type_is_a_type_error(level):
    with pytest.raises(TypeError, match="level"):
        risk.var_historical(returns(2, 50), level)


def test_numpy_scalar_levels_and_annualization_are_accepted(backend):
    r = returns(3, 252, seed=13)
    rb = on_backend(backend, r)
    ref = gt.to_numpy(risk.var_historical(rb, 0.5, backend=backend))  # 0.5 is allowed: the median
    np.testing.assert_allclose(ref, -np.median(r, axis=-1), rtol=1e-12)
    for level in (np.float64(0.99), np.float32(0.99)):
        assert_close(risk.cvar(rb, level, backend=backend),
                     per_series(lambda x: -ep.conditional_value_at_risk(x, 1 - float(level)), r))
    for ppy in (np.int32(252), np.int64(252), np.float64(252.0), np.float32(252.0)):
        assert_close(risk.sharpe(rb, ppy, np.float64(0.0), backend=backend), per_series(ep.sharpe_ratio, r))
    grid = risk.var_parametric(rb, np.array([0.9, 0.99]), backend=backend)
    assert gt.to_numpy(grid).shape == (2, 3)


@pytest.mark.parametrize("ppy, exc", [(risk.MAX_PERIODS_PER_YEAR + 1, ValueError), (1e300, ValueError),
                                      (float("inf"), ValueError), (0, ValueError), (-252, ValueError),
                                      (True, TypeError), (np.bool_(True), TypeError), ([252], TypeError)])
@pytest.mark.parametrize("fn", [risk.sharpe, risk.sortino, risk.calmar, risk.risk_report])
def test_periods_per_year_is_bounded(fn, ppy, exc):
    kwargs = {"periods_per_year": ppy}
    with pytest.raises(exc, match="periods_per_year"):
        fn(returns(2, 50), **kwargs)
    assert np.all(np.isfinite(risk.sharpe(returns(2, 50), periods_per_year=risk.MAX_PERIODS_PER_YEAR)))


def test_results_beyond_the_memory_limit_are_refused_before_allocating(monkeypatch):
    from gpu_trader._internal import validation

    r = returns(40, 30)
    # 40 series x (16 + 2 x 3 levels) float64 values = 7040 bytes
    monkeypatch.setattr(validation, "WORK_MEMORY_LIMIT", 7000)
    with pytest.raises(ValueError, match="working memory"):
        risk.cvar(r, [0.9, 0.95, 0.99])
    monkeypatch.setattr(validation, "WORK_MEMORY_LIMIT", 7040)
    assert risk.cvar(r, [0.9, 0.95, 0.99]).shape == (3, 40)


# -- read-only inputs (pandas copy-on-write) --------------------------------------------
def test_read_only_arrays_and_copy_on_write_frames(backend):
    r = returns(3, 120, seed=17, nan_frac=0.05)
    ro = r.copy()
    ro.flags.writeable = False
    ro32 = r.astype(np.float32)
    ro32.flags.writeable = False
    mixed = pd.DataFrame({"a": ro[0], "b": r[1].copy(), "c": ro32[2]})  # read-only next to writable, two dtypes
    assert not pd.DataFrame(r.T).to_numpy().flags.writeable  # pandas 3 hands out read-only views
    expected = per_series(lambda x: -ep.conditional_value_at_risk(x, 0.05), r)
    for x in (ro, ro[:, ::2], pd.DataFrame(r.T), mixed, mixed["a"]):  # every metric reads r through these two
        xb = x if isinstance(x, (pd.DataFrame, pd.Series)) else on_backend(backend, x)
        values = np.asarray(x, dtype=np.float64)
        values = values.T if isinstance(x, pd.DataFrame) else values  # the oracle sees the values we do
        rtol = 1e-5 if x is mixed else 1e-10  # mixed holds a float32 column
        report = risk.risk_report(xb, 0.95, backend=backend)
        assert_close(report["cvar"], per_series(lambda v: -ep.conditional_value_at_risk(v, 0.05), values), rtol=rtol)
        assert_close(report["sharpe"], per_series(ep.sharpe_ratio, values), rtol=rtol)
        assert_close(risk.var_historical(xb, [0.9, 0.95], backend=backend),
                     np.stack([per_series(lambda v: -ep.value_at_risk(v, q), values) for q in (0.1, 0.05)]),
                     rtol=rtol)
    got = gt.to_numpy(risk.cvar(mixed, 0.95, backend=backend))
    np.testing.assert_allclose(got[:2], expected[:2], rtol=1e-10)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-5)  # float32 column
    np.testing.assert_array_equal(ro, r)


# -- the one-series fast path: the same results and errors as the general path ------------------
PATH_CALLS = {
    "var_historical": lambda r: risk.var_historical(r),
    "cvar_grid": lambda r: risk.cvar(r, [0.9, 0.99]),
    "var_parametric": lambda r: risk.var_parametric(r, 0.975, method="cornish-fisher"),
    "max_drawdown": risk.max_drawdown,
    "sharpe": lambda r: risk.sharpe(r, 52, 1e-4),
    "sortino": risk.sortino,
    "calmar": risk.calmar,
    "kelly_fraction": risk.kelly_fraction,
    "risk_report": lambda r: risk.risk_report(r, 0.95),
}


def outcome(call, r):
    """``call(r)`` as host arrays (a dict for risk_report), or the error it raised (type, message)."""
    try:
        res = call(r)
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return {k: gt.to_numpy(v) for k, v in res.items()} if isinstance(res, dict) else gt.to_numpy(res)


def assert_same_outcome(a, b):
    if isinstance(a, tuple) or isinstance(b, tuple):
        assert a == b
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    else:
        assert np.asarray(a).dtype == np.asarray(b).dtype and np.shape(a) == np.shape(b)
        np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(shape=hs.sampled_from([(1,), (2,), (7,), (60,), (252,), (3, 5), (2, 2, 40), (4, 300)]),
       nan_frac=hs.sampled_from([0.0, 0.3, 0.9]), dtype=hs.sampled_from([np.float64, np.float32]),
       strided=hs.booleans(), seed=hs.integers(0, 2**32 - 1), name=hs.sampled_from(sorted(PATH_CALLS)))
def test_fast_path_equals_general_path(shape, nan_frac, dtype, strided, seed, name):
    """A plain NumPy array on the default backend takes the latency path (no pandas unwrapping, no
    conversion, the valid-count check only where the NaN screen finds a NaN or the series are too
    short); a chosen default backend, a non-native byte order or a pandas frame take the general
    one. Results (values and dtype) and errors (type and message) are the same."""
    rng = np.random.default_rng(seed)
    r = (rng.standard_t(3, size=shape[:-1] + (shape[-1] * (2 if strided else 1),)) * 0.01).astype(dtype)
    r[rng.random(r.shape) < nan_frac] = np.nan
    if strided:
        r = r[..., ::2]
    call = PATH_CALLS[name]
    fast = outcome(call, r)
    with gt.use_backend("cpu"):  # a default backend is chosen: the general path
        assert_same_outcome(outcome(call, r), fast)
    assert_same_outcome(outcome(call, r.astype(r.dtype.newbyteorder())), fast)  # converted first
    if r.ndim == 2:  # pandas in (outcome reads pandas results back as arrays)
        assert_same_outcome(outcome(call, pd.DataFrame(r.T)), fast)


def test_fast_path_errors_name_the_series():
    """The NaN screen sends NaN data and short series to the same check, with its messages."""
    r = returns(3, 20, seed=4)
    r[2, :19] = np.nan
    with pytest.raises(ValueError, match=r"r has a series with 1 valid .*batch index \(2,\)\); sharpe"):
        risk.sharpe(r)
    with pytest.raises(ValueError, match=r"r has 1 observations per series; sharpe"):
        risk.sharpe(np.array([0.01]))
    assert risk.var_historical(r[2]) == pytest.approx(-r[2, 19])  # one valid value is enough here
    with pytest.raises(ValueError, match=r"r has a series with 0 valid .*batch index \(\)\); cvar"):
        risk.cvar(np.full(5, np.nan))


# -- the selection behind VaR and CVaR on the CPU: adversarial rows --------------------------------
def adversarial_rows(t: int, rng) -> dict[str, np.ndarray]:
    r = rng.standard_t(3, t) * 0.01
    rows = {
        "random": r,
        "all equal": np.full(t, 0.003),
        "sorted": np.sort(r),
        "reverse sorted": np.sort(r)[::-1].copy(),
        "many ties": np.round(r * 300) / 300,
        "signed zeros": np.where(rng.random(t) < 0.5, 0.0, -0.0) + np.where(rng.random(t) < 0.1, r, 0.0),
        "organ pipe": np.concatenate([np.sort(r)[::2], np.sort(r)[1::2][::-1]]),
        "infinities": np.where(rng.random(t) < 0.05, -np.inf, np.where(rng.random(t) < 0.05, np.inf, r)),
    }
    many_nan = r.copy()
    many_nan[rng.random(t) < 0.8] = np.nan
    many_nan[0] = r[0]  # at least one valid value
    rows["many NaNs"] = many_nan
    return rows


def tail_oracle(x: np.ndarray, q: float) -> tuple[float, float]:
    """(VaR, CVaR) losses: minus numpy.quantile, minus the mean of the floor((n - 1) q) + 1 smallest
    summed smallest first (numpy.cumsum of the sorted values: empyrical's tail, one summation order)."""
    x = np.sort(x[~np.isnan(x)])
    k = int(np.floor(q * (len(x) - 1)))
    with np.errstate(invalid="ignore"):
        return -np.quantile(x, q), -(np.cumsum(x)[k] / (k + 1))


@pytest.mark.parametrize("t", [1, 2, 17, 40, 252, 700, 2520])
def test_selection_on_adversarial_rows_matches_numpy(t):
    """Order statistics by insertion scan (few), gathering below a sampled threshold and
    introselect (more), on rows built to defeat them; bit for bit NumPy's quantile."""
    rng = np.random.default_rng(t)
    levels = [0.5, 0.9, 0.95, 0.99, 0.999]
    for label, row in adversarial_rows(t, rng).items():
        with np.errstate(invalid="ignore"):
            var = risk.var_historical(row, levels)
            cvar = risk.cvar(row, levels)
            batch = risk.cvar(np.stack([row, row[::-1]]), levels)  # a batch, and the parallel kernel's shape
        expected = np.array([tail_oracle(row, round(1 - lv, 15)) for lv in levels])
        np.testing.assert_array_equal(var, expected[:, 0], err_msg=label)
        np.testing.assert_array_equal(cvar, expected[:, 1], err_msg=label)
        np.testing.assert_array_equal(batch[:, 0], expected[:, 1], err_msg=label)


def test_selection_fallback_and_long_grids():
    """_select sorts what is left after its rounds run out (the O(n log n) guarantee, forced here
    with 0..3 rounds); a grid longer than the cached ones reads the same sorted values."""
    import numba

    from gpu_trader.cpu_fallback import risk as cpu_risk

    @numba.njit
    def select(a, k, rounds):
        b = a.copy()
        cpu_risk._select(b, b.shape[0], k, rounds)
        return b

    rng = np.random.default_rng(5)
    for t in (17, 18, 100, 1000):
        for label, row in adversarial_rows(t, rng).items():
            row = row[~np.isnan(row)]
            expected = np.sort(row)
            for k in {0, len(row) // 3, len(row) - 1}:
                for rounds in (0, 1, 2, 3):
                    got = select(row, k, rounds)
                    assert got[k] == expected[k], (label, t, k, rounds)
                    assert (got[:k] <= got[k]).all() and (got[k + 1:] >= got[k]).all()
                    np.testing.assert_array_equal(np.sort(got), expected)
    r = returns(3, 900, seed=6, nan_frac=0.1)
    grid = list(np.linspace(0.5, 0.999, 40))
    got = risk.cvar(r, grid)
    for i in (0, 17, 39):
        np.testing.assert_array_equal(got[i], risk.cvar(r, grid[i]))


def test_cpu_quantiles_equal_the_array_formulation_bit_for_bit():
    gpu_like = RiskMetrics(np, functools.partial(doubling_running_max, np))
    cpu = gt.get_backend("cpu").ops("risk").metrics
    rng = np.random.default_rng(9)
    for t in (3, 64, 600, 2520):
        rows = np.stack(list(adversarial_rows(t, rng).values())[:-2])  # finite rows
        qs = (0.5, 0.1, 0.05, 0.01)
        np.testing.assert_array_equal(cpu.var_historical(rows, qs), gpu_like.var_historical(rows, qs))
        np.testing.assert_array_equal(cpu.cvar(rows, qs), gpu_like.cvar(rows, qs))
