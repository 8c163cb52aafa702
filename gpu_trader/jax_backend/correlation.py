"""Covariance and correlation on JAX: :class:`gpu_trader._internal.correlation_xp.CorrelationEstimators`
over ``jax.numpy`` (XLA's GEMMs), jitted. Whether the data holds NaNs is read once per
call on the host, which picks the compiled variant (dense or pairwise-complete)."""
from __future__ import annotations

import jax.numpy as jnp

from .._internal.correlation_xp import CorrelationEstimators
from . import jit_methods

estimators = jit_methods(
    CorrelationEstimators(jnp),
    ("cov_given", "corr_given", "rolling_corr", "ewma_cov", "ledoit_wolf"),
)
