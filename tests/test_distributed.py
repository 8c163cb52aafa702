"""Dask scale-out: the cluster's Monte Carlo VaR equals the single process's for a seed;
indicators over Dask arrays equal the in-memory batch call (and so TA-Lib)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import gpu_trader as gt

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from gpu_trader import distributed as gtd  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """A real 2-worker LocalCluster (separate processes), as the issue asks."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  host="127.0.0.1", silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as c:
        yield c


def _book(n=12, seed=0):
    rng = np.random.default_rng(seed)
    vol = rng.uniform(0.01, 0.03, n)
    corr = 0.4 + 0.6 * np.eye(n)
    cov = corr * np.outer(vol, vol)
    weights = rng.uniform(1e5, 1e6, (3, n))
    return weights, rng.normal(0, 1e-4, n), cov


@pytest.mark.slow
@pytest.mark.parametrize("dist, with_options", [("normal", False), ("t", True)])
def test_cluster_var_equals_single_process(client, dist, with_options):
    weights, mu, cov = _book()
    kw = dict(level=0.99, n_scenarios=40_000, horizon=5, dist=dist, dof=5 if dist == "t" else None, seed=123,
              chunk_size=4096)
    if with_options:
        kw["options"] = gt.EuropeanOptions(asset=[0, 3], spot=100.0, strike=[95.0, 105.0], expiry=0.5, vol=0.3,
                                           call=[False, True], quantity=[[2000.0, -1000.0]] * 3)
    single = gt.var_monte_carlo(weights, mu, cov, **kw)
    for partitions in (None, 3, 7):
        cluster = gtd.var_monte_carlo(client, weights, mu, cov, partitions=partitions, **kw)
        np.testing.assert_array_equal(cluster.var, single.var)
        np.testing.assert_array_equal(cluster.cvar, single.cvar)
        np.testing.assert_array_equal(cluster.var_se, single.var_se)
        np.testing.assert_array_equal(cluster.contributions, single.contributions)
        if with_options:
            np.testing.assert_array_equal(cluster.option_contributions, single.option_contributions)
        assert cluster.seed == single.seed == 123


@pytest.mark.slow
def test_cluster_var_equals_single_process_on_jax(client):
    """The jax backend's jax.random blocks are counter-based too: the same bits on a cluster."""
    pytest.importorskip("jax")
    weights, mu, cov = _book(seed=1)
    kw = dict(level=0.99, n_scenarios=30_000, horizon=5, dist="t", dof=5, seed=321, chunk_size=4096,
              options=gt.EuropeanOptions(asset=[1], spot=100.0, strike=100.0, expiry=0.5, vol=0.3, call=[False],
                                         quantity=[[500.0]] * 3),
              backend="jax")
    single = gt.var_monte_carlo(weights, mu, cov, **kw)
    cluster = gtd.var_monte_carlo(client, weights, mu, cov, partitions=3, **kw)
    for field in ("var", "cvar", "var_se", "contributions", "option_contributions"):
        np.testing.assert_array_equal(gt.to_numpy(getattr(cluster, field)), gt.to_numpy(getattr(single, field)),
                                      err_msg=field)


def test_forwarded_defaults_match_the_single_process_signature():
    import inspect

    sig = inspect.signature(gt.montecarlo.var_monte_carlo)
    defaults = {k: p.default for k, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert defaults == gt.montecarlo.MONTE_CARLO_DEFAULTS


def test_unknown_keyword_is_a_type_error(client):
    weights, mu, cov = _book()
    with pytest.raises(TypeError, match="n_scenario"):
        gtd.var_monte_carlo(client, weights, mu, cov, n_scenario=1000)


def test_merge_memory_of_all_partitions_is_refused_before_submitting(client, monkeypatch):
    """The driver holds every partition's tail: a call the single process could run may be
    refused for the cluster when the merge would exceed the working-memory limit."""
    from gpu_trader._internal import montecarlo_xp, validation
    from gpu_trader.montecarlo import plan_monte_carlo

    weights, mu, cov = _book()
    kw = dict(level=0.9, n_scenarios=40_000, seed=1, chunk_size=4096)
    be, plan, _ = plan_monte_carlo(weights, mu, cov, **{**gtd.MONTE_CARLO_DEFAULTS, **kw})
    single = montecarlo_xp.work_bytes(plan, be.ops("montecarlo"))
    monkeypatch.setattr(validation, "WORK_MEMORY_LIMIT", single + gtd.merge_bytes(plan, 3))
    gt.var_monte_carlo(weights, mu, cov, **kw)  # fits
    gtd.var_monte_carlo(client, weights, mu, cov, partitions=3, **kw)  # fits, just
    submitted = []
    monkeypatch.setattr(client, "submit", lambda *a, **k: submitted.append(a))
    with pytest.raises(ValueError, match="merging 7 partitions' tails .* working memory"):
        gtd.var_monte_carlo(client, weights, mu, cov, partitions=7, **kw)
    assert not submitted


def test_partition_bounds_cover_the_range_on_chunk_boundaries():
    for n, chunk, parts in [(40_000, 4096, 3), (100, 4096, 5), (12_288, 4096, 3), (12_289, 4096, 10)]:
        bounds = gtd.partition_bounds(n, chunk, parts)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a % chunk == 0 and a < b for a, b in bounds)
        assert all(b1 == a2 for (_, b1), (a2, _) in zip(bounds, bounds[1:]))
        assert len(bounds) <= parts


