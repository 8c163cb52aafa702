"""JAX-only checks of the indicators (the shared suite, tests/test_indicators.py, runs them on
jax against TA-Lib too): gradients against central finite differences, the NaN and inf
cases the shared suite does not reach (TA-Lib is the oracle), and composition with jax.jit."""
from __future__ import annotations

import numpy as np
import pytest

import gpu_trader as gt
from conftest import random_ohlcv

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
pytest.importorskip("talib")

from test_indicators import DEFAULT_PARAMS, FUNCS, assert_matches, pick, ragged_batch, reference  # noqa: E402

if "jax" not in gt.available_backends():
    pytest.skip("jax backend not available", allow_module_level=True)


def outputs(name, inputs, params):
    out = FUNCS[name](*inputs, *params, backend="jax")
    return out if isinstance(out, tuple) else (out,)


# -- gradients ---------------------------------------------------------------------------------
GRAD_CASES = {
    "ema": (10,), "sma": (7,), "rsi": (9,), "macd": (5, 12, 4), "bollinger": (8, 2.0), "wma": (6,),
    "atr": (5,), "vwap": (6,),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradient_matches_central_differences(name):
    """d/dclose of a weighted sum of every output, by jax.grad and by central differences
    (every close bar of every series bumped by +-h, all bumps in one batch: series are independent)."""
    n, T, h = 2, 40, 1e-6
    ohlcv = random_ohlcv(n, T, seed=21)
    inputs = pick(name, ohlcv)
    k = len(inputs) - 1 if name != "vwap" else 2  # the close
    params = GRAD_CASES[name]
    weights = np.random.default_rng(3).uniform(0.5, 1.5, (len(outputs(name, inputs, params)), n, T))
    valid = ~np.isnan(np.stack([np.asarray(o) for o in outputs(name, inputs, params)]))

    def objective(close, others):
        args = list(others)
        args.insert(k, close)
        outs = jnp.stack(outputs(name, args, params))
        return jnp.sum(jnp.where(valid, outs, 0.0) * weights)

    others = [jnp.asarray(a) for i, a in enumerate(inputs) if i != k]
    grad = np.asarray(jax.grad(objective)(jnp.asarray(inputs[k]), others))
    assert np.isfinite(grad).all()

    bump = np.tile(np.eye(T) * h, (n, 1))  # row i*T + t bumps bar t of series i

    def batch(sign):
        args = [np.repeat(a, T, axis=0) for a in inputs]
        args[k] = args[k] + sign * bump
        outs = np.stack([np.asarray(o) for o in outputs(name, args, params)]).reshape(-1, n, T, T)
        w = (np.where(valid, weights, 0.0))[:, :, None, :]
        return np.nansum(np.where(np.isnan(outs), 0.0, outs) * w, axis=(0, 3))

    fd = (batch(1.0) - batch(-1.0)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DEFAULT_PARAMS))
def test_gradient_stays_finite_around_nans_and_infs(name):
    """Late listings, an all-NaN series, NaN and inf bars: the gradient of the sum of the finite
    outputs is finite everywhere (no masked branch feeds NaN into it)."""
    h, l, c, v = (a.copy() for a in ragged_batch())
    h[0, 100] = np.nan
    l[0, 120] = np.nan
    c[2, 50] = np.inf
    v[0, 77] = np.nan
    inputs = [jnp.asarray(a) for a in pick(name, (h, l, c, v))]
    k = {"obv": 1, "vwap": 2}.get(name, len(inputs) - 1)  # the close (OBV: the volume)

    def objective(x):
        args = list(inputs)
        args[k] = x
        outs = jnp.stack(outputs(name, args, DEFAULT_PARAMS[name]))
        return jnp.sum(jnp.where(jnp.isfinite(outs), outs, 0.0))

    grad = np.asarray(jax.grad(objective)(inputs[k]))
    assert np.isfinite(grad).all()
    assert np.abs(grad).sum() > 0


@pytest.mark.slow
def test_gradient_through_jit_and_of_a_plain_sum():
    """``jax.grad(gt.ema(x, 10).sum())`` is finite although the output starts with NaNs, and
    the indicators compose with an outer jax.jit."""
    _, _, c, _ = random_ohlcv(3, 80, seed=5)
    x = jnp.asarray(c)
    grad = jax.grad(lambda v: gt.ema(v, 10, backend="jax").sum())(x)
    assert np.isfinite(np.asarray(grad)).all()
    jitted = jax.jit(lambda v: gt.rsi(v, 14, backend="jax"))
    np.testing.assert_array_equal(np.asarray(jitted(x)), np.asarray(gt.rsi(x, 14, backend="jax")))


