"""The input side of a call on return series (risk metrics, correlation): shared by both modules.

Unwraps pandas (time along the index, one column per series), resolves the backend,
checks every series has enough valid observations, and keeps a float64 working copy
plus the input's dtype so results can be cast back.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend, resolve, unwrap_pandas_columns
from .validation import check_observations

__all__ = ["SeriesInput"]


class SeriesInput:
    """``formulas``: the area's computations on the resolved backend (:meth:`formulas_of`);
    ``x``: float64 ``(..., T)``; ``dtype``: the input's float dtype; ``rewrap(res, kind, ...)``:
    pandas rewrapping (None for arrays).

    ``what`` names the computation and ``minimum`` the valid observations it needs per
    series (fewer is a ``ValueError`` naming ``r``); ``matrix=True`` requires
    ``(..., n_series, T)`` with at least one series and one period.
    """

    __slots__ = ("formulas", "x", "dtype", "rewrap")

    @staticmethod
    def formulas_of(be: Backend) -> Any:
        """The object whose methods compute this area on ``be`` (each subclass names it, e.g.
        ``be.ops("risk").metrics``)."""
        raise NotImplementedError

    def __init__(self, r: Any, backend: Any, what: str, minimum: int = 1, matrix: bool = False) -> None:
        values, self.rewrap = unwrap_pandas_columns(r)
        be, (arr,), _ = resolve((values,), ("r",), backend)
        if matrix:
            if arr.ndim < 2:
                raise ValueError(f"r must have shape (..., n_series, T) (time last), got shape {arr.shape}")
            if arr.shape[-1] == 0 or arr.shape[-2] == 0:
                raise ValueError(f"r must have at least one series and one period, got shape {arr.shape}")
        self.formulas = self.formulas_of(be)
        check_observations(self.formulas.xp, arr, minimum, "r", what)
        self.dtype = arr.dtype
        self.x = arr if arr.dtype == np.float64 else arr.astype(np.float64)
