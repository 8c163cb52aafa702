"""Risk metrics on the GPU: :class:`gpu_trader.risk_math.RiskKernels` over CuPy.

Sorting is CuPy's segmented sort (one call for all series); the running maximum
of the drawdown is a log-depth doubling scan, since CuPy's ``maximum`` has no
``accumulate``.
"""
from __future__ import annotations

import functools

import cupy as cp

from ..risk_math import RiskKernels, doubling_running_max

kernels = RiskKernels(cp, functools.partial(doubling_running_max, cp))