# -- NaN and inf cases against TA-Lib ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("params", [(2, 3, 3), (5, 3, 3), (14, 1, 4), (9, 4, 1)])
def test_stoch_nan_inside_highs_and_lows_matches_talib(params):
    """TA-Lib's tracked extremes: a NaN high or low is skipped unless a rescan starts on it."""
    h, l, c, v = (a.copy() for a in random_ohlcv(6, 250, seed=sum(params)))
    rng = np.random.default_rng(params[0])
    for a in (h, l):
        a[rng.random(a.shape) < 0.06] = np.nan
    h[5], l[5] = random_ohlcv(1, 250, seed=99)[:2]  # a clean series in the same batch
    c[2, 100] = np.nan
    for o, r in zip(outputs("stoch", (h, l, c), params), reference("stoch", [h, l, c], params)):
        assert_matches(o, r)


@pytest.mark.slow
@pytest.mark.parametrize("value", [np.inf, -np.inf])
@pytest.mark.parametrize("name", sorted(set(DEFAULT_PARAMS) - {"stoch"}))
def test_infinities_match_talib(name, value):
    """A window or running sum holding an inf: inf where TA-Lib's arithmetic keeps it, NaN where
    it cancels (inf - inf). (STOCH is left out: for an infinite high or low TA-Lib returns
    finite values where the shared row bodies and this backend give NaN.)"""
    h, l, c, v = (a.copy() for a in random_ohlcv(4, 300, seed=8))
    rng = np.random.default_rng(1)
    for a in (h, l, c, v):
        for r in range(4):
            if rng.random() < 0.5:
                a[r, rng.integers(0, 300)] = value
    inputs = pick(name, (h, l, c, v))
    for params in (DEFAULT_PARAMS[name], {"macd": (3, 5, 1), "bollinger": (3, 1.5), "obv": ()}.get(name, (3,))):
        for o, r in zip(outputs(name, inputs, params), reference(name, inputs, params)):
            o = np.asarray(o)
            for test in (np.isnan, np.isposinf, np.isneginf):
                np.testing.assert_array_equal(test(o), test(r), err_msg=test.__name__)
            finite = np.isfinite(r)
            o, r = np.where(finite, o, 0.0), np.where(finite, r, 0.0)
            assert_matches(o, r)


def test_atr_window_one_is_poisoned_by_a_nan_high_or_low():
    """TA-Lib 0.8 computes ATR(1) as 1 * tr + 0 * prev: a NaN high or low poisons it for good."""
    h, l, c, _ = (a.copy() for a in random_ohlcv(3, 60, seed=2))
    h[0, 20] = np.nan
    l[1, 5] = np.nan
    c[2, 30] = np.nan  # a NaN close only drops out of the true range
    (ours,) = outputs("atr", (h, l, c), (1,))
    assert_matches(ours, reference("atr", [h, l, c], (1,))[0])


@pytest.mark.parametrize("window", [2, 3, 7])
def test_wma_recovers_at_its_reanchor(window):
    """TA-Lib's WMA re-anchors every 8 * window bars: NaN until a re-anchor window is clean."""
    _, _, c, _ = random_ohlcv(3, 500, seed=window)
    c = c.copy()
    c[0, [30, 31, 90]] = np.nan
    c[1, 8 * window + window - 2] = np.nan  # inside the first re-anchor window
    c[2, 8 * window + window - 1 - window] = np.nan  # just before it
    (ours,) = outputs("wma", (c,), (window,))
    assert_matches(ours, reference("wma", [c], (window,))[0])


@pytest.mark.slow
@pytest.mark.parametrize("name,params", [("sma", (150,)), ("vwap", (131,)), ("stoch", (129, 2, 3))])
def test_windows_longer_than_the_direct_reduction(name, params):
    """Windows above DIRECT_WINDOW_MAX take the doubling instead of reduce_window."""
    from gpu_trader.jax_backend.indicators import DIRECT_WINDOW_MAX

    assert params[0] > DIRECT_WINDOW_MAX
    inputs = pick(name, ragged_batch(n_bars=400, seed=17))
    for o, r in zip(outputs(name, inputs, params), reference(name, inputs, params)):
        assert_matches(o, r)


# -- driver ------------------------------------------------------------------------------------
def test_one_compilation_per_shape_and_parameters():
    from gpu_trader.jax_backend import indicators as jind

    _, _, c, _ = random_ohlcv(2, 64, seed=1)
    x = jnp.asarray(c)
    first = gt.macd(x, 4, 9, 3, backend="jax")
    size = jind._run._cache_size()
    again = gt.macd(x + 1.0, 4, 9, 3, backend="jax")
    assert jind._run._cache_size() == size
    assert all(isinstance(a, jax.Array) for a in first + again)


def test_features_on_jax_arrays():
    h, l, c, v = random_ohlcv(3, 120, seed=4)
    fields = dict(zip(("high", "low", "close", "volume"), (jnp.asarray(a) for a in (h, l, c, v))))
    feats = gt.features(fields)
    assert all(isinstance(a, jax.Array) for a in feats.values())
    assert_matches(feats["atr_14"], reference("atr", [h, l, c], (14,))[0])
    assert_matches(feats["bb_lower"], reference("bollinger", [c], (20, 2.0))[2])
