"""The input side of a call on return series (risk metrics, correlation): shared by both modules.

Unwraps pandas (time along the index, one column per series), resolves the backend,
checks every series has enough valid observations, and keeps a float64 working copy
plus the input's dtype so results can be cast back.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend, resolve, unwrap_pandas_columns
from .host import host_bool
from .validation import check_observations

__all__ = ["SeriesInput", "has_nan"]


def has_nan(xp: Any, x: Any) -> bool:
    """Whether ``x`` holds a NaN, read on the host (one small device-to-host read on a GPU); True
    inside a ``jax.jit`` trace, where the data is not known (the answer that is right for any data).
    The array backends' NaN screen; the CPU backend compiles a scan instead."""
    known = host_bool(xp.isnan(x).any())
    return True if known is None else known


class SeriesInput:
    """``formulas``: the area's computations on the resolved backend (:meth:`formulas_of`);
    ``x``: float64 ``(..., T)``; ``dtype``: the input's float dtype; ``has_nan``: whether ``x``
    holds a NaN (True where that cannot be known, inside a ``jax.jit`` trace);
    ``rewrap(res, kind, ...)``: pandas rewrapping (None for arrays).

    ``what`` names the computation and ``minimum`` the valid observations it needs per
    series (fewer is a ``ValueError`` naming ``r``); ``matrix=True`` requires
    ``(..., n_series, T)`` with at least one series and one period.

    The observation check (:func:`gpu_trader._internal.validation.check_observations`) counts
    the valid values of every series only when it can fail: when the formulas' NaN screen
    (``formulas.has_nan``, a compiled scan on the CPU) finds a NaN or the series are shorter
    than ``minimum``. Clean data, the common case, costs one scan that the computations reuse
    (``has_nan``).
    """

    __slots__ = ("formulas", "x", "dtype", "has_nan", "rewrap")

    @staticmethod
    def formulas_of(be: Backend) -> Any:
        """The object whose methods compute this area on ``be`` (each subclass names it, e.g.
        ``be.ops("risk").metrics``)."""
        raise NotImplementedError

    def __init__(self, r: Any, backend: Any, what: str, minimum: int = 1, matrix: bool = False) -> None:
        if type(r) is np.ndarray:  # nothing to unwrap (the one-series latency path)
            values, self.rewrap = r, None
        else:
            values, self.rewrap = unwrap_pandas_columns(r)
        be, (arr,), _ = resolve((values,), ("r",), backend)
        if matrix:
            if arr.ndim < 2:
                raise ValueError(f"r must have shape (..., n_series, T) (time last), got shape {arr.shape}")
            if arr.shape[-1] == 0 or arr.shape[-2] == 0:
                raise ValueError(f"r must have at least one series and one period, got shape {arr.shape}")
        formulas = self.formulas = self.formulas_of(be)
        self.dtype = arr.dtype
        x = self.x = arr if arr.dtype == np.float64 else arr.astype(np.float64)
        nan = self.has_nan = formulas.has_nan(x)
        if nan or x.shape[-1] < minimum:  # otherwise every series has x.shape[-1] >= minimum valid values
            check_observations(formulas.xp, x, minimum, "r", what)
