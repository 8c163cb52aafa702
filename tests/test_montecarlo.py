"""Monte Carlo VaR (``gpu_trader.var_monte_carlo``) against independent oracles.

* linear Gaussian portfolios: the closed-form VaR ``-h w.mu + z_level sqrt(h) sqrt(w' cov w)``
  (scipy.stats.norm) within 4 of the reported standard errors, the reported standard
  error against the asymptotic one of a sample quantile, and the Euler contributions
  against their closed form;
* multivariate Student-t: a linear portfolio of a multivariate t is a scaled univariate t,
  so the closed form uses scipy.stats.t;
* options: a brute-force NumPy revaluation (Black-Scholes via scipy.stats.norm) of the
  very same scenarios (re-drawn with the backend's block generator), full loss matrix and
  a full sort;
* chunk-size invariance, reproducibility, bad input;
* the GPU module's pieces: its tail merge (NumPy) against the CPU heap and a sort, and its
  Black-Scholes kernel and the whole engine under numba's CUDA simulator (a subprocess);
* the GPU's in-kernel generator (Philox4x32-10 + Box-Muller, Marsaglia-Tsang for the
  t factors): Random123's known answers, scipy's normal and chi-square laws, and the driver
  fed with it (compiled for the CPU by numba) against the closed forms -- the GPU draws other
  numbers than the CPU backend, so the backends agree statistically; in the simulator the
  fused projection kernel and the normals kernel + GEMM agree with that host reference;
* the policies: the tail merge sorts only candidates (counted), the GPU chunk fits its
  device-memory budget, the fused path writes no normals.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import gpu_trader as gt
from gpu_trader.cpu_fallback import montecarlo as cpu_mc
from gpu_trader.kernels import montecarlo as gpu_mc
from gpu_trader._internal import philox_loops
from gpu_trader._internal.montecarlo_xp import band_for, gemm_projection, merge_tail, merge_tail_candidates

AREA = "montecarlo"  # the backends that implement it run these tests (conftest.py)

ROOT = Path(__file__).resolve().parent.parent


def random_problem(n=12, p=4, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    vol = rng.uniform(0.005, 0.03, n)
    corr = a @ a.T + n * np.eye(n)
    d = np.sqrt(np.diag(corr))
    cov = corr / d[:, None] / d[None, :] * vol[:, None] * vol[None, :]
    mu = rng.normal(0.0, 5e-4, n)
    w = rng.normal(size=(p, n)) * 1000.0
    return w, mu, cov


def closed_form_normal(w, mu, cov, level, h):
    sd = np.sqrt(np.einsum("pi,ij,pj->p", w, cov, w) * h)
    return -h * (w @ mu) + stats.norm.ppf(level) * sd, sd


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_gaussian_matches_closed_form(backend, dtype):
    w, mu, cov = random_problem()
    level, h, n = 0.99, 10, 200_000
    res = gt.var_monte_carlo(w, mu, cov, level=level, n_scenarios=n, horizon=h, seed=7, dtype=dtype,
                             backend=backend)
    var, se = gt.to_numpy(res.var), gt.to_numpy(res.var_se)
    exact, sd = closed_form_normal(w, mu, cov, level, h)
    assert np.all(np.abs(var - exact) < 4 * se), (var, exact, se)
    # the reported SE against the asymptotic SE of a sample quantile: sqrt(p(1-p)/N) / pdf
    p = 1 - level
    asym = np.sqrt(p * (1 - p) / n) / stats.norm.pdf(stats.norm.ppf(level)) * sd
    np.testing.assert_allclose(se, asym, rtol=0.35)
    lo, hi = (gt.to_numpy(x) for x in res.var_ci)
    assert np.all(lo < var) and np.all(var < hi)
    # CVaR of a normal: mean + sd * pdf(z) / (1 - level)
    es = -h * (w @ mu) + sd * stats.norm.pdf(stats.norm.ppf(level)) / p
    assert np.all(np.abs(gt.to_numpy(res.cvar) - es) < 6 * se)


def test_euler_contributions_match_closed_form_and_sum_to_var(backend):
    w, mu, cov = random_problem(p=3, seed=1)
    level, h = 0.975, 5
    res = gt.var_monte_carlo(w, mu, cov, level=level, n_scenarios=200_000, horizon=h, seed=11, backend=backend)
    c, var = gt.to_numpy(res.contributions), gt.to_numpy(res.var)
    assert c.shape == w.shape
    np.testing.assert_allclose(c.sum(axis=1), var, rtol=1e-10)
    _, sd = closed_form_normal(w, mu, cov, level, h)
    euler = w * (-h * mu + stats.norm.ppf(level) * h * (w @ cov) / sd[:, None])
    # Noise of a contribution: the band's mean of loss_i given the portfolio loss (conditional
    # sd over sqrt(band size)) plus the slope of E[loss_i | loss] times the VaR's own error.
    band = 2 * band_for(200_000, level) + 1
    cov_il = h * w * (w @ cov)                            # Cov(loss_i, loss)
    beta = cov_il / sd[:, None] ** 2
    cond_sd = np.sqrt(h * w * w * np.diag(cov) - cov_il * beta)
    noise = cond_sd / np.sqrt(band) + np.abs(beta) * gt.to_numpy(res.var_se)[:, None]
    assert np.all(np.abs(c - euler) < 4 * noise), np.abs(c - euler) / noise


@pytest.mark.slow
@pytest.mark.parametrize("dof", [3.5, 6.0])
def test_student_t_linear_portfolio_is_a_scaled_t(backend, dof):
    w, mu, cov = random_problem(p=3, seed=2)
    level, h = 0.99, 4
    res = gt.var_monte_carlo(w, mu, cov, level=level, n_scenarios=200_000, horizon=h, dist="t", dof=dof,
                             seed=5, backend=backend)
    sd = np.sqrt(np.einsum("pi,ij,pj->p", w, cov, w) * h)
    scale = sd * np.sqrt((dof - 2) / dof)  # cov is the scenarios' covariance
    exact = -h * (w @ mu) + scale * stats.t.ppf(level, dof)
    var, se = gt.to_numpy(res.var), gt.to_numpy(res.var_se)
    assert np.all(np.abs(var - exact) < 4 * se), (var, exact, se)
    np.testing.assert_allclose(gt.to_numpy(res.contributions).sum(axis=1), var, rtol=1e-10)


def _bs(spot, strike, tau, rate, vol, call):
    """Vectorized Black-Scholes (scipy.stats.norm), with the zero-spot and expiry limits."""
    spot = np.asarray(spot, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = vol * np.sqrt(np.maximum(tau, 0))
        d1 = (np.log(spot / strike) + (rate + 0.5 * vol**2) * tau) / sd
        d2 = d1 - sd
        df = np.exp(-rate * tau)
        c = spot * stats.norm.cdf(d1) - strike * df * stats.norm.cdf(d2)
        p = strike * df * stats.norm.cdf(-d2) - spot * stats.norm.cdf(-d1)
    price = np.where(call, c, p)
    price = np.where(spot <= 0, np.where(call, 0.0, strike * df), price)
    intrinsic = np.where(call, np.maximum(spot - strike, 0), np.maximum(strike - np.maximum(spot, 0), 0))
    return np.where(tau <= 0, intrinsic, price)


BOOK = dict(asset=[0, 3, 3, 7, 2], spot=[100.0, 50.0, 50.0, 20.0, 80.0], strike=[100.0, 45.0, 60.0, 21.0, 80.0],
            expiry=[0.5, 0.25, 1.0, 0.03, 2.0], vol=[0.2, 0.35, 0.3, 0.5, 0.25], rate=[0.01, 0.0, 0.03, 0.02, 0.0],
            call=[True, False, True, False, True])


@pytest.mark.parametrize("dist,dof", [("normal", None), ("t", 4.0)])
def test_options_match_brute_force_revaluation(dist, dof):
    w, mu, cov = random_problem(p=3, seed=3)
    n_s, h, level = 20_000, 10, 0.99
    qty = np.array([[30.0, -50.0, 20.0, 400.0, 10.0], [0.0, 100.0, -100.0, 0.0, 0.0], [-10.0, 0.0, 0.0, 0.0, 50.0]])
    book = gt.EuropeanOptions(quantity=qty, **BOOK)
    res = gt.var_monte_carlo(w, mu, cov, level=level, n_scenarios=n_s, horizon=h, dist=dist, dof=dof, seed=9,
                             options=book, chunk_size=1000, backend="cpu")
    # brute force: the same standard normals, the full return matrix, full revaluation, a full sort
    z, g = cpu_mc.normals(9, 0, n_s, w.shape[1], np.float64, dof)
    g = np.ones(n_s) if g is None else g
    r = h * mu + np.sqrt(h) * g[:, None] * (z @ np.linalg.cholesky(cov).T)
    b = {k: np.asarray(v) for k, v in BOOK.items()}
    v0 = _bs(b["spot"], b["strike"], b["expiry"], b["rate"], b["vol"], b["call"])
    v1 = _bs(b["spot"] * (1 + r[:, b["asset"]]), b["strike"], b["expiry"] - h / 252, b["rate"], b["vol"], b["call"])
    option_loss = -(v1 - v0)[:, None, :] * qty[None, :, :]          # (N, P, n_options)
    loss = -(r @ w.T) + option_loss.sum(axis=2)                        # (N, P)
    k = math.ceil(n_s * (1 - Fraction(str(level))))  # exact: ceil(N (1 - level))
    srt = -np.sort(-loss, axis=0)
    np.testing.assert_allclose(res.var, srt[k - 1], rtol=1e-9)
    np.testing.assert_allclose(res.cvar, srt[:k].mean(axis=0), rtol=1e-9)
    # Euler contributions: band means of each position's loss, scaled to sum to the VaR
    b_half = band_for(n_s, level)
    order = np.argsort(-loss, axis=0, kind="stable")[k - 1 - b_half: k + b_half]  # (2b+1, P)
    lin = np.stack([(-(r[order[:, p]] * w[p])).mean(axis=0) for p in range(3)])
    opt = np.stack([option_loss[order[:, p], p].mean(axis=0) for p in range(3)])
    scale = res.var / (lin.sum(axis=1) + opt.sum(axis=1))
    np.testing.assert_allclose(res.contributions, lin * scale[:, None], rtol=1e-7, atol=1e-9 * np.abs(lin).max())
    np.testing.assert_allclose(res.option_contributions, opt * scale[:, None], rtol=1e-7,
                               atol=1e-9 * np.abs(opt).max())
    np.testing.assert_allclose(res.contributions.sum(1) + res.option_contributions.sum(1), res.var, rtol=1e-10)


def test_black_scholes_shared_math_matches_scipy():
    from gpu_trader._internal.option_loops import bs_price

    rng = np.random.default_rng(4)
    for _ in range(200):
        s, k = rng.uniform(1, 200, 2)
        tau, r, vol = rng.uniform(-0.1, 3), rng.uniform(-0.01, 0.08), rng.uniform(0, 0.8)
        call = bool(rng.integers(2))
        assert bs_price(s, k, tau, r, vol, call) == pytest.approx(float(_bs(s, k, tau, r, vol, call)), rel=1e-10,
                                                                   abs=1e-10)
    assert bs_price(-5.0, 100.0, 1.0, 0.05, 0.2, False) == pytest.approx(100 * np.exp(-0.05))
    assert bs_price(0.0, 100.0, 1.0, 0.05, 0.2, True) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("dist,dof", [("normal", None), ("t", 5.0)])
def test_chunk_size_does_not_change_the_result(backend, dist, dof):
    w, mu, cov = random_problem(p=2, seed=5)
    book = gt.EuropeanOptions(quantity=[5.0, 1.0, -3.0, 10.0, 2.0], **BOOK)
    # one-scenario chunks and a ragged last chunk where chunks are cheap (cpu); jax compiles
    # once per chunk shape, so there two shapes (chunks of 3,000 and the whole run)
    sizes = (1, 2500, 6_000, None) if backend == "cpu" else (3_000, None)
    runs = [gt.var_monte_carlo(w, mu, cov, n_scenarios=6_000, seed=3, dist=dist, dof=dof, options=book,
                               chunk_size=c, backend=backend) for c in sizes]
    for r in runs[1:]:
        for f in ("var", "cvar", "var_se", "contributions", "option_contributions"):
            np.testing.assert_allclose(gt.to_numpy(getattr(r, f)), gt.to_numpy(getattr(runs[0], f)), rtol=1e-12,
                                       err_msg=f)
    other = gt.var_monte_carlo(w, mu, cov, n_scenarios=6_000, seed=4, dist=dist, dof=dof, backend=backend)
    assert not np.allclose(gt.to_numpy(other.var), gt.to_numpy(runs[0].var), rtol=1e-6)


def test_single_portfolio_shapes_float32_and_inputs_untouched():
    w, mu, cov = random_problem(p=1, seed=6)
    w1 = w[0].copy()
    before = (w1.copy(), mu.copy(), cov.copy())
    res = gt.var_monte_carlo(w1, mu, cov, n_scenarios=20_000, seed=1, dtype=np.float32)
    assert res.var.shape == () and res.contributions.shape == (12,) and res.option_contributions is None
    assert res.var.dtype == np.float64 and res.seed == 1 and res.n_scenarios == 20_000
    np.testing.assert_allclose(res.contributions.sum(), res.var, rtol=1e-6)
    for a, b in zip((w1, mu, cov), before):
        np.testing.assert_array_equal(a, b)
    fast = gt.var_monte_carlo(w1, mu, cov, n_scenarios=20_000, seed=1, contributions=False)
    assert fast.contributions is None and np.isfinite(fast.var)
    drawn = gt.var_monte_carlo(w1, mu, cov, n_scenarios=20_000)
    again = gt.var_monte_carlo(w1, mu, cov, n_scenarios=20_000, seed=drawn.seed)
    assert again.var == drawn.var


def test_memory_does_not_grow_with_the_number_of_scenarios():
    """Peak traced allocation (NumPy reports to tracemalloc) of 20x more scenarios stays about the same."""
    import tracemalloc

    w, mu, cov = random_problem(n=50, p=2, seed=9)
    peaks = []
    for n_s in (10_000, 200_000):
        tracemalloc.start()
        gt.var_monte_carlo(w, mu, cov, n_scenarios=n_s, seed=1, chunk_size=2048, level=0.999)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    full_matrix = 200_000 * 50 * 8
    assert peaks[1] < 2 * peaks[0] and peaks[1] < full_matrix / 4, peaks


def test_not_positive_definite_cov_is_repaired_with_a_warning():
    w, mu, cov = random_problem(n=6, p=2, seed=7)
    # a duplicated asset: singular (positive semi-definite), closed form still exact
    big = np.zeros((7, 7))
    big[:6, :6] = cov
    big[6, :6] = big[:6, 6] = cov[0]
    big[6, 6] = cov[0, 0]
    w7 = np.hstack([w, w[:, :1]])
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        res = gt.var_monte_carlo(w7, np.r_[mu, mu[0]], big, n_scenarios=100_000, seed=2)
    exact, _ = closed_form_normal(w7, np.r_[mu, mu[0]], big, 0.99, 1)
    assert np.all(np.abs(res.var - exact) < 4 * res.var_se)
    # an indefinite matrix (inconsistent correlations): its negative eigenvalue is clipped
    corr = np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]]) * 1e-4
    with pytest.warns(RuntimeWarning, match="clipped"):
        res = gt.var_monte_carlo(w[:, :3], mu[:3], corr, n_scenarios=10_000, seed=2)
    assert np.all(np.isfinite(res.var))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gt.var_monte_carlo(w, mu, cov, n_scenarios=10_000, seed=2)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(cov=np.ones((3, 4))), ValueError, "cov must be a square"),
    (dict(cov=np.eye(5)), ValueError, "cov is .* but weights have 4 assets"),
    (dict(cov=np.eye(4) + np.triu(np.ones((4, 4)), 1) * 0.1), ValueError, "cov must be symmetric"),
    (dict(cov=-np.eye(4)), ValueError, "negative variances"),
    (dict(weights=np.ones((2, 3))), ValueError, "weights have 3 assets"),
    (dict(weights=np.ones((2, 2, 4))), ValueError, "weights must have shape"),
    (dict(mu=np.zeros(3)), ValueError, "mu must be a scalar or have shape"),
    (dict(level=0.0), ValueError, "level must satisfy 0.5 <= level < 1"),
    (dict(level=1.0), ValueError, "level must satisfy 0.5 <= level < 1"),
    (dict(level=1.5), ValueError, "level must satisfy 0.5 <= level < 1"),
    (dict(level=[0.9, 0.99]), TypeError, "level must be one number"),
    (dict(level=True), TypeError, "level must be a real number"),
    (dict(level="0.99"), TypeError, "level must be a real number"),
    (dict(horizon=0), ValueError, "horizon must be > 0"),
    (dict(dist="t"), ValueError, "needs dof"),
    (dict(dist="t", dof=2.0), ValueError, "dof must be > 2"),
    (dict(dof=5.0), ValueError, "dof is only used"),
    (dict(dist="cauchy"), ValueError, "dist must be"),
    (dict(weights=np.array([1.0, np.nan, 0, 0])), ValueError, "weights contains NaN"),
    (dict(cov=np.where(np.eye(4) > 0, np.nan, 0.0)), ValueError, "cov contains NaN"),
    (dict(mu=np.array([0, 0, np.inf, 0])), ValueError, "mu contains NaN or inf"),
    (dict(n_scenarios=500), ValueError, "n_scenarios=500 is too small"),
    (dict(n_scenarios=1.5e4), TypeError, "n_scenarios must be an integer"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(seed=1.5), TypeError, "seed must be an integer"),
    (dict(horizon=-1), ValueError, "horizon must be > 0"),
    (dict(chunk_size=0), ValueError, "chunk_size must be >= 1"),
    (dict(dtype=np.int32), TypeError, "dtype must be float32 or float64"),
    (dict(weights=np.array(["a", "b", "c", "d"])), TypeError, "weights must be a real numeric array"),
    (dict(options="calls"), TypeError, "EuropeanOptions"),
    (dict(options=gt.EuropeanOptions(asset=4, spot=1.0, strike=1.0, expiry=1.0, vol=0.2, quantity=1.0)),
     ValueError, "options.asset must index"),
    (dict(options=gt.EuropeanOptions(asset=0, spot=1.0, strike=1.0, expiry=1.0, vol=-0.2, quantity=1.0)),
     ValueError, "negative volatility"),
    (dict(options=gt.EuropeanOptions(asset=0, spot=1.0, strike=0.0, expiry=1.0, vol=0.2, quantity=1.0)),
     ValueError, "options.strike must be > 0"),
    (dict(options=gt.EuropeanOptions(asset=[0, 1], spot=1.0, strike=1.0, expiry=1.0, vol=0.2,
                                     quantity=np.ones((3, 2)))), ValueError, "options.quantity must have shape"),
    (dict(options=gt.EuropeanOptions(asset=[0, 1], spot=[1.0, 2.0, 3.0], strike=1.0, expiry=1.0, vol=0.2,
                                     quantity=1.0)), ValueError, "one length"),
    (dict(options=gt.EuropeanOptions(asset=0.5, spot=1.0, strike=1.0, expiry=1.0, vol=0.2, quantity=1.0)),
     TypeError, "integer asset indices"),
    (dict(backend="nope"), ValueError, "available backends"),
    (dict(n_scenarios=gt.montecarlo.MAX_SCENARIOS + 1), ValueError, "n_scenarios must be <="),
    (dict(n_scenarios=True), TypeError, "n_scenarios must be an integer"),
    (dict(chunk_size=gt.montecarlo.MAX_SCENARIOS + 1), ValueError, "chunk_size must be <="),
    (dict(chunk_size=np.float64(4096)), TypeError, "chunk_size must be an integer"),
    (dict(seed=2**64), ValueError, "seed must be <="),
    (dict(seed=np.bool_(True)), TypeError, "seed must be an integer"),
    (dict(horizon=gt.montecarlo.MAX_HORIZON + 1), ValueError, "horizon must be <="),
    (dict(horizon=float("inf")), ValueError, "horizon must be finite"),
    (dict(weights=np.ma.masked_array(np.ones((2, 4)), mask=[[0, 1, 0, 0]] * 2)), TypeError, "masked"),
])
def test_bad_input_is_a_clear_error(kwargs, exc, match):
    args = dict(weights=np.ones((2, 4)), mu=0.0, cov=np.eye(4) * 1e-4, n_scenarios=10_000, seed=0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        gt.var_monte_carlo(args.pop("weights"), args.pop("mu"), args.pop("cov"), **args)


@settings(max_examples=25, deadline=None)
@given(P=st.integers(1, 5), m=st.integers(1, 40), chunks=st.lists(st.integers(1, 60), min_size=1, max_size=5),
       seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float64, np.float32]))
def test_tail_keepers_agree_with_a_sort(P, m, chunks, seed, dtype):
    """The CPU heap, the partition merge and the GPU module's candidate merge (run with NumPy) keep the m largest."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(P, sum(chunks))).astype(dtype)
    data[:, ::7] = data[:, :1]  # ties
    m = min(m, data.shape[1])
    heap = (np.full((P, m), -np.inf, dtype), np.full((P, m), -1, np.int64))
    merged = (heap[0].copy(), heap[1].copy())
    candidates = (heap[0].copy(), heap[1].copy())
    first = 0
    for c in chunks:
        heap = cpu_mc.tail_update(*heap, data[:, first:first + c], first)
        merged = merge_tail(np, *merged, data[:, first:first + c], first)
        candidates = merge_tail_candidates(np, *candidates, data[:, first:first + c], first)
        first += c
    expect = -np.sort(-data, axis=1)[:, :m]
    np.testing.assert_array_equal(candidates[0], expect)  # kept sorted
    for vals, idx in (heap, merged, candidates):
        np.testing.assert_array_equal(-np.sort(-vals, axis=1), expect)
        np.testing.assert_array_equal(np.take_along_axis(data, idx, axis=1), vals)


