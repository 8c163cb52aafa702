"""Covariance and correlation on the CPU: :class:`gpu_trader._internal.correlation_xp.CorrelationEstimators`
over NumPy, with small products on one BLAS thread (see :mod:`.blas`)."""
from __future__ import annotations

import numpy as np

from .._internal.correlation_xp import CorrelationEstimators
from .blas import blas_threads_for


def _gemm_flops(x) -> float:
    """Multiply-adds of one (n x T) @ (T x n) product per batch element, times 2."""
    n, t = x.shape[-2], x.shape[-1]
    return 2.0 * n * n * t * (x.size // (n * t))


class _CpuCorrelationEstimators(CorrelationEstimators):
    def cov(self, x, min_periods, ddof):
        with blas_threads_for(_gemm_flops(x)):
            return super().cov(x, min_periods, ddof)

    def corr(self, x, min_periods):
        with blas_threads_for(_gemm_flops(x)):
            return super().corr(x, min_periods)

    def ewma_cov(self, x, decay):
        with blas_threads_for(_gemm_flops(x)):
            return super().ewma_cov(x, decay)

    def ledoit_wolf(self, x):
        with blas_threads_for(_gemm_flops(x)):
            return super().ledoit_wolf(x)


estimators = _CpuCorrelationEstimators(np)
