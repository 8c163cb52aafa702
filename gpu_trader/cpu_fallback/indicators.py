"""CPU twin of the indicator kernels: numba drivers over (series x work rows).

The per-series math lives in :mod:`gpu_trader._internal.indicator_loops` and is shared with
the GPU kernels; this module only maps it over a batch. One call runs a whole
*plan*: a list of (indicator, parameter set) rows over the same OHLCV inputs, so
``features`` computes every indicator of a symbol back to back while its bars
are in cache, in a single compiled call. Work items are (group of :data:`SERIES_PER_ITEM`
series, row) pairs, group-major (so a thread keeps its symbols); indicators with a four-series
row body (``indicator_loops.dispatch4``) advance the group's recurrences in one loop, the others
run series by series. A serial driver serves tiny batches, where waking threads costs more
than the work.

Threads (docs/design.md#cpu-threads): a parallel call runs on min(numba's thread count for
the calling thread -- ``NUMBA_NUM_THREADS``, ``numba.set_num_threads`` --, the CPUs the process
may run on, work items) threads: the calling thread and helper threads of
:func:`gpu_trader.cpu_fallback.run_on_threads` (not numba's ``prange`` pool, whose fork-join
waits for every worker to wake). The items are cut into chunks (:data:`CHUNKS_PER_THREAD` a
thread at least, about :data:`CHUNK_ELEMENTS` output elements each at most); every thread owns
a contiguous share of them, which it claims chunk by chunk with an atomic counter, then helps
finish the others' shares. So a thread that the OS deschedules (another busy process) or that
wakes late holds back at most the chunk it claimed, not a static half of the call, and threads
write far apart in the fresh output buffer. Compiled code is cached on disk
(:mod:`gpu_trader._internal.jit`), so only the first call after installing or changing the
package pays for compilation.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload, register_jitable

from .._internal import indicator_loops
from .._internal.indicator_specs import INPUT_FIELDS, SPECS
from .._internal.jit import njit_cached
from . import output_pool, run_on_threads, usable_cpus

# Batches with fewer elements (series x bars x rows) than this run on the calling thread.
SERIAL_MAX_ELEMENTS = 20_000
# Series of one work item when the batch has enough for every thread (else 1): the
# recurrences of four series interleaved hide each other's latency.
SERIES_PER_ITEM = 4
# Parallel batches are cut into chunks of work items that threads claim as they go.
CHUNKS_PER_THREAD = 16
CHUNK_ELEMENTS = 65_536
_FIELD_INDEX = {"high": 0, "low": 1, "close": 2, "volume": 3}
MAX_PARAMS = 3


@register_jitable
def _n_items(ins, rows, group):
    """Work items of a plan: (group of ``group`` series, plan row) pairs."""
    return (ins[0].shape[0] + group - 1) // group * rows.shape[0]


@register_jitable
def _plan_item(j, rows, params, ins, out, group):
    """Work item j = (group q of ``group`` series, plan row r); a row is [code, 4 input fields,
    out offset, n_out]. A full group of SERIES_PER_ITEM series of an indicator with a
    four-series body runs interleaved (``indicator_loops.dispatch4``), any other series by
    series, on contiguous output rows where the indicator has a form for them
    (``indicator_loops.dispatch_rows``)."""
    n_rows = rows.shape[0]
    q = j // n_rows
    r = j - q * n_rows
    code, f0, f1, f2, f3, o, w = rows[r]
    i = q * group
    stop = min(i + group, ins[0].shape[0])
    if stop - i == SERIES_PER_ITEM and indicator_loops.dispatch4(code, ins[f0], i, params[r], out[o : o + w]):
        return
    float64_rows = _holds_float64(out)
    for s in range(i, stop):
        if not indicator_loops.dispatch_rows(code, ins[f0][s], ins[f1][s], ins[f2][s], params[r], out, o, s,
                                             float64_rows):
            indicator_loops.dispatch(code, ins[f0][s], ins[f1][s], ins[f2][s], ins[f3][s], params[r],
                                     out[o : o + w, s])


def _holds_float64(a) -> bool:
    """Whether array ``a`` holds float64 (a compile-time constant in compiled code)."""
    return a.dtype == np.float64


@overload(_holds_float64)
def _holds_float64_compiled(a):
    result = a.dtype == types.float64
    return lambda a: result


@intrinsic
def _claim(typingctx, counters, i):
    """Atomically add 1 to ``counters[i]`` (a 1-D int64 array, ``0 <= i < len``, unchecked);
    returns the value before."""
    if not (isinstance(counters, types.Array) and counters.ndim == 1 and counters.dtype == types.int64
            and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        one = context.get_constant(types.int64, 1)
        return builder.atomic_rmw("add", builder.gep(data, [index]), one, "monotonic")

    return types.int64(counters, i), codegen


# int64 slots between two claim counters: each on a cache line (and line pair) of its own.
_COUNTER_STRIDE = 16


@njit_cached(nogil=True, error_model="numpy")
def _claim_and_run(rows, params, ins, out, group, claimed, chunk, n_shares, first_share):
    """Worker ``first_share`` of the plan's parallel run: the work items are cut into chunks of
    ``chunk``, the chunks into ``n_shares`` contiguous shares; this worker claims the chunks of
    share ``first_share`` one at a time (``claimed``: the shares' counters), then helps with the
    others'. So workers write far apart (two threads faulting in the same fresh page wait for
    each other), and any one of them finishes all the work if the others never start."""
    n_items = _n_items(ins, rows, group)
    n_chunks = (n_items + chunk - 1) // chunk
    for k in range(n_shares):
        share = (first_share + k) % n_shares
        first = share * n_chunks // n_shares
        stop = (share + 1) * n_chunks // n_shares
        c = first + _claim(claimed, share * _COUNTER_STRIDE)
        while c < stop:
            _run_items(rows, params, ins, out, group, c * chunk, min(c * chunk + chunk, n_items))
            c = first + _claim(claimed, share * _COUNTER_STRIDE)


@njit_cached(nogil=True, error_model="numpy")
def _run_items(rows, params, ins, out, group, start, stop):
    """Work items ``start <= j < stop`` (of ``group`` series each) on the calling thread."""
    for j in range(start, stop):
        _plan_item(j, rows, params, ins, out, group)


@njit_cached(nogil=True, error_model="numpy")
def _run_plan_serial(rows, params, ins, out):
    _run_items(rows, params, ins, out, SERIES_PER_ITEM, 0, _n_items(ins, rows, SERIES_PER_ITEM))


@njit_cached(nogil=True, error_model="numpy", _nrt=False)
def _compute_series(code, params, x0, x1, x2, x3, out):
    T = x0.shape[0]
    n_out = out.shape[0] // T
    if not indicator_loops.dispatch_rows(code, x0, x1, x2, params, out.reshape((n_out, 1, T)), 0, 0, True):
        indicator_loops.dispatch(code, x0, x1, x2, x3, params, out.reshape((n_out, T)))


def series_kernel():
    """``kernel(code, params, x0, x1, x2, x3, out)``: one indicator on one series, on the calling
    thread (CPU only: the one-series latency path of :mod:`gpu_trader.indicators`); compiled, or
    loaded from the disk cache, by this call.

    The kernel is the compiled entry point itself, compiled without NRT (the row bodies allocate
    nothing): numba's typing of every call and a reference-counted handle per array argument are
    skipped (~0.3 us of a 100-bar call), so nothing is checked and the caller must pass exactly:
    ``code`` an int (the indicator's code); ``params`` its parameters, a read-only C-contiguous
    ``(k,)`` float64 array; ``x0..x3`` the inputs in argument order (slots past the indicator's
    inputs get any of them), 1-D float64 arrays of one length ``T >= 1`` (any strides, alignment
    or writeability: they are only read); ``out`` a writeable C-contiguous ``(n_out * T,)``
    float64 array, which it fills with the outputs one after the other. The error model is the
    batch drivers'."""
    x = types.Array(types.float64, 1, "A", readonly=True, aligned=False)
    params = types.Array(types.float64, 1, "C", readonly=True)
    return _compute_series.compile((types.int64, params, x, x, x, x, types.Array(types.float64, 1, "C")))


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
    out = output_pool.empty((n_rows_out, n, T), ins[0].dtype)
    if n_rows_out * n * T < SERIAL_MAX_ELEMENTS:
        _run_plan_serial(rows, params, ins, out)
    else:
        _run_parallel(rows, params, ins, out, n_rows_out * T // rows.shape[0])
    return out, blocks


def _run_parallel(rows, params, ins, out, series_elements: int) -> None:
    """Run the plan on min(numba's thread count, usable CPUs, (series, row) pairs) threads; one
    thread runs the serial driver. Work items group SERIES_PER_ITEM series when every thread
    gets one such item at least, else one series. ``series_elements``: output elements of one
    series of one plan row, on average."""
    n_pairs = _n_items(ins, rows, 1)
    threads = min(numba.get_num_threads(), usable_cpus(), n_pairs)
    if threads == 1:
        _run_plan_serial(rows, params, ins, out)
        return
    group = SERIES_PER_ITEM if ins[0].shape[0] // SERIES_PER_ITEM * rows.shape[0] >= threads else 1
    n_items = _n_items(ins, rows, group)
    _run_threads(rows, params, ins, out, group, threads, _chunk_items(n_items, threads, series_elements * group))


def _run_threads(rows, params, ins, out, group: int, threads: int, chunk: int) -> None:
    """The plan on ``threads`` workers (the caller and helpers) claiming chunks of ``chunk``
    items of ``group`` series."""
    claimed = np.zeros(threads * _COUNTER_STRIDE, dtype=np.int64)
    run_on_threads(_claim_and_run, threads, rows, params, ins, out, group, claimed, chunk, threads)


def _chunk_items(n_items: int, threads: int, item_elements: int) -> int:
    """Work items per claimed chunk: at least CHUNKS_PER_THREAD chunks per thread, and at most
    about CHUNK_ELEMENTS output elements a chunk, so a thread that the OS deschedules holds back
    little of the call while the others keep claiming; at least 1."""
    return max(1, min(n_items // (CHUNKS_PER_THREAD * threads), CHUNK_ELEMENTS // max(item_elements, 1)))


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
