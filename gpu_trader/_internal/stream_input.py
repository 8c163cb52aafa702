"""Host inputs of the one-bar-at-a-time paths (:class:`gpu_trader.streaming.FeatureStream`,
:class:`gpu_trader.strategies.StrategyStream`): their state lives in host memory, so every
array-like becomes a NumPy array, whatever backend or frame it comes from."""
from __future__ import annotations

import numpy as np

from ..backend import host_input, is_pandas, to_numpy

__all__ = ["host_rows"]


def host_rows(x, name: str) -> np.ndarray:
    """NumPy view/copy of an array-like of real numbers (:func:`gpu_trader.backend.host_input`);
    a pandas DataFrame (time x symbols) is transposed."""
    if hasattr(x, "columns") and hasattr(x, "to_numpy"):  # pandas / cuDF DataFrame
        return host_input(_host_values(x), name).T
    return host_input(_host_values(x), name)


def _host_values(x):
    """Host values: pandas (nullable columns as float64 with NaN) and arrays through
    :func:`gpu_trader.to_numpy`, other frames (cuDF) through their own ``to_numpy``."""
    if hasattr(x, "to_numpy") and not hasattr(x, "__cuda_array_interface__") and not is_pandas(x):
        return x.to_numpy()
    return to_numpy(x)
