"""Risk metrics on the GPU: :class:`gpu_trader._internal.risk_xp.RiskMetrics` over CuPy.

Sorting is CuPy's segmented sort (one call for all series); the running maximum
of the drawdown is a log-depth doubling scan, since CuPy's ``maximum`` has no
``accumulate``.
"""
from __future__ import annotations

import functools

import cupy as cp

from .._internal.risk_xp import RiskMetrics, doubling_running_max

metrics = RiskMetrics(cp, functools.partial(doubling_running_max, cp))
