"""RiskStream: per-bar risk of many books, equal to the batch risk functions bar by bar.

Oracles: the batch functions of ``gpu_trader.risk``/``gpu_trader.correlation`` on the same
prefix/window (themselves checked against empyrical and scipy in test_risk.py), and
independent ones directly: pandas ``ewm`` for the EWMA covariance, empyrical for the Sharpe
ratio and the maximum drawdown, NumPy float64 (``numpy.quantile``, sorting) for VaR/CVaR and
``w' S w``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpu_trader.risk as risk
from gpu_trader.correlation import ewma_cov
from gpu_trader.risk_stream import FIXED_KEYS, LEVEL_KEYS, RiskStream

LEVELS = (0.95, 0.99)


def returns(T: int, n: int, seed: int = 0, nan: float = 0.0) -> np.ndarray:
    """(T, n) fat-tailed returns with a share ``nan`` of NaNs (one asset listed late)."""
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, size=(T, n)) * 0.01 + 0.0003
    if nan:
        r[rng.random((T, n)) < nan] = np.nan
        if n > 1:
            r[: T // 3, -1] = np.nan
    return r


def weights(books: int, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(books, n))
    w[rng.random((books, n)) < 0.3] = 0.0  # books hold subsets of the assets
    return w


def run_stream(stream: RiskStream, r: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [stream.update(x) for x in r]


def ewma_oracle(r: np.ndarray, halflife: float) -> np.ndarray:
    """``correlation.ewma_cov``'s definition in NumPy, (T, n) in: pairwise-complete
    ``sum w x_i x_j / sum w`` with ``w = 0.5 ** (age / halflife)`` (also where an asset has no
    valid bar yet, which the batch function refuses)."""
    wt = (0.5 ** (1.0 / halflife)) ** np.arange(len(r) - 1, -1, -1)
    valid = ~np.isnan(r)
    x = np.where(valid, r, 0.0)
    with np.errstate(invalid="ignore"):
        return ((x.T * wt) @ x) / ((valid.T * wt) @ valid.astype(float))


def book_sigma(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """sqrt(w' S w) over each book's held assets, NumPy float64."""
    out = np.empty(len(w))
    for k, wk in enumerate(w):
        held = np.nonzero(wk)[0]
        with np.errstate(invalid="ignore"):  # w' S w < 0 from a pairwise-complete S: NaN, as the stream
            out[k] = np.sqrt(wk[held] @ s[np.ix_(held, held)] @ wk[held]) if len(held) else 0.0
    return out


def check_against_batch(stream: RiskStream, r: np.ndarray, values: list[dict], window: int, levels) -> None:
    """Every bar equals the batch functions on the stream's book returns (prefix / window)."""
    b = np.array([v["return"] for v in values]).T  # (books, T)
    w = stream.weights
    halflife = stream.halflife
    q = list(levels)
    for t, v in enumerate(values):
        prefix = b[:, : t + 1]
        win = b[:, max(0, t - window + 1): t + 1]
        for k in range(b.shape[0]):
            valid = ~np.isnan(prefix[k])
            wvalid = ~np.isnan(win[k])
            if wvalid.any():
                assert np.array_equal(v["var_historical"][:, k], risk.var_historical(win[k], q))
                assert np.array_equal(v["cvar"][:, k], risk.cvar(win[k], q))
            else:
                assert np.isnan(v["var_historical"][:, k]).all() and np.isnan(v["cvar"][:, k]).all()
            if valid.any():
                assert v["max_drawdown"][k] == risk.max_drawdown(prefix[k])
                wealth = np.cumprod(1 + prefix[k][valid])
                dd = 1 - wealth[-1] / max(1.0, wealth.max())
                np.testing.assert_allclose(v["drawdown"][k], dd, rtol=1e-12, atol=1e-15)
            else:
                assert np.isnan(v["max_drawdown"][k]) and np.isnan(v["drawdown"][k])
            if valid.sum() >= 2:
                np.testing.assert_allclose(v["sharpe"][k], risk.sharpe(prefix[k], 12, 0.0001), rtol=1e-10)
                np.testing.assert_allclose(v["var_parametric"][:, k], risk.var_parametric(prefix[k], q),
                                           rtol=1e-10, atol=1e-15)
            else:
                assert np.isnan(v["sharpe"][k]) and np.isnan(v["var_parametric"][:, k]).all()
        s = ewma_oracle(r[: t + 1], halflife)
        sigma = book_sigma(w, s)
        scale = book_sigma(np.abs(w), np.abs(s))  # |w|' |S| |w|: the size of the sum's terms
        np.testing.assert_allclose(v["volatility_ewma"] ** 2, sigma ** 2, rtol=0, atol=1e-11 * np.nan_to_num(scale).max() ** 2)
        assert np.array_equal(np.isnan(v["volatility_ewma"]), np.isnan(sigma))


@pytest.mark.parametrize("nan", [0.0, 0.1])
def test_equal_to_batch_on_every_prefix_and_window(nan):
    T, n, window = 90, 6, 25
    r = returns(T, n, seed=2, nan=nan)
    w = weights(7, n)
    stream = RiskStream(n, w, halflife=8.0, window=window, level=LEVELS, periods_per_year=12, risk_free=0.0001)
    values = run_stream(stream, r)
    check_against_batch(stream, r, values, window, LEVELS)
    book = np.array([v["return"] for v in values]).T
    held_nan = (np.isnan(r) @ (w != 0).T).T > 0
    assert np.array_equal(np.isnan(book), held_nan)  # NaN where a held asset is missing
    np.testing.assert_allclose(book[~held_nan], np.nan_to_num(w @ np.nan_to_num(r).T)[~held_nan], rtol=1e-12,
                               atol=1e-17)
    if nan:
        assert np.isnan(stream.cov()[-1, :]).sum() == 0  # the late listing has common bars by now
        assert np.isnan(values[10]["var_ewma"]).any()  # ... but not in its first third


def test_covariance_equals_batch_and_pandas():
    T, n, halflife = 120, 5, 6.0
    r = returns(T, n, seed=3, nan=0.15)
    stream = RiskStream(n, np.eye(n), halflife=halflife, window=10)
    df = pd.DataFrame(r)
    for t, x in enumerate(r):
        stream.update(x)
        if t % 17 and t != T - 1:
            continue
        got = stream.cov()
        np.testing.assert_allclose(got, ewma_oracle(r[: t + 1], halflife), rtol=1e-12, atol=0, equal_nan=True)
        if not np.isnan(r[: t + 1]).all(axis=0).any():  # the batch refuses an asset without a valid bar
            np.testing.assert_allclose(got, ewma_cov(r[: t + 1].T, halflife), rtol=1e-12, atol=0, equal_nan=True)
        sub = df.iloc[: t + 1]
        for i in range(n):
            for j in range(n):
                # pandas: (r_i r_j).ewm(halflife).mean() over the bars where both are valid (adjust=True),
                # i.e. the weights of the missing bars' ages skipped; ignore_na=False keeps the age
                oracle = (sub[i] * sub[j]).ewm(halflife=halflife, ignore_na=False).mean().iloc[-1]
                np.testing.assert_allclose(got[i, j], oracle, rtol=1e-12, equal_nan=True)
    assert np.allclose(stream.cov(), stream.cov().T, equal_nan=True)


def test_independent_oracles_empyrical_and_numpy():
    empyrical = pytest.importorskip("empyrical")
    T, n, window = 300, 8, 60
    r = returns(T, n, seed=4)
    w = weights(5, n, seed=5)
    stream = RiskStream(n, w, halflife=20, window=window, level=0.99, periods_per_year=252)
    v = stream.warmup(r)
    b = np.array([[float(np.dot(wk[wk != 0], x[wk != 0])) for wk in w] for x in r]).T
    np.testing.assert_allclose(v["return"], b[:, -1], rtol=1e-12)
    for k in range(len(w)):
        np.testing.assert_allclose(v["sharpe"][k], empyrical.sharpe_ratio(b[k]), rtol=1e-10)
        np.testing.assert_allclose(v["max_drawdown"][k], -empyrical.max_drawdown(b[k]), rtol=1e-12)
        tail = np.sort(b[k, -window:])
        np.testing.assert_allclose(v["var_historical"][k], -np.quantile(b[k, -window:], 0.01), rtol=1e-13)
        cut = int(np.floor((window - 1) * 0.01)) + 1
        np.testing.assert_allclose(v["cvar"][k], -tail[:cut].mean(), rtol=1e-13)
    # RiskMetrics parametric VaR: z sigma with sigma from the EWMA covariance (NumPy, weights decay ** age)
    decay = 0.5 ** (1 / 20)
    wt = decay ** np.arange(T - 1, -1, -1)
    s = (r.T * wt) @ r / wt.sum()
    np.testing.assert_allclose(stream.cov(), s, rtol=1e-12)
    sigma = np.sqrt(np.einsum("ki,ij,kj->k", w, s, w))
    np.testing.assert_allclose(v["volatility_ewma"], sigma, rtol=1e-11)
    np.testing.assert_allclose(v["var_ewma"], 2.3263478740408408 * sigma, rtol=1e-11)


@settings(max_examples=15, deadline=None)
@given(T=st.integers(0, 30), window=st.integers(1, 12), books=st.integers(1, 4), n=st.integers(1, 4),
       nan=st.sampled_from([0.0, 0.3]), split=st.integers(0, 30), seed=st.integers(0, 2**16))
def test_short_histories_any_split_warmup_equals_updates(T, window, books, n, nan, split, seed):
    """Histories shorter than the window, windows of 1, single assets/books: warmup of a prefix
    then updates equals updates only, bit for bit, and the batch on every bar."""
    r = returns(T, n, seed=seed, nan=nan)
    w = weights(books, n, seed=seed + 1)
    kw = dict(halflife=3.0, window=window, level=LEVELS, periods_per_year=12, risk_free=0.0001)
    a, b = RiskStream(n, w, **kw), RiskStream(n, w, **kw)
    values = run_stream(a, r)
    split = min(split, T)
    last = b.warmup(r[:split])
    for x in r[split:]:
        last = b.update(x)
    final = values[-1] if values else a.values()
    for key in final:
        assert np.array_equal(final[key], last[key], equal_nan=True), key
    assert np.array_equal(a.cov(), b.cov(), equal_nan=True)
    if T:
        check_against_batch(a, r, values, window, LEVELS)


def test_float32_noncontiguous_readonly_and_pandas_inputs():
    T, n = 40, 4
    r = returns(T, n, seed=6, nan=0.1)
    w = weights(3, n)
    ref = RiskStream(n, w, 5.0, 10)
    ref_values = run_stream(ref, r.astype(np.float32).astype(np.float64))
    s = RiskStream(n, w, 5.0, 10)
    wide = np.zeros((T, 2 * n), dtype=np.float32)
    wide[:, ::2] = r
    for t in range(T):
        row = wide[t, ::2]  # float32, strided
        got = s.update(row)
    assert all(np.array_equal(got[k], ref_values[-1][k], equal_nan=True) for k in got)
    # float64 strided read-only rows are read in place, and never written
    s.reset()
    big = np.repeat(r, 2, axis=1)
    big.flags.writeable = False
    before = big.copy()
    for t in range(T):
        got = s.update(big[t, ::2])
    assert np.array_equal(big, before, equal_nan=True)
    ref.reset()
    expected = run_stream(ref, r)[-1]
    assert all(np.array_equal(got[k], expected[k], equal_nan=True) for k in got)
    # warmup from a float32 DataFrame (time x assets) and from a Fortran-ordered array
    s.reset()
    v1 = s.warmup(pd.DataFrame(r.astype(np.float32)))
    ref.reset()
    v2 = ref.warmup(np.asfortranarray(r.astype(np.float32).astype(np.float64)))
    assert all(np.array_equal(v1[k], v2[k], equal_nan=True) for k in v1)
    # a scalar row for one asset
    one = RiskStream(1, [2.0], 5.0, 3)
    for x in (0.01, np.float32(-0.02), np.array(0.005)):
        res = one.update(x)
    assert res["return"][0] == 2 * 0.005


def test_out_rows_and_level_shapes():
    n, books = 3, 2
    s = RiskStream(n, weights(books, n), 5.0, 4, level=LEVELS)
    out = np.empty((len(FIXED_KEYS) + 4 * len(LEVELS), books))
    r = returns(10, n, seed=7)
    for x in r[:-1]:
        s.update(x)
    twin = RiskStream(n, s.weights, 5.0, 4, level=LEVELS)
    twin.warmup(r[:-1])
    assert s.update(r[-1], out=out) is out
    d = twin.update(r[-1])
    for key in FIXED_KEYS + LEVEL_KEYS:
        assert np.array_equal(out[s.rows[key]], d[key]), key
        assert d[key].shape == ((books,) if key in FIXED_KEYS else (len(LEVELS), books))
    single = RiskStream(n, s.weights, 5.0, 4, level=0.99)
    assert single.update(r[0])["cvar"].shape == (books,)
    assert s.levels == LEVELS and "n_bars=10" in repr(s)
    before = RiskStream(n, s.weights, 5.0, 4)
    assert all(np.isnan(v).all() for v in before.values().values()) and np.isnan(before.cov()).all()


def test_set_weights_equals_a_stream_built_with_them():
    """New weights: the EWMA volatility is recomputed from the covariance (equal to a fresh
    stream's, to rounding); the return series state continues."""
    T, n = 60, 5
    r = returns(T, n, seed=8, nan=0.1)
    w1, w2 = weights(4, n, seed=1), weights(4, n, seed=2)
    s = RiskStream(n, w1, 6.0, 10)
    s.warmup(r[:30])
    s.set_weights(w2)
    last = s.warmup(r[30:])
    fresh = RiskStream(n, w2, 6.0, 10)
    ref = fresh.warmup(r)
    np.testing.assert_allclose(last["volatility_ewma"], ref["volatility_ewma"], rtol=1e-10)
    np.testing.assert_allclose(last["return"], ref["return"])
    assert not np.allclose(last["sharpe"], ref["sharpe"])  # the series kept w1's first 30 bars
    with pytest.raises(ValueError, match="n_books=4"):
        s.set_weights(w2[:2])
    assert np.array_equal(s.weights, w2)


def test_many_books():
    T, n, books = 40, 20, 300
    r = returns(T, n, seed=9, nan=0.02)
    w = weights(books, n, seed=10)
    s = RiskStream(n, w, 10.0, 15, level=0.975)
    values = run_stream(s, r)
    b = np.array([v["return"] for v in values]).T
    v = values[-1]
    assert np.array_equal(v["var_historical"], risk.var_historical(b[:, -15:], 0.975), equal_nan=True)
    assert np.array_equal(v["cvar"], risk.cvar(b[:, -15:], 0.975), equal_nan=True)
    assert np.array_equal(v["max_drawdown"], risk.max_drawdown(b))


def test_constant_book_sharpe_is_infinite_or_nan_as_batch():
    s = RiskStream(2, [[1.0, 0.0], [0.0, 1.0]], 5.0, 3, risk_free=0.001)
    for _ in range(5):
        v = s.update([0.002, 0.001])
    assert v["sharpe"][0] == np.inf and np.isnan(v["sharpe"][1])
    assert v["var_parametric"][0] == -0.002 and v["var_historical"][0] == -0.002


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(n_assets=0), ValueError, "n_assets"),
    (dict(weights=[[1.0, np.nan, 0.0]]), ValueError, "weights"),
    (dict(weights=[[1.0, 2.0]]), ValueError, "weights"),
    (dict(weights=[[True, False, True]]), TypeError, "weights"),
    (dict(weights=np.ones((0, 3))), ValueError, "weights"),
    (dict(halflife=0), ValueError, "halflife"),
    (dict(halflife="5"), TypeError, "halflife"),
    (dict(window=0), ValueError, "window"),
    (dict(window=2.5), TypeError, "window"),
    (dict(level=0.01), ValueError, "level"),
    (dict(periods_per_year=-1), ValueError, "periods_per_year"),
    (dict(risk_free=np.inf), ValueError, "risk_free"),
    (dict(window=10**9), ValueError, "window"),
])
def test_bad_arguments_are_refused(kwargs, exc, match):
    args = dict(n_assets=3, weights=np.ones((2, 3)), halflife=5.0, window=10) | kwargs
    with pytest.raises(exc, match=match):
        RiskStream(**args)


