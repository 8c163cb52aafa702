"""CPU twin of the indicator kernels: numba drivers over (series x work rows).

The per-series math lives in :mod:`gpu_trader._internal.indicator_loops` and is shared with
the GPU kernels; this module only maps it over a batch. One call runs a whole
*plan*: a list of (indicator, parameter set) rows over the same OHLCV inputs, so
``features`` computes every indicator of a symbol back to back while its bars
are in cache, in a single compiled call. The work is split across threads over
(series, row) pairs with ``prange`` (series-major, so one thread keeps a symbol);
a serial driver serves tiny batches, where waking the thread pool costs more than
the work. Compiled code is cached on disk (:mod:`gpu_trader._internal.jit`), so only the
first call after installing or changing the package pays for compilation.
"""
from __future__ import annotations

import numpy as np
from numba import prange
from numba.extending import register_jitable

from .._internal import indicator_loops
from .._internal.indicator_specs import INPUT_FIELDS, SPECS
from .._internal.jit import njit_cached

# Batches with fewer elements (series x bars x rows) than this run on the calling thread.
SERIAL_MAX_ELEMENTS = 20_000
_FIELD_INDEX = {"high": 0, "low": 1, "close": 2, "volume": 3}
MAX_PARAMS = 3


@register_jitable
def _plan_item(j, rows, params, ins, out):
    """Work item j = (series i, plan row r); a row is [code, 4 input fields, out offset, n_out]."""
    n_rows = rows.shape[0]
    i = j // n_rows
    r = j - i * n_rows
    code, f0, f1, f2, f3, o, w = rows[r]
    indicator_loops.dispatch(code, ins[f0][i], ins[f1][i], ins[f2][i], ins[f3][i], params[r], out[o : o + w, i])


@njit_cached(parallel=True, nogil=True)
def _run_plan_parallel(rows, params, ins, out):
    for j in prange(ins[0].shape[0] * rows.shape[0]):
        _plan_item(j, rows, params, ins, out)


@njit_cached(nogil=True)
def _run_plan_serial(rows, params, ins, out):
    for j in range(ins[0].shape[0] * rows.shape[0]):
        _plan_item(j, rows, params, ins, out)


_PLANS: dict = {}


def _prepare(names, params_list):
    """The plan's row arrays and per-name output blocks (memoized: plans repeat).

    Read-only parameter arrays (the public layer's memoized grids) are keyed by
    identity, which the entry pins by keeping them alive; writeable ones by content.
    """
    key = (tuple(names), tuple([p.tobytes() if p.flags.writeable else id(p) for p in params_list]))
    plan = _PLANS.get(key)
    if plan is not None:
        return plan[0]
    rows, padded, blocks = [], [], []
    offset = 0
    for name, params in zip(names, params_list):
        code, _, n_out, _ = SPECS[name]
        idx = [_FIELD_INDEX[f] for f in INPUT_FIELDS[name]]
        idx += [idx[0]] * (4 - len(idx))
        blocks.append((offset, params.shape[0], n_out))
        for p in range(params.shape[0]):
            rows.append([code, *idx, offset, n_out])
            padded.append(list(params[p]) + [0.0] * (MAX_PARAMS - params.shape[1]))
            offset += n_out
    arrays = (np.array(rows, dtype=np.int64), np.array(padded, dtype=np.float64))
    if len(_PLANS) > 1024:
        _PLANS.clear()
    plan = (arrays, blocks, offset)
    _PLANS[key] = (plan, tuple(params_list))
    return plan


def compute_many(names, params_list, fields):
    """Run several indicators over the same inputs in one compiled call.

    names: indicator names; params_list: one ``(P, k)`` float64 array per name;
    fields: mapping from OHLCV field name to a C-contiguous ``(n_series, T)``
    array (all of one float dtype; only the fields the indicators read are needed).
    Returns one ``(n_out, P, n_series, T)`` array per name, views of one buffer.
    """
    some = next(iter(fields.values()))
    out, blocks = _execute(_prepare(names, params_list), tuple([fields.get(f, some) for f in _FIELD_INDEX]))
    return _split(out, blocks)


def _execute(plan, ins):
    (rows, params), blocks, n_rows_out = plan
    n, T = ins[0].shape
    out = np.empty((n_rows_out, n, T), dtype=ins[0].dtype)
    if n_rows_out * n * T < SERIAL_MAX_ELEMENTS:
        _run_plan_serial(rows, params, ins, out)
    else:
        _run_plan_parallel(rows, params, ins, out)
    return out, blocks


def _split(out, blocks):
    """The ``(n_out, P, n, T)`` view of each name's block of the plan's output buffer."""
    _, n, T = out.shape
    return [
        out[start : start + n_out].reshape(n_out, 1, n, T)
        if P == 1
        else out[start : start + P * n_out].reshape(P, n_out, n, T).transpose(1, 0, 2, 3)
        for start, P, n_out in blocks
    ]


def compute(name: str, inputs, params: np.ndarray, n_out: int) -> np.ndarray:
    """Run indicator ``name`` over a batch.

    inputs: sequence of 1-4 C-contiguous ``(n_series, T)`` arrays of one float dtype,
    in the indicator's argument order. params: ``(n_param_sets, n_params)`` float64.
    Returns ``(n_out, n_param_sets, n_series, T)`` in the inputs' dtype.
    """
    plan = _prepare((name,), (params,))
    if len(inputs) == 1:  # indicators of the close alone: every field slot is the input
        ins = (inputs[0],) * 4
    else:
        fields = dict(zip(INPUT_FIELDS[name], inputs))
        ins = tuple([fields.get(f, inputs[0]) for f in _FIELD_INDEX])
    out, _ = _execute(plan, ins)
    if params.shape[0] == 1:
        return out.reshape(n_out, 1, out.shape[1], out.shape[2])
    return out.reshape(params.shape[0], n_out, out.shape[1], out.shape[2]).transpose(1, 0, 2, 3)