def test_random_blocks_are_counter_based():
    """Any run of blocks draws the same numbers as drawing everything at once."""
    whole, g = cpu_mc.normals(42, 0, 5 * cpu_mc.BLOCK + 17, 3, np.float64, 5.0)
    part, gp = cpu_mc.normals(42, 2 * cpu_mc.BLOCK, 3 * cpu_mc.BLOCK + 17, 3, np.float64, 5.0)
    np.testing.assert_array_equal(part, whole[2 * cpu_mc.BLOCK:])
    np.testing.assert_array_equal(gp, g[2 * cpu_mc.BLOCK:])
    assert abs(whole.mean()) < 0.05 and abs(whole.std() - 1) < 0.05
    assert np.all(g > 0) and abs(np.mean(g**2) - 1) < 0.15  # E[(dof - 2) / chi2_dof] = 1


# -- the GPU generator and the GPU policies, on the CPU ----------------------------------
def test_philox_matches_random123_known_answers():
    """Philox4x32-10 known-answer vectors of Random123 (kat_vectors), as Python and compiled by numba."""
    from numba import njit

    u = np.uint64
    compiled = njit(philox_loops.philox4x32)
    for ctr, key, expect in [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]:
        args = [u(x) for x in ctr + key]
        assert [int(w) for w in philox_loops.philox4x32(*args)] == list(expect)
        assert [int(w) for w in compiled(*args)] == list(expect)