def test_bad_rows_and_out_leave_the_stream_unchanged():
    s = RiskStream(3, np.ones((2, 3)), 5.0, 4)
    s.update([0.01, 0.02, -0.01])
    before = s.values()
    for row, exc in [([0.1, 0.2], ValueError), (np.ones((2, 3)), ValueError), ([True, False, True], TypeError),
                     ("abc", TypeError), (np.ma.masked_array([0.1, 0.2, 0.3]), TypeError), (None, TypeError)]:
        with pytest.raises(exc, match="row"):
            s.update(row)
    ro = np.empty((9, 2))
    ro.flags.writeable = False
    for out, exc in [(np.empty((9, 3)), ValueError), (np.empty((9, 2), np.float32), TypeError), (ro, ValueError),
                     ([[0.0] * 2] * 9, TypeError)]:
        with pytest.raises(exc, match="out"):
            s.update([0.0, 0.0, 0.0], out=out)
    with pytest.raises(ValueError, match="history"):
        s.warmup(np.zeros((5, 4)))
    with pytest.raises(TypeError, match="history"):
        s.warmup(np.zeros((5, 3), dtype=bool))
    assert s.n_bars == 1
    after = s.values()
    assert all(np.array_equal(before[k], after[k], equal_nan=True) for k in before)


