"""JAX primitives of the Monte Carlo VaR driver (:mod:`gpu_trader._internal.montecarlo_xp`): ``jax.random``,
XLA GEMMs, a vectorized Black-Scholes and ``lax.top_k``, each compiled by :func:`jax.jit`.

* random numbers: ``jax.random`` (threefry, counter-based). Block ``b`` of :data:`BLOCK`
  scenarios draws from ``fold_in(key(seed), b)``, so a seed gives the same scenarios
  however they are chunked or split across Dask workers (the numbers differ from the
  CPU and CUDA backends', which use their own generators). Student-t mixing factors
  ``sqrt((dof - 2) / chi2_dof)`` come from ``2 * gamma(dof / 2)`` on a second key of
  the block;
* Black-Scholes: :func:`bs_price`, the array form of :func:`gpu_trader._internal.option_loops.bs_price`
  (the same cases, as masks), fused by XLA with the drift and the value change;
* the tail: per portfolio, ``lax.top_k`` of the kept losses and the chunk's (on JAX's CPU
  device NumPy's ``argpartition``, see :func:`tail_update`);
* :func:`scatter_add` returns the updated accumulator (JAX arrays are immutable).
"""
from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import erfc

from .._internal import montecarlo_xp

__all__ = ["run", "map_chunks", "normals", "option_pnl", "tail_update", "scatter_add", "bs_price", "BLOCK",
           "CHUNKS_IN_FLIGHT", "MERGE_SCRATCH", "FUSED_MAX_ROWS", "CHUNK_BYTES", "normals_at",
           "project"]

xp = jnp
BLOCK = 4096
CHUNKS_IN_FLIGHT = 1  # one chunk at a time (map_chunks)
MERGE_SCRATCH = True  # top_k / merge_tail over (P, m + rows) arrays
FUSED_MAX_ROWS = 0  # no fused projection: project draws the normals and multiplies
CHUNK_BYTES = None  # chunks of about montecarlo_xp.CHUNK_ELEMENTS normals
normals_at = None  # per-block streams: the driver re-draws the blocks that hold the band's scenarios


def run(plan: montecarlo_xp.Plan) -> dict:
    """Execute a validated plan on JAX's default device (see :func:`gpu_trader._internal.montecarlo_xp.run`)."""
    return montecarlo_xp.run(plan, sys.modules[__name__])


def map_chunks(fn, firsts):
    """Chunks one after the other (XLA parallelizes inside each)."""
    return map(fn, firsts)


@functools.partial(jax.jit, static_argnames=("n_blocks", "n", "dtype", "student"))
def _draw(seed, first_block, dof, *, n_blocks: int, n: int, dtype, student: bool):
    base = jax.random.key(seed)
    keys = jax.vmap(lambda b: jax.random.fold_in(base, b))(first_block + jnp.arange(n_blocks))
    z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), (BLOCK, n), dtype))(keys)
    z = z.reshape(n_blocks * BLOCK, n)
    if not student:
        return z, None
    chi2 = jax.vmap(lambda k: 2.0 * jax.random.gamma(jax.random.fold_in(k, 1), dof / 2.0, (BLOCK,)))(keys)
    g = jnp.sqrt((dof - 2.0) / chi2.reshape(-1)).astype(dtype)
    return z, g