def test_engine_tail_refuses_a_start_off_the_chunk_grid():
    from gpu_trader._internal import montecarlo_xp

    weights, mu, cov = _book()
    _, plan, _ = gt.montecarlo.plan_monte_carlo(
        weights, mu, cov, level=0.99, n_scenarios=10_000, horizon=1, dist="normal", dof=None, seed=1, options=None,
        contributions=False, chunk_size=1024, dtype=np.float64, backend="cpu")
    with pytest.raises(ValueError, match="multiple of the chunk size"):
        montecarlo_xp.tail(plan, gt.get_backend("cpu").ops("montecarlo"), 100, 5000)


@pytest.mark.parametrize("name, fields, params", [
    ("sma", ("close",), {"window": 20}),
    ("rsi", ("close",), {"window": 14}),
    ("macd", ("close",), {"fast": 12, "slow": 26, "signal": 9}),
    ("atr", ("high", "low", "close"), {"window": 14}),
])
def test_indicator_over_dask_array_equals_batch(name, fields, params):
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (10, 300)), axis=-1))
    data = {"close": close, "high": close * 1.01, "low": close * 0.99}
    inputs = [data[f] for f in fields]
    lazy = gtd.indicator(name, *(da.from_array(a, chunks=(3, 100)) for a in inputs), **params)
    expected = getattr(gt, name)(*inputs, **params)
    if isinstance(expected, tuple):
        assert isinstance(lazy, tuple) and len(lazy) == len(expected)
        for got, want in zip(lazy, expected):
            np.testing.assert_array_equal(got.compute(), want)
    else:
        np.testing.assert_array_equal(lazy.compute(), expected)


@pytest.mark.parametrize("name, fields, params", [
    ("ema", ("close",), {"window": 10}),
    ("bollinger", ("close",), {"window": 20, "nstd": 2.0}),
    ("atr", ("high", "low", "close"), {"window": 14}),
])
def test_indicator_over_dask_dataframe_equals_pandas_batch(name, fields, params):
    """Time along the index, one column per symbol, ragged listing dates: the result is a dask
    DataFrame with the same index, columns and partitions, equal to the in-memory pandas call."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    rng = np.random.default_rng(4)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (7, 400)), axis=-1))
    close[2, :35] = np.nan                      # listed later
    index = pd.date_range("2024-01-01", periods=400, freq="min", name="time")
    cols = [f"S{i}" for i in range(7)]
    data = {k: pd.DataFrame((close * f).T, index=index, columns=cols)
            for k, f in (("close", 1.0), ("high", 1.01), ("low", 0.99))}
    frames = [dd.from_pandas(data[f], npartitions=3) for f in fields]
    lazy = gtd.indicator(name, *frames, **params)
    expected = getattr(gt, name)(*(data[f] for f in fields), **params)
    lazy, expected = (lazy, expected) if isinstance(expected, tuple) else ((lazy,), (expected,))
    assert len(lazy) == len(expected)
    for got, want in zip(lazy, expected):
        assert isinstance(got, dd.DataFrame) and got.npartitions == 3
        pd.testing.assert_frame_equal(got.compute(), want)


def test_indicator_over_dask_series():
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    s = pd.Series(np.linspace(1.0, 2.0, 120) ** 2, name="AAPL")
    got = gtd.indicator("rsi", dd.from_pandas(s, npartitions=4), window=9)
    assert isinstance(got, dd.Series)
    pd.testing.assert_series_equal(got.compute(), gt.rsi(s, 9))


def test_indicator_bad_input():
    x = da.ones((2, 50), chunks=(1, 50))
    with pytest.raises(ValueError, match="unknown indicator"):
        gtd.indicator("nope", x)
    with pytest.raises(TypeError, match="takes 3 input"):
        gtd.indicator("atr", x, window=14)
    with pytest.raises(TypeError, match="window must be one value"):
        gtd.indicator("sma", x, window=[5, 10])
    with pytest.raises(ValueError, match="shape"):
        gtd.indicator("obv", x, da.ones((3, 50)))
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    frame = dd.from_pandas(pd.DataFrame(np.ones((50, 2)), columns=["a", "b"]), npartitions=2)
    with pytest.raises(TypeError, match="not a mix"):
        gtd.indicator("obv", frame, x)
    other = dd.from_pandas(pd.DataFrame(np.ones((50, 2)), columns=["a", "c"]), npartitions=2)
    with pytest.raises(ValueError, match="columns"):
        gtd.indicator("obv", frame, other)
    # same number of partitions, other boundaries: refused up front, naming the input
    base = pd.DataFrame(np.ones((50, 2)), columns=["a", "b"])
    cut = dd.from_pandas(base, npartitions=2).repartition(divisions=[0, 10, 49])
    with pytest.raises(ValueError, match="input 1 has index divisions"):
        gtd.indicator("obv", frame, cut)
    with pytest.raises(ValueError, match="input 1 has partitions of"):
        gtd.indicator("obv", frame.clear_divisions(), cut.clear_divisions())
