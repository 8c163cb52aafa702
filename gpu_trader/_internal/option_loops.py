"""Black-Scholes revaluation of European options, written once for every backend.

The functions are plain Python decorated with numba's ``register_jitable``: the
CPU backend compiles them with ``numba.njit`` (:mod:`gpu_trader.cpu_fallback.montecarlo`),
the GPU backend with ``numba.cuda.jit`` (:mod:`gpu_trader.kernels.montecarlo`), and
they also run as ordinary Python (the public layer prices today's option values
with them, and numba's CUDA simulator runs them in the tests).

Conventions (all float64 arithmetic, whatever the storage dtype):

* ``tau`` is the time to expiry in years, ``rate`` the continuously compounded
  risk-free rate, ``vol`` the annualised Black-Scholes volatility (no dividends);
* ``tau <= 0``: the option has expired and is worth its intrinsic value;
* ``spot <= 0`` (a simple-return scenario below -100 %): the limit of the price as
  the spot goes to 0, i.e. a call is worth 0 and a put ``strike * exp(-rate * tau)``;
* ``vol * sqrt(tau) == 0``: the discounted forward intrinsic value.
"""
from __future__ import annotations

import math

from numba import float64 as f64
from numba.extending import register_jitable

__all__ = ["norm_cdf", "positive_part", "bs_price", "option_pnl_item"]

_INV_SQRT2 = 0.7071067811865476


@register_jitable
def norm_cdf(x):
    """Standard normal CDF via ``erfc`` (accurate in both tails)."""
    return 0.5 * math.erfc(-x * _INV_SQRT2)


@register_jitable
def positive_part(x):
    """``max(x, 0.0)`` exactly as Python computes it (``x`` unless ``0.0 > x``; NaN stays NaN), written
    out because numba's built-in CUDA target does not type the float ``max``."""
    return 0.0 if x < 0.0 else x


@register_jitable
def bs_price(spot, strike, tau, rate, vol, is_call):
    """Black-Scholes price of one European call (``is_call`` true) or put; see the module docstring."""
    if tau <= 0.0:
        if is_call:
            return positive_part(spot - strike)
        return positive_part(strike - positive_part(spot))
    df = math.exp(-rate * tau)
    if spot <= 0.0:
        return 0.0 if is_call else strike * df
    sd = vol * math.sqrt(tau)
    if sd <= 0.0:
        if is_call:
            return positive_part(spot - strike * df)
        return positive_part(strike * df - spot)
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * tau) / sd
    d2 = d1 - sd
    if is_call:
        return spot * norm_cdf(d1) - strike * df * norm_cdf(d2)
    return strike * df * norm_cdf(-d2) - spot * norm_cdf(-d1)


@register_jitable
def option_pnl_item(j, rows, returns, drift, under, spot, strike, tau, rate, vol, is_call, value0, out):
    """Work item ``j = o * rows + s``: the value change of option ``o`` in scenario ``s``.

    ``returns`` is ``(n_underlyings, rows)``: each underlying's simple return in each
    scenario, without its drift ``drift[u]`` (added here). The underlying moves to
    ``spot * (1 + return)``; the option is repriced at the shortened time to expiry
    ``tau[o]`` and ``out[o, s] = price - value0[o]`` (float64 arithmetic, stored in
    ``out``'s dtype).
    """
    o = j // rows
    s = j - o * rows
    u = under[o]
    r = f64(returns[u, s]) + drift[u]
    price = bs_price(spot[o] * (1.0 + r), strike[o], tau[o], rate[o], vol[o], is_call[o])
    out[o, s] = price - value0[o]