def normals(seed: int, first: int, rows: int, n: int, dtype, dof: float | None):
    """Standard normals ``(rows, n)`` of scenarios ``first ..`` (a multiple of :data:`BLOCK`) and
    the t mixing factors ``(rows,)`` (None for the normal)."""
    n_blocks = -(-rows // BLOCK)
    z, g = _draw(np.uint64(seed), first // BLOCK, float(dof or 0.0), n_blocks=n_blocks, n=n,
                 dtype=np.dtype(dtype), student=dof is not None)
    if rows != n_blocks * BLOCK:
        z = z[:rows]
        g = None if g is None else g[:rows]
    return z, g


def project(seed: int, first: int, rows: int, bt, dtype, dof: float | None):
    """``bt @ z.T`` ``(len(bt), rows)`` times the t factors for the :func:`normals` of scenarios ``first ..``
    (:func:`gpu_trader._internal.montecarlo_xp.gemm_projection`: the normals, then one GEMM)."""
    return montecarlo_xp.gemm_projection(normals, seed, first, rows, bt, dtype, dof)


def _norm_cdf(x):
    return 0.5 * erfc(-x * 0.7071067811865476)


def bs_price(spot, strike, tau, rate, vol, is_call):
    """Black-Scholes price of European calls (``is_call``) and puts, element-wise; the cases
    of :func:`gpu_trader._internal.option_loops.bs_price` (expired, spot <= 0, zero volatility) as masks."""
    df = jnp.exp(-rate * tau)
    live = tau > 0.0
    sd = vol * jnp.sqrt(jnp.where(live, tau, 1.0))
    diffusive = live & (spot > 0.0) & (sd > 0.0)
    safe_sd = jnp.where(diffusive, sd, 1.0)
    safe_ratio = jnp.where(diffusive, spot / strike, 1.0)
    d1 = (jnp.log(safe_ratio) + (rate + 0.5 * vol * vol) * tau) / safe_sd
    d2 = d1 - safe_sd
    call = spot * _norm_cdf(d1) - strike * df * _norm_cdf(d2)
    put = strike * df * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
    expired = jnp.where(is_call, jnp.maximum(spot - strike, 0.0), jnp.maximum(strike - jnp.maximum(spot, 0.0), 0.0))
    no_spot = jnp.where(is_call, 0.0, strike * df)
    no_vol = jnp.where(is_call, jnp.maximum(spot - strike * df, 0.0), jnp.maximum(strike * df - spot, 0.0))
    price = jnp.where(is_call, call, put)
    price = jnp.where(sd > 0.0, price, no_vol)
    price = jnp.where(spot > 0.0, price, no_spot)
    return jnp.where(live, price, expired)


@functools.partial(jax.jit, static_argnames=("dtype",))
def _option_pnl(returns, drift, under, spot, strike, tau, rate, vol, is_call, value0, *, dtype):
    r = returns[under].astype(jnp.float64) + drift[under][:, None]
    c = lambda a: a[:, None]  # noqa: E731 - one option per row
    price = bs_price(c(spot) * (1.0 + r), c(strike), c(tau), c(rate), c(vol), c(is_call))
    return (price - c(value0)).astype(dtype)


def option_pnl(returns, o: dict, dtype):
    """``(n_options, rows)`` value changes for underlying returns ``(U, rows)`` (drift added inside)."""
    return _option_pnl(returns, o["drift"], o["under"], o["spot"], o["strike"], o["tau"], o["rate"], o["vol"],
                       o["is_call"], o["value0"], dtype=np.dtype(dtype))


@jax.jit
def _merge(vals, idx, loss, first):
    rows = loss.shape[1]
    allv = jnp.concatenate([vals, loss.astype(vals.dtype)], axis=1)
    scen = jnp.broadcast_to(first + jnp.arange(rows, dtype=idx.dtype), (vals.shape[0], rows))
    alli = jnp.concatenate([idx, scen], axis=1)
    top, where = lax.top_k(allv, vals.shape[1])
    return top, jnp.take_along_axis(alli, where, axis=1)


def tail_update(vals, idx, loss, first: int):
    """Keep each portfolio's ``m`` largest losses of ``vals`` ``(P, m)`` and ``loss`` ``(P, rows)``
    (scenarios ``first ..``) with their scenario numbers; returns the new ``(vals, idx)``.

    ``lax.top_k`` on an accelerator. XLA's CPU sort is slow (about 120 ns an element: 20x
    NumPy's ``argpartition``), so on JAX's CPU device the losses, already in host memory,
    are merged by NumPy (:func:`gpu_trader._internal.montecarlo_xp.merge_tail`) instead."""
    if _on_cpu(loss):
        v, i = montecarlo_xp.merge_tail(np, np.asarray(vals), np.asarray(idx), np.asarray(loss), first)
        return jnp.asarray(v), jnp.asarray(i)
    return _merge(vals, idx, loss, jnp.int64(first))


def _on_cpu(x) -> bool:
    return all(d.platform == "cpu" for d in x.devices())


@jax.jit
def scatter_add(acc, rows, values):
    """``acc`` with ``values[i]`` added to row ``rows[i]`` (repeats accumulate)."""
    return acc.at[rows].add(values)
