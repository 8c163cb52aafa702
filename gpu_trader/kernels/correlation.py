"""Covariance and correlation on the GPU: :class:`gpu_trader.correlation_math.CorrelationKernels` over CuPy (cuBLAS)."""
from __future__ import annotations

import cupy as cp

from ..correlation_math import CorrelationKernels

kernels = CorrelationKernels(cp)