def _host_draw():
    """The GPU kernels' draws compiled for the CPU: ``draw(k0, k1, first, z, dof, g)`` fills ``z`` ``(rows, n)``
    and, for ``dof > 0``, ``g`` ``(rows,)`` (the test's reference for the kernels)."""
    from numba import njit

    @njit
    def draw(k0, k1, first, z, dof, g):
        rows, n = z.shape
        for r in range(rows):
            for q in range((n + 1) // 2):
                a, b = philox_loops.scenario_normal_pair(first + r, q, k0, k1)
                z[r, 2 * q] = a
                if 2 * q + 1 < n:
                    z[r, 2 * q + 1] = b
            if dof > 0:
                g[r] = philox_loops.t_factor(first + r, dof, k0, k1)

    return draw


class _HostGpuRandom:
    """The driver's primitives with the GPU's random numbers drawn on the host (NumPy GEMM, CPU tail)."""

    xp = np
    BLOCK = gpu_mc.BLOCK
    CHUNKS_IN_FLIGHT = 1
    MERGE_SCRATCH = True
    FUSED_MAX_ROWS = 0
    CHUNK_BYTES = None
    normals_at = None
    map_chunks = staticmethod(gpu_mc.map_chunks)
    option_pnl = staticmethod(cpu_mc.option_pnl)
    scatter_add = staticmethod(cpu_mc.scatter_add)
    draw = staticmethod(_host_draw())

    @classmethod
    def normals(cls, seed, first, rows, n, dtype, dof):
        z = np.empty((rows, n))
        g = np.empty(rows)
        cls.draw(*gpu_mc._key(seed), first, z, 0.0 if dof is None else float(dof), g)
        return z.astype(dtype), (None if dof is None else g.astype(dtype))

    @classmethod
    def project(cls, seed, first, rows, bt, dtype, dof):
        return gemm_projection(cls.normals, seed, first, rows, bt, dtype, dof)

    @staticmethod
    def tail_update(vals, idx, loss, first):
        return merge_tail_candidates(np, vals, idx, loss, first)


def test_gpu_generator_follows_the_normal_and_chi_square_laws():
    n_s, dof = 100_000, 5.0
    z, g = _HostGpuRandom.normals(12, 0, n_s, 3, np.float64, dof)
    for col in range(3):
        assert stats.kstest(z[:, col], "norm").pvalue > 1e-4
    assert abs(np.corrcoef(z.T)[np.triu_indices(3, 1)]).max() < 0.02  # the Box-Muller pair and the next pair
    assert stats.kstest((dof - 2.0) / g**2, stats.chi2(dof).cdf).pvalue > 1e-4
    assert abs(np.abs(z).max() - 4.4) < 1.5  # 53-bit uniforms: no clipped tails
    other, _ = _HostGpuRandom.normals(13, 0, 1000, 3, np.float64, None)
    assert abs(np.corrcoef(other[:, 0], z[:1000, 0])[0, 1]) < 0.1


@pytest.mark.parametrize("dist,dof", [("normal", None), ("t", 4.5)])
def test_gpu_generator_through_the_driver_matches_closed_form(dist, dof):
    """The driver fed with the GPU's numbers: VaR against the closed form within 4 standard errors."""
    from gpu_trader._internal import montecarlo_xp
    from gpu_trader.montecarlo import plan_monte_carlo

    w, mu, cov = random_problem(p=3, seed=21)
    level, h = 0.99, 5
    _, plan, _ = plan_monte_carlo(w, mu, cov, level=level, n_scenarios=100_000, horizon=h, dist=dist, dof=dof,
                                  seed=4, options=None, contributions=True, chunk_size=16_384,
                                  dtype=np.float64, backend="cpu")
    res = montecarlo_xp.run(plan, _HostGpuRandom)
    sd = np.sqrt(np.einsum("pi,ij,pj->p", w, cov, w) * h)
    q = stats.norm.ppf(level) if dof is None else np.sqrt((dof - 2) / dof) * stats.t.ppf(level, dof)
    exact = -h * (w @ mu) + sd * q
    assert np.all(np.abs(res["var"] - exact) < 4 * res["se"]), (res["var"], exact, res["se"])
    np.testing.assert_allclose(res["contributions"].sum(axis=1), res["var"], rtol=1e-10)


class _CountingNumpy:
    """NumPy as an array namespace that records the size of every sort (CuPy sorts where NumPy partitions)."""

    def __init__(self):
        self.sorted = 0

    def __getattr__(self, name):
        return getattr(np, name)

    def argsort(self, a, axis=-1, kind=None):
        self.sorted += a.size
        return np.argsort(a, axis=axis, kind=kind)


def test_tail_merge_sorts_only_candidates():
    """Candidate count policy: a run sorts about P m (1 + ln(N / m)) elements, not P (m + rows) per chunk."""
    P, m, rows, N = 4, 200, 2000, 100_000
    data = np.random.default_rng(3).standard_normal((P, N))
    xp = _CountingNumpy()
    vals, idx = np.full((P, m), -np.inf), np.full((P, m), -1)
    for first in range(0, N, rows):
        vals, idx = merge_tail_candidates(xp, vals, idx, data[:, first:first + rows], first)
    np.testing.assert_array_equal(vals, -np.sort(-data, axis=1)[:, :m])
    expected = P * (rows + m * math.log(N / rows))   # the first chunk, then rows * m / seen a chunk
    old_partition_sorts = P * (m + rows) * (N // rows)
    assert xp.sorted < 2 * expected and xp.sorted * 10 < old_partition_sorts, (xp.sorted, expected)


def test_gpu_chunk_follows_the_device_memory_budget():
    from gpu_trader._internal import montecarlo_xp
    from gpu_trader.montecarlo import plan_monte_carlo

    assert gpu_mc.fused(gpu_mc.FUSED_MAX_ROWS) and not gpu_mc.fused(gpu_mc.FUSED_MAX_ROWS + 1)
    assert not montecarlo_xp.fused(cpu_mc, 1)  # the CPU always draws normals and multiplies
    n = 1000
    # one portfolio: fused, the scenarios' normals are never stored, a 1M-scenario run is one chunk
    assert montecarlo_xp.chunk_row_bytes(gpu_mc, 1, n, 0, 0, 8) == 4 * 8
    assert montecarlo_xp.default_chunk(gpu_mc, 1, n, 0, 0, 10_196, 8) >= 1_000_000
    # 1000 portfolios: the GEMM path's normals, outputs and merge scratch fit CHUNK_BYTES
    rows = montecarlo_xp.default_chunk(gpu_mc, 1000, n, 0, 0, 10_196, 8)
    per_row = montecarlo_xp.chunk_row_bytes(gpu_mc, 1000, n, 0, 0, 8) + 1000 * 24
    assert 11_000 < rows < 13_000  # by hand: (1 GiB - 1000 keep (2*8 + 24)) / ((1000 + 1 + 3000) 8 + 1000 (8 + 16)) = 11,889
    assert 4096 <= rows and 1000 * 10_196 * 40 + rows * per_row <= gpu_mc.CHUNK_BYTES < (rows + 1) * per_row + \
        1000 * 10_196 * 40
    # the CPU default stays about CHUNK_ELEMENTS normals a chunk
    assert montecarlo_xp.default_chunk(cpu_mc, 1000, n, 0, 0, 10_196, 8) == montecarlo_xp.CHUNK_ELEMENTS // n
    # the plan and its memory estimate on the GPU module (no GPU needed to plan)
    w, mu, cov = random_problem(n=50, p=1, seed=2)

    class Gpu:  # the CPU backend's validation with the GPU module's policy
        def ops(self, area):
            return gpu_mc
    import gpu_trader.montecarlo as pub

    real = pub.select_backend
    pub.select_backend = lambda weights, backend: Gpu()
    try:
        _, plan, _ = plan_monte_carlo(w, mu, cov, level=0.99, n_scenarios=1_000_000, horizon=1, dist="normal",
                                      dof=None, seed=1, options=None, contributions=False, chunk_size=None,
                                      dtype=np.float64, backend=None)
    finally:
        pub.select_backend = real
    assert plan.chunk >= 1_000_000 and plan.chunk % gpu_mc.BLOCK == 0
    assert montecarlo_xp.work_bytes(plan, gpu_mc) < 200 << 20  # no (N, n) normals counted: ~1M x 56 B + tail


@pytest.mark.slow
def test_gpu_kernels_compile_to_ptx():
    """Every Monte Carlo kernel, with the argument types of real launches, compiled for sm_90 (NVVM,
    no GPU): the normals and t-factor kernels, the fused projection (its accumulators in registers,
    one kernel per P + U) and the Black-Scholes kernel."""
    from conftest import assert_compiles_to_ptx

    assert_compiles_to_ptx("""
        from gpu_trader.kernels.launch import PtxExecutor
        from gpu_trader.kernels import montecarlo as g
        exe = PtxExecutor(cc=(9, 0))
        for dt in (np.float64, np.float32):
            g.normals(1, 0, 8, 5, dt, 5.0, xp=np, exe=exe)
            g.project(1, 0, 8, np.ones((3, 5), dt), dt, 5.0, exe=exe)
        g.project(1, 0, 8, np.ones((g.FUSED_MAX_ROWS, 5)), np.float64, None, exe=exe)
        o = {k: np.ones(2) for k in ("drift", "spot", "strike", "tau", "rate", "vol", "value0")}
        o.update(under=np.zeros(2, np.int64), is_call=np.ones(2, bool), n=2)
        g.option_pnl(np.ones((1, 4)), o, np.float64, exe=exe)
        g.normals_at(1, np.array([7, 3]), 5, np.float64, 4.0, exe=exe)
        for dt in (np.float64, np.float32):
            g.tail_update(np.full((2, 4), -np.inf, dt), np.full((2, 4), -1), np.ones((2, 8), dt), 0, exe=exe)
        names = sorted({k.split(".")[0] for k in exe.ptx})
        assert names == ["_merge_kernel", "_normals_kernel", "_pnl_kernel", "_project_kernel", "_t_factor_kernel"], names
        assert len(exe.ptx) == 10 and all(".entry" in v for v in exe.ptx.values())
        fused = [v for k, v in exe.ptx.items() if k.startswith("_project_kernel") and "float64" in k]
        assert all("fma.rn.f64" in v for v in fused)
    """)


# -- the GPU module under numba's CUDA simulator --------------------------------------
def _simulated() -> dict:
    """Run in a subprocess with NUMBA_ENABLE_CUDASIM=1: the BS kernel and the whole engine with the GPU
    module's kernel and tail merge (NumPy arrays) against the CPU backend; then the GPU module's own
    random numbers, by its normals kernel + a GEMM and by its fused projection kernel, against the
    same generator compiled for the host (:class:`_HostGpuRandom`)."""
    import dataclasses
    import functools

    import gpu_trader._internal.montecarlo_xp as eng
    from gpu_trader import montecarlo as pub

    class Ops:
        xp = np
        BLOCK = cpu_mc.BLOCK
        CHUNKS_IN_FLIGHT = 1
        MERGE_SCRATCH = True
        FUSED_MAX_ROWS = 0
        CHUNK_BYTES = None
        normals_at = None
        map_chunks = staticmethod(gpu_mc.map_chunks)
        normals = staticmethod(cpu_mc.normals)
        project = staticmethod(cpu_mc.project)
        option_pnl = staticmethod(gpu_mc.option_pnl)
        scatter_add = staticmethod(cpu_mc.scatter_add)

        @staticmethod
        def tail_update(vals, idx, loss, first):
            return merge_tail(np, vals, idx, loss, first)

    w, mu, cov = random_problem(n=5, p=2, seed=8)
    qty = np.array([[1.0, 2.0, -1.0, 3.0], [0.5, 0.0, 2.0, -4.0]]) * 10
    book = gt.EuropeanOptions(asset=[0, 1, 1, 4], spot=[100.0, 50.0, 50.0, 20.0], strike=[95.0, 50.0, 55.0, 25.0],
                              expiry=[0.5, 0.1, 1.0, 0.02], vol=[0.2, 0.4, 0.3, 0.6], call=[True, False, True, False],
                              quantity=qty)
    captured = {}
    real_run = cpu_mc.run

    def capture(plan):
        captured["plan"] = plan
        return real_run(plan)

    cpu_mc.run = capture
    try:
        ref = gt.var_monte_carlo(w, mu, cov, n_scenarios=2000, horizon=3, dist="t", dof=5.0, seed=1, options=book,
                                 chunk_size=512, backend="cpu")
    finally:
        cpu_mc.run = real_run
    sim = eng.run(captured["plan"], Ops)
    out = {"max_rel": 0.0}
    for key, val in (("var", ref.var), ("cvar", ref.cvar), ("se", ref.var_se), ("contributions", ref.contributions),
                     ("option_contributions", ref.option_contributions)):
        err = np.abs(np.asarray(sim[key]) - val).max() / np.abs(val).max()
        out["max_rel"] = max(out["max_rel"], float(err))

    class GpuGemm(Ops):  # the GPU module's primitives on NumPy, its projection by normals + GEMM
        BLOCK = gpu_mc.BLOCK
        normals = staticmethod(functools.partial(gpu_mc.normals, xp=np))
        project = staticmethod(functools.partial(gemm_projection, functools.partial(gpu_mc.normals, xp=np)))
        normals_at = staticmethod(gpu_mc.normals_at)
        tail_update = staticmethod(functools.partial(merge_tail_candidates, np))

    class GpuFused(GpuGemm):  # ... and its fused projection kernel
        FUSED_MAX_ROWS = gpu_mc.FUSED_MAX_ROWS
        project = staticmethod(gpu_mc.project)

    plan = dataclasses.replace(captured["plan"], chunk=gpu_mc.BLOCK)
    host = eng.run(plan, _HostGpuRandom)
    out["max_rel_gpu_random"] = 0.0
    for ops in (GpuGemm, GpuFused):
        got = eng.run(plan, ops)
        for key in ("var", "cvar", "se", "contributions", "option_contributions"):
            err = np.abs(np.asarray(got[key]) - host[key]).max() / np.abs(host[key]).max()
            out["max_rel_gpu_random"] = max(out["max_rel_gpu_random"], float(err))
    assert eng.fused(GpuFused, plan.weights.shape[0] + plan.options.assets.shape[0])
    assert pub  # the public module is importable under the simulator
    out.update(_simulated_tail_merge())
    return out


def _simulated_tail_merge() -> dict:
    """The GPU tail-merge kernel (one block per portfolio) against the array formulation
    ``merge_tail_candidates`` (NumPy), chunk by chunk: ties, NaN, inf, float32, a first chunk
    whose candidates overflow the shared buffer several times; launches counted per chunk."""
    from gpu_trader.kernels.launch import CudaExecutor, LaunchRecorder

    rng = np.random.default_rng(5)
    out = {"merge_mismatch": [], "merge_launches": []}
    for dt in (np.float64, np.float32):
        P, m, rows, n_chunks = 2, 30, 500, 2
        data = rng.standard_normal((P, rows * n_chunks)).astype(dt)
        data[0, ::7] = np.round(data[0, ::7])  # ties, within and across chunks
        data[1, 5], data[1, 10] = np.nan, np.inf
        ref_v, ref_i = np.full((P, m), -np.inf, dt), np.full((P, m), -1, np.int64)
        got_v, got_i = ref_v.copy(), ref_i.copy()
        rec = LaunchRecorder(CudaExecutor(np, 64))
        for c in range(n_chunks):
            loss = data[:, c * rows:(c + 1) * rows]
            ref_v, ref_i = merge_tail_candidates(np, ref_v, ref_i, loss, c * rows)
            got_v, got_i = gpu_mc.tail_update(got_v, got_i, loss, c * rows, exe=rec)
        if not (np.array_equal(got_v, ref_v) and np.array_equal(got_i, ref_i)):
            out["merge_mismatch"].append(np.dtype(dt).name)
        out["merge_launches"].append(len(rec.launches) / n_chunks)
    return out


@pytest.mark.slow
def test_gpu_module_under_cuda_simulator(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    out = tmp_path / "sim.json"
    proc = subprocess.run([sys.executable, __file__, "--simulate", str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["merge_mismatch"] == [] and result["merge_launches"] == [1, 1], result  # one launch a chunk
    assert result["max_rel"] < 1e-9 and result["max_rel_gpu_random"] < 1e-9, result


# -- levels, integer bounds and memory ---------------------------------------------------------
@pytest.mark.parametrize("level", [0.01, 0.05, 0.4999, np.float64(0.01), np.float32(0.05)])
def test_tail_probability_as_level_is_refused_with_a_hint(level):
    with pytest.raises(ValueError, match=r"level must satisfy 0\.5 <= level < 1.*not a tail probability such as 0\.01"):
        gt.var_monte_carlo(np.ones(3), 0.0, np.eye(3) * 1e-4, level=level, n_scenarios=10_000, seed=0)


@pytest.mark.slow
def test_level_one_half_is_the_median_loss(backend):
    w, mu, cov = random_problem(n=5, p=2, seed=12)
    res = gt.var_monte_carlo(w, mu, cov, level=np.float64(0.5), n_scenarios=np.int64(40_000), horizon=np.int32(3),
                             seed=np.uint64(2**64 - 1), chunk_size=np.int32(5000), backend=backend)
    exact, _ = closed_form_normal(w, mu, cov, 0.5, 3)  # the median: minus the drift
    var, se = gt.to_numpy(res.var), gt.to_numpy(res.var_se)
    assert np.all(np.abs(var - exact) < 4 * se), (var, exact, se)
    assert res.seed == 2**64 - 1 and res.level == 0.5
    again = gt.var_monte_carlo(w, mu, cov, level=0.5, n_scenarios=40_000, horizon=3, seed=2**64 - 1, backend=backend)
    np.testing.assert_allclose(gt.to_numpy(again.var), var, rtol=1e-12)


def test_a_tail_too_large_for_memory_is_refused_before_allocating():
    """The kept tail is n_portfolios x n_scenarios x (1 - level): refused up front when absurd."""
    import tracemalloc

    w = np.ones((1000, 4))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="tail of .* losses each.*working memory"):
            gt.var_monte_carlo(w, 0.0, np.eye(4) * 1e-4, level=0.5, n_scenarios=2**36, seed=0)
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("P, n_scenarios, level", [(40, 60_000, 0.5), (5, 60_000, 0.999)])
def test_working_memory_estimate_bounds_the_measured_peak(P, n_scenarios, level):
    """tracemalloc's peak (NumPy reports to it) stays within montecarlo_xp.work_bytes, and the tail it
    documents is really held (memory grows with n_scenarios x (1 - level) x P)."""
    import tracemalloc

    from gpu_trader._internal import montecarlo_xp
    from gpu_trader.montecarlo import plan_monte_carlo

    w, mu, cov = random_problem(n=8, p=P, seed=14)
    kw = dict(level=level, n_scenarios=n_scenarios, horizon=1, dist="normal", dof=None, seed=3, options=None,
              contributions=True, chunk_size=2048, dtype=np.float64, backend="cpu")
    _, plan, _ = plan_monte_carlo(w, mu, cov, **kw)
    estimate = montecarlo_xp.work_bytes(plan, cpu_mc)
    gt.var_monte_carlo(w, mu, cov, **kw)  # compile and load first: only the call's own memory is measured
    tracemalloc.start()
    try:
        gt.var_monte_carlo(w, mu, cov, **kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    tail = P * plan.keep * 16
    # 1 MiB for what is not array data: threadpoolctl scans every loaded library (hundreds of KB
    # of Python objects once jax, faiss and friends are loaded), dispatch and result objects
    assert tail <= peak <= estimate + (1 << 20), (tail, peak, estimate)


def test_read_only_and_pandas_inputs_are_never_written(backend):
    import pandas as pd

    w, mu, cov = random_problem(n=4, p=2, seed=15)
    arrays = [a.copy() for a in (w, mu, cov)]
    for a in arrays:
        a.flags.writeable = False
    qty = np.array([2.0, -1.0])
    qty.flags.writeable = False
    book = gt.EuropeanOptions(asset=np.array([0, 3]), spot=pd.Series([100.0, 50.0]), strike=100.0, expiry=0.5,
                              vol=0.2, quantity=qty, call=np.array([True, False]))
    ref = gt.var_monte_carlo(w, mu, cov, n_scenarios=20_000, seed=5, options=book, backend=backend)
    got = gt.var_monte_carlo(*arrays, n_scenarios=20_000, seed=5, options=book, backend=backend)
    np.testing.assert_array_equal(gt.to_numpy(got.var), gt.to_numpy(ref.var))
    frames = gt.var_monte_carlo(pd.DataFrame(w), pd.Series(mu), pd.DataFrame(cov), n_scenarios=20_000, seed=5,
                                options=book, backend=backend)
    np.testing.assert_array_equal(gt.to_numpy(frames.var), gt.to_numpy(ref.var))
    for a, b in zip(arrays, (w, mu, cov)):
        np.testing.assert_array_equal(a, b)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--simulate":
    from numba import config

    assert config.ENABLE_CUDASIM
    Path(sys.argv[2]).write_text(json.dumps(_simulated()))
