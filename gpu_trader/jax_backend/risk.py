"""Risk metrics on JAX: :class:`gpu_trader._internal.risk_xp.RiskMetrics` over ``jax.numpy``, jitted.

Sorting is XLA's batched sort; the drawdown's running maximum is ``lax.cummax``.
Everything is differentiable where the metric is (e.g. the gradient of a parametric
VaR or a Sharpe ratio with respect to portfolio weights; a historical VaR almost
everywhere, through its interpolated order statistics).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from .._internal.risk_xp import RiskMetrics
from . import jit_methods


def running_max(x):
    """Running maximum along the last axis."""
    return lax.cummax(x, axis=x.ndim - 1)


metrics = jit_methods(
    RiskMetrics(jnp, running_max),
    ("var_historical", "cvar", "var_parametric", "sharpe", "sortino", "max_drawdown", "calmar",
     "kelly_fraction", "risk_report"),
    static_floats={"risk_report": (1,)},  # its level becomes a normal quantile on the host
)
