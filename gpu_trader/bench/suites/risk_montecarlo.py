"""Monte Carlo VaR cases of the ``risk`` suite (target ``risk.monte_carlo``; docs/design.md#benchmarks-and-targets).

Cases: :func:`gpu_trader.var_monte_carlo` (normal, 99 %, one day, float64, Euler
contributions included, as a user gets it by default) at 1000 assets x 1,000,000
scenarios for 1, 100 and 1000 portfolios with ``--full``; the standard run keeps the
assets and portfolios and draws 20,000 scenarios (the roofline ratio does not depend on
the count), ``quick`` 50 assets x 10,000 scenarios for 1, 10 and 100. Yardsticks, all
measured in the same run:

* reference ``numpy``: the obvious NumPy implementation -- Cholesky, the full
  ``(N, n)`` correlated scenario matrix from ``Generator.standard_normal``, the
  ``(N, P)`` losses, ``np.quantile``. At full size that needs 16+ GB, so it runs on
  100,000 scenarios (standard: 5,000) and its time is scaled up (the work is linear in ``N``);
* ``gemm_fraction``: the ``2 N n P`` flops of the loss GEMM per second / the device's
  matmul rate (harness, :func:`gpu_trader.bench.harness.measure_gemm_rate`);
* ``x_roofline``: our time / (``N n`` normals at the backend's own measured generation
  rate + ``2 N n P`` flops at the measured matmul rate), the least any implementation
  that draws the scenarios and multiplies them must spend; ``rng_rate`` (normals/s) is
  reported beside it, measured as the engine draws them (default-size chunks through
  the backend's ``map_chunks``, so on the CPU every core generates) with nothing else
  done to them.

Thread pools: BLAS, numba and the random-number pool each use every core; they run one
after the other within a chunk, never at the same time.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import gpu_trader
from gpu_trader._internal.montecarlo_xp import CHUNK_ELEMENTS

from ..harness import Reference, TimingPolicy, Workload, measure

__all__ = ["workloads"]

# size -> (assets, scenarios, portfolios per case, scenarios of the NumPy reference's share)
SHAPES = {
    "quick": (50, 10_000, (1, 10, 100), 10_000),
    "standard": (1000, 20_000, (1, 100, 1000), 5_000),
    "full": (1000, 1_000_000, (1, 100, 1000), 100_000),
}
LEVEL = 0.99
# One call takes seconds on a CPU: one warm-up call and three samples.
SECONDS_POLICY = TimingPolicy(warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=3, budget_s=0.0)
RNG_YARDSTICK_NUMBERS = 1 << 25


def problem(n_assets: int, n_portfolios: int, seed: int = 0):
    """Deterministic ``(weights (P, n), mu (n,), cov (n, n))``: a 10-factor covariance plus
    idiosyncratic variance, daily vols about 1-2 %, long-short weights."""
    rng = np.random.default_rng(seed)
    loadings = rng.normal(0.0, 0.004, (n_assets, 10))
    cov = loadings @ loadings.T + np.diag(rng.uniform(0.005, 0.015, n_assets) ** 2)
    mu = rng.normal(0.0, 2e-4, n_assets)
    weights = rng.normal(0.0, 1.0, (n_portfolios, n_assets))
    return weights, mu, cov


@dataclass
class _State:
    call: Callable[[], Any]
    n_assets: int
    n_scenarios: int


def _call(state: _State) -> Any:
    return state.call()


def _numpy_var(weights, mu, cov, n_scenarios: int, seed: int = 1):
    """The obvious implementation: full scenario matrix, full loss matrix, np.quantile."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(cov)
    scenarios = mu + rng.standard_normal((n_scenarios, mu.shape[0])) @ chol.T
    losses = -(scenarios @ weights.T)
    return np.quantile(losses, LEVEL, axis=0)


def _numpy_reference(n: int, P: int, n_scenarios: int, share: int) -> Reference:
    def setup():
        return functools.partial(_numpy_var, *problem(n, P), share)

    return Reference("numpy", setup, lambda fn: fn(), scale=n_scenarios / share)


def _roofline(state: _State, be, policy: TimingPolicy, metrics: dict) -> dict[str, float]:
    """``rng_rate`` (normals/s, the backend's generator) and ``x_roofline`` (see the module docstring)."""
    ops, n = be.ops("montecarlo"), state.n_assets
    rows = -(-max(1, CHUNK_ELEMENTS // n) // ops.BLOCK) * ops.BLOCK  # the default chunk without a memory budget
    firsts = range(0, max(1, RNG_YARDSTICK_NUMBERS // (rows * n)) * rows, rows)

    def draw():
        for _ in ops.map_chunks(lambda first: ops.normals(1, first, rows, n, np.float64, None), firsts):
            pass

    rng_rate = len(firsts) * rows * n / measure(draw, policy, be.synchronize).p50_s
    gemm_s = metrics["gemm_fraction"] * metrics["p50_s"]  # the loss GEMM at the measured matmul rate
    roofline_s = state.n_scenarios * state.n_assets / rng_rate + gemm_s
    return {"rng_rate": rng_rate, "roofline_s": roofline_s, "x_roofline": metrics["p50_s"] / roofline_s}


def _case(n: int, n_scenarios: int, P: int, share: int, policy: TimingPolicy | None) -> Workload:
    def setup(be):
        w, mu, cov = problem(n, P)
        w, mu, cov = (be.asarray(a) for a in (w, mu, cov))
        call = functools.partial(gpu_trader.var_monte_carlo, w, mu, cov, level=LEVEL, n_scenarios=n_scenarios,
                                 seed=1, backend=be.name)
        return _State(call, n, n_scenarios)

    return Workload(
        name=f"monte carlo VaR {n} assets x {n_scenarios} scenarios, {P} portfolios",
        sizes={"assets": n, "scenarios": n_scenarios, "portfolios": P},
        setup=setup, run=_call, items=n_scenarios, unit="scenario", target="risk.monte_carlo",
        references=(_numpy_reference(n, P, n_scenarios, share),),
        flops=2 * n_scenarios * n * P, extra_metrics=_roofline,
        policy=policy,
    )


def workloads(size: str) -> list[Workload]:
    """The Monte Carlo cases at ``size`` (``SHAPES``); calls of the standard and full sizes
    take seconds, so they are timed with ``SECONDS_POLICY``."""
    n, n_scenarios, portfolios, share = SHAPES[size]
    policy = None if size == "quick" else SECONDS_POLICY
    return [_case(n, n_scenarios, P, share, policy) for P in portfolios]
