"""Covariance and correlation on JAX: :class:`gpu_trader.correlation_math.CorrelationKernels`
over ``jax.numpy`` (XLA's GEMMs), jitted. Whether the data holds NaNs is read once per
call on the host, which picks the compiled variant (dense or pairwise-complete)."""
from __future__ import annotations

import jax.numpy as jnp

from ..correlation_math import CorrelationKernels
from . import jit_methods

kernels = jit_methods(
    CorrelationKernels(jnp),
    ("cov_given", "corr_given", "rolling_corr", "ewma_cov", "ledoit_wolf"),
)
