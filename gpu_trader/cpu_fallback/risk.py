"""Risk metrics on the CPU: :class:`gpu_trader.risk_math.RiskKernels` over NumPy."""
from __future__ import annotations

import numpy as np

from ..risk_math import RiskKernels

kernels = RiskKernels(np, lambda x: np.maximum.accumulate(x, axis=-1))
