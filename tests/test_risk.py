"""Risk metrics against empyrical-reloaded, scipy.stats and independent NumPy code, on every backend."""
from __future__ import annotations

import functools

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hs

import gpu_trader as gt
from gpu_trader import risk
from gpu_trader.risk_math import RiskKernels, doubling_running_max

from conftest import on_backend

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
    gpu_like = RiskKernels(np, functools.partial(doubling_running_max, np))
    cpu = gt.get_backend("cpu").ops("risk").kernels
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
