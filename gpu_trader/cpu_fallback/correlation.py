"""Covariance and correlation on the CPU: :class:`gpu_trader.correlation_math.CorrelationKernels` over NumPy (BLAS)."""
from __future__ import annotations

import numpy as np

from ..correlation_math import CorrelationKernels

kernels = CorrelationKernels(np)
