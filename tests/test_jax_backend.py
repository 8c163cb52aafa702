"""What only the jax backend has: 64-bit mode, type inference, the areas it lacks, jit and
grad through the public functions (gradients against finite differences and closed forms),
and its Monte Carlo primitives (jax.random blocks, array Black-Scholes) against independent
oracles. The shared suites (test_risk, test_correlation, test_montecarlo, test_indicators)
run on jax through the ``backend`` fixture."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

import gpu_trader as gt
from gpu_trader import risk

jax = pytest.importorskip("jax")
jnp = jax.numpy

from gpu_trader.jax_backend import montecarlo as jmc  # noqa: E402  (needs jax)


def returns(n, t, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_t(5, size=(n, t)) * 0.01 + 0.0003


def central_difference(f, x, h=1e-6):
    """d f / d x by central differences, one coordinate at a time (float64 NumPy)."""
    x = np.asarray(x, dtype=np.float64)
    g = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
    return g


# -- the backend object ---------------------------------------------------------------------
def test_jax_arrays_select_the_jax_backend_and_stay_jax():
    r = jnp.asarray(returns(3, 100))
    out = risk.sharpe(r)
    assert isinstance(out, jax.Array) and out.dtype == jnp.float64 and out.shape == (3,)
    assert "jax" in gt.available_backends()


def test_first_use_switches_on_64_bit_mode_with_a_warning():
    code = textwrap.dedent("""
        import warnings, numpy as np
        import gpu_trader as gt
        from gpu_trader import risk
        import jax
        r = np.random.default_rng(0).normal(size=(2, 50))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = risk.sharpe(r, backend="jax")
            again = risk.sharpe(r, backend="jax")                 # already on: no second warning
            jax.config.update("jax_enable_x64", False)            # someone switches it off ...
            later = risk.sharpe(r, backend="jax")                 # ... it is switched on again, warned
        print(out.dtype, again.dtype, later.dtype, sum("jax_enable_x64" in str(w.message) for w in caught))
    """)
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["float64", "float64", "float64", "2"]


def test_to_numpy_gives_a_writable_copy():
    x = jnp.arange(5.0)
    host = gt.to_numpy(risk.max_drawdown(jnp.stack([x * 0.01, -x * 0.01])))
    assert host.flags.writeable and isinstance(host, np.ndarray)


def test_an_area_jax_lacks_is_a_clear_error():
    with pytest.raises(ValueError, match="'jax' does not implement portfolio.*cpu"):
        gt.batch_pnl(np.ones((2, 3)), np.ones((2, 3)), np.ones(3), backend="jax")


# -- jit and grad through the public functions ------------------------------------------------
def test_public_risk_functions_run_under_jit():
    r = returns(4, 300, seed=1)
    r[1, 10] = np.nan
    rj = jnp.asarray(r)
    for fn in (risk.sharpe, risk.var_historical, risk.cvar, risk.max_drawdown, risk.corr, risk.cov):
        jitted = jax.jit(lambda x, fn=fn: fn(x, backend="jax"))
        np.testing.assert_allclose(np.asarray(jitted(rj)), gt.to_numpy(fn(r, backend="cpu")), rtol=1e-12,
                                   err_msg=fn.__name__)


@pytest.mark.parametrize("method", ["gaussian", "cornish-fisher"])
def test_gradient_of_portfolio_parametric_var_wrt_weights(method):
    r = returns(6, 500, seed=2)
    w0 = np.random.default_rng(3).uniform(0.05, 0.3, 6)

    def var_of(w):
        return risk.var_parametric(jnp.asarray(w) @ jnp.asarray(r), 0.99, method=method, backend="jax")

    grad = np.asarray(jax.grad(var_of)(jnp.asarray(w0)))
    np.testing.assert_allclose(grad, central_difference(var_of, w0), rtol=1e-6, atol=1e-10)
    if method == "gaussian":  # closed form: -(mean + z * cov w / sd), sample moments (ddof 1)
        m, c = r.mean(axis=1), np.cov(r)
        sd = math.sqrt(w0 @ c @ w0)
        np.testing.assert_allclose(grad, -(m + stats.norm.ppf(0.01) * (c @ w0) / sd), rtol=1e-9)


@pytest.mark.parametrize("fn", [risk.sharpe, risk.sortino, risk.var_historical, risk.cvar])
def test_gradients_of_other_metrics_match_finite_differences(fn):
    r = returns(5, 400, seed=4)
    w0 = np.random.default_rng(5).uniform(0.1, 0.3, 5)

    def metric(w):
        return fn(jnp.asarray(w) @ jnp.asarray(r), backend="jax")

    grad = np.asarray(jax.grad(metric)(jnp.asarray(w0)))
    # the order statistics do not change order for steps this small (a.e. differentiable)
    np.testing.assert_allclose(grad, central_difference(metric, w0, h=1e-8), rtol=1e-5, atol=1e-9)


# -- Monte Carlo primitives -------------------------------------------------------------------
def test_random_blocks_are_counter_based_and_standard():
    B = jmc.BLOCK
    whole, g = jmc.normals(42, 0, 3 * B + 17, 3, np.float64, 5.0)
    part, gp = jmc.normals(42, B, 2 * B + 17, 3, np.float64, 5.0)
    np.testing.assert_array_equal(np.asarray(part), np.asarray(whole)[B:])
    np.testing.assert_array_equal(np.asarray(gp), np.asarray(g)[B:])
    z = np.asarray(whole)
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    # (dof - 2) / g^2 is chi-square with dof degrees of freedom
    chi2 = 3.0 / np.asarray(g) ** 2
    assert stats.kstest(chi2, "chi2", args=(5.0,)).pvalue > 1e-3
    other, _ = jmc.normals(43, 0, B, 3, np.float64, None)
    assert not np.allclose(np.asarray(other), z[:B])


def test_array_black_scholes_matches_the_scalar_one():
    from gpu_trader._internal.option_loops import bs_price

    rng = np.random.default_rng(6)
    n = 400
    spot = rng.uniform(-20, 200, n)
    strike = rng.uniform(1, 200, n)
    tau = rng.uniform(-0.2, 3, n)
    rate = rng.uniform(-0.01, 0.08, n)
    vol = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0, 0.8, n))
    call = rng.random(n) < 0.5
    ours = np.asarray(jmc.bs_price(*(jnp.asarray(a) for a in (spot, strike, tau, rate, vol, call))))
    ref = np.array([bs_price(*args) for args in zip(spot, strike, tau, rate, vol, call)])
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_options_book_matches_brute_force_on_the_same_draws():
    from test_montecarlo import BOOK, _bs, random_problem

    w, mu, cov = random_problem(p=2, seed=3)
    n_s, h, level = 3 * jmc.BLOCK, 10, 0.99
    qty = np.array([[30.0, -50.0, 20.0, 400.0, 10.0], [0.0, 100.0, -100.0, 0.0, 0.0]])
    res = gt.var_monte_carlo(w, mu, cov, level=level, n_scenarios=n_s, horizon=h, dist="t", dof=4.0, seed=9,
                             options=gt.EuropeanOptions(quantity=qty, **BOOK), backend="jax")
    z, g = (np.asarray(a) for a in jmc.normals(9, 0, n_s, w.shape[1], np.float64, 4.0))
    r = h * mu + np.sqrt(h) * g[:, None] * (z @ np.linalg.cholesky(cov).T)
    b = {k: np.asarray(v) for k, v in BOOK.items()}
    v0 = _bs(b["spot"], b["strike"], b["expiry"], b["rate"], b["vol"], b["call"])
    v1 = _bs(b["spot"] * (1 + r[:, b["asset"]]), b["strike"], b["expiry"] - h / 252, b["rate"], b["vol"], b["call"])
    loss = -(r @ w.T) + (-(v1 - v0)[:, None, :] * qty[None, :, :]).sum(axis=2)
    k = math.ceil(n_s * (1 - Fraction(str(level))))
    srt = -np.sort(-loss, axis=0)
    np.testing.assert_allclose(gt.to_numpy(res.var), srt[k - 1], rtol=1e-9)
    np.testing.assert_allclose(gt.to_numpy(res.cvar), srt[:k].mean(axis=0), rtol=1e-9)


def test_accelerator_tail_merge_keeps_the_largest():
    """``lax.top_k`` merge (the path for a JAX GPU/TPU; the CPU device merges with NumPy) against a sort."""
    rng = np.random.default_rng(7)
    data = rng.normal(size=(3, 500))
    data[:, ::9] = data[:, :1]  # ties
    m = 40
    vals, idx = jnp.full((3, m), -jnp.inf), jnp.full((3, m), -1, dtype=jnp.int64)
    for first in range(0, 500, 125):
        vals, idx = jmc._merge(vals, idx, jnp.asarray(data[:, first:first + 125]), jnp.int64(first))
        cpu_vals, _ = jmc.tail_update(jnp.full((3, m), -jnp.inf), jnp.full((3, m), -1, dtype=jnp.int64),
                                      jnp.asarray(data[:, :first + 125]), 0)
        np.testing.assert_array_equal(np.sort(np.asarray(vals), axis=1), np.sort(np.asarray(cpu_vals), axis=1))
    np.testing.assert_array_equal(-np.sort(-np.asarray(vals), axis=1), -np.sort(-data, axis=1)[:, :m])
    np.testing.assert_array_equal(np.take_along_axis(data, np.asarray(idx), axis=1), np.asarray(vals))
