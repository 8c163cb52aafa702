"""Covariance and correlation on the GPU: :class:`gpu_trader._internal.correlation_xp.CorrelationEstimators` over CuPy (cuBLAS)."""
from __future__ import annotations

import cupy as cp

from .._internal.correlation_xp import CorrelationEstimators

estimators = CorrelationEstimators(cp)
