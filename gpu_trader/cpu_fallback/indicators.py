"""CPU twin of the indicator kernels: numba drivers over (parameter set x series).

The per-series math lives in :mod:`gpu_trader.indicator_math` and is shared with
the GPU kernels; this module only maps it over a batch, in parallel across series
with ``prange`` (a serial driver serves tiny batches, where waking the thread pool
costs more than the work). Compiled code is cached on disk (:mod:`gpu_trader.jit`), so only the first
call after installing or changing the package pays for compilation.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .. import indicator_math as im
from ..jit import njit_cached
from ..indicator_specs import SPECS

# Batches with fewer elements than this run on the calling thread.
SERIAL_MAX_ELEMENTS = 20_000


@njit_cached(parallel=True, nogil=True)
def _rows_parallel(code, ins, params, out):
    n = ins[0].shape[0]
    for j in prange(params.shape[0] * n):
        p = j // n
        i = j - p * n
        im.dispatch(code, ins[0][i], ins[1][i], ins[2][i], ins[3][i], params[p], out[:, p, i])


@njit_cached(nogil=True)
def _rows_serial(code, ins, params, out):
    n = ins[0].shape[0]
    for j in range(params.shape[0] * n):
        p = j // n
        i = j - p * n
        im.dispatch(code, ins[0][i], ins[1][i], ins[2][i], ins[3][i], params[p], out[:, p, i])


def compute(name: str, inputs, params: np.ndarray, n_out: int) -> np.ndarray:
    """Run indicator ``name`` over a batch.

    inputs: sequence of 1-4 C-contiguous ``(n_series, T)`` arrays of one float dtype.
    params: ``(n_param_sets, n_params)`` float64.
    Returns ``(n_out, n_param_sets, n_series, T)`` in the inputs' dtype.
    """
    code = SPECS[name][0]
    x0 = inputs[0]
    ins = tuple(inputs) + (x0,) * (4 - len(inputs))
    n, T = x0.shape
    out = np.empty((n_out, params.shape[0], n, T), dtype=x0.dtype)
    if params.shape[0] * n * T < SERIAL_MAX_ELEMENTS:
        _rows_serial(code, ins, params, out)
    else:
        _rows_parallel(code, ins, params, out)
    return out