def test_reset_starts_over():
    r = returns(20, 3, seed=11)
    s = RiskStream(3, weights(2, 3), 4.0, 5)
    first = s.warmup(r)
    s.update(r[0])
    s.reset()
    assert s.n_bars == 0 and np.isnan(s.values()["return"]).all()
    again = s.warmup(r)
    assert all(np.array_equal(first[k], again[k], equal_nan=True) for k in first)


def test_bench_peer_computes_the_same_window_risk():
    """The bench's ``batch`` peer (the batch functions on the trailing window each bar) gives the
    stream's historical VaR and CVaR, so the ratio compares the same work."""
    from gpu_trader.backend import get_backend
    from gpu_trader.bench.suites import risk_stream as suite

    (books, assets), _ = suite.UPDATE_SHAPES["quick"]
    ours = suite._update_setup(books, assets)(get_backend("cpu"))
    peer = suite._batch_setup(books, assets)()
    probe = RiskStream(assets, np.ones((1, assets)), suite.HALFLIFE, suite.WINDOW, suite.LEVEL)
    for _ in range(3):
        out, res = ours(), peer()
        var, cvar = res[1], res[2]
        np.testing.assert_allclose(out[probe.rows["var_historical"]][0], var, rtol=1e-12)
        np.testing.assert_allclose(out[probe.rows["cvar"]][0], cvar, rtol=1e-12)
